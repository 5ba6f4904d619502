# The single-host lab: every coordinator service on this machine, on the seed's
# plan mapped to loopback (all of 127/8 is local, so nothing needs configuring).
roles: [coordinator, media-standin]
region: lab
common:
  # Debian 12's rsyslog has no init script, and this container has no systemd.
  syslog:
    package: inetutils-syslogd
    service: inetutils-syslogd
    drop_in_dir: /etc/syslog.d
    # inetutils' init script reports "status" 0 even when syslogd is down.
    process: /usr/sbin/syslogd
keepalived:
  # One host, no VRRP partner: the multi-host lab runs the SIP edge pair.
  enabled: false
dns:
  # Knot DNS on the plan's dns address (127.28.0.53), authoritative for the lab's zone.
  server: knot
  zone: gopbx.lab.invalid
  addresses:
    api: 127.28.0.13
    sip: 127.0.0.1
  sip_sites: [sip]
  nameservers: [ns1.gopbx.lab.invalid]
  hostmaster: hostmaster.gopbx.lab.invalid
wireguard:
  # One host: no mesh.
  enabled: false
firewall:
  # Never ufw on the host the lab shares (FIELD-NOTES); the multi-host lab tests it.
  enabled: false
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
kamailio:
  # Debian 12's own Kamailio: the kamailio.org repository is not reachable here.
  version: '5.6'
  repo: false
  sip_addresses: [127.0.0.1]
  tls_common_name: sip.lab.gopbx.invalid
  # Fast media-node health checks, so failover shows within seconds.
  dispatcher:
    ping_seconds: 2
    failed_probes: 1
    ok_probes: 1
  nat_ping_seconds: 5
  srtp: true
rtpengine:
  interface_address: 127.0.0.1
  # No kernel modules in a container: userspace forwarding.
  kernel_forwarding: false
media_standin:
  # Lab tenants use dispatcher set 1: two SIPp stand-ins for FreeSWITCH nodes.
  setid: 1
  addresses: ['127.28.1.1:5080', '127.28.1.2:5080']
api:
  # No salt-master runs in the single-host lab: provisioning answers 503.
  salt_webhook_url: ''
nginx:
  # Let's Encrypt can't reach the lab: a self-signed certificate for api.gopbx.au.
  certificate: self_signed
