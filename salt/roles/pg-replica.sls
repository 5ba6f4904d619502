# The PostgreSQL streaming replica (pgrep-<region>-<n>): common only, for now.
include:
  - wireguard
