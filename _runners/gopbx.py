"""
GoPBX's master-side operations on FreeSWITCH media nodes.

    salt-run gopbx.nodes
    salt-run gopbx.drain fs-syd-2 [timeout=600]
    salt-run gopbx.deregister fs-syd-2
    salt-run gopbx.provision request='{"request_id": 12}'

``register`` is what the reactor calls when a node fires ``gopbx/freeswitch/ready``
after its first successful highstate. Nothing in the event is trusted: the minion id
must be ``fs-<region>-<n>`` with an accepted key, the address must lie inside the
allowed networks, the node so named must itself say it announced exactly this
(``gopbx_freeswitch.announcement``, asked over its own key: in Salt's batched event
form a minion writes even the id a reactor sees), and the dispatcher set is chosen
here (the master's placement in ``gopbx:placement``, else the least-loaded set of
the node's region), never taken from the node. A refused event is logged and
changes nothing.

Settings come from the master's configuration, key ``gopbx``: ``database_dsn`` (the
gopbx_salt role through pgBouncer), ``kamailio_rpc_url``, ``redis_url`` (live calls,
for drain), ``allowed_networks``, optional ``placement`` {minion id: set}, and
``sip_port`` (5080). The salt_master formula writes them to
``master.d/gopbx-runner.conf``, which is read again at every call: the master process
(which runs reactor-called runners) need not restart when they change.

``provision`` is what the provision reactor calls when the API pokes the webhook
engine: it claims the pending request in ``gopbx.provisioning_requests``, runs its
salt-cloud profile (this master's cloud configuration) with the next free name, and
records the outcome there.
"""

import ipaddress
import json
import logging
import os
import re
import time

import salt.client
import salt.cloud
import salt.key
import salt.utils.files
import salt.utils.yaml
from salt.exceptions import SaltInvocationError

try:
    import psycopg2
    import psycopg2.extras
    import requests

    HAS_LIBS = True
except ImportError:
    HAS_LIBS = False

log = logging.getLogger(__name__)
__virtualname__ = "gopbx"
NODE_ID = re.compile(r"^fs-([a-z]+)-([0-9]+)$")
# The node's xml_curl password hash (gopbx_freeswitch.xml_curl_credentials), as the API stores it.
PASSWORD_HASH = re.compile(r"^pbkdf2_sha256\$[0-9]{5,7}\$[A-Za-z0-9+/]{22}==\$[A-Za-z0-9+/]{43}=$")
ACTOR = "salt-master"


def __virtual__():
    if not HAS_LIBS:
        return False, "gopbx runner needs psycopg2 and requests"
    return __virtualname__




def _settings():
    settings = __utils__["gopbx_runner.settings"](__opts__)  # noqa: F821
    missing = [key for key in ("database_dsn", "kamailio_rpc_url", "allowed_networks") if not settings.get(key)]
    if missing:
        raise SaltInvocationError(f"master config key 'gopbx' lacks {', '.join(missing)}")
    return settings


def _connect(settings):
    return psycopg2.connect(settings["database_dsn"], cursor_factory=psycopg2.extras.RealDictCursor,
                            connect_timeout=5)


def _kamailio(settings, method, *params):
    reply = requests.post(settings["kamailio_rpc_url"], timeout=5,
                          json={"jsonrpc": "2.0", "method": method, "params": list(params), "id": 1}).json()
    if "error" in reply:
        raise RuntimeError(f"Kamailio {method}: {reply['error']}")
    return reply.get("result")


def _reload_dispatcher(settings, attempts=50):
    """dispatcher.reload, waiting out Kamailio's limit of one reload in five seconds."""
    for _ in range(attempts):
        try:
            return _kamailio(settings, "dispatcher.reload")
        except RuntimeError as exc:
            if "Ongoing reload" not in str(exc):
                raise
            time.sleep(0.2)
    raise RuntimeError("Kamailio kept refusing dispatcher.reload (Ongoing reload)")


def _audit(cursor, action, object_id, detail, object_type="node"):
    cursor.execute("INSERT INTO gopbx.audit (actor, action, object_type, object_id, detail) "
                   "VALUES (%s, %s, %s, %s, %s)", (ACTOR, action, object_type, object_id, psycopg2.extras.Json(detail)))


def _refuse(minion_id, reason):
    log.warning("gopbx/freeswitch/ready from %r refused: %s", minion_id, reason)
    return {"registered": False, "node": minion_id, "reason": reason}


def _accepted(minion_id):
    keys = salt.key.get_key(__opts__).list_status("accepted")  # noqa: F821
    return minion_id in keys.get("minions", [])


def _check_ready_event(event, settings):
    """(minion id, address, capacity, password hash) from a ready event, or a reason to refuse it."""
    if not isinstance(event, dict):
        return None, "the event is not a mapping"
    minion_id = event.get("id")
    payload = event.get("data")
    if not isinstance(minion_id, str) or not NODE_ID.fullmatch(minion_id):
        return None, "the minion id is not fs-<region>-<n>"
    if not _accepted(minion_id):
        return None, "the minion's key is not accepted"
    if not isinstance(payload, dict):
        return None, "the event carries no data mapping"
    try:
        address = ipaddress.ip_address(payload.get("address"))
    except ValueError:
        return None, f"address {payload.get('address')!r} is not an IP address"
    networks = [ipaddress.ip_network(network) for network in settings["allowed_networks"]]
    if not any(address in network for network in networks):
        return None, f"address {address} is outside the allowed networks"
    capacity = payload.get("capacity")
    if type(capacity) is not int or not 1 <= capacity <= 100000:
        return None, f"capacity {capacity!r} is not a whole number from 1 to 100000"
    password_hash = payload.get("xml_curl_password_hash")
    if not isinstance(password_hash, str) or not PASSWORD_HASH.fullmatch(password_hash):
        return None, "xml_curl_password_hash is not a PBKDF2-SHA256 hash"
    return (minion_id, str(address), capacity, password_hash), None


def _announcement(minion_id):
    """What the node itself says it announced (gopbx_freeswitch.announcement), asked over its own key."""
    client = salt.client.get_local_client(__opts__["conf_file"])  # noqa: F821
    answer = (client.cmd(minion_id, "gopbx_freeswitch.announcement", timeout=10) or {}).get(minion_id)
    if not isinstance(answer, dict):
        return None
    return {key: answer.get(key) for key in ("address", "capacity", "xml_curl_password_hash")}


def _summary(announced):
    return "nothing" if announced is None else f"address {announced.get('address')}"


def _placement(cursor, settings, minion_id):
    """The set this node serves: the master's placement, else its region's least-loaded set."""
    chosen = (settings.get("placement") or {}).get(minion_id)
    if chosen is not None:
        cursor.execute("SELECT setid FROM gopbx.dispatcher_sets WHERE setid = %s", (chosen,))
    else:
        region = NODE_ID.fullmatch(minion_id).group(1)
        cursor.execute("SELECT s.setid FROM gopbx.dispatcher_sets s LEFT JOIN gopbx.nodes n ON n.setid = s.setid "
                       "AND n.state = 'active' WHERE s.region = %s GROUP BY s.setid "
                       "ORDER BY count(n.id), s.setid LIMIT 1", (region,))
    row = cursor.fetchone()
    return row["setid"] if row else None


def register(event=None):
    """
    Record a FreeSWITCH node from its ready event and put it in Kamailio's dispatcher.
    Called by the reactor (reactor/freeswitch-ready.sls) with the whole event.

    CLI Example:

    .. code-block:: bash

        salt-run gopbx.register event='{"id": "fs-syd-1", "data": {"address": "10.28.0.50", "capacity": 200,
            "xml_curl_password_hash": "pbkdf2_sha256$200000$...$..."}}'
    """
    settings = _settings()
    if isinstance(event, str):
        try:
            event = json.loads(event)
        except ValueError:
            return _refuse(None, "the event is not JSON")
    checked, reason = _check_ready_event(event, settings)
    if reason:
        return _refuse(event.get("id") if isinstance(event, dict) else None, reason)
    minion_id, address, capacity, password_hash = checked
    announced = _announcement(minion_id)
    if announced != {"address": address, "capacity": capacity, "xml_curl_password_hash": password_hash}:
        return _refuse(minion_id, f"{minion_id} itself announces {_summary(announced)}, not this event's "
                                  f"address {address} and hash")
    destination = f"sip:{address}:{settings.get('sip_port', 5080)}"
    with _connect(settings) as conn, conn.cursor() as cursor:
        setid = _placement(cursor, settings, minion_id)
        if setid is None:
            conn.rollback()
            return _refuse(minion_id, "no dispatcher set is placed for it")
        cursor.execute("SELECT 1 FROM gopbx.nodes WHERE address = %s AND minion_id <> %s", (address, minion_id))
        if cursor.fetchone():
            conn.rollback()
            return _refuse(minion_id, f"address {address} belongs to another node")
        cursor.execute("INSERT INTO gopbx.nodes (minion_id, address, setid, capacity, state, xml_curl_password_hash) "
                       "VALUES (%s, %s, %s, %s, 'active', %s) ON CONFLICT (minion_id) DO UPDATE SET "
                       "address = EXCLUDED.address, setid = EXCLUDED.setid, capacity = EXCLUDED.capacity, "
                       "state = 'active', xml_curl_password_hash = EXCLUDED.xml_curl_password_hash, "
                       "updated_at = now()", (minion_id, address, setid, capacity, password_hash))
        cursor.execute("DELETE FROM dispatcher WHERE description = %s", (minion_id,))
        cursor.execute("INSERT INTO dispatcher (setid, destination, flags, priority, attrs, description) "
                       "VALUES (%s, %s, 0, 0, '', %s)", (setid, destination, minion_id))
        _audit(cursor, "register", minion_id, {"address": address, "setid": setid, "capacity": capacity})
    _reload_dispatcher(settings)
    log.info("FreeSWITCH node %s registered at %s in set %s", minion_id, destination, setid)
    return {"registered": True, "node": minion_id, "destination": destination, "setid": setid}


def nodes():
    """
    The media nodes, their sets and states, and Kamailio's view of each destination.

    CLI Example:

    .. code-block:: bash

        salt-run gopbx.nodes
    """
    settings = _settings()
    with _connect(settings) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT minion_id, host(address) AS address, setid, capacity, state FROM gopbx.nodes "
                       "ORDER BY setid, minion_id")
        rows = cursor.fetchall()
    flags = {}
    for dispatcher_set in (_kamailio(settings, "dispatcher.list") or {}).get("RECORDS", []):
        for target in dispatcher_set["SET"]["TARGETS"]:
            flags[target["DEST"]["URI"]] = target["DEST"]["FLAGS"]
    port = settings.get("sip_port", 5080)
    return {row["minion_id"]: {**row, "kamailio": flags.get(f"sip:{row['address']}:{port}", "absent")}
            for row in rows}


def _node(cursor, node):
    cursor.execute("SELECT minion_id, host(address) AS address, setid, state FROM gopbx.nodes "
                   "WHERE minion_id = %s", (node,))
    row = cursor.fetchone()
    if row is None:
        raise SaltInvocationError(f"no media node {node!r}")
    return row


def _live_calls(settings, node):
    if not settings.get("redis_url"):
        return 0
    import redis

    return redis.Redis.from_url(settings["redis_url"], socket_timeout=5).hlen(f"gopbx:node-calls:{node}")


def drain(node, timeout=600, poll=2):
    """
    Take NODE out of Kamailio's dispatcher so it gets no new calls, wait until its
    calls end (or TIMEOUT seconds pass), then deregister it.

    CLI Example:

    .. code-block:: bash

        salt-run gopbx.drain fs-syd-2 timeout=900
    """
    settings = _settings()
    with _connect(settings) as conn, conn.cursor() as cursor:
        _node(cursor, node)
        cursor.execute("UPDATE gopbx.nodes SET state = 'draining', updated_at = now() WHERE minion_id = %s", (node,))
        cursor.execute("DELETE FROM dispatcher WHERE description = %s", (node,))
        _audit(cursor, "drain", node, {"timeout": timeout})
    _reload_dispatcher(settings)
    deadline = time.monotonic() + float(timeout)
    remaining = _live_calls(settings, node)
    while remaining and time.monotonic() < deadline:
        time.sleep(float(poll))
        remaining = _live_calls(settings, node)
    result = deregister(node)
    return {**result, "drained": remaining == 0, "calls_left": remaining}


def deregister(node):
    """
    Remove NODE: its dispatcher row goes (Kamailio reloaded) and its record is marked removed.

    CLI Example:

    .. code-block:: bash

        salt-run gopbx.deregister fs-syd-2
    """
    settings = _settings()
    with _connect(settings) as conn, conn.cursor() as cursor:
        _node(cursor, node)
        cursor.execute("UPDATE gopbx.nodes SET state = 'removed', updated_at = now() WHERE minion_id = %s", (node,))
        cursor.execute("DELETE FROM dispatcher WHERE description = %s", (node,))
        _audit(cursor, "deregister", node, {})
    _reload_dispatcher(settings)
    log.info("FreeSWITCH node %s deregistered", node)
    return {"deregistered": True, "node": node}


def _request_id(request):
    try:
        value = json.loads(request)["request_id"] if isinstance(request, str) else request["request_id"]
    except (ValueError, TypeError, KeyError):
        return None
    return value if type(value) is int and value > 0 else None


def _next_name(cloud, cursor, profile):
    """<name_prefix>-<location>-<n> with n one above any such VM or node seen so far."""
    prefix = f"{profile['name_prefix']}-{profile['location']}-"
    names = set()
    for drivers in (cloud.query("list_nodes") or {}).values():
        for nodes in drivers.values():
            names |= set(nodes)
    cursor.execute("SELECT minion_id FROM gopbx.nodes WHERE minion_id LIKE %s", (prefix + "%",))
    names |= {row["minion_id"] for row in cursor.fetchall()}
    numbers = [int(name[len(prefix):]) for name in names
               if name.startswith(prefix) and name[len(prefix):].isdigit()]
    return f"{prefix}{max(numbers, default=0) + 1}"


def _finish(settings, request_id, state, name, detail):
    with _connect(settings) as conn, conn.cursor() as cursor:
        cursor.execute("UPDATE gopbx.provisioning_requests SET state = %s, name = %s, detail = %s, "
                       "updated_at = now() WHERE id = %s", (state, name, psycopg2.extras.Json(detail), request_id))
        _audit(cursor, state, name or str(request_id), {"request": request_id, **detail}, object_type="vm")


def provision(request=None):
    """
    Make the VM of a pending provisioning request (the provision reactor's call, with
    the body the API sent: {"request_id": N}).

    CLI Example:

    .. code-block:: bash

        salt-run gopbx.provision request='{"request_id": 12}'
    """
    settings = _settings()
    request_id = _request_id(request)
    if request_id is None:
        log.warning("provisioning poke refused: %r names no request id", request)
        return {"provisioned": False, "reason": "the poke names no request id"}
    with _connect(settings) as conn, conn.cursor() as cursor:
        cursor.execute("UPDATE gopbx.provisioning_requests SET state = 'running', updated_at = now() "
                       "WHERE id = %s AND state = 'pending' RETURNING profile", (request_id,))
        claimed = cursor.fetchone()
    if claimed is None:
        log.warning("provisioning poke refused: request %s is not pending", request_id)
        return {"provisioned": False, "reason": f"request {request_id} is not pending"}
    cloud = salt.cloud.CloudClient(path=os.path.join(os.path.dirname(__opts__["conf_file"]), "cloud"))  # noqa: F821
    profile = cloud.opts.get("profiles", {}).get(claimed["profile"])
    if not profile:
        _finish(settings, request_id, "failed", None, {"error": f"no salt-cloud profile {claimed['profile']!r}"})
        return {"provisioned": False, "reason": f"no salt-cloud profile {claimed['profile']!r}"}
    with _connect(settings) as conn, conn.cursor() as cursor:
        name = _next_name(cloud, cursor, profile)
    log.info("provisioning request %s: salt-cloud -p %s %s", request_id, claimed["profile"], name)
    outcome = (cloud.profile(claimed["profile"], names=[name]) or {}).get(name)
    if not isinstance(outcome, dict) or "Error" in outcome or not outcome.get("id"):
        _finish(settings, request_id, "failed", name, {"error": str(outcome)})
        return {"provisioned": False, "name": name, "reason": str(outcome)}
    detail = {key: outcome.get(key) for key in ("id", "region", "plan", "main_ip")}
    _finish(settings, request_id, "created", name, detail)
    return {"provisioned": True, "name": name, **detail}


def db_status():
    """
    The database cluster: members, roles, lag, timeline and etcd (gopbx_db.status).

    CLI Example:

    .. code-block:: bash

        salt-run gopbx.db_status
    """
    return __salt__["gopbx_db.status"]()  # noqa: F821  (a runner's __salt__ holds the runners)


def failover(candidate=None, force=False, test=False):
    """
    A planned switchover of the database (``force=True``: a failover; ``test=True``:
    a dry run), through Patroni (gopbx_db.failover).

    CLI Example:

    .. code-block:: bash

        salt-run gopbx.failover test=True
    """
    return __salt__["gopbx_db.failover"](candidate=candidate, force=force, test=test)  # noqa: F821
