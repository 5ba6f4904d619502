{#- Roles come from pillar, and the pillar top assigns them by minion id: a minion
    controls its own grains, so grains never decide what a host becomes.
    gopbx_pillar.states validates the roles and the address plan first. #}
base:
  '*':
    - common
{%- for sls in salt['gopbx_pillar.states']() %}
    - {{ sls }}
{%- endfor %}
