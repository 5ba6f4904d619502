# The coordinator (coord-<region>-<n>): the region's database, SIP edge, media
# relay, API and salt-master. Formulas in the order they run.
include:
  - wireguard
  - network
  - etcd
  - postgres
  - pgbouncer
  - redis
  - rtpengine
  - kamailio
  - keepalived
  - dns
  - api
  - nginx
  - salt_master
