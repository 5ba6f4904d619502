# The AU region, as the seed describes it: Sydney coordinator, Melbourne Kamailio
# standby, a PostgreSQL replica. Secrets and the addresses of VMs made after the
# seed live in site/au.sls (encrypted, not in git).
region: au
network:
  internal:
    interface: gopbx0
    cidr: 172.28.0.0/24
  public:
    coordinator: 149.28.188.104
    sip_floating_ip: 103.43.75.51
  dns:
    api: api.gopbx.au
    sip: sip.gopbx.au
postgres:
  version: 16
  # Media nodes fs-syd-<n> join the Sydney set, fs-mel-<n> the Melbourne one.
  dispatcher_sets:
    1: {region: syd, description: Sydney media nodes}
    2: {region: mel, description: Melbourne media nodes}
  pgdg: true
  # Patroni runs the primary and its synchronous replica; they replicate over the
  # mesh (hostssl, from the members alone).
  patroni:
    members: [coord-syd-1, pgrep-syd-1]
# Patroni's leader lock: three hosts in two locations, so any one may be lost.
etcd:
  members: [coord-syd-1, pgrep-syd-1, kam-mel-1]
kamailio:
  # SIP on the floating IP, which Keepalived moves between Sydney and Melbourne.
  sip_addresses: [103.43.75.51]
  nonlocal_bind: true
keepalived:
  # The SIP edge's VRRP group, over the region's WireGuard mesh (wireguard formula).
  # Sydney holds the reserved IP; Melbourne, in another Vultr location, can't take
  # it and is reached by the SIP name instead (A record, SRV by priority). The
  # site pillar adds the Vultr ids (instance_id, reserved_ip_id) and Melbourne's
  # public address.
  vrrp_interface: wg-gopbx
  public_interface: enp1s0
  sip_address: 103.43.75.51
  sip_address_location: syd
  dns: {domain: gopbx.au, name: sip, ttl: 30}
  peers:
    coord-syd-1: {address: 10.29.0.1, priority: 150, location: syd, public_address: 149.28.188.104}
    kam-mel-1: {address: 10.29.0.2, priority: 100, location: mel}
wireguard:
  # The region's mesh: the coordinator carries the database and Redis for the
  # others. The site pillar adds the endpoints of hosts made after the seed.
  hosts:
    coord-syd-1: {address: 10.29.0.1, endpoint: 149.28.188.104, routes: [172.28.0.10/32, 172.28.0.11/32]}
    kam-mel-1: {address: 10.29.0.2}
    pgrep-syd-1: {address: 10.29.0.3}
# Each mesh host's WireGuard public key, for its peers (wireguard formula).
mine_functions:
  gopbx_wireguard.public_key: []
dns:
  # The seed's records, kept in Vultr's DNS; SRV lists Sydney, then Melbourne
  # (the site pillar adds sip-mel's address: the Melbourne host's own).
  zone: gopbx.au
  addresses:
    api: 149.28.188.104
    sip: 103.43.75.51
  sip_sites: [sip, sip-mel]
nginx:
  # api.gopbx.au resolves to the coordinator's public address.
  extra_listen_addresses: [149.28.188.104]
  acme_email: ops@gopbx.au
