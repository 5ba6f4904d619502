# The single-host lab: every coordinator service on this machine, on the seed's
# plan mapped to loopback (all of 127/8 is local, so nothing needs configuring).
roles: [coordinator]
region: lab
network:
  internal:
    interface: lo
    cidr: 127.28.0.0/24
postgres:
  # Debian 12's own PostgreSQL: the PGDG repository is not reachable here.
  version: 15
  pgdg: false
  shared_buffers_mb: 256
  # A loopback connection to 127.28.0.x comes from 127.0.0.1.
  client_networks: [127.0.0.1/32]
