"""
The region's database cluster (Patroni) from the masters.

    salt-run gopbx_db.status                     # members, roles, lag, timeline, etcd
    salt-run gopbx_db.failover                   # planned switchover to the sync replica
    salt-run gopbx_db.failover candidate=pgrep-syd-1 force=True   # forced failover
    salt-run gopbx_db.failover test=True         # the checks, and what it would do
    salt-run gopbx_db.follow                     # repoint every pgBouncer now

(``gopbx.db_status`` and ``gopbx.failover`` are the same.) The runner holds no
database secret: it asks the members (``gopbx_patroni`` on them), which hold
Patroni's REST login, and Patroni does the promotion; nothing here promotes.

Patroni's role-change callback on a member fires ``gopbx/postgres/role_changed``;
the reactor (reactor/postgres-role-changed.sls) hands it to :func:`role_changed`.
The event only says "look": the runner refuses one that does not come from a
database host with an accepted key, and otherwise believes only the cluster,
asked afresh, before it repoints every pgBouncer and checks the clients.
Events that come while a run is under way are folded into one more run after
it, so a flood of them (a minion gone wrong) keeps one reactor worker busy,
not all of them, and the last event is always followed by a run.
"""

import fcntl
import json
import logging
import os
import re
import time
import urllib.request

import salt.client
import salt.key

log = logging.getLogger(__name__)

__virtualname__ = "gopbx_db"

DB_HOST = re.compile(r"^(coord|pgrep)-[a-z]+-[0-9]+$")
ROLES = ("primary", "master", "replica", "standby_leader", "demoted", "uninitialized", "unknown")
# Minions that run pgBouncer (the pgbouncer formula's role).
PGBOUNCER_HOSTS = "I@roles:coordinator"
ASK_TIMEOUT = 10
WAIT_FOR_LEADER = 60


def __virtual__():
    return __virtualname__


def _settings():
    return __utils__["gopbx_runner.settings"](__opts__)  # noqa: F821  (loader dunders)


def _database_hosts():
    return [name for name in _settings().get("database_hosts") or [] if isinstance(name, str)
            and DB_HOST.fullmatch(name)]


def _client():
    return salt.client.get_local_client(__opts__["conf_file"])  # noqa: F821


def _ask(target, function, args=(), tgt_type="list", timeout=ASK_TIMEOUT):
    """{minion: answer} from the minions of TARGET that answer in time."""
    answers = _client().cmd(target, function, arg=list(args), tgt_type=tgt_type, timeout=timeout)
    return {minion: answer for minion, answer in (answers or {}).items() if not isinstance(answer, str)}


def _cluster():
    """Patroni's cluster view, from the first database host that gives one."""
    for minion, view in sorted(_ask(_database_hosts(), "gopbx_patroni.cluster").items()):
        if isinstance(view, dict) and view.get("members"):
            return minion, view
    return None, {"members": []}


def _etcd():
    for answer in _ask(_database_hosts(), "gopbx_patroni.etcd_health").values():
        if isinstance(answer, dict) and "quorum" in answer:
            return answer
    return {"members": {}, "quorum": False}


def _leader(view):
    return next((member for member in view.get("members", []) if member.get("role") in ("leader", "master",
                 "primary", "standby_leader") and member.get("state") == "running"), None)


def status():
    """
    Each member's role, state, timeline and replication lag (bytes), as
    Patroni reports them now, and whether etcd has a quorum.

    CLI Example:

    .. code-block:: bash

        salt-run gopbx_db.status
    """
    asked, view = _cluster()
    members = {member["name"]: {"role": member.get("role"), "state": member.get("state"),
                                "timeline": member.get("timeline"), "lag": member.get("lag", 0),
                                "host": member.get("host")} for member in view.get("members", [])}
    etcd = _etcd()
    leader = _leader(view)
    return {"asked": asked, "primary": leader["name"] if leader else None, "members": members,
            "etcd": etcd["members"], "etcd_quorum": etcd["quorum"]}


def follow():
    """
    Repoint every pgBouncer at the running primary now (each host also does so
    on its own schedule). ``{minion: what gopbx_patroni.follow did}``.

    CLI Example:

    .. code-block:: bash

        salt-run gopbx_db.follow
    """
    return _ask(PGBOUNCER_HOSTS, "gopbx_patroni.follow", tgt_type="compound")


def _api_healthy(url):
    with urllib.request.urlopen(url + "/healthz", timeout=5) as answer:  # noqa: S310  (the plan's API)
        return json.loads(answer.read()).get("postgresql") is True


def _rpc(url, method):
    request = urllib.request.Request(url, data=('{"jsonrpc": "2.0", "method": "%s", "id": 1}' % method).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310  (the plan's Kamailio)
        return b'"error"' not in answer.read()


def clients_reconnect(attempts=15, interval=1.0):
    """
    Whether the database's clients work again through pgBouncer: this runner
    (a connection as gopbx_salt), the API (its ``/healthz`` runs a query) and
    Kamailio (``domain.reload``, which reads the database). ``{client: true|false}``.

    CLI Example:

    .. code-block:: bash

        salt-run gopbx_db.clients_reconnect
    """
    import psycopg2  # noqa: PLC0415  (only the masters have it)

    settings = _settings()
    checks = {"runners": lambda: psycopg2.connect(settings["database_dsn"], connect_timeout=3).close() is None}
    if settings.get("api_url"):
        checks["api"] = lambda: _api_healthy(settings["api_url"])
    if settings.get("kamailio_rpc_url"):
        checks["kamailio"] = lambda: _rpc(settings["kamailio_rpc_url"], "domain.reload")
    found = {}
    for name, check in checks.items():
        found[name] = False
        for _ in range(int(attempts)):
            try:
                if check():
                    found[name] = True
                    break
            except Exception as error:  # noqa: BLE001  (any failure is "not yet")
                log.debug("%s does not reach the database yet: %s", name, error)
            time.sleep(float(interval))
    return found


def _refuse(claimed, reason):
    log.warning("gopbx/postgres/role_changed event claiming to be from %r refused: %s", claimed, reason)
    return {"followed": False, "minion": claimed, "reason": reason}


def _check_event(event):
    """The sender's id, or a reason to refuse the event."""
    if not isinstance(event, dict):
        return None, "the event is not a mapping"
    minion_id, data = event.get("id"), event.get("data")
    if not isinstance(minion_id, str) or minion_id not in _database_hosts():
        return None, "the minion is not one of the database hosts (gopbx:database_hosts)"
    if minion_id not in salt.key.get_key(__opts__).list_status("accepted").get("minions", []):  # noqa: F821
        return None, "the minion's key is not accepted"
    if not isinstance(data, dict) or data.get("role") not in ROLES:
        return None, f"role {data.get('role') if isinstance(data, dict) else data!r} is not one of Patroni's roles"
    return minion_id, None


def role_changed(event=None):
    """
    A member's role changed: once the event passes its checks, repoint every
    pgBouncer at the primary the cluster reports now and check the clients.
    Called by the reactor with the whole event.

    CLI Example:

    .. code-block:: bash

        salt-run gopbx_db.role_changed event='{"id": "pgrep-syd-1", "data": {"role": "primary"}}'
    """
    minion_id, reason = _check_event(event)
    if reason:
        return _refuse(event.get("id") if isinstance(event, dict) else None, reason)
    return _one_run_at_a_time(lambda: _follow_the_cluster(minion_id)) or {
        "followed": False, "minion": minion_id, "reason": "folded into the run under way"}


def _one_run_at_a_time(work):
    """
    Mark that WORK is wanted, and do it while it is wanted, unless a run under
    way (another reactor worker or salt-run; a lock file) will see the mark and
    do it once more. The last answer, or None when the work was left to that run.
    """
    directory = os.path.join(__opts__["cachedir"], "gopbx_db")  # noqa: F821
    os.makedirs(directory, exist_ok=True)
    wanted = os.path.join(directory, "role_changed.wanted")
    with open(wanted, "a", encoding="utf-8"):
        pass
    answer = None
    while os.path.exists(wanted):
        with open(os.path.join(directory, "role_changed.lock"), "a", encoding="utf-8") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return answer
            while os.path.exists(wanted):
                os.unlink(wanted)
                answer = work()
    return answer


def _follow_the_cluster(minion_id):
    _, view = _cluster()
    leader = _leader(view)
    if leader is None:
        # Mid-failover: the new primary's own callback brings the runner back.
        return {"followed": False, "minion": minion_id, "reason": "no running primary yet"}
    followed = follow()
    log.warning("database role change on %s: pgBouncer follows %s (%s)", minion_id, leader["name"],
                ", ".join(sorted(followed)) or "no pgBouncer host answered")
    return {"followed": True, "minion": minion_id, "primary": leader["name"], "pgbouncer": followed,
            "clients": clients_reconnect()}


class _Steps:
    """The steps a failover took, how long each took, and what came of it."""

    def __init__(self):
        self.rows = []

    def run(self, name, action):
        started = time.monotonic()
        ok, outcome = action()
        self.rows.append({"step": name, "seconds": round(time.monotonic() - started, 2), "ok": bool(ok),
                          "outcome": outcome})
        return ok

    def table(self):
        lines = [f"{'step':<28} {'seconds':>8}  {'ok':<3} outcome"]
        lines += [f"{row['step']:<28} {row['seconds']:>8.2f}  {'yes' if row['ok'] else 'NO':<3} {row['outcome']}"
                  for row in self.rows]
        return "\n".join(lines)


def _preflight(view, candidate, force):
    """(leader name, candidate name, [(check, ok, outcome)])."""
    checks = []
    etcd = _etcd()
    checks.append(("etcd quorum", etcd["quorum"], ", ".join(f"{name} {'ok' if ok else 'down'}"
                                                            for name, ok in sorted(etcd["members"].items()))))
    leader = _leader(view)
    if not force:
        checks.append(("a running primary", leader is not None, leader["name"] if leader else "none"))
    replicas = [member for member in view.get("members", []) if member is not leader]
    sync = [member["name"] for member in replicas if member.get("role") == "sync_standby"]
    chosen = candidate or (sync[0] if sync else (replicas[0]["name"] if replicas else None))
    member = next((item for item in replicas if item["name"] == chosen), None)
    checks.append(("candidate running", bool(member and member.get("state") in ("running", "streaming")),
                   f"{chosen}: {member.get('state') if member else 'not a replica of this cluster'}"))
    if view.get("synchronous_mode", True) or sync:
        checks.append(("candidate synchronous", chosen in sync, f"synchronous replicas: {', '.join(sync) or 'none'}"))
    lag = (member or {}).get("lag", "unknown")
    checks.append(("candidate lag", isinstance(lag, int) and lag <= 1048576, f"{lag} bytes"))
    return (leader or {}).get("name"), chosen, checks


def _asker(candidate):
    """
    The minion that asks Patroni to hand over: a database host that runs pgBouncer
    and answers now, so its pgBouncer follows the moment the candidate leads (one
    Salt round trip less of stalled writes); else the candidate itself.
    """
    answering = _ask(PGBOUNCER_HOSTS, "test.ping", tgt_type="compound", timeout=3)
    return next((minion for minion in sorted(answering) if minion in _database_hosts()), candidate)


def failover(candidate=None, force=False, test=False):
    """
    A planned switchover to the synchronous replica (or CANDIDATE), through
    Patroni's REST API; ``force=True`` for a failover when the primary is gone;
    ``test=True`` checks and says what it would do, changing nothing. It
    checks etcd's quorum, the candidate's state, sync state and lag first, and
    refuses if any fails. Returns the steps, their times and a printed table.

    CLI Example:

    .. code-block:: bash

        salt-run gopbx.failover
        salt-run gopbx.failover force=True candidate=pgrep-syd-1
        salt-run gopbx.failover test=True
    """
    steps = _Steps()
    asked, view = _cluster()
    if asked is None:
        steps.run("ask the cluster", lambda: (False, "no database host answered"))
        return {"result": False, "steps": steps.rows, "table": steps.table()}
    leader, chosen, checks = _preflight(view, candidate, bool(force))
    for name, ok, outcome in checks:
        steps.run(name, lambda ok=ok, outcome=outcome: (ok, outcome))
    if not all(ok for _, ok, _ in checks):
        return {"result": False, "refused": True, "steps": steps.rows, "table": steps.table()}
    kind = "failover" if force else "switchover"
    if test:
        steps.run(f"would {kind}", lambda: (True, f"{leader or 'no primary'} -> {chosen}; nothing changed"))
        return {"result": None, "steps": steps.rows, "table": steps.table()}

    asker = _asker(chosen)

    def act():
        args = ([chosen] if force else [leader, chosen])
        answer = _ask([asker], f"gopbx_patroni.{kind}", args, timeout=90).get(asker) or {}
        return answer.get("status") == 200, f"{asker}: Patroni answered {answer.get('status')}: {answer.get('answer')}"

    def promoted():
        deadline = time.monotonic() + WAIT_FOR_LEADER
        while time.monotonic() < deadline:
            now = _leader(_cluster()[1])
            if now and now["name"] == chosen:
                return True, f"{chosen} is the running primary"
            time.sleep(0.5)
        return False, f"{chosen} did not become the running primary within {WAIT_FOR_LEADER} s"

    def repointed():
        answers = follow()
        if not all(answer.get("primary") == chosen for answer in answers.values()):
            promoted()  # a failover's 200 may come before the candidate runs as primary
            answers = follow()
        return bool(answers) and all(answer.get("primary") == chosen for answer in answers.values()), \
            ", ".join(f"{minion} -> {answer.get('primary')}" for minion, answer in sorted(answers.items()))

    def reconnected():
        found = clients_reconnect()
        return all(found.values()), ", ".join(f"{name} {'ok' if ok else 'FAILED'}" for name, ok in found.items())

    # Patroni answers 200 once the candidate leads: pgBouncer follows at once (writes
    # stall until it does), then the runner confirms the cluster agrees.
    ok = steps.run(f"Patroni {kind}", act) and steps.run("pgBouncer follows", repointed)
    ok = ok and steps.run("new primary running", promoted) and steps.run("clients reconnect", reconnected)
    log.warning("gopbx_db.failover (%s to %s): %s", kind, chosen, "done" if ok else "FAILED")
    return {"result": ok, "steps": steps.rows, "table": steps.table()}
