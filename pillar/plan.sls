# The seed's address plan: each service's host number inside a region's internal
# network (network:internal:cidr). 172.28.0.0/24 in production gives the seed's
# table (postgres 172.28.0.10, ...); the lab's 127.28.0.0/24 the same on loopback.
network:
  host_numbers:
    rtpengine_ng: 1
    postgres: 10
    redis: 11
    pgbouncer: 12
    nginx: 13
    kamailio: 15
    api: 30
    dns: 53
    prometheus: 40
    grafana: 41
    node_exporter: 42
    postgres_exporter: 43
    redis_exporter: 44
