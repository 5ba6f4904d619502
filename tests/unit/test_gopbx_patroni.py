"""
pgBouncer following the database primary (_modules/gopbx_patroni.py): a real
pgBouncer, and members' REST APIs on loopback that answer ``GET /cluster`` in
Patroni 3.0's shape (the multi-host lab runs real Patroni: tests/multihost).
"""

import base64
import http.server
import json
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from tests.support import load_module, wait_for

MEMBERS = {"coord-syd-1": "127.29.0.1", "pgrep-syd-1": "127.29.0.3"}
REST_PORT = 18008


def member(name, role, state="running", lag=None):
    """One member as Patroni 3.0.2's /cluster lists it."""
    found = {"name": name, "role": role, "state": state, "api_url": f"http://{MEMBERS[name]}:8008/patroni",
             "host": MEMBERS[name], "port": 5432, "timeline": 3}
    if lag is not None:
        found["lag"] = lag
    return found


class PatroniRest:
    """Answers GET /cluster and GET /config on one member's address with what the test sets; a 404 elsewhere."""

    def __init__(self, address):
        owner = self
        self.view = {"members": []}
        self.config = {"ttl": 10, "loop_wait": 2, "synchronous_mode": True}
        self.answers = True
        self.leads = False
        self.patches = []
        self.on_post = None  # (path, body, authorization) -> (status, text): what Patroni does with a POST

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802  (http.server's name)
                if self.path == "/primary":
                    # Patroni: 200 only while this member runs as the leader, 503 otherwise.
                    self.send_response(200 if owner.leads else 503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                answer = {"/cluster": owner.view, "/config": owner.config}.get(self.path)
                if answer is None or not owner.answers:
                    self.send_error(404 if owner.answers else 503)
                    return
                body = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                status, text = owner.on_post(self.path, body, self.headers.get("Authorization"))
                self.send_response(status)
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text.encode())

            def do_PATCH(self):  # noqa: N802
                # Patroni 3.0: PATCH /config merges the body into the dynamic configuration (login required).
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                expected = "Basic " + base64.b64encode(b"gopbx:s3cret").decode()
                status = 401 if self.headers.get("Authorization") != expected else 200
                if status == 200:
                    owner.config.update(body)
                    owner.patches.append(body)
                text = json.dumps(owner.config) if status == 200 else "no auth header received"
                self.send_response(status)
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text.encode())

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer((address, REST_PORT), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def rest():
    servers = {name: PatroniRest(address) for name, address in MEMBERS.items()}
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture
def pgbouncer():
    """A real pgBouncer on loopback whose [databases] come from its own databases.ini."""
    # pgBouncer runs as postgres, which can't enter pytest's root-only tmp_path.
    tmp_path = Path(tempfile.mkdtemp(prefix="gopbx-pgbouncer-"))
    tmp_path.chmod(0o755)
    port = free_port()
    (tmp_path / "databases.ini").write_text("[databases]\ngopbx = host=127.29.0.250 port=5432 dbname=gopbx\n")
    (tmp_path / "pgbouncer.ini").write_text(
        f"%include {tmp_path}/databases.ini\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\n"
        f"unix_socket_dir =\nauth_type = trust\nauth_file = {tmp_path}/users.txt\nadmin_users = admin\n"
        f"pidfile = {tmp_path}/pgbouncer.pid\nlogfile = {tmp_path}/pgbouncer.log\n")
    (tmp_path / "users.txt").write_text('"admin" ""\n')
    shutil.chown(tmp_path, "postgres")
    for path in tmp_path.iterdir():
        shutil.chown(path, "postgres")
    process = subprocess.Popen(["runuser", "-u", "postgres", "--", "/usr/sbin/pgbouncer", str(tmp_path / "pgbouncer.ini")])
    wait_for(lambda: (tmp_path / "pgbouncer.pid").exists() and databases(port), timeout=20)
    yield {"port": port, "dir": tmp_path, "pid": tmp_path / "pgbouncer.pid"}
    process.terminate()
    process.wait(timeout=10)
    subprocess.run(["pkill", "-f", f"pgbouncer {tmp_path}/pgbouncer.ini"], check=False)
    shutil.rmtree(tmp_path)


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def databases(port):
    """pgBouncer's own SHOW DATABASES: {name: host}."""
    shown = subprocess.run(["psql", "-X", "-A", "-t", "-F", "|", "-h", "127.0.0.1", "-p", str(port), "-U", "admin",
                            "pgbouncer", "-c", "SHOW DATABASES"], capture_output=True, text=True, check=False)
    return {line.split("|")[0]: line.split("|")[1] for line in shown.stdout.splitlines() if "|" in line}


def patroni_module(pgbouncer, pillar=None):
    module = load_module("_modules", "gopbx_patroni", alias=f"gopbx_patroni_{time.monotonic_ns()}")
    settings = {"wireguard:hosts": {name: {"address": address} for name, address in MEMBERS.items()},
                "postgres:patroni:members": list(MEMBERS), "postgres:patroni:rest_port": REST_PORT,
                "postgres:database": "gopbx", **(pillar or {})}
    module.__salt__ = {"gopbx_pillar.plain": lambda key, default=None: settings.get(key, default)}
    module.__opts__ = {"id": "coord-syd-1"}
    module.DATABASES_FILE = str(pgbouncer["dir"] / "databases.ini")
    module.PGBOUNCER_PID = str(pgbouncer["pid"])
    return module


def test_pgbouncer_follows_the_running_leader_and_reloads(rest, pgbouncer):
    module = patroni_module(pgbouncer)
    for server in rest.values():
        server.view = {"members": [member("coord-syd-1", "leader"), member("pgrep-syd-1", "sync_standby", lag=0)]}
    assert module.follow() == {"primary": "coord-syd-1", "host": "127.29.0.1", "changed": True}
    wait_for(lambda: databases(pgbouncer["port"]).get("gopbx") == "127.29.0.1", timeout=10)
    # Nothing changes when it already points there.
    assert module.follow()["changed"] is False
    # The replica promoted: pgBouncer follows, and keeps running (PAUSE, RELOAD, RESUME).
    for server in rest.values():
        server.view = {"members": [member("coord-syd-1", "replica", state="stopped"),
                                   member("pgrep-syd-1", "leader")]}
    assert module.follow()["primary"] == "pgrep-syd-1"
    wait_for(lambda: databases(pgbouncer["port"]).get("gopbx") == "127.29.0.3", timeout=10)


@pytest.mark.parametrize("view", [
    {"members": []},
    # A leader that is not running yet (being promoted), or a stopped one.
    {"members": [member("pgrep-syd-1", "leader", state="starting")]},
    {"members": [member("coord-syd-1", "leader", state="stopped")]},
    # Only replicas.
    {"members": [member("coord-syd-1", "replica"), member("pgrep-syd-1", "sync_standby")]},
    # A leader that is not a member of postgres:patroni:members (a foreign DCS entry).
    {"members": [dict(member("coord-syd-1", "leader"), name="evil-syd-1", host="192.0.2.66")]},
    # Not Patroni's shape at all.
    {"members": "coord-syd-1"},
    {"leader": "coord-syd-1"},
])
def test_without_a_running_leader_pgbouncer_is_left_as_it_is(rest, pgbouncer, view):
    module = patroni_module(pgbouncer)
    before = (pgbouncer["dir"] / "databases.ini").read_text()
    for server in rest.values():
        server.view = view
    found = module.follow()
    assert found["primary"] is None and found["changed"] is False
    assert (pgbouncer["dir"] / "databases.ini").read_text() == before
    assert databases(pgbouncer["port"]).get("gopbx") == "127.29.0.250"


def test_the_address_comes_from_pillar_not_from_the_cluster(rest, pgbouncer):
    """etcd's contents never pick the host pgBouncer connects to: a member's own claimed host is ignored."""
    module = patroni_module(pgbouncer)
    for server in rest.values():
        server.view = {"members": [dict(member("pgrep-syd-1", "leader"), host="192.0.2.66")]}
    assert module.follow()["host"] == "127.29.0.3"
    assert "192.0.2.66" not in (pgbouncer["dir"] / "databases.ini").read_text()


def test_a_member_that_does_not_answer_is_passed_over(rest, pgbouncer):
    module = patroni_module(pgbouncer)
    rest["coord-syd-1"].answers = False
    rest["pgrep-syd-1"].view = {"members": [member("pgrep-syd-1", "leader")]}
    assert module.cluster()["asked"] == "pgrep-syd-1"
    assert module.follow()["primary"] == "pgrep-syd-1"
    rest["pgrep-syd-1"].answers = False
    assert module.cluster() == {"asked": None, "members": []}


@pytest.mark.parametrize("config, synchronous", [
    ({"synchronous_mode": True}, True),
    ({"synchronous_mode": False}, False),
    ({"ttl": 10}, False),  # Patroni's default is off
    ({"synchronous_mode": "quorum"}, True),  # Patroni 3.1's quorum commit
    ({"synchronous_mode": "yes please"}, False),
])
def test_the_cluster_view_says_whether_commits_are_synchronous(rest, pgbouncer, config, synchronous):
    module = patroni_module(pgbouncer)
    for server in rest.values():
        server.view = {"members": [member("coord-syd-1", "leader")]}
        server.config = config
    assert module.cluster()["synchronous_mode"] is synchronous


def test_a_cluster_view_without_its_configuration_does_not_claim_either_mode(rest, pgbouncer):
    """The runner then holds to the stricter reading (a synchronous replica is required)."""
    module = patroni_module(pgbouncer)
    for server in rest.values():
        server.view = {"members": [member("coord-syd-1", "leader")]}
        server.config = ["not", "a", "configuration"]
    assert "synchronous_mode" not in module.cluster()


def hand_over_module(pgbouncer, tmp_path, me="coord-syd-1"):
    module = patroni_module(pgbouncer)
    module.__opts__ = {"id": me}
    config = tmp_path / "config.yml"
    config.write_text("restapi:\n  authentication:\n    username: gopbx\n    password: s3cret\n")
    module.PATRONI_CONFIG = str(config)
    return module


def patroni_switching_over(rest, promote_after=0.3, answer_after=3.0):
    """Patroni's POST /switchover: Basic auth sent with the request or a bare 401; the candidate
    leads PROMOTE_AFTER seconds in; the answer comes later (Patroni polls the outcome in whole seconds)."""
    posts = []

    def on_post(path, body, authorization):
        expected = "Basic " + base64.b64encode(b"gopbx:s3cret").decode()
        if authorization != expected:
            return 401, "no auth header received"
        posts.append((path, body))
        time.sleep(promote_after)
        rest[body["candidate"]].leads = True
        time.sleep(answer_after)
        return 200, f"Successfully switched over to \"{body['candidate']}\""

    for server in rest.values():
        server.on_post = on_post
    return posts


def test_a_switchover_asked_from_the_pgbouncer_host_points_pgbouncer_as_soon_as_the_candidate_leads(
        rest, pgbouncer, tmp_path):
    module = hand_over_module(pgbouncer, tmp_path)
    posts = patroni_switching_over(rest)
    started = time.monotonic()
    found = module.switchover("coord-syd-1", "pgrep-syd-1")
    assert found["status"] == 200 and "pgrep-syd-1 leads" in found["answer"]
    assert time.monotonic() - started < 3.0  # before Patroni's own answer
    assert posts == [("/switchover", {"leader": "coord-syd-1", "candidate": "pgrep-syd-1"})]
    assert databases(pgbouncer["port"]).get("gopbx") == "127.29.0.3"


def test_a_host_without_pgbouncer_hands_over_and_touches_no_pgbouncer(rest, pgbouncer, tmp_path):
    module = hand_over_module(pgbouncer, tmp_path, me="pgrep-syd-1")
    module.DATABASES_FILE = str(tmp_path / "absent" / "databases.ini")
    patroni_switching_over(rest)
    assert module.failover("pgrep-syd-1")["status"] == 200
    assert databases(pgbouncer["port"]).get("gopbx") == "127.29.0.250"


@pytest.mark.parametrize("status, text", [(412, "candidate name does not match with sync_standby"),
                                          (503, "Switchover failed"), (401, "no auth header received")])
def test_a_refused_hand_over_leaves_pgbouncer_as_it_is(rest, pgbouncer, tmp_path, status, text):
    module = hand_over_module(pgbouncer, tmp_path)
    for server in rest.values():
        server.on_post = lambda path, body, authorization: (status, text)
    assert module.switchover("coord-syd-1", "pgrep-syd-1") == {"status": status, "answer": text}
    assert databases(pgbouncer["port"]).get("gopbx") == "127.29.0.250"


DCS = {"ttl": 10, "loop_wait": 2, "retry_timeout": 3, "synchronous_mode": True, "primary_start_timeout": 0}


def dynamic_config_state(pgbouncer, tmp_path, test=False):
    module = hand_over_module(pgbouncer, tmp_path)
    state = load_module("_states", "gopbx_patroni", alias=f"gopbx_patroni_state_{time.monotonic_ns()}")
    state.__salt__ = {"gopbx_patroni.dynamic_config": module.dynamic_config,
                      "gopbx_patroni.set_dynamic_config": module.set_dynamic_config}
    state.__opts__ = {"test": test}
    return state


def test_pillars_dynamic_settings_reach_the_cluster_once(rest, pgbouncer, tmp_path):
    for server in rest.values():
        server.config = {"ttl": 30, "loop_wait": 10, "retry_timeout": 3, "synchronous_mode": True,
                         "postgresql": {"use_pg_rewind": True}}
    state = dynamic_config_state(pgbouncer, tmp_path)
    first = state.dynamic_config("gopbx-au", DCS)
    assert first["result"] is True
    assert first["changes"] == {"ttl": {"old": 30, "new": 10}, "loop_wait": {"old": 10, "new": 2},
                                "primary_start_timeout": {"old": None, "new": 0}}
    assert rest["coord-syd-1"].patches == [{"ttl": 10, "loop_wait": 2, "primary_start_timeout": 0}]
    assert rest["coord-syd-1"].config["postgresql"] == {"use_pg_rewind": True}  # the rest kept
    for server in rest.values():
        server.config = dict(rest["coord-syd-1"].config)
    again = state.dynamic_config("gopbx-au", DCS)
    assert again["result"] is True and again["changes"] == {}


def test_the_dry_run_says_what_would_change_and_changes_nothing(rest, pgbouncer, tmp_path):
    for server in rest.values():
        server.config = {"ttl": 30}
    found = dynamic_config_state(pgbouncer, tmp_path, test=True).dynamic_config("gopbx-au", DCS)
    assert found["result"] is None and set(found["changes"]) == set(DCS)
    assert all(not server.patches for server in rest.values())


@pytest.mark.parametrize("trouble", ["no member answers", "Patroni refuses the login"])
def test_a_cluster_that_cannot_take_the_change_fails_the_state_and_says_why(rest, pgbouncer, tmp_path, trouble):
    state = dynamic_config_state(pgbouncer, tmp_path)
    if trouble == "no member answers":
        for server in rest.values():
            server.answers = False
    else:
        (tmp_path / "config.yml").write_text("restapi:\n  authentication:\n    username: gopbx\n    password: wrong\n")
    found = state.dynamic_config("gopbx-au", DCS)
    assert found["result"] is False and found["changes"] == {} and found["comment"]
    assert all(not server.patches for server in rest.values())
