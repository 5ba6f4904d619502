{#- The region's DNS zone from pillar (map.jinja's records): kept in Vultr's DNS
    in production, served by Knot DNS on the plan's 'dns' address in the labs.
    The SIP names' A records move on a failover (gopbx_edge's reconcile owns
    them in Vultr), so they carry the short sip_ttl. #}
{%- from 'dns/map.jinja' import dns with context %}
{%- if dns.server == 'vultr' %}

dns-zone-records-managed:
  gopbx_dns.vultr_records_managed:
    - name: {{ dns.zone }}
    - records: {{ dns.records | json }}
    - failover_names: {{ dns.failover_names | json }}
    - api_key: {{ dns.secrets['vultr:api_key'] | json }}
    - url: {{ dns.vultr_api_url }}
{%- else %}

dns-knot-pkg-installed:
  pkg.installed:
    - name: knot

dns-knot-zone-managed:
  file.managed:
    - name: /var/lib/knot/{{ dns.zone }}.zone
    - source: salt://dns/files/zone.jinja
    - template: jinja
    - context:
        dns: {{ dns | json }}
    - user: knot
    - group: knot
    - mode: '0644'
    - require:
      - pkg: dns-knot-pkg-installed

dns-knot-config-managed:
  file.managed:
    - name: /etc/knot/knot.conf
    - source: salt://dns/files/knot.conf.jinja
    - template: jinja
    - context:
        dns: {{ dns | json }}
    - group: knot
    - mode: '0640'
    - check_cmd: sh -c 'knotc -c "$0" conf-check'
    - require:
      - pkg: dns-knot-pkg-installed

{#- `knotc stop` (the init script's stop) returns before knotd has let go of its
    sockets, so a restart under load can start a knotd that cannot bind and exits:
    the state asks again rather than fail the highstate on that race. #}
dns-knot-service-running:
  service.running:
    - name: knot
    - enable: True
    - watch:
      - file: dns-knot-config-managed
    - retry:
        attempts: 3
        interval: 2

{#- A changed zone file is loaded without a restart. #}
dns-knot-zone-reloaded:
  cmd.run:
    - name: knotc zone-reload {{ dns.zone }}
    - onchanges:
      - file: dns-knot-zone-managed
    - require:
      - service: dns-knot-service-running
{%- endif %}
