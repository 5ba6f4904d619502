{#- WireGuard mesh across the region's hosts. The private key is made here and
    never read by Salt (wg-quick loads it from its file); the public key goes to
    the masters' mine, and each host's configuration lists the peers of
    wireguard:hosts whose key the mine holds (a new host's peers gain it on
    their next highstate). #}
{%- from 'wireguard/map.jinja' import wireguard with context %}
{%- if wireguard.enabled %}
{%-   set me = wireguard.hosts[grains['id']] %}
{%-   set key_file = '/etc/wireguard/' ~ wireguard.interface ~ '.key' %}
{%-   set published = salt['mine.get'](wireguard.hosts | list | join(','), 'gopbx_wireguard.public_key', tgt_type='list') %}

wireguard-pkg-installed:
  pkg.installed:
    - pkgs:
      - wireguard-tools
{%-   if wireguard.userspace %}
      - wireguard-go
{%-   endif %}

wireguard-private-key-made:
  cmd.run:
    - name: umask 077 && wg genkey > {{ key_file }}
    - creates: {{ key_file }}
    - require:
      - pkg: wireguard-pkg-installed

{#- Its public half, for the peers (gopbx_wireguard.public_key reads the key file). #}
wireguard-public-key-published:
  module.run:
    - mine.update: []
    - onchanges:
      - cmd: wireguard-private-key-made

wireguard-config-managed:
  file.managed:
    - name: /etc/wireguard/{{ wireguard.interface }}.conf
    - source: salt://wireguard/files/wg.conf.jinja
    - template: jinja
    - context:
        wireguard: {{ wireguard | json }}
        me: {{ me | json }}
        minion_id: {{ grains['id'] }}
        key_file: {{ key_file }}
        published: {{ published | json }}
    - mode: '0600'
    - require:
      - cmd: wireguard-private-key-made

{#- A new peer is added by a reload (wg syncconf), which keeps the tunnels up: a
    restart would drop them, and VRRP's adverts with them. #}
wireguard-reload-script-managed:
  file.managed:
    - name: /usr/local/lib/gopbx/wg-reload
    - source: salt://wireguard/files/wg-reload
    - mode: '0755'
    - makedirs: True

wireguard-reload-managed:
  file.managed:
    - name: /etc/systemd/system/wg-quick@{{ wireguard.interface }}.service.d/gopbx.conf
    - contents: |
        # Managed by Salt (wireguard formula): keep the private key across reloads.
        [Service]
        ExecReload=
        ExecReload=/usr/local/lib/gopbx/wg-reload /etc/wireguard/%i.conf
    - mode: '0644'
    - makedirs: True
    - require:
      - file: wireguard-reload-script-managed

wireguard-interface-running:
  service.running:
    - name: wg-quick@{{ wireguard.interface }}
    - enable: True
    - reload: True
    - require:
      - file: wireguard-reload-managed
    - watch:
      - file: wireguard-config-managed
{%- endif %}
