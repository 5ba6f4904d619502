"""The pillar validator: good pillars pass, every kind of bad value fails naming its key."""

import copy

import pytest

import yaml

from tests.support import REPO, fake_secrets, load_module

gopbx_pillar = load_module("_modules", "gopbx_pillar")

PLAN = {
    "host_numbers": {"postgres": 10, "redis": 11, "pgbouncer": 12, "rtpengine_ng": 1},
    "internal": {"interface": "gopbx0", "cidr": "172.28.0.0/24"},
}


def tree_file(path):
    """A state-tree file as the file server would pick it: salt/ first, then the labs' lab/salt/."""
    for root in (REPO / "salt", REPO / "lab" / "salt"):
        if (root / path).is_file():
            return root / path
    return None


def tree_yaml(path):
    return yaml.safe_load(tree_file(path).read_text())


REDIS_DEFAULTS = tree_yaml("redis/defaults.yaml")
PGBOUNCER_DEFAULTS = tree_yaml("pgbouncer/defaults.yaml")


def good_pillar():
    return {"roles": ["coordinator"], "network": copy.deepcopy(PLAN), "secrets": fake_secrets()}


@pytest.fixture
def configure_loader_modules():
    return {gopbx_pillar: {
        "__pillar__": good_pillar(),
        "__salt__": {
            "slsutil.file_exists": lambda path: tree_file(path) is not None,
            "cp.get_file_str": lambda url: tree_file(url.removeprefix("salt://")).read_text(),
        },
    }}


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


def test_role_states_are_the_roles_files_in_order_without_repeats():
    pillar = good_pillar()
    pillar["roles"] = ["coordinator", "kamailio-standby", "coordinator"]
    assert gopbx_pillar.role_states(pillar) == ["roles.coordinator", "roles.kamailio-standby"]


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
    ("secrets:redis:password", DELETE, "redis", "pillar key 'secrets:redis:password' is missing"),
    ("secrets:redis:password", "short", "redis", "pillar key 'secrets:redis:password' must be a string"),
    ("secrets:redis:password", ["a" * 20], "redis", "pillar key 'secrets:redis:password' must be a string of at"),
    ("secrets:redis:password", "change-me-to-a-long-random-secret", "redis", "placeholder"),
    ("network:services:redis", "10.9.9.9", "redis", "pillar key 'network:services:redis' is 10.9.9.9, outside"),
    ("network:services:redis", "not-an-ip", "redis", "pillar key 'network:services:redis' must be an IP address"),
    ("network:internal:cidr", "172.28.0.1/24", "redis", "pillar key 'network:internal:cidr' must be a network"),
    ("network:host_numbers:redis", 300, "redis", "pillar key 'network:host_numbers:redis' is 300, beyond"),
    ("redis:maxmemory_mb", -5, "redis", "pillar key 'redis:maxmemory_mb' must be a positive whole number, got -5"),
    ("redis:maxmemory_mb", "lots", "redis", "pillar key 'redis:maxmemory_mb' must be a positive whole number"),
    ("redis:maxmemory_policy", "random", "redis", "pillar key 'redis:maxmemory_policy' is 'random': 'random' is not one of"),
    ("redis:maxmemory_mb", 5.5, "redis", "pillar key 'redis:maxmemory_mb' must be a positive whole number, got 5.5"),
    ("redis:maxmemory_mb", 512.0, "redis", "pillar key 'redis:maxmemory_mb' must be a positive whole number, got 512.0"),
    ("redis:maxmemroy_mb", 256, "redis", "pillar key 'redis' has unknown keys maxmemroy_mb (its keys: maxmemory_mb, "),
    ("redis:required_secrets", [], "redis", "pillar key 'redis' has unknown keys required_secrets"),
    ("redis", ["maxmemory_mb"], "redis", "pillar key 'redis' must be a mapping of the redis formula's settings"),
    ("pgbouncer:stats_users", "gopbx_metrics", "pgbouncer", "pillar key 'pgbouncer:stats_users' is 'gopbx_metrics'"),
    ("pgbouncer:stats_users", ["Robert'); --"], "pgbouncer", "pillar key 'pgbouncer:stats_users:0' must be a lower-case"),
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
        gopbx_pillar.settings(formula, defaults, pillar=pillar, schema=tree_yaml(f"{formula}/schema.yaml"))
    assert message in str(error.value)


@pytest.mark.parametrize("role", ["sbc", "../../etc/passwd", "Coordinator", 7, "roles/coordinator"])
def test_unknown_role_fails_in_the_top_file(role):
    pillar = good_pillar()
    pillar["roles"] = [role]
    with pytest.raises(gopbx_pillar.PillarError, match=f"pillar key 'roles' names an unknown role {role!r}"):
        gopbx_pillar.role_states(pillar)


def test_a_formulas_secrets_are_those_it_declares_and_optional_ones_when_present():
    pillar = good_pillar()
    api = gopbx_pillar.settings("api", tree_yaml("api/defaults.yaml"), pillar=pillar)
    assert set(api["secrets"]) == {"jwt_key", "admin_password_hash", "postgres:api", "redis:password",
                                   "freeswitch:esl_password"}
    pillar["secrets"]["api"]["previous_jwt_keys"] = ["an-old-signing-key-of-32-characters"]
    api = gopbx_pillar.settings("api", tree_yaml("api/defaults.yaml"), pillar=pillar)
    assert api["secrets"]["previous_jwt_keys"] == ["an-old-signing-key-of-32-characters"]
    pillar["secrets"]["api"]["previous_jwt_keys"] = ["short"]
    with pytest.raises(gopbx_pillar.PillarError, match="pillar key 'secrets:api:previous_jwt_keys' must be"):
        gopbx_pillar.settings("api", tree_yaml("api/defaults.yaml"), pillar=pillar)


def test_settings_from_the_command_line_read_defaults_and_schema_from_the_tree():
    assert gopbx_pillar.settings("redis")["maxmemory_policy"] == "allkeys-lru"


@pytest.mark.parametrize("roles", [DELETE, [], "coordinator", None])
def test_missing_roles_fail_in_the_top_file(roles):
    pillar = good_pillar()
    _break(pillar, "roles", roles)
    with pytest.raises(gopbx_pillar.PillarError, match="pillar key 'roles' must be a non-empty list"):
        gopbx_pillar.role_states(pillar)


def test_missing_plan_fails():
    pillar = good_pillar()
    del pillar["network"]
    with pytest.raises(gopbx_pillar.PillarError, match="pillar key 'network' is missing"):
        gopbx_pillar.role_states(pillar)
