"""The pillar validator: good pillars pass, every kind of bad value fails naming its key."""

import copy

import pytest

from tests.support import fake_secrets, load_module

gopbx_pillar = load_module("_modules", "gopbx_pillar")

PLAN = {
    "host_numbers": {"postgres": 10, "redis": 11, "pgbouncer": 12, "rtpengine_ng": 1},
    "internal": {"interface": "gopbx0", "cidr": "172.28.0.0/24"},
}
REDIS_DEFAULTS = {"maxmemory_mb": 512, "maxmemory_policy": "allkeys-lru", "required_secrets": ["password"]}
PGBOUNCER_DEFAULTS = {
    "pool_mode": "transaction",
    "default_pool_size": 40,
    "max_client_conn": 500,
    "max_db_connections": 80,
    "required_secrets": [],
}


def good_pillar():
    return {"roles": ["coordinator"], "network": copy.deepcopy(PLAN), "secrets": fake_secrets()}


@pytest.fixture
def configure_loader_modules():
    return {gopbx_pillar: {"__pillar__": good_pillar()}}


def test_settings_merge_defaults_pillar_and_plan():
    pillar = good_pillar()
    pillar["redis"] = {"maxmemory_mb": 256}
    redis = gopbx_pillar.settings("redis", REDIS_DEFAULTS, pillar=pillar)
    assert redis["maxmemory_mb"] == 256
    assert redis["maxmemory_policy"] == "allkeys-lru"
    assert redis["address"] == "172.28.0.11"
    assert redis["plan"]["postgres"] == "172.28.0.10"
    assert redis["secrets"]["password"] == pillar["secrets"]["redis"]["password"]


def test_settings_read_the_minions_pillar_through_the_loader():
    assert gopbx_pillar.settings("redis", REDIS_DEFAULTS)["address"] == "172.28.0.11"


def test_states_follow_roles_in_order_without_repeats():
    pillar = good_pillar()
    pillar["roles"] = ["coordinator", "kamailio-standby", "coordinator"]
    assert gopbx_pillar.states(pillar) == gopbx_pillar.ROLE_STATES["coordinator"]


def test_explicit_service_address_inside_the_plan_wins():
    pillar = good_pillar()
    pillar["network"]["services"] = {"redis": "172.28.0.99"}
    assert gopbx_pillar.network(pillar)["services"]["redis"] == "172.28.0.99"


def _break(pillar, path, value):
    *parents, last = path.split(":")
    node = pillar
    for part in parents:
        node = node.setdefault(part, {})
    if value is DELETE:
        node.pop(last, None)
    else:
        node[last] = value


DELETE = object()

BAD = [
    ("roles", ["coordinator", "pbx-of-doom"], "redis", "pillar key 'roles' names an unknown role 'pbx-of-doom'"),
    ("roles", DELETE, "redis", "pillar key 'roles' must be a non-empty list"),
    ("secrets:redis:password", DELETE, "redis", "pillar key 'secrets:redis:password' is missing"),
    ("secrets:redis:password", "short", "redis", "pillar key 'secrets:redis:password' must be a string of at least"),
    ("secrets:redis:password", "change-me-to-a-long-random-secret", "redis", "placeholder"),
    ("network:services:redis", "10.9.9.9", "redis", "pillar key 'network:services:redis' is 10.9.9.9, outside"),
    ("network:services:redis", "not-an-ip", "redis", "pillar key 'network:services:redis' must be an IP address"),
    ("network:internal:cidr", "172.28.0.1/24", "redis", "pillar key 'network:internal:cidr' must be a network"),
    ("network:host_numbers:redis", 300, "redis", "pillar key 'network:host_numbers:redis' is 300, beyond"),
    ("redis:maxmemory_mb", -5, "redis", "pillar key 'redis:maxmemory_mb' must be a positive whole number, got -5"),
    ("redis:maxmemory_mb", "lots", "redis", "pillar key 'redis:maxmemory_mb' must be a positive whole number"),
    ("redis:maxmemory_policy", "random", "redis", "pillar key 'redis:maxmemory_policy' must be one of"),
    ("pgbouncer:default_pool_size", 0, "pgbouncer", "pillar key 'pgbouncer:default_pool_size' must be a positive"),
    ("pgbouncer:max_client_conn", True, "pgbouncer", "pillar key 'pgbouncer:max_client_conn' must be a positive"),
    ("pgbouncer:max_db_connections", 100, "pgbouncer", "pillar key 'pgbouncer:max_db_connections' is 100"),
    ("pgbouncer:default_pool_size", 90, "pgbouncer", "pillar key 'pgbouncer:default_pool_size' must not exceed"),
]


@pytest.mark.parametrize("path,value,formula,message", BAD, ids=[f"{case[0]}={case[1]!r}" for case in BAD])
def test_bad_pillar_fails_naming_the_key(path, value, formula, message):
    pillar = good_pillar()
    _break(pillar, path, value)
    defaults = {"redis": REDIS_DEFAULTS, "pgbouncer": PGBOUNCER_DEFAULTS}[formula]
    with pytest.raises(gopbx_pillar.PillarError) as error:
        gopbx_pillar.settings(formula, defaults, pillar=pillar)
    assert message in str(error.value)


def test_unknown_role_fails_in_the_top_file_too():
    pillar = good_pillar()
    pillar["roles"] = ["sbc"]
    with pytest.raises(gopbx_pillar.PillarError, match="pillar key 'roles' names an unknown role 'sbc'"):
        gopbx_pillar.states(pillar)


def test_missing_plan_fails():
    pillar = good_pillar()
    del pillar["network"]
    with pytest.raises(gopbx_pillar.PillarError, match="pillar key 'network' is missing"):
        gopbx_pillar.states(pillar)
