{#- PostgreSQL: the platform's source of truth. Installs the server, configures it
    from pillar, creates the login roles and the database, applies the migrations. #}
{%- from 'postgres/map.jinja' import postgres with context %}
{%- set version = postgres.version %}

{%- if postgres.pgdg %}
postgres-repo-pgdg-managed:
  pkgrepo.managed:
    - name: deb [signed-by=/usr/share/keyrings/pgdg.asc] https://apt.postgresql.org/pub/repos/apt {{ grains.oscodename }}-pgdg main
    - file: /etc/apt/sources.list.d/pgdg.list
    - key_url: https://www.postgresql.org/media/keys/ACCC4CF8.asc
    - aptkey: False
    - require_in:
      - pkg: postgres-server-pkg-installed
{%- endif %}

postgres-server-pkg-installed:
  pkg.installed:
    - pkgs:
      - postgresql-{{ version }}
      - postgresql-client-{{ version }}

postgres-cluster-created:
  cmd.run:
    - name: pg_createcluster {{ version }} main
    - creates: {{ postgres.conf_dir }}/postgresql.conf
    - require:
      - pkg: postgres-server-pkg-installed

postgres-config-managed:
  file.managed:
    - name: {{ postgres.conf_dir }}/conf.d/gopbx.conf
    - source: salt://postgres/files/gopbx.conf.jinja
    - template: jinja
    - context:
        postgres: {{ postgres | json }}
    - user: postgres
    - group: postgres
    - mode: '0644'
    - require:
      - cmd: postgres-cluster-created

postgres-hba-managed:
  file.managed:
    - name: {{ postgres.conf_dir }}/pg_hba.conf
    - source: salt://postgres/files/pg_hba.conf.jinja
    - template: jinja
    - context:
        postgres: {{ postgres | json }}
    - user: postgres
    - group: postgres
    - mode: '0640'
    - require:
      - cmd: postgres-cluster-created

postgres-service-running:
  service.running:
    - name: postgresql
    - enable: True
    - watch:
      - file: postgres-config-managed

postgres-hba-reloaded:
  cmd.run:
    - name: pg_ctlcluster {{ version }} main reload
    - onchanges:
      - file: postgres-hba-managed
    - require:
      - service: postgres-service-running

{%- for role, spec in postgres.login_roles | dictsort %}
postgres-role-{{ role }}-present:
  gopbx_db.role_present:
    - name: {{ role }}
    - password: {{ postgres.secrets[spec.secret] | json }}
    - replication: {{ spec.replication }}
    - require:
      - service: postgres-service-running
{%- endfor %}

postgres-database-present:
  gopbx_db.database_present:
    - name: {{ postgres.database }}
    - require:
      - service: postgres-service-running

postgres-migrations-files-managed:
  file.recurse:
    - name: /usr/share/gopbx/migrations
    - source: salt://postgres/files/migrations
    - clean: True
    - file_mode: '0644'
    - dir_mode: '0755'

postgres-schema-migrated:
  gopbx_db.migrated:
    - name: {{ postgres.database }}
    - directory: /usr/share/gopbx/migrations
    - require:
      - gopbx_db: postgres-database-present
      - file: postgres-migrations-files-managed
{%- for role in postgres.login_roles %}
      - gopbx_db: postgres-role-{{ role }}-present
{%- endfor %}
{%- for setid, dispatcher_set in postgres.dispatcher_sets | dictsort %}

postgres-dispatcher-set-{{ setid }}-present:
  gopbx_db.dispatcher_set:
    - name: '{{ setid }}'
    - description: {{ dispatcher_set.description | json }}
    - region: {{ dispatcher_set.region | json }}
    - require:
      - gopbx_db: postgres-schema-migrated
{%- endfor %}
