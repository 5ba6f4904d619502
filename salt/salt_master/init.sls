{#- The salt-master's own configuration for GoPBX, on the host that runs it: the
    gopbx runner's settings and salt-cloud's Vultr key, from pillar, readable by root
    only. The runner reads its file at every call, so a change (a rotated password)
    needs no master restart. #}
{%- from 'salt_master/map.jinja' import salt_master with context %}
{%- set runner = {'gopbx': {
      'database_dsn': 'host=' ~ salt_master.plan.pgbouncer ~ ' port=5432 dbname=gopbx user=gopbx_salt password='
                      ~ salt_master.secrets['postgres:salt'],
      'kamailio_rpc_url': 'http://' ~ salt_master.plan.kamailio ~ ':8080/jsonrpc',
      'api_url': 'http://' ~ salt_master.plan.api ~ ':8080',
      'redis_url': 'redis://:' ~ salt_master.secrets['redis:password'] ~ '@' ~ salt_master.plan.redis ~ ':6379/0',
      'allowed_networks': salt_master.allowed_networks,
      'placement': salt_master.placement,
      'edge_hosts': salt['gopbx_pillar.plain']('keepalived:peers', {}) | list | sort,
      'database_hosts': salt['gopbx_pillar.plain']('postgres:patroni:members', []) | sort} } %}

# The region's secrets file is GPG-encrypted (#!yaml|gpg): the master decrypts it
# with its key in gpg_keydir (etc/salt/master.d/gopbx.conf), readable by root only.
salt-master-gnupg-pkg-installed:
  pkg.installed:
    - name: gnupg

salt-master-gpg-keydir-managed:
  file.directory:
    - name: {{ salt_master.config_dir }}/gpgkeys
    - user: root
    - mode: '0700'
    - makedirs: True
    - require:
      - pkg: salt-master-gnupg-pkg-installed

salt-master-runner-config-managed:
  file.managed:
    - name: {{ salt_master.config_dir }}/master.d/gopbx-runner.conf
    - contents: |
        # Managed by Salt (salt_master formula): the gopbx runner's settings.
        {{ runner | json }}
    - user: root
    - mode: '0600'
    - makedirs: True
    - show_changes: False

{%- set vultr_key = salt['pillar.get']('secrets:vultr:api_key', '') %}
{%- if vultr_key %}

salt-master-vultr-key-managed:
  file.managed:
    - name: {{ salt_master.config_dir }}/vultr-api-key
    - contents: {{ vultr_key | json }}
    - user: root
    - mode: '0600'
    - show_changes: False
{%- endif %}

{#- salt-cloud's provider (this tree's, with the API URL from pillar) and profiles,
    beside the master's configuration, where salt-cloud reads them. #}
{%- import_yaml 'salt_master/files/cloud-providers.conf' as providers %}
{%- do providers.vultr.update({'api_url': salt_master.vultr_api_url}) %}

salt-master-cloud-provider-managed:
  file.managed:
    - name: {{ salt_master.config_dir }}/cloud.providers.d/vultr.conf
    - contents: |
        # Managed by Salt (salt_master formula), from the tree's cloud.providers.d/vultr.conf.
        {{ providers | json }}
    - makedirs: True
    - mode: '0644'

salt-master-cloud-profiles-managed:
  file.managed:
    - name: {{ salt_master.config_dir }}/cloud.profiles.d/gopbx.conf
    - source: salt://salt_master/files/cloud-profiles.conf
    - makedirs: True
    - mode: '0644'
