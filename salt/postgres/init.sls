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

{%- if postgres.patroni.members %}
{%-   include 'postgres/patroni.jinja' %}
{%- else %}
{%-   include 'postgres/cluster.jinja' %}
{%- endif %}
{#- Roles, the database and migrations are written on the primary alone: a
    replica gets them by replication (and makes them itself if it is promoted). #}
{%- set on_primary = 'curl -sf -o /dev/null http://' ~ salt['gopbx_pillar.plain']('wireguard:hosts:' ~ grains['id'] ~ ':address', '')
                     ~ ':' ~ postgres.patroni.rest_port ~ '/primary' if postgres.patroni.members else 'true' %}

{%- for role, spec in postgres.login_roles | dictsort %}
postgres-role-{{ role }}-present:
  gopbx_db.role_present:
    - name: {{ role }}
    - password: {{ postgres.secrets[spec.secret] | json }}
    - replication: {{ spec.replication }}
    - onlyif: {{ on_primary }}
    - require:
      - postgres-ready
{%- endfor %}

postgres-database-present:
  gopbx_db.database_present:
    - name: {{ postgres.database }}
    - onlyif: {{ on_primary }}
    - require:
      - postgres-ready

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
    - onlyif: {{ on_primary }}
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
    - onlyif: {{ on_primary }}
    - require:
      - gopbx_db: postgres-schema-migrated
{%- endfor %}
