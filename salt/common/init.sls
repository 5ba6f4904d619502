{#- What every GoPBX host has: its roles written down, and a syslog daemon. #}
{%- from 'common/map.jinja' import common with context %}
{%- set roles = salt['gopbx_pillar.roles']() %}

common-roles-file-managed:
  file.managed:
    - name: /etc/gopbx/roles
    - makedirs: True
    - mode: '0644'
    - contents: |
        # Managed by Salt. This host's GoPBX roles, assigned by pillar from its minion id.
        {%- for role in roles %}
        {{ role }}
        {%- endfor %}

# Services log through syslog; the daemon keeps readable files under /var/log.
common-syslog-pkg-installed:
  pkg.installed:
    - name: {{ common.syslog.package }}

common-syslog-service-running:
  service.running:
    - name: {{ common.syslog.service }}
    - sig: {{ common.syslog.process }}
    - enable: True
    - require:
      - pkg: common-syslog-pkg-installed
