{#- Keepalived on each Kamailio host: unicast VRRPv3 elects the active SIP edge;
    track scripts ask the local Kamailio and RTPEngine; every transition goes
    through notify_fifo, one at a time, to the reconcile (gopbx_edge.reconcile,
    salt-call --local) that makes Vultr's side match, and to the masters as an
    event. A timer runs the reconcile too: after a short split the old master
    hears no transition. keepalived:enabled false: nothing at all. #}
{%- from 'keepalived/map.jinja' import keepalived with context %}
{%- from 'kamailio/map.jinja' import kamailio with context %}
{%- from 'rtpengine/map.jinja' import rtpengine with context %}
{%- set libexec = '/usr/local/lib/gopbx' %}
{%- if keepalived.enabled %}
{%-   set me = keepalived.peers[grains['id']] %}
{%-   set edge = {
        'minion_id': grains['id'],
        'location': me.location,
        'instance_id': me.get('instance_id', ''),
        'public_address': me.get('public_address', ''),
        'interface': keepalived.public_interface,
        'sip_address': keepalived.sip_address,
        'sip_address_location': keepalived.sip_address_location,
        'reserved_ip_id': keepalived.reserved_ip_id,
        'dns': keepalived.dns,
        'peers': keepalived.peers,
        'vultr_url': keepalived.vultr_api_url,
        'api_key': keepalived.secrets['vultr:edge_api_key']} %}

keepalived-pkg-installed:
  pkg.installed:
    - name: keepalived

keepalived-scripts-managed:
  file.recurse:
    - name: {{ libexec }}
    - source: salt://keepalived/files/libexec
    - file_mode: '0755'
    - dir_mode: '0755'
    - user: root
    - group: root

{#- Read by gopbx_edge.reconcile; it holds the Vultr key: root only. #}
keepalived-edge-settings-managed:
  file.managed:
    - name: /etc/gopbx/edge.json
    - contents: |
        {{ edge | json }}
    - makedirs: True
    - user: root
    - mode: '0600'
    - show_changes: False

keepalived-config-managed:
  file.managed:
    - name: /etc/keepalived/keepalived.conf
    - source: salt://keepalived/files/keepalived.conf.jinja
    - template: jinja
    - context:
        keepalived: {{ keepalived | json }}
        me: {{ me | json }}
        minion_id: {{ grains['id'] }}
        checks:
          sip: {{ kamailio.address }} {{ kamailio.sip_port }}
          ng: {{ rtpengine.plan.rtpengine_ng }} {{ rtpengine.ng_port }}
        libexec: {{ libexec }}
    - mode: '0644'
    - check_cmd: keepalived --config-test -f
    - require:
      - pkg: keepalived-pkg-installed
      - file: keepalived-scripts-managed

{#- Where Keepalived makes its notify FIFO and the handler records the state: made
    here for this boot and, under systemd, by the unit at every start (/run is
    empty after a reboot, and Keepalived does not make the directory). #}
keepalived-run-dir-managed:
  file.directory:
    - name: /run/gopbx-edge
    - user: root
    - mode: '0700'
{%-   if grains['init'] == 'systemd' %}

keepalived-run-dir-unit-managed:
  file.managed:
    - name: /etc/systemd/system/keepalived.service.d/gopbx.conf
    - makedirs: True
    - mode: '0644'
    - contents: |
        # Managed by Salt (keepalived formula): the notify FIFO's directory.
        [Service]
        RuntimeDirectory=gopbx-edge
        RuntimeDirectoryMode=0700
        RuntimeDirectoryPreserve=yes

keepalived-run-dir-unit-loaded:
  cmd.run:
    - name: systemctl daemon-reload
    - onchanges:
      - file: keepalived-run-dir-unit-managed
{%-   endif %}

{#- The VRRP child's pid file, which gopbx_edge reads to know Keepalived is running:
    run by systemd (--dont-fork), Keepalived 2.2.7 writes none unless named. #}
keepalived-defaults-managed:
  file.managed:
    - name: /etc/default/keepalived
    - mode: '0644'
    - contents: |
        # Managed by Salt (keepalived formula).
        DAEMON_ARGS="--vrrp_pid=/run/keepalived_vrrp.pid"
    - require:
      - pkg: keepalived-pkg-installed

keepalived-service-running:
  service.running:
    - name: keepalived
    - enable: True
    - reload: True
    - watch:
      - file: keepalived-config-managed
{%-   if grains['init'] == 'systemd' %}
      - file: keepalived-run-dir-unit-managed
      - cmd: keepalived-run-dir-unit-loaded
{%-   endif %}
    - require:
      - file: keepalived-edge-settings-managed
      - file: keepalived-run-dir-managed

{#- A reload (SIGHUP) rereads the configuration, not the command line. #}
keepalived-restarted-for-its-arguments:
  cmd.run:
    - name: service keepalived restart
    - onchanges:
      - file: keepalived-defaults-managed
    - require:
      - service: keepalived-service-running

{%-   if grains['init'] == 'systemd' %}

keepalived-reconcile-units-managed:
  file.managed:
    - names:
      - /etc/systemd/system/gopbx-edge-reconcile.service:
        - contents: |
            # Managed by Salt (keepalived formula).
            [Unit]
            Description=GoPBX: make the SIP edge's public side match this host's VRRP state
            After=keepalived.service
            [Service]
            Type=oneshot
            ExecStart=/usr/bin/salt-call --local --out-file=/dev/null --log-file-level=warning gopbx_edge.reconcile
      - /etc/systemd/system/gopbx-edge-reconcile.timer:
        - contents: |
            # Managed by Salt (keepalived formula).
            [Unit]
            Description=GoPBX: the SIP edge reconcile, every {{ keepalived.reconcile_interval }} s
            [Timer]
            OnActiveSec=0
            OnUnitInactiveSec={{ keepalived.reconcile_interval }}s
            AccuracySec=1s
            [Install]
            WantedBy=timers.target
    - mode: '0644'

keepalived-reconcile-timer-running:
  service.running:
    - name: gopbx-edge-reconcile.timer
    - enable: True
    - require:
      - service: keepalived-service-running
    - watch:
      - file: keepalived-reconcile-units-managed
{%-   endif %}
{%- endif %}
{#- keepalived:enabled false (a host with no VRRP partner, the single-host lab):
    this formula installs and starts nothing. #}
