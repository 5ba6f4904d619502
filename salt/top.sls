# Every host runs 'common' and then 'roles', which includes the formulas of the
# roles its pillar gives it (pillar assigns roles by minion id, never by grains).
# The mapping is kept out of this file: a pillar error while rendering the top
# file would only be reported as "no top file matches", without its reason.
base:
  '*':
    - common
    # The ports of every role this host has, open before its services start.
    - firewall
    - roles
