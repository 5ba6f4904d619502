# The Kamailio standby (kam-<region>-<n>): a second SIP edge, with what a call
# needs on the host itself (its own RTPEngine), so it carries calls alone.
include:
  - wireguard
  - network
  - etcd
  - rtpengine
  - kamailio
  - keepalived
