{#- What every GoPBX host has: its roles written down for the operator. #}
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
