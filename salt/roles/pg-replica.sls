# The PostgreSQL replica (pgrep-<region>-<n>): a Patroni member, the synchronous
# standby that takes over as primary when the coordinator's database fails.
include:
  - wireguard
  - etcd
  - postgres
