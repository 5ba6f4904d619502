{#- Redis 7 for sessions, rate limits and dialog sync: on its plan address only,
    password required, bounded memory with LRU eviction. #}
{%- from 'redis/map.jinja' import redis with context %}

redis-server-pkg-installed:
  pkg.installed:
    - name: redis-server

redis-config-managed:
  file.managed:
    - name: /etc/redis/redis.conf
    - source: salt://redis/files/redis.conf.jinja
    - template: jinja
    - context:
        redis: {{ redis | json }}
    - user: redis
    - group: redis
    - mode: '0640'
    - show_changes: False
    - require:
      - pkg: redis-server-pkg-installed

redis-server-service-running:
  service.running:
    - name: redis-server
    - enable: True
    - watch:
      - file: redis-config-managed
