{#- The formulas of this minion's roles (gopbx_pillar.ROLE_STATES), in order. A bad
    'roles' value or address plan fails here, naming the pillar key. #}
include:
{%- for sls in salt['gopbx_pillar.states']() %}
  - {{ sls }}
{%- else %} []
{%- endfor %}
