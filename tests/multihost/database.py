"""
The database cluster of the multi-host lab (Patroni on coord-syd-1 and
pgrep-syd-1, etcd on them and kam-mel-1), as its tests and bench/db_failover.py
see it: who leads, a writer making extensions through the API without pause,
and the faults (SIGKILL of the postmaster, power-off, a cut network).
"""

import json
import subprocess

from tests.multihost import edge
from tests.support import wait_for

MEMBERS = ("coord-syd-1", "pgrep-syd-1")
MESH = {"coord-syd-1": "10.29.0.1", "kam-mel-1": "10.29.0.2", "pgrep-syd-1": "10.29.0.3"}
WRITER = "/root/gopbx-writer.py"
WRITER_LOG = "/root/gopbx-writer.log"
WRITER_STOP = "/root/gopbx-writer.stop"
# The writer: extensions through the API (pgBouncer, then whichever member leads),
# one after another, each answer recorded with the time it came.
WRITER_CODE = '''
import json, os, sys, time
import requests
api, password, domain, first = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
token = requests.post(api + "/v1/token", json={"username": "admin", "password": password}).json()["access_token"]
headers = {"Authorization": "Bearer " + token}
number = first
with open(%r, "a") as log:
    while not os.path.exists(%r):
        sent = time.time()
        try:
            status = requests.post(api + f"/v1/tenants/{domain}/extensions", headers=headers, timeout=5,
                                   json={"number": str(number), "password": "Mlab-Writer-Pass-42"}).status_code
        except requests.RequestException:
            status = 0
        log.write(json.dumps({"number": str(number), "status": status, "sent": sent, "at": time.time()}) + "\\n")
        log.flush()
        number += 1
        time.sleep(0.05)
''' % (WRITER_LOG, WRITER_STOP)


def run(name, *command, timeout=120):
    return edge.mlab("run", name, *map(str, command), timeout=timeout)


def psql(name, sql, database="gopbx"):
    """SQL as postgres on NAME's own server (its socket), rows as lists; None if it did not answer."""
    result = run(name, "runuser", "-u", "postgres", "--", "psql", "-X", "-A", "-t", "-F", "|", "-h",
                 "/var/run/postgresql", "-p", "5432", "-d", database, "-c", sql)
    if result.returncode != 0:
        return None
    return [line.split("|") for line in result.stdout.splitlines() if line]


def cluster():
    """Patroni's /cluster from the first member that answers (asked over the mesh from the coordinator)."""
    for name in ("coord-syd-1", "pgrep-syd-1"):
        result = run(name, "curl", "-sf", "--max-time", "2", f"http://{MESH[name]}:8008/cluster")
        if result.returncode == 0:
            return json.loads(result.stdout)
    return {"members": []}


def roles():
    """{member: (role, state)}."""
    return {member["name"]: (member["role"], member["state"]) for member in cluster().get("members", [])}


def leader():
    return next((name for name, (role, state) in roles().items() if role == "leader" and state == "running"), None)


def healthy(want_leader=None):
    """One running leader (WANT_LEADER if named) and the other member a running synchronous standby."""
    found = roles()
    leaders = [name for name, (role, state) in found.items() if role == "leader" and state == "running"]
    standbys = [name for name, (role, state) in found.items()
                if role == "sync_standby" and state in ("running", "streaming")]
    return len(leaders) == 1 and len(standbys) == 1 and (want_leader in (None, leaders[0]))


def wait_healthy(want_leader=None, timeout=180):
    return wait_for(lambda: healthy(want_leader), timeout=timeout, interval=1.0)


def failover_run(*args):
    """salt-run gopbx.failover ARGS on the master: its return (result, steps, table)."""
    result = edge.mlab("master", "salt-run", "gopbx.failover", *args, "--out=json", timeout=300)
    text = result.stdout
    return json.JSONDecoder().raw_decode(text[text.index("{"):])[0]


def ensure_leader(name):
    """NAME leads, with a synchronous standby (a switchover if the other member leads)."""
    assert wait_healthy(timeout=240), roles()
    if leader() != name:
        done = failover_run(f"candidate={name}")
        assert done["result"] is True, done["table"]
    assert wait_healthy(name), roles()


class Writer:
    """The writer on the coordinator (it runs under systemd there, as a transient unit)."""

    def __init__(self, tenant, first):
        self.tenant, self.first = tenant, first
        root = edge.STATE / "machines" / "coord-syd-1" / "root"
        (root / WRITER.lstrip("/")).write_text(WRITER_CODE)
        for path in (WRITER_LOG, WRITER_STOP):
            (root / path.lstrip("/")).unlink(missing_ok=True)
        self.log_path = root / WRITER_LOG.lstrip("/")
        self.stop_path = root / WRITER_STOP.lstrip("/")
        password = json.loads((edge.STATE / "secrets.json").read_text())["api"]["admin_password"]
        run("coord-syd-1", "systemctl", "reset-failed", "gopbx-test-writer")
        started = run("coord-syd-1", "systemd-run", "--unit", "gopbx-test-writer", "/opt/gopbx/api/venv/bin/python",
                      WRITER, "http://172.28.0.30:8080", password, tenant, first)
        assert started.returncode == 0, started.stderr
        assert wait_for(lambda: self.acknowledged(), timeout=30), self.log_path.read_text()[-2000:]

    def answers(self):
        if not self.log_path.exists():
            return []
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line.endswith("}")]

    def acknowledged(self, after=0.0):
        return [answer for answer in self.answers() if 200 <= answer["status"] < 300 and answer["sent"] >= after]

    def stop(self):
        self.stop_path.write_text("")
        wait_for(lambda: run("coord-syd-1", "systemctl", "is-active", "gopbx-test-writer").stdout.strip()
                 != "active", timeout=30)
        return self.answers()


def patch_dynamic_config(values):
    """Change the cluster's dynamic configuration behind Salt's back (PATCH /config on the coordinator's member)."""
    password = json.loads((edge.STATE / "secrets.json").read_text())["postgres"]["patroni_rest"]
    result = run("coord-syd-1", "curl", "-sf", "-u", f"gopbx:{password}", "-X", "PATCH",
                 f"http://{MESH['coord-syd-1']}:8008/config", "-d", json.dumps(values))
    assert result.returncode == 0, result.stderr


def dynamic_config():
    return json.loads(run("coord-syd-1", "curl", "-sf", f"http://{MESH['coord-syd-1']}:8008/config").stdout)


def present(name, tenant):
    """The extension numbers of TENANT on member NAME's own database."""
    rows = psql(name, "SELECT e.number FROM gopbx.extensions e JOIN gopbx.tenants t ON t.id = e.tenant_id "
                      f"WHERE t.domain = '{tenant}'")
    return None if rows is None else {row[0] for row in rows}


def kill_postmaster(name):
    """SIGKILL the postmaster on NAME (Patroni, which survives, sees PostgreSQL gone)."""
    result = run(name, "bash", "-c", "pkill -KILL -o -u postgres -x postgres")
    assert result.returncode == 0, result.stderr


def cut(name, peers, action):
    """Drop (or restore) NAME's traffic with PEERS' mesh addresses, both ways, inside NAME's namespace."""
    flag = "-I" if action == "cut" else "-D"
    for peer in peers:
        for chain, side in (("INPUT", "-s"), ("OUTPUT", "-d")):
            subprocess.run(["ip", "netns", "exec", f"mlab-{name}", "iptables", flag, chain, side, MESH[peer], "-j",
                            "DROP"], check=True)


def acknowledged(answer):
    return 200 <= answer["status"] < 300


def stall(answers, fault):
    """The longest time from FAULT on without an acknowledged write (None if none came after it)."""
    acks = sorted(answer["at"] for answer in answers if acknowledged(answer) and answer["at"] > fault)
    edges = [fault] + acks
    return max((later - earlier for earlier, later in zip(edges, edges[1:])), default=None)


def wait_writes_resume(writer, fault, timeout=60, steady=3.0):
    """
    The write stall after FAULT (see stall), once writes are acknowledged again
    for STEADY seconds after the last one that failed; None if they never are
    within TIMEOUT seconds.
    """
    def resumed():
        answers = writer.answers()
        failures = [answer["at"] for answer in answers if answer["sent"] >= fault and not acknowledged(answer)]
        since = max(failures, default=fault)
        return any(acknowledged(answer) and answer["sent"] >= since + steady for answer in answers)
    if not wait_for(resumed, timeout=timeout, interval=0.5):
        return None
    return stall(writer.answers(), fault)
