{#- The states of this minion's roles: roles/<role>.sls for each role its pillar
    gives it (by minion id). A bad 'roles' value or address plan fails here,
    naming the pillar key. #}
include:
{%- for sls in salt['gopbx_pillar.role_states']() %}
  - {{ sls }}
{%- endfor %}
