{#- pgBouncer in transaction mode in front of PostgreSQL. Its auth file holds the
    same SCRAM verifiers PostgreSQL stores, so logins pass through and no
    plaintext password is kept anywhere. #}
{%- from 'pgbouncer/map.jinja' import pgbouncer with context %}
{%- from 'postgres/map.jinja' import postgres with context %}
{%- set follows_patroni = postgres.patroni.members | length > 0 %}

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
        follows_patroni: {{ follows_patroni }}
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

{%- if follows_patroni %}

{#- The primary, wherever Patroni runs it: set now, then kept by this host's own
    schedule and, at once on a role change, by the masters (gopbx_db.follow). #}
pgbouncer-follows-primary:
  gopbx_patroni.pgbouncer_follows:
    - name: /etc/pgbouncer/databases.ini
    - require:
      - pkg: pgbouncer-pkg-installed
    - require_in:
      - cmd: pgbouncer-service-restarted

pgbouncer-follows-primary-scheduled:
  schedule.present:
    - name: gopbx-pgbouncer-follows-primary
    - function: gopbx_patroni.follow
    - seconds: {{ pgbouncer.follow_interval }}
    - maxrunning: 1
    - return_job: False
{%- endif %}

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
