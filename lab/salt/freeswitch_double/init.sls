{#- Lab only: a named DOUBLE in place of the FreeSWITCH binary (FreeSWITCH has no
    Debian 12 package), so the multi-host lab's media nodes run the real freeswitch
    formula: its configuration, reloads and ready event. The freeswitch formula
    includes this when freeswitch:binary is 'double'. The double reads the rendered
    /etc/freeswitch as FreeSWITCH would (files/freeswitch_double.py says what it does). #}

freeswitch-double-user-present:
  user.present:
    - name: freeswitch
    - system: True
    - home: /var/lib/freeswitch
    - shell: /usr/sbin/nologin

freeswitch-double-program-managed:
  file.managed:
    - name: /usr/local/lib/gopbx-lab/freeswitch_double.py
    - source: salt://freeswitch_double/files/freeswitch_double.py
    - makedirs: True
    - mode: '0755'

{#- fs_cli as the formula's reloads use it (-x COMMAND, settings from /etc/fs_cli.conf). #}
freeswitch-double-fs-cli-managed:
  file.managed:
    - name: /usr/bin/fs_cli
    - source: salt://freeswitch_double/files/fs_cli
    - mode: '0755'

freeswitch-double-unit-managed:
  file.managed:
    - name: /etc/systemd/system/freeswitch.service
    - mode: '0644'
    - contents: |
        # Managed by Salt (freeswitch_double, lab only): a DOUBLE of FreeSWITCH.
        [Unit]
        Description=FreeSWITCH DOUBLE (GoPBX lab: FreeSWITCH has no Debian 12 package)
        After=network-online.target
        [Service]
        ExecStart=/usr/bin/python3 /usr/local/lib/gopbx-lab/freeswitch_double.py
        User=freeswitch
        Restart=on-failure
        [Install]
        WantedBy=multi-user.target
  cmd.run:
    - name: systemctl daemon-reload
    - onchanges:
      - file: freeswitch-double-unit-managed
