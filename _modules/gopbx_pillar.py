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
import re

import salt.utils.secret
from salt.exceptions import CommandExecutionError

__virtualname__ = "gopbx_pillar"

# Which formulas each role runs, in order. Later work adds kamailio,
# rtpengine, api, nginx, monitoring, keepalived and firewall here.
ROLE_STATES = {
    "coordinator": ["network", "postgres", "pgbouncer", "redis", "rtpengine", "kamailio", "api", "nginx",
                    "salt_master"],
    "kamailio-standby": ["kamailio"],
    "pg-replica": [],
    "freeswitch": ["freeswitch", "freeswitch.ready"],
    # Lab only: SIPp stand-ins in place of FreeSWITCH media nodes (no Debian 12 package).
    "media-standin": ["media_standin"],
}

# A formula's defaults.yaml lists the secrets it needs under 'required_secrets':
# 'name' is pillar key 'secrets:<formula>:name'; 'other:name' is 'secrets:other:name'.
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


def _version(value):
    if not isinstance(value, str) or not re.fullmatch(r"[0-9]+\.[0-9]+", value):
        raise ValueError(f"must be a quoted 'major.minor' version such as '5.8', got {value!r}")
    return value


def _port(value):
    _positive_int(value)
    if value > 65535:
        raise ValueError(f"must be a port number (1-65535), got {value!r}")
    return value


def _port_range(value):
    if not isinstance(value, list) or len(value) != 2:
        raise ValueError(f"must be [first, last], got {value!r}")
    first, last = (_port(port) for port in value)
    if first >= last:
        raise ValueError(f"must run from a lower to a higher port, got {value!r}")
    return value


def _dict_of(schema):
    def check(value):
        if not isinstance(value, dict):
            raise ValueError(f"must be a mapping, got {value!r}")
        for key, item_check in schema.items():
            if key not in value:
                raise ValueError(f"lacks '{key}'")
            try:
                item_check(value[key])
            except ValueError as exc:
                raise ValueError(f"'{key}' {exc}") from None
        return value

    return check


def _text(value):
    if not isinstance(value, str) or not value:
        raise ValueError(f"must be a non-empty string, got {value!r}")
    return value


def _text_or_empty(value):
    if not isinstance(value, str):
        raise ValueError(f"must be a string, got {value!r}")
    return value


_HOSTNAME = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")


def _hostname(value):
    if not isinstance(value, str) or not _HOSTNAME.fullmatch(value):
        raise ValueError(f"must be a lower-case DNS name such as api.gopbx.au, got {value!r}")
    return value


def _address_or_empty(value):
    return value if value == "" else _address(value)


_IDENTIFIER = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")


def _identifier(value):
    if not isinstance(value, str) or not _IDENTIFIER.fullmatch(value):
        raise ValueError(f"must be a lower-case name (letters, digits, '-', '_'), got {value!r}")
    return value


def _module_name(value):
    if not isinstance(value, str) or not re.fullmatch(r"mod_[a-z0-9_]+", value):
        raise ValueError(f"must name FreeSWITCH modules as mod_<name>, got {value!r}")
    return value


def _dispatcher_sets(value):
    if not isinstance(value, dict) or not all(
            isinstance(setid, int) and not isinstance(setid, bool) and 0 < setid <= 2**31 - 1
            and isinstance(spec, dict) and set(spec) == {"region", "description"}
            and isinstance(spec["region"], str) and re.fullmatch(r"[a-z]{2,16}", spec["region"])
            and isinstance(spec["description"], str) and 0 < len(spec["description"]) <= 200
            for setid, spec in value.items()):
        raise ValueError("must map set ids (positive whole numbers) to {region: <lower-case name>, "
                         f"description: <text>}}, got {value!r}")
    return value


def _url(value):
    if not isinstance(value, str) or not re.fullmatch(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?",
                                                      value):
        raise ValueError(f"must be an http(s) URL, got {value!r}")
    return value


def _placement(value):
    if not isinstance(value, dict) or not all(
            isinstance(node, str) and re.fullmatch(r"fs-[a-z]+-[0-9]+", node) and isinstance(setid, int)
            and not isinstance(setid, bool) and setid > 0 for node, setid in value.items()):
        raise ValueError(f"must map media node ids (fs-<region>-<n>) to dispatcher sets (positive whole numbers), "
                         f"got {value!r}")
    return value


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
        "dispatcher_sets": _dispatcher_sets,
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
    "kamailio": {
        "version": _version,
        "repo": _boolean,
        "sip_addresses": _list_of(_address),
        "sip_port": _port,
        "tls_port": _port,
        "rpc_port": _port,
        "shm_mb": _positive_int,
        "pkg_mb": _positive_int,
        "udp_workers": _positive_int,
        "tcp_workers": _positive_int,
        "pike": _dict_of({"sampling_seconds": _positive_int, "reqs_density": _positive_int,
                          "ban_seconds": _positive_int}),
        "dispatcher": _dict_of({"ping_seconds": _positive_int, "failed_probes": _positive_int,
                                "ok_probes": _positive_int}),
        "media_timeout_seconds": _positive_int,
        "nat_ping_seconds": _positive_int,
        "max_contacts": _positive_int,
        "srtp": _boolean,
    },
    "rtpengine": {
        "interface_address": _address,
        "ng_port": _port,
        "rtp_ports": _port_range,
        "kernel_forwarding": _boolean,
        "delete_delay_seconds": _non_negative_int,
    },
    "api": {
        "port": _port,
        "workers": _positive_int,
        "jwt_ttl_seconds": _positive_int,
        "esl_port": _port,
        "sse_heartbeat_seconds": _positive_int,
        "salt_webhook_url": _text_or_empty,
        "pip_options": _text_or_empty,
    },
    "nginx": {
        "server_name": _hostname,
        "extra_listen_addresses": _list_of(_address),
        "certificate": _one_of("letsencrypt", "self_signed"),
        "acme_email": _text_or_empty,
        "acme_webroot": _text,
        "api_max_body_kb": _positive_int,
        "grafana_max_body_mb": _positive_int,
        "sse_read_timeout_seconds": _positive_int,
        "token_requests_per_second": _positive_int,
        "tls_dir": _text,
    },
    "freeswitch": {
        "repo": _boolean,
        "binary": _one_of("package", "double"),
        "version": _version,
        "node_network": _network,
        "node_address": _address_or_empty,
        "capacity": _positive_int,
        "sessions_per_second": _positive_int,
        "sip_port": _port,
        "esl_port": _port,
        "rtp_ports": _port_range,
        "extra_kamailio_addresses": _list_of(_address),
        "extra_coordinator_addresses": _list_of(_address),
        "profile": _identifier,
        "inbound_context": _identifier,
        "media_timeout_seconds": _positive_int,
        "media_hold_timeout_seconds": _positive_int,
        "xml_curl_timeout_seconds": _positive_int,
        "modules": _list_of(_module_name),
        "config_dir": _text,
    },
    "salt_master": {
        "config_dir": _text,
        "allowed_networks": _list_of(_network),
        "placement": _placement,
        "vultr_api_url": _url,
    },
    "media_standin": {
        "setid": _positive_int,
        "addresses": _list_of(_text),
        "dispatcher": _boolean,
    },
    "common": {
        "syslog": _dict_of({"package": _text, "service": _text, "drop_in_dir": _text, "process": _text}),
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
    if _lookup(plan, "internal:link_type") not in (None, "dummy", "bridge"):
        _fail("network:internal:link_type", f"must be dummy or bridge, got {_lookup(plan, 'internal:link_type')!r}")
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
        key = f"secrets:{name}" if ":" in name else f"secrets:{formula}:{name}"
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
    """Checks that span keys."""
    if formula == "kamailio" and not merged["sip_addresses"]:
        _fail("kamailio:sip_addresses", "must list at least one address for SIP to listen on")
    if formula == "nginx" and merged["certificate"] == "letsencrypt" and "@" not in merged["acme_email"]:
        _fail("nginx:acme_email", "must be an address Let's Encrypt can write to when nginx:certificate is letsencrypt")
    if formula == "freeswitch":
        _check_freeswitch(merged, pillar)
    if formula != "pgbouncer":
        return
    # pgBouncer must not open more server connections than PostgreSQL allows.
    pg_max = _lookup(pillar, "postgres:max_connections") or 100
    if merged["max_db_connections"] >= pg_max:
        _fail(
            "pgbouncer:max_db_connections",
            f"is {merged['max_db_connections']}: it must stay below postgres:max_connections ({pg_max}) "
            "to leave room for superuser and replication connections",
        )
    if merged["default_pool_size"] > merged["max_db_connections"]:
        _fail("pgbouncer:default_pool_size", "must not exceed pgbouncer:max_db_connections")


def _check_freeswitch(merged, pillar):
    if merged["repo"] and not _lookup(pillar, "secrets:freeswitch:signalwire_token"):
        _fail("secrets:freeswitch:signalwire_token",
              "is missing: SignalWire's repository (freeswitch:repo) needs its token")
    if merged["node_address"] and _address(merged["node_address"]) not in _network(merged["node_network"]):
        _fail("freeswitch:node_address", f"is {merged['node_address']}, outside freeswitch:node_network "
              f"({merged['node_network']})")
    for key in ("mod_sofia", "mod_xml_curl", "mod_event_socket", "mod_hash"):
        if key not in merged["modules"]:
            _fail("freeswitch:modules", f"must load {key}: the node cannot work without it")


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


def plain(key, default=None):
    """
    A pillar value, unmasked, for any key outside ``secrets`` (Salt 3008 masks
    every value pillar.get prints; addresses and settings need not be hidden).

    CLI Example:

    .. code-block:: bash

        salt-call gopbx_pillar.plain kamailio:sip_addresses
    """
    if key == "secrets" or key.startswith("secrets:"):
        raise PillarError("secrets are not printed: use pillar.get, which masks them")
    value = _lookup(_pillar(), key)
    return default if value is None else value
