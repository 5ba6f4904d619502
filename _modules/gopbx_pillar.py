"""
Validate the GoPBX pillar and hand each formula its settings.

Every formula's ``map.jinja`` calls :func:`settings` with its ``defaults.yaml``
and ``schema.yaml`` (JSON Schema; unknown keys are refused), and
``roles/init.sls`` calls :func:`role_states`. Both raise on the first bad value with a message that names
the pillar key, so a bad pillar fails at render time: Salt renders the whole
highstate before it runs any state, so nothing is applied.

Roles come from pillar, which the pillar top assigns by minion id. A minion
controls its own grains, so grains never decide a role or a secret.
"""

import copy
import ipaddress
import re

import jsonschema
import salt.utils.data
import salt.utils.dictupdate
import salt.utils.secret
import salt.utils.yaml
from salt.exceptions import CommandExecutionError

__virtualname__ = "gopbx_pillar"

# A formula's defaults.yaml names the secrets it needs under 'required_secrets'
# (and those it uses when present under 'optional_secrets'): 'name' is pillar key
# 'secrets:<formula>:name'; 'other:name' is 'secrets:other:name'. The ext_pillar
# gopbx_secrets hands a minion exactly these, for the formulas of its roles.
SECRET_DECLARATIONS = ("required_secrets", "optional_secrets")
MIN_SECRET_LENGTH = 16
# Secrets go into configuration files (XML, Kamailio's, JSON) and connection URLs:
# no spaces, quotes or characters those give a meaning, and plain ASCII (Kamailio's
# libpq logins fail with other bytes). Passwords inside URLs take fewer still.
SECRET_CHARACTERS = re.compile(r"^[A-Za-z0-9._~+=/$-]+$")
URL_SECRET_CHARACTERS = re.compile(r"^[A-Za-z0-9._~-]+$")
URL_SECRETS = ("secrets:postgres:", "secrets:redis:")
ROLE_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}$")

_HOSTNAME = r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$"

# Shared by every formula's schema.yaml as '#/$defs/<name>'. 'description' is
# what an error says the value must be.
DEFINITIONS = {
    "positive_int": {"type": "integer", "minimum": 1, "description": "a positive whole number"},
    "non_negative_int": {"type": "integer", "minimum": 0, "description": "a whole number of 0 or more"},
    "port": {"type": "integer", "minimum": 1, "maximum": 65535, "description": "a port number (1-65535)"},
    "port_range": {"type": "array", "minItems": 2, "maxItems": 2, "items": {"$ref": "#/$defs/port"},
                   "description": "[first port, last port]"},
    "address": {"type": "string", "format": "ip-address", "description": "an IP address"},
    "network": {"type": "string", "format": "ip-network", "description": "a network in CIDR form such as 10.0.0.0/8"},
    "version": {"type": "string", "pattern": r"^[0-9]+\.[0-9]+$",
                "description": "a quoted 'major.minor' version such as '5.8'"},
    "name": {"type": "string", "pattern": r"^[a-z][a-z0-9_-]{0,62}$",
             "description": "a lower-case name (letters, digits, '-', '_')"},
    "sql_name": {"type": "string", "pattern": r"^[a-z_][a-z0-9_]{0,62}$",
                 "description": "a lower-case SQL name (letters, digits, '_')"},
    "package": {"type": "string", "pattern": r"^[a-z0-9][a-z0-9+.-]+$", "description": "a Debian package name"},
    "hostname": {"type": "string", "pattern": _HOSTNAME,
                 "description": "a lower-case DNS name such as api.gopbx.au"},
    "absolute_path": {"type": "string", "pattern": r"^(/[A-Za-z0-9._-]+)+/?$",
                      "description": "an absolute path of letters, digits, '.', '_' and '-'"},
    "minion_id": {"type": "string", "pattern": r"^[a-z]+-[a-z]+-[0-9]+$",
                  "description": "a minion id <role>-<location>-<n> such as kam-mel-1"},
    "interface": {"type": "string", "pattern": r"^[A-Za-z0-9_.-]{1,15}$",
                  "description": "a network interface name (up to 15 letters, digits, '_', '.', '-')"},
    "url": {"type": "string", "pattern": r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?$",
            "description": "an http(s) URL"},
}

FORMATS = jsonschema.FormatChecker(formats=())
# JSON Schema counts 5.0 as an integer; a config file would then say "5.0".
VALIDATOR = jsonschema.validators.extend(jsonschema.Draft202012Validator, type_checker=(
    jsonschema.Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda checker, value: isinstance(value, int) and not isinstance(value, bool))))


@FORMATS.checks("ip-address", raises=ValueError)
def _is_address(value):
    return not isinstance(value, str) or bool(ipaddress.ip_address(value))


@FORMATS.checks("ip-network", raises=ValueError)
def _is_network(value):
    return not isinstance(value, str) or bool(ipaddress.ip_network(value, strict=True))


def __virtual__():
    return __virtualname__


class PillarError(CommandExecutionError):
    """A pillar value is missing or wrong; the message names its key."""


def _fail(key, reason):
    raise PillarError(f"pillar key '{key}' {reason}")


def _lookup(data, path):
    """Value at a colon path in nested dicts, or None."""
    return salt.utils.data.traverse_dict(data, path, None, delimiter=":") if isinstance(data, dict) else None


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


def _role_exists(role):
    return __salt__["slsutil.file_exists"](f"roles/{role}.sls")  # noqa: F821  (a loader dunder)


def roles(pillar=None, exists=None):
    """
    The validated roles of this minion: each must have its ``roles/<role>.sls``
    in the state tree (that file lists the role's formulas).

    CLI Example:

    .. code-block:: bash

        salt-call gopbx_pillar.roles
    """
    pillar = _pillar() if pillar is None else pillar
    exists = exists or _role_exists
    value = pillar.get("roles")
    if not isinstance(value, list) or not value:
        _fail("roles", f"must be a non-empty list of roles (files roles/<role>.sls of the state tree), got {value!r}")
    for role in value:
        if not isinstance(role, str) or not ROLE_NAME.fullmatch(role) or not exists(role):
            _fail("roles", f"names an unknown role {role!r}: the state tree has no roles/{role}.sls")
    return list(dict.fromkeys(value))


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
        internal = ipaddress.ip_network(str(cidr), strict=True)
    except ValueError as exc:
        _fail("network:internal:cidr", f"must be a network in CIDR form, got {cidr!r} ({exc})")
    if not _lookup(plan, "internal:interface"):
        _fail("network:internal:interface", "is missing")
    if _lookup(plan, "internal:link_type") not in (None, "dummy", "bridge"):
        _fail("network:internal:link_type", f"must be dummy or bridge, got {_lookup(plan, 'internal:link_type')!r}")
    services = {}
    for name, number in (plan.get("host_numbers") or {}).items():
        key = f"network:host_numbers:{name}"
        if isinstance(number, bool) or not isinstance(number, int) or number <= 0:
            _fail(key, f"must be a positive whole number, got {number!r}")
        if number >= internal.num_addresses - 1:
            _fail(key, f"is {number}, beyond the plan's network {internal}")
        services[name] = str(internal[number])
    for name, value in (plan.get("services") or {}).items():
        key = f"network:services:{name}"
        try:
            address = ipaddress.ip_address(str(value))
        except ValueError:
            _fail(key, f"must be an IP address, got {value!r}")
        if address not in internal:
            _fail(key, f"is {address}, outside the plan's network {internal}")
        services[name] = str(address)
    if not services:
        _fail("network:host_numbers", "must give each service its host number")
    local = _lookup(plan, "internal:local_services")
    if local is not None and (not isinstance(local, list) or not local
                              or not all(isinstance(name, str) and name in services for name in local)):
        _fail("network:internal:local_services", f"must list services of the plan ({', '.join(sorted(services))}), "
              f"got {local!r}")
    result = copy.deepcopy(plan)
    result["services"] = services
    return result


def _secret_key(formula, name):
    return f"secrets:{name}" if ":" in name else f"secrets:{formula}:{name}"


def _check_secret(key, value, many=False):
    values = value if many and isinstance(value, list) else [value]
    for item in values:
        if not isinstance(item, str) or len(item) < MIN_SECRET_LENGTH:
            kind = "a string (or a list of strings)" if many else "a string"
            _fail(key, f"must be {kind} of at least {MIN_SECRET_LENGTH} characters")
        if "change-me" in item.lower():
            _fail(key, "still holds the example's placeholder: set a real secret")
        if key.startswith(URL_SECRETS) and not URL_SECRET_CHARACTERS.fullmatch(item):
            _fail(key, "must be made of ASCII letters, digits and . _ ~ - only (it goes into connection URLs; "
                  "e.g. openssl rand -hex 32)")
        if not SECRET_CHARACTERS.fullmatch(item):
            _fail(key, "must be made of ASCII letters, digits and . _ ~ + = / $ - only (no spaces, quotes or "
                  "characters configuration files give a meaning)")


def _secrets(formula, declared, pillar):
    """The formula's secrets, by the names its defaults.yaml declares (optional ones may be lists)."""
    found = {}
    for declaration in SECRET_DECLARATIONS:
        for name in declared.get(declaration) or []:
            key = _secret_key(formula, name)
            value = _lookup(pillar, key)
            if value in (None, "") and declaration == "required_secrets":
                _fail(key, "is missing: a required secret (lab: made by the lab command; production: the "
                      "encrypted secrets file, which gopbx_secrets hands out by role)")
            if value is not None:
                _check_secret(key, value, many=declaration == "optional_secrets")
                found[name] = value
    return found


def _tree_yaml(path):
    """A YAML file of the state tree (for calls from the command line; map.jinja passes its own)."""
    return salt.utils.yaml.safe_load(__salt__["cp.get_file_str"](f"salt://{path}") or "") or {}  # noqa: F821


def _reason(error):
    """What a schema error says, in words an operator can act on."""
    if error.validator == "required":
        return "is missing"
    described = error.schema.get("description") if isinstance(error.schema, dict) else None
    if not described and error.validator == "anyOf":
        described = " or ".join("empty ('')" if option.get("const") == "" else
                                DEFINITIONS.get(option.get("$ref", "").rsplit("/", 1)[-1], {}).get("description", "")
                                for option in error.validator_value)
    if described:
        return f"must be {described}, got {error.instance!r}"
    return f"is {error.instance!r}: {error.message}"


def _check_schema(formula, merged, schema):
    schema = dict(schema, **{"$defs": {**DEFINITIONS, **(schema.get("$defs") or {})}})
    validator = VALIDATOR(schema, format_checker=FORMATS)
    errors = sorted(validator.iter_errors(merged), key=lambda error: (len(error.absolute_path), list(
        map(str, error.absolute_path))))
    if not errors:
        return
    error = errors[0]
    path = ":".join([formula, *map(str, error.absolute_path)])
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = sorted((error.schema.get("properties") or {}))
        unknown = sorted(set(error.instance) - set(known), key=str)
        _fail(path, f"has unknown keys {', '.join(map(str, unknown))} (its keys: {', '.join(known)})")
    if error.validator == "required":
        missing = [name for name in error.validator_value if name not in error.instance]
        _fail(f"{path}:{missing[0]}", "is missing")
    _fail(path, _reason(error))


def settings(formula, defaults=None, pillar=None, schema=None):
    """
    A formula's settings: its ``defaults.yaml`` merged with pillar and checked
    against its ``schema.yaml``, plus ``address`` (its place in the plan),
    ``plan`` (all service addresses), ``plan_network`` and ``secrets`` (those its
    defaults declare). Raises, naming the key, on any bad or unknown value.

    CLI Example:

    .. code-block:: bash

        salt-call gopbx_pillar.settings redis
    """
    pillar = _pillar() if pillar is None else pillar
    # A minion without roles runs nothing (roles/init.sls checks each role's file).
    roles(pillar, exists=lambda role: True)
    defaults = copy.deepcopy(_tree_yaml(f"{formula}/defaults.yaml") if defaults is None else defaults)
    declared = {name: defaults.pop(name, []) for name in SECRET_DECLARATIONS}
    schema = _tree_yaml(f"{formula}/schema.yaml") if schema is None else schema
    if not isinstance(schema, dict):
        raise PillarError(f"the {formula} formula has no schema.yaml")
    overrides = pillar.get(formula)
    if overrides is not None and not isinstance(overrides, dict):
        _fail(formula, f"must be a mapping of the {formula} formula's settings, got {overrides!r}")
    merged = salt.utils.dictupdate.merge(defaults, copy.deepcopy(overrides or {}), merge_lists=False)
    _fill_from_edge(formula, merged, pillar)
    _check_schema(formula, merged, schema)
    _check_relations(formula, merged, pillar)
    plan = network(pillar)
    merged["plan"] = plan["services"]
    merged["plan_network"] = plan["internal"]["cidr"]
    merged["address"] = plan["services"].get(formula)
    # Masked in any output (templates still read the plain values).
    merged["secrets"] = salt.utils.secret.hide(_secrets(formula, declared, pillar))
    return merged


def _fill_from_edge(formula, merged, pillar):
    """
    An edge host's own public address (keepalived:peers) is where its RTPEngine
    relays media, unless rtpengine:interface_address says otherwise: each host of
    the SIP edge pair runs its own RTPEngine on its own address.
    """
    if formula == "rtpengine" and not merged.get("interface_address"):
        own = _lookup(pillar, f"keepalived:peers:{__opts__.get('id')}:public_address")  # noqa: F821
        if own:
            merged["interface_address"] = own


def _check_relations(formula, merged, pillar):
    """Checks that span keys (the schema checks each key alone)."""
    for key in ("rtp_ports",):
        if key in merged and merged[key][0] >= merged[key][1]:
            _fail(f"{formula}:{key}", f"must run from a lower to a higher port, got {merged[key]!r}")
    if formula == "kamailio" and bool(merged["tls_certificate"]) != bool(merged["tls_private_key"]):
        _fail("kamailio:tls_private_key", "and kamailio:tls_certificate must both be set (a certificate and its "
              "key) or both be empty (a self-signed certificate)")
    if formula == "nginx" and merged["certificate"] == "letsencrypt" and "@" not in merged["acme_email"]:
        _fail("nginx:acme_email", "must be an address Let's Encrypt can write to when nginx:certificate is letsencrypt")
    if formula == "postgres":
        _check_postgres(merged, pillar)
        _check_patroni(merged, pillar)
    if formula == "etcd":
        _check_etcd(merged, pillar)
    if formula == "freeswitch":
        _check_freeswitch(merged, pillar)
    if formula == "pgbouncer":
        _check_pgbouncer(merged, pillar)
    if formula == "keepalived" and merged["enabled"]:
        _check_keepalived(merged)
    if formula == "dns":
        _check_dns(merged, pillar)
    if formula == "wireguard" and merged["enabled"]:
        _check_wireguard(merged)


def _mesh_addresses(key, members, pillar):
    """Each member's WireGuard address (wireguard:hosts), which its cluster peers reach it at."""
    hosts = _lookup(pillar, "wireguard:hosts") or {}
    for index, name in enumerate(members):
        if not isinstance(hosts.get(name), dict) or not hosts[name].get("address"):
            _fail(f"{key}:{index}", f"is {name!r}, which wireguard:hosts gives no mesh address")
    return {name: hosts[name]["address"] for name in members}


def _check_etcd(merged, pillar):
    members = merged["members"]
    if members and len(members) % 2 == 0:
        _fail("etcd:members", f"must be an odd number of hosts (a quorum survives one loss), got {len(members)}")
    _mesh_addresses("etcd:members", members, pillar)


def _check_patroni(merged, pillar):
    patroni = merged["patroni"]
    if not patroni["members"]:
        return
    _mesh_addresses("postgres:patroni:members", patroni["members"], pillar)
    if not _lookup(pillar, "etcd:members"):
        _fail("etcd:members", "is missing: Patroni keeps the leader lock in etcd")
    if patroni["ttl"] <= patroni["loop_wait"] + 2 * patroni["retry_timeout"]:
        _fail("postgres:patroni:ttl", f"is {patroni['ttl']}: it must exceed loop_wait + 2 x retry_timeout "
              f"({patroni['loop_wait'] + 2 * patroni['retry_timeout']}), or a healthy primary loses its lock")
    for name in ("superuser", "patroni_rest"):
        if not _lookup(pillar, f"secrets:postgres:{name}"):
            _fail(f"secrets:postgres:{name}", "is missing: Patroni (postgres:patroni:members) needs it")


def _check_postgres(merged, pillar):
    for setid in merged["dispatcher_sets"]:
        if isinstance(setid, bool) or not isinstance(setid, int) or not 0 < setid <= 2**31 - 1:
            _fail(f"postgres:dispatcher_sets:{setid}", "must be keyed by a set id (a positive whole number)")
    declared = {spec["secret"] for spec in merged["login_roles"].values()}
    if len(declared) != len(merged["login_roles"]):
        _fail("postgres:login_roles", "must give each role its own secret")


def _check_pgbouncer(merged, pillar):
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


def _check_host_map(key, hosts, unique, what):
    """A map of hosts by minion id (keepalived:peers, wireguard:hosts): this host in it, UNIQUE fields unshared."""
    minion_id = __opts__.get("id")  # noqa: F821  (a loader dunder)
    if minion_id not in hosts:
        _fail(key, f"must list this host ({minion_id}): {what}")
    for field in unique:
        values = [host[field] for host in hosts.values()]
        if len(set(values)) != len(values):
            _fail(key, f"must give each host its own {field}, got {values}")
    return hosts[minion_id]


def _check_keepalived(merged):
    me = _check_host_map("keepalived:peers", merged["peers"], ("priority", "address"),
                         "its address, priority and location")
    minion_id = __opts__.get("id")  # noqa: F821  (a loader dunder)
    for key in ("sip_address", "sip_address_location", "dns:domain"):
        if not _lookup(merged, key):
            _fail(f"keepalived:{key}", "is missing: the SIP edge's public side needs it")
    if me["location"] == merged["sip_address_location"]:
        if not merged["reserved_ip_id"] or not me.get("instance_id"):
            _fail("keepalived:reserved_ip_id" if not merged["reserved_ip_id"] else f"keepalived:peers:{minion_id}:"
                  "instance_id", "is missing: a host in the SIP address's location takes the reserved IP through "
                  "Vultr, by these ids")
    elif not me.get("public_address"):
        _fail(f"keepalived:peers:{minion_id}:public_address", "is missing: a host outside the SIP address's location "
              "is reached by its own public address (the SIP name's A record)")


def _check_wireguard(merged):
    hosts = merged["hosts"]
    _check_host_map("wireguard:hosts", hosts, ("address", "endpoint"), "its tunnel address and endpoint")
    network = ipaddress.ip_network(merged["network"])
    for name, host in hosts.items():
        if ipaddress.ip_address(host["address"]) not in network:
            _fail(f"wireguard:hosts:{name}:address", f"is {host['address']}, outside wireguard:network ({network})")


def _check_dns(merged, pillar):
    for key in ("sip_sites", "failover_names"):
        for index, name in enumerate(merged[key]):
            if name not in merged["addresses"]:
                _fail(f"dns:{key}:{index}", f"is {name!r}, which dns:addresses does not give an address")
    if merged["server"] == "knot":
        for key in ("nameservers", "hostmaster"):
            if not merged[key]:
                _fail(f"dns:{key}", "is missing: Knot serves the zone's SOA and NS records from it")
    elif not _lookup(pillar, "secrets:vultr:api_key"):
        _fail("secrets:vultr:api_key", "is missing: dns:server vultr keeps the zone through Vultr's API")


def _check_freeswitch(merged, pillar):
    if merged["repo"] and not _lookup(pillar, "secrets:freeswitch:signalwire_token"):
        _fail("secrets:freeswitch:signalwire_token",
              "is missing: SignalWire's repository (freeswitch:repo) needs its token")
    if merged["node_address"] and ipaddress.ip_address(merged["node_address"]) not in ipaddress.ip_network(
            merged["node_network"]):
        _fail("freeswitch:node_address", f"is {merged['node_address']}, outside freeswitch:node_network "
              f"({merged['node_network']})")
    for key in ("mod_sofia", "mod_xml_curl", "mod_event_socket", "mod_hash"):
        if key not in merged["modules"]:
            _fail("freeswitch:modules", f"must load {key}: the node cannot work without it")


def role_states(pillar=None):
    """
    The state files of this minion's roles (``roles.<role>``), after checking
    its roles and address plan.

    CLI Example:

    .. code-block:: bash

        salt-call gopbx_pillar.role_states
    """
    pillar = _pillar() if pillar is None else pillar
    found = roles(pillar)
    network(pillar)
    return [f"roles.{role}" for role in found]


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
