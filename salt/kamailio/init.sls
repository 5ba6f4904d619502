{#- Kamailio, the SIP edge: the same configuration on the Sydney coordinator and
    the Melbourne standby. Kamailio 5.8 from kamailio.org on production,
    Debian 12's 5.6 in the lab. #}
{%- from 'kamailio/map.jinja' import kamailio with context %}
{%- from 'macros/tls.jinja' import self_signed_certificate %}
{%- from 'common/map.jinja' import common with context %}

include:
  - common

{%- if kamailio.repo %}
{%- set repo_url = 'http://deb.kamailio.org/kamailio' ~ kamailio.version | replace('.', '') %}
kamailio-repo-managed:
  pkgrepo.managed:
    - name: deb [signed-by=/usr/share/keyrings/kamailio.asc] {{ repo_url }} {{ grains.oscodename }} main
    - file: /etc/apt/sources.list.d/kamailio.list
    - key_url: https://deb.kamailio.org/kamailiodebkey.gpg
    - aptkey: False
    - require_in:
      - pkg: kamailio-pkg-installed
{%- endif %}

kamailio-pkg-installed:
  pkg.installed:
    - pkgs:
      - kamailio
      - kamailio-postgres-modules
      - kamailio-tls-modules
      - kamailio-sqlite-modules
      - sqlite3
      - kamailio-xml-modules
      - openssl

{%- if kamailio.nonlocal_bind %}
kamailio-nonlocal-bind-sysctl-present:
  sysctl.present:
    - name: net.ipv4.ip_nonlocal_bind
    - value: 1
    - require_in:
      - service: kamailio-service-running
{%- endif %}

kamailio-tls-dir-managed:
  file.directory:
    - name: {{ kamailio.tls_dir }}
    - user: root
    - group: kamailio
    - mode: '0750'
    - require:
      - pkg: kamailio-pkg-installed

{%- if not kamailio.tls_certificate %}
{{ self_signed_certificate('kamailio-tls-self-signed-created', kamailio.tls_dir, kamailio.tls_common_name,
                           'kamailio', 'file: kamailio-tls-dir-managed') }}
{%- endif %}

kamailio-tls-config-managed:
  file.managed:
    - name: /etc/kamailio/tls.cfg
    - source: salt://kamailio/files/tls.cfg.jinja
    - template: jinja
    - context:
        kamailio: {{ kamailio | json }}
    - mode: '0644'
    - require:
      - pkg: kamailio-pkg-installed

kamailio-defaults-managed:
  file.managed:
    - name: /etc/default/kamailio
    - mode: '0644'
    - contents: |
        # Managed by Salt (kamailio formula): read by the init script and the systemd unit.
        RUN_KAMAILIO=yes
        USER=kamailio
        GROUP=kamailio
        SHM_MEMORY={{ kamailio.shm_mb }}
        PKG_MEMORY={{ kamailio.pkg_mb }}
        CFGFILE=/etc/kamailio/kamailio.cfg
    - require:
      - pkg: kamailio-pkg-installed

kamailio-config-managed:
  file.managed:
    - name: /etc/kamailio/kamailio.cfg
    - source: salt://kamailio/files/kamailio.cfg.jinja
    - template: jinja
    - context:
        kamailio: {{ kamailio | json }}
    - user: root
    - group: kamailio
    - mode: '0640'
    - show_changes: False
    # A configuration Kamailio rejects never replaces the running one.
    - check_cmd: /usr/sbin/kamailio -c -f
    - require:
      - file: kamailio-tls-config-managed

kamailio-log-config-managed:
  file.managed:
    - name: {{ common.syslog.drop_in_dir }}/20-kamailio.conf
    - mode: '0644'
    - contents: |
        # Managed by Salt (kamailio formula): Kamailio logs to facility local0.
        local0.*  -/var/log/kamailio.log
    - require:
      - pkg: common-syslog-pkg-installed
    - watch_in:
      - service: common-syslog-service-running

{#- The packages rotate their own logs; this one is the tree's. By day, and by size
    whenever logrotate runs, copied and truncated so the syslog daemon needs no signal. #}
kamailio-logrotate-managed:
  pkg.installed:
    - name: logrotate
  file.managed:
    - name: /etc/logrotate.d/gopbx-kamailio
    - mode: '0644'
    - contents: |
        # Managed by Salt (kamailio formula).
        /var/log/kamailio.log {
            daily
            maxsize 100M
            rotate 14
            compress
            delaycompress
            missingok
            notifempty
            copytruncate
        }
    - require:
      - pkg: kamailio-logrotate-managed

{#- Kamailio exits at start when its database can't be reached. On the standby that
    is the coordinator's pgBouncer, which a parallel 'salt * state.apply' may still be
    bringing up: wait for it (up to 5 minutes) rather than fail. #}
{%- set database = kamailio.plan.pgbouncer ~ '/5432' %}
kamailio-database-reachable:
  cmd.run:
    - name: exec 3<>/dev/tcp/{{ database }}
    - shell: /bin/bash
    - unless: bash -c 'exec 3<>/dev/tcp/{{ database }}'
    - retry:
        attempts: 150
        interval: 2

{#- This host's copy of registrations (usrloc writes back to it): made once from
    the package's own schema, into a new file renamed into place, so a failed run
    never leaves half a database for Kamailio to open. #}
{%- set location_db = kamailio.location_db %}
kamailio-location-db-dir-managed:
  file.directory:
    - name: {{ salt['file.dirname'](location_db) }}
    - user: kamailio
    - group: kamailio
    - mode: '0750'
    - require:
      - pkg: kamailio-pkg-installed

kamailio-location-db-created:
  cmd.run:
    - name: >-
        rm -f {{ location_db }}.new &&
        cat /usr/share/kamailio/db_sqlite/standard-create.sql /usr/share/kamailio/db_sqlite/usrloc-create.sql
        | sqlite3 -bail {{ location_db }}.new &&
        chown kamailio:kamailio {{ location_db }}.new && chmod 0600 {{ location_db }}.new &&
        mv {{ location_db }}.new {{ location_db }}
    - creates: {{ location_db }}
    - require:
      - file: kamailio-location-db-dir-managed

kamailio-service-running:
  service.running:
    - name: kamailio
    - enable: True
    - require:
      - cmd: kamailio-database-reachable
      - cmd: kamailio-location-db-created
    - watch:
      - file: kamailio-config-managed
      - file: kamailio-tls-config-managed
      - file: kamailio-defaults-managed
{%- if not kamailio.tls_certificate %}
      - x509: kamailio-tls-self-signed-created
{%- endif %}
