{#- pgBouncer in transaction mode in front of PostgreSQL. Its auth file holds the
    same SCRAM verifiers PostgreSQL stores, so logins pass through and no
    plaintext password is kept anywhere. #}
{%- from 'pgbouncer/map.jinja' import pgbouncer with context %}
{%- from 'postgres/map.jinja' import postgres with context %}

pgbouncer-pkg-installed:
  pkg.installed:
    - name: pgbouncer

pgbouncer-config-managed:
  file.managed:
    - name: /etc/pgbouncer/pgbouncer.ini
    - source: salt://pgbouncer/files/pgbouncer.ini.jinja
    - template: jinja
    - context:
        pgbouncer: {{ pgbouncer | json }}
        database: {{ postgres.database }}
    - user: postgres
    - group: postgres
    - mode: '0640'
    - require:
      - pkg: pgbouncer-pkg-installed

pgbouncer-userlist-managed:
  file.managed:
    - name: /etc/pgbouncer/userlist.txt
    - user: postgres
    - group: postgres
    - mode: '0640'
    - show_changes: False
    - contents: |
        ; Managed by Salt (pgbouncer formula): SCRAM verifiers, the same PostgreSQL stores.
        {%- for role, spec in postgres.login_roles | dictsort if spec.pooled %}
        "{{ role }}" "{{ salt['gopbx_db.scram_verifier'](postgres.secrets[spec.secret], role) }}"
        {%- endfor %}
    - require:
      - pkg: pgbouncer-pkg-installed

# A changed pgbouncer.ini gets a full stop and start: Debian's init script
# restarts "online" through the unix socket, which this setup turns off.
pgbouncer-service-restarted:
  cmd.run:
    - name: service pgbouncer stop && service pgbouncer start
    - onchanges:
      - file: pgbouncer-config-managed

# A changed auth file only needs a reload (SIGHUP), which keeps client connections.
pgbouncer-service-running:
  service.running:
    - name: pgbouncer
    - enable: True
    - reload: True
    - watch:
      - file: pgbouncer-userlist-managed
    - require:
      - cmd: pgbouncer-service-restarted
