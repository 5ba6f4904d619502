{#- A probe for the master/minion test: it uses the custom modules the minion
    synced from the master and pillar the master compiled for this minion id. #}
{%- from 'redis/map.jinja' import redis with context %}
{%- set plan = salt['gopbx_pillar.network']() %}

gopbx-probe-file-managed:
  file.managed:
    - name: {{ pillar['probe_path'] }}
    - contents: |
        roles {{ salt['gopbx_pillar.roles']() | join(',') }}
        redis {{ redis.address }}
        postgres {{ plan.services.postgres }}
        verifier {{ salt['gopbx_db.scram_verifier']('probe-password-123', 'probe') }}
