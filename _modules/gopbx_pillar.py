"""
Validate the GoPBX pillar and hand each formula its settings.

Every formula's ``map.jinja`` calls :func:`settings`, and ``top.sls`` calls
:func:`states`. Both raise on the first bad value with a message that names
the pillar key, so a bad pillar fails at render time: Salt renders the whole
highstate before it runs any state, so nothing is applied.

Roles come from pillar, which the pillar top assigns by minion id. A minion
controls its own grains, so grains never decide a role or a secret.
"""

import copy
import ipaddress

import salt.utils.secret
from salt.exceptions import CommandExecutionError

__virtualname__ = "gopbx_pillar"

# Which formulas each role runs, in order. Later work adds kamailio,
# rtpengine, api, nginx, monitoring, keepalived and firewall here.
ROLE_STATES = {
    "coordinator": ["network", "postgres", "pgbouncer", "redis"],
    "kamailio-standby": [],
    "pg-replica": [],
    "freeswitch": [],
}

# A formula's defaults.yaml lists the secrets it needs under 'required_secrets':
# pillar keys under 'secrets:<formula>'.
MIN_SECRET_LENGTH = 16


def __virtual__():
    return __virtualname__


class PillarError(CommandExecutionError):
    """A pillar value is missing or wrong; the message names its key."""


# --- small checks: each returns the value or raises ValueError(reason) ---


def _positive_int(value):
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"must be a positive whole number, got {value!r}")
    return value


def _non_negative_int(value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"must be a whole number of 0 or more, got {value!r}")
    return value


def _one_of(*allowed):
    def check(value):
        if value not in allowed:
            raise ValueError(f"must be one of {', '.join(map(str, allowed))}; got {value!r}")
        return value

    return check


def _boolean(value):
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, got {value!r}")
    return value


def _network(value):
    try:
        return ipaddress.ip_network(str(value), strict=True)
    except ValueError as exc:
        raise ValueError(f"must be a network in CIDR form, got {value!r} ({exc})") from None


def _address(value):
    try:
        return ipaddress.ip_address(str(value))
    except ValueError:
        raise ValueError(f"must be an IP address, got {value!r}") from None


def _list_of(check):
    def check_list(value):
        if not isinstance(value, list):
            raise ValueError(f"must be a list, got {value!r}")
        return [check(item) for item in value]

    return check_list


# Per formula: key -> check, applied to defaults merged with pillar.
SCHEMA = {
    "postgres": {
        "version": _one_of(15, 16, 17),
        "pgdg": _boolean,
        "max_connections": _positive_int,
        "shared_buffers_mb": _positive_int,
        "max_wal_senders": _non_negative_int,
        "wal_keep_size_mb": _non_negative_int,
        "client_networks": _list_of(_network),
        "replicas": _list_of(_address),
        "extra_listen_addresses": _list_of(_address),
    },
    "pgbouncer": {
        "pool_mode": _one_of("transaction", "session", "statement"),
        "default_pool_size": _positive_int,
        "max_client_conn": _positive_int,
        "max_db_connections": _positive_int,
    },
    "redis": {
        "maxmemory_mb": _positive_int,
        "maxmemory_policy": _one_of(
            "allkeys-lru", "allkeys-lfu", "volatile-lru", "volatile-lfu", "noeviction"
        ),
    },
    "network": {},
}


def _fail(key, reason):
    raise PillarError(f"pillar key '{key}' {reason}")


def _lookup(data, path):
    """Value at a colon path in nested dicts, or None."""
    for part in path.split(":"):
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


def _merge(base, override):
    """Deep-merge override onto a copy of base (dicts merge, the rest replaces)."""
    merged = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _plain(value):
    """A deep copy made of plain dicts and lists (pillar from a master arrives masked)."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def _pillar():
    # __pillar__ is the loader's context wrapper: copy it into plain dicts, so
    # that the plan and settings print as they are; secrets are masked again below.
    pillar = __pillar__  # noqa: F821  (a loader dunder)
    return _plain({key: pillar[key] for key in pillar})


def roles(pillar=None):
    """
    The validated roles of this minion.

    CLI Example:

    .. code-block:: bash

        salt-call gopbx_pillar.roles
    """
    pillar = _pillar() if pillar is None else pillar
    value = pillar.get("roles")
    if not isinstance(value, list) or not value:
        _fail("roles", f"must be a non-empty list of roles ({', '.join(ROLE_STATES)}), got {value!r}")
    for role in value:
        if role not in ROLE_STATES:
            _fail("roles", f"names an unknown role {role!r}; known roles: {', '.join(ROLE_STATES)}")
    return list(value)


def network(pillar=None):
    """
    The validated address plan. Each service's address is its host number
    (``network:host_numbers``) inside ``network:internal:cidr``, unless
    ``network:services:<name>`` sets it; either way it must lie in that network.

    CLI Example:

    .. code-block:: bash

        salt-call gopbx_pillar.network
    """
    pillar = _pillar() if pillar is None else pillar
    plan = pillar.get("network")
    if not isinstance(plan, dict):
        _fail("network", "is missing: the address plan is required")
    cidr = _lookup(plan, "internal:cidr")
    if cidr is None:
        _fail("network:internal:cidr", "is missing")
    try:
        internal = _network(cidr)
    except ValueError as exc:
        _fail("network:internal:cidr", str(exc))
    if not _lookup(plan, "internal:interface"):
        _fail("network:internal:interface", "is missing")
    services = {}
    for name, number in (plan.get("host_numbers") or {}).items():
        key = f"network:host_numbers:{name}"
        try:
            _positive_int(number)
        except ValueError as exc:
            _fail(key, str(exc))
        if number >= internal.num_addresses - 1:
            _fail(key, f"is {number}, beyond the plan's network {internal}")
        services[name] = str(internal[number])
    for name, value in (plan.get("services") or {}).items():
        key = f"network:services:{name}"
        try:
            address = _address(value)
        except ValueError as exc:
            _fail(key, str(exc))
        if address not in internal:
            _fail(key, f"is {address}, outside the plan's network {internal}")
        services[name] = str(address)
    if not services:
        _fail("network:host_numbers", "must give each service its host number")
    result = copy.deepcopy(plan)
    result["services"] = services
    return result


def _check_secrets(formula, required, pillar):
    found = {}
    for name in required:
        key = f"secrets:{formula}:{name}"
        value = _lookup(pillar, key)
        if value is None or value == "":
            _fail(key, "is missing: a required secret (lab: made by the lab command; production: encrypted pillar)")
        if not isinstance(value, str) or len(value) < MIN_SECRET_LENGTH:
            _fail(key, f"must be a string of at least {MIN_SECRET_LENGTH} characters")
        if "change-me" in value.lower():
            _fail(key, "still holds the example's placeholder: set a real secret")
        found[name] = value
    return found


def settings(formula, defaults=None, pillar=None):
    """
    A formula's settings: its ``defaults.yaml`` merged with pillar, validated,
    plus ``address`` (its place in the plan), ``plan`` (all service addresses),
    ``plan_network`` and ``secrets`` (those its ``required_secrets`` names). Raises, naming the key, on any bad value.

    CLI Example:

    .. code-block:: bash

        salt-call gopbx_pillar.settings redis
    """
    if formula not in SCHEMA:
        raise PillarError(f"no settings schema for formula {formula!r}")
    pillar = _pillar() if pillar is None else pillar
    roles(pillar)
    plan = network(pillar)
    merged = _merge(defaults or {}, pillar.get(formula) or {})
    for key, check in SCHEMA[formula].items():
        if key not in merged:
            _fail(f"{formula}:{key}", "is missing")
        try:
            check(merged[key])
        except ValueError as exc:
            _fail(f"{formula}:{key}", str(exc))
    _check_relations(formula, merged, pillar)
    merged["plan"] = plan["services"]
    merged["plan_network"] = plan["internal"]["cidr"]
    merged["address"] = plan["services"].get(formula)
    # Masked in any output (templates still read the plain values).
    merged["secrets"] = salt.utils.secret.hide(_check_secrets(formula, merged.get("required_secrets", []), pillar))
    return merged


def _check_relations(formula, merged, pillar):
    """Checks that span keys: pgBouncer must not open more server connections than PostgreSQL allows."""
    if formula != "pgbouncer":
        return
    pg_max = _lookup(pillar, "postgres:max_connections") or 100
    if merged["max_db_connections"] >= pg_max:
        _fail(
            "pgbouncer:max_db_connections",
            f"is {merged['max_db_connections']}: it must stay below postgres:max_connections ({pg_max}) "
            "to leave room for superuser and replication connections",
        )
    if merged["default_pool_size"] > merged["max_db_connections"]:
        _fail("pgbouncer:default_pool_size", "must not exceed pgbouncer:max_db_connections")


def states(pillar=None):
    """
    The formulas this minion runs, from its validated roles, in order.

    CLI Example:

    .. code-block:: bash

        salt-call gopbx_pillar.states
    """
    pillar = _pillar() if pillar is None else pillar
    ordered = []
    for role in roles(pillar):
        for sls in ROLE_STATES[role]:
            if sls not in ordered:
                ordered.append(sls)
    network(pillar)
    return ordered
