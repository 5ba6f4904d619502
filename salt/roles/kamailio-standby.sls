# The Kamailio standby (kam-<region>-<n>): a second SIP edge.
include:
  - wireguard
  - kamailio
  - keepalived
