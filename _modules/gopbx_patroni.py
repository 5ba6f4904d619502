"""
The region's Patroni cluster as this host sees it, and pgBouncer following its
primary.

Every member's REST API (on its WireGuard mesh address) answers reads without a
login; a switchover or failover needs Patroni's REST login
(``secrets:postgres:patroni_rest``, in Patroni's own configuration), which only
the members hold, so the runners ask a member (``salt <member> gopbx_patroni.switchover``) and never hold
it themselves.

pgBouncer's ``[databases]`` section lives in its own file
(``/etc/pgbouncer/databases.ini``, pulled in by ``%include``): :func:`follow`
points it at the member Patroni reports as the running leader, then pauses,
reloads and resumes pgBouncer (SIGUSR1, SIGHUP, SIGUSR2), so clients keep their
connections and their next transaction goes to the new primary.
"""

import base64
import json
import logging
import os
import signal
import threading
import time
import urllib.error
import urllib.request

import salt.utils.atomicfile
import salt.utils.files
import salt.utils.yaml
from salt.exceptions import CommandExecutionError

log = logging.getLogger(__name__)

__virtualname__ = "gopbx_patroni"

DATABASES_FILE = "/etc/pgbouncer/databases.ini"
PATRONI_CONFIG = "/etc/patroni/config.yml"
PGBOUNCER_PID = "/var/run/postgresql/pgbouncer.pid"
ASK_TIMEOUT = 2
# Patroni's names for a member that may lead, and for the replicas.
LEADER_ROLES = ("leader", "master", "primary", "standby_leader")


def __virtual__():
    return __virtualname__


def _setting(key, default=None):
    return __salt__["gopbx_pillar.plain"](key, default)  # noqa: F821  (a loader dunder)


def members():
    """
    The cluster's members and the mesh address each is reached at.

    CLI Example:

    .. code-block:: bash

        salt-call gopbx_patroni.members
    """
    hosts = _setting("wireguard:hosts", {})
    return {name: hosts[name]["address"] for name in _setting("postgres:patroni:members", [])
            if isinstance(hosts.get(name), dict) and hosts[name].get("address")}


def _url(address, path):
    return f"http://{address}:{_setting('postgres:patroni:rest_port', 8008)}{path}"


def _get(url):
    with urllib.request.urlopen(url, timeout=ASK_TIMEOUT) as answer:  # noqa: S310  (http to a mesh address)
        return json.loads(answer.read().decode())


def cluster():
    """
    Patroni's view of the cluster (``GET /cluster``) from the first member that
    answers, with ``asked`` naming that member; an empty ``members`` list when
    none answers. ``synchronous_mode`` comes from the same member's dynamic
    configuration (``GET /config``); /cluster does not carry it.

    CLI Example:

    .. code-block:: bash

        salt-call gopbx_patroni.cluster
    """
    for name, address in sorted(members().items()):
        try:
            view = _get(_url(address, "/cluster"))
        except (OSError, ValueError) as error:
            log.debug("Patroni on %s did not answer: %s", name, error)
            continue
        if isinstance(view, dict) and isinstance(view.get("members"), list):
            return {"asked": name, **view, **_synchronous_mode(address)}
    return {"asked": None, "members": []}


def _synchronous_mode(address):
    """``{"synchronous_mode": bool}`` from the member's /config, or {} when it does not say."""
    try:
        config = _get(_url(address, "/config"))
    except (OSError, ValueError) as error:
        log.debug("Patroni on %s did not give its configuration: %s", address, error)
        return {}
    if not isinstance(config, dict):
        return {}
    return {"synchronous_mode": config.get("synchronous_mode") in (True, "on", "quorum")}


def primary(view=None):
    """
    The running leader, ``{"name", "host", "port", "timeline"}``, or None while
    the cluster has none (a failover under way, or no member answering).

    CLI Example:

    .. code-block:: bash

        salt-call gopbx_patroni.primary
    """
    view = cluster() if view is None else view
    known = members()
    for member in view.get("members", []):
        if member.get("role") in LEADER_ROLES and member.get("state") == "running" and member.get("name") in known:
            # The address is the pillar's, not the DCS's: etcd's contents never pick a host.
            return {"name": member["name"], "host": known[member["name"]], "port": int(member.get("port") or 5432),
                    "timeline": member.get("timeline")}
    return None


def etcd_health():
    """
    ``{member: true|false}``: whether each etcd member answers healthy, and
    ``quorum``: whether more than half do.

    CLI Example:

    .. code-block:: bash

        salt-call gopbx_patroni.etcd_health
    """
    hosts = _setting("wireguard:hosts", {})
    port = _setting("etcd:client_port", 2379)
    health = {}
    for name in _setting("etcd:members", []):
        address = (hosts.get(name) or {}).get("address")
        try:
            health[name] = _get(f"http://{address}:{port}/health").get("health") in ("true", True)
        except (OSError, ValueError, AttributeError):
            health[name] = False
    return {"members": health, "quorum": sum(health.values()) * 2 > len(health)}


def _request(path, body, method="POST"):
    """A POST (or METHOD) to this member's own REST API with Patroni's login, ready to send."""
    me = members().get(__opts__["id"])  # noqa: F821
    if me is None:
        raise CommandExecutionError(f"{__opts__['id']} is not a member of postgres:patroni:members")  # noqa: F821
    # Patroni's own configuration holds the login (root and postgres read it).
    with salt.utils.files.fopen(PATRONI_CONFIG) as handle:
        login = (salt.utils.yaml.safe_load(handle) or {}).get("restapi", {}).get("authentication", {})
    # Sent with the request: Patroni answers a bare 401 (no challenge urllib's handler would answer).
    login = base64.b64encode(f"{login.get('username')}:{login.get('password')}".encode()).decode()
    return urllib.request.Request(_url(me, path), data=json.dumps(body).encode(), method=method,
                                  headers={"Content-Type": "application/json", "Authorization": f"Basic {login}"})


def _send(request):
    """(status, text) of a prepared request (no loader dunders: it runs in a thread)."""
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:  # noqa: S310  (its own mesh address)
            return answer.status, answer.read().decode(errors="replace").strip()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace").strip()
    except OSError as error:
        return 0, str(error)


def _leads(name):
    """Whether member NAME's own Patroni reports it the running primary (GET /primary answers 200)."""
    try:
        with urllib.request.urlopen(_url(members()[name], "/primary"), timeout=ASK_TIMEOUT) as answer:  # noqa: S310
            return answer.status == 200
    except (OSError, KeyError):
        return False


def _runs_pgbouncer():
    return os.path.exists(DATABASES_FILE)


def _hand_over(path, body, candidate):
    """
    POST PATH and wait for Patroni's answer, or return as soon as CANDIDATE leads
    (its own /primary answers 200): Patroni polls the outcome in whole seconds
    before it answers, and writes stall until pgBouncer follows. A host that runs
    pgBouncer points it at the candidate at that moment, without waiting for a
    runner's round trip.
    """
    answer = {}
    prepared = _request(path, body)
    request = threading.Thread(target=lambda: answer.update(zip(("status", "answer"), _send(prepared))),
                               daemon=True)
    request.start()
    deadline = time.monotonic() + 60
    while request.is_alive() and time.monotonic() < deadline:
        if candidate in members() and _leads(candidate):
            if _runs_pgbouncer():
                point_pgbouncer({"host": members()[candidate], "port": 5432})
            return {"status": 200, "answer": f"{candidate} leads (seen on its own REST API)"}
        time.sleep(0.1)
    request.join(timeout=max(0.0, deadline - time.monotonic()))
    return answer or {"status": 0, "answer": "Patroni did not answer within 60 s"}


def switchover(leader, candidate=None):
    """
    A planned switchover through Patroni (``POST /switchover``): LEADER hands
    over to CANDIDATE (or to the synchronous replica). ``{"status", "answer"}``.
    It returns once the candidate leads; on a host that runs pgBouncer, with
    pgBouncer pointed at the candidate.

    CLI Example:

    .. code-block:: bash

        salt coord-syd-1 gopbx_patroni.switchover coord-syd-1 pgrep-syd-1
    """
    return _hand_over("/switchover", {"leader": leader, **({"candidate": candidate} if candidate else {})}, candidate)


def failover(candidate):
    """
    A forced failover through Patroni (``POST /failover``) to CANDIDATE, which
    Patroni promotes only if it may (in synchronous mode: the synchronous
    replica). ``{"status", "answer"}``. It returns once the candidate leads; on
    a host that runs pgBouncer, with pgBouncer pointed at the candidate.

    CLI Example:

    .. code-block:: bash

        salt pgrep-syd-1 gopbx_patroni.failover pgrep-syd-1
    """
    return _hand_over("/failover", {"candidate": candidate}, candidate)


def dynamic_config():
    """
    The cluster's dynamic configuration in etcd (``GET /config``) from the first
    member that answers, or None when none does.

    CLI Example:

    .. code-block:: bash

        salt-call gopbx_patroni.dynamic_config
    """
    for name, address in sorted(members().items()):
        try:
            config = _get(_url(address, "/config"))
        except (OSError, ValueError) as error:
            log.debug("Patroni on %s did not give its configuration: %s", name, error)
            continue
        if isinstance(config, dict):
            return config
    return None


def set_dynamic_config(values):
    """
    Change the cluster's dynamic configuration (``PATCH /config`` on this
    member): the keys of VALUES, the rest kept. ``{"status", "answer"}``.

    CLI Example:

    .. code-block:: bash

        salt-call gopbx_patroni.set_dynamic_config '{"ttl": 10}'
    """
    if not isinstance(values, dict) or not values:
        raise CommandExecutionError("set_dynamic_config needs a mapping of settings")
    status, answer = _send(_request("/config", values, method="PATCH"))
    return {"status": status, "answer": answer}


def databases_section(target):
    """pgBouncer's [databases] file for a primary at TARGET ``{"host", "port"}``."""
    database = _setting("postgres:database", "gopbx")
    return ("; Managed by Salt (gopbx_patroni): the database's primary, which pgBouncer follows.\n"
            "[databases]\n"
            f"{database} = host={target['host']} port={target['port']} dbname={database}\n")


def _current(path):
    try:
        with salt.utils.files.fopen(path) as handle:
            return handle.read()
    except OSError:
        return None


def _signal_pgbouncer(*signals):
    try:
        with salt.utils.files.fopen(PGBOUNCER_PID) as handle:
            pid = int(handle.read().strip())
        for number in signals:
            os.kill(pid, number)
    except (OSError, ValueError):
        return False
    return True


def point_pgbouncer(target, path=None):
    """
    Write the [databases] file (PATH) for TARGET and, if pgBouncer runs, PAUSE, RELOAD
    and RESUME it. True if anything changed.
    """
    path = path or DATABASES_FILE
    wanted = databases_section(target)
    if _current(path) == wanted:
        return False
    with salt.utils.atomicfile.atomic_open(path, "w") as handle:
        handle.write(wanted)
    os.chmod(path, 0o644)
    _signal_pgbouncer(signal.SIGUSR1, signal.SIGHUP, signal.SIGUSR2)
    return True


def follow():
    """
    Point this host's pgBouncer at the cluster's running primary. While there
    is none (a failover under way), pgBouncer is left as it is.

    CLI Example:

    .. code-block:: bash

        salt-call gopbx_patroni.follow
    """
    target = primary()
    if target is None:
        return {"primary": None, "changed": False, "comment": "no running primary now: pgBouncer left as it is"}
    changed = point_pgbouncer(target)
    if changed:
        log.warning("pgBouncer now points at %s (%s)", target["name"], target["host"])
    return {"primary": target["name"], "host": target["host"], "changed": changed}
