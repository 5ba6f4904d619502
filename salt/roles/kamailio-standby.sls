# The Kamailio standby (kam-<region>-<n>): a second SIP edge.
include:
  - kamailio
  - keepalived
