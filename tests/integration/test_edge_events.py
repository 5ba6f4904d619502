"""
Keepalived transitions as the masters see them: a real salt-master with this
tree's reactor and gopbx_edge runner, and real minions for the two edge hosts
whose gopbx_edge.status reads a VRRP state file as the notify handler writes it
(tests/integration/test_keepalived_edge.py drives that file with the real
Keepalived). Forged and malformed events, in every shape a minion can send,
change nothing.
"""

import json
import os

import pytest

from tests.support import fake_secrets, master_config, wait_for

EDGE_HOSTS = ["coord-syd-1", "kam-mel-1"]


@pytest.fixture(scope="module")
def master(salt_factories, tmp_path_factory):
    made = fake_secrets()
    config = master_config(tmp_path_factory.mktemp("site"), made, engines=[], gopbx={"edge_hosts": EDGE_HOSTS})
    factory = salt_factories.salt_master_daemon("gopbx-edge-master", overrides=config)
    with factory.started():
        yield factory


class EdgeMinion:
    def __init__(self, master, minion_id, base):
        self.id, self.base = minion_id, base
        self.run_dir = base / "run"
        self.run_dir.mkdir(parents=True)
        (base / "vrrp.pid").write_text(str(os.getpid()))
        (base / "edge.json").write_text(json.dumps({
            "minion_id": minion_id, "location": minion_id.split("-")[1], "interface": "lo",
            "sip_address": "127.28.9.9", "sip_address_location": "syd", "dns": {},
            "run_dir": str(self.run_dir), "vrrp_pid_file": str(base / "vrrp.pid")}))
        self.factory = master.salt_minion_daemon(minion_id, overrides={
            "master": "127.0.0.1", "gopbx_edge_config": str(base / "edge.json")})

    def set_state(self, state):
        (self.run_dir / "vrrp-state").write_text(state + "\n")

    def send(self, state, **payload):
        payload = payload or {"instance": "SIP_EDGE", "priority": "150"}
        args = [f"{key}={value}" for key, value in payload.items()]
        result = self.factory.salt_call_cli().run("event.send", f"gopbx/keepalived/{state}", *args)
        assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def edge(master, tmp_path_factory):
    minions = {name: EdgeMinion(master, name, tmp_path_factory.mktemp(name)) for name in EDGE_HOSTS}
    stranger = master.salt_minion_daemon("fs-syd-9", overrides={"master": "127.0.0.1"})
    with minions["coord-syd-1"].factory.started(), minions["kam-mel-1"].factory.started(), stranger.started():
        for minion in (*minions.values(),):
            assert minion.factory.salt_call_cli().run("saltutil.sync_all").returncode == 0
        yield {**minions, "stranger": stranger}


def records(master):
    path = os.path.join(master.config["cachedir"], "gopbx", "edge.json")
    return json.load(open(path)) if os.path.exists(path) else {}


def master_log(master):
    return open(master.config["log_file"], errors="replace").read()


def test_a_confirmed_transition_is_recorded_and_one_master_is_no_split(master, edge):
    edge["coord-syd-1"].set_state("MASTER")
    edge["kam-mel-1"].set_state("BACKUP")
    edge["coord-syd-1"].send("master")
    assert wait_for(lambda: records(master).get("coord-syd-1", {}).get("state") == "MASTER", timeout=60)
    assert records(master)["coord-syd-1"]["priority"] == 150
    status = master.salt_run_cli().run("gopbx_edge.status").data
    assert status["masters"] == ["coord-syd-1"] and status["split"] is False and status["none"] is False
    assert status["hosts"]["kam-mel-1"]["now"] == "BACKUP"


def test_two_masters_are_reported_as_a_split(master, edge, event_listener):
    edge["kam-mel-1"].set_state("MASTER")
    edge["kam-mel-1"].send("master", instance="SIP_EDGE", priority="100")
    events = event_listener.wait_for_events([(master.id, "gopbx/edge/split")], timeout=60)
    assert events.found_all_events, "no gopbx/edge/split event"
    assert list(events.matches)[0].data["masters"] == ["coord-syd-1", "kam-mel-1"]
    assert "SIP edge split: coord-syd-1, kam-mel-1 all report MASTER" in master_log(master)
    # The split heals: Melbourne goes back to BACKUP.
    edge["kam-mel-1"].set_state("BACKUP")
    edge["kam-mel-1"].send("backup", instance="SIP_EDGE", priority="100")
    assert wait_for(lambda: records(master).get("kam-mel-1", {}).get("state") == "BACKUP", timeout=60)
    assert master.salt_run_cli().run("gopbx_edge.status").data["split"] is False


def test_no_master_at_all_is_reported(master, edge, event_listener):
    edge["coord-syd-1"].set_state("FAULT")
    edge["coord-syd-1"].send("fault")
    events = event_listener.wait_for_events([(master.id, "gopbx/edge/none")], timeout=60)
    assert events.found_all_events, "no gopbx/edge/none event"
    edge["coord-syd-1"].set_state("MASTER")
    edge["coord-syd-1"].send("master")
    assert wait_for(lambda: records(master)["coord-syd-1"]["state"] == "MASTER", timeout=60)


FORGERIES = [
    # (who sends, tag state, payload, what the master logs)
    ("stranger", "master", {"instance": "SIP_EDGE", "priority": "150"}, "is not one of the edge hosts"),
    ("kam-mel-1", "leader", {"instance": "SIP_EDGE", "priority": "100"}, "is not gopbx/keepalived/<master"),
    ("kam-mel-1", "master", {"instance": "OTHER", "priority": "100"}, "names no SIP_EDGE instance"),
    ("kam-mel-1", "master", {"instance": "SIP_EDGE", "priority": "999"}, "is not a VRRP priority"),
    ("kam-mel-1", "master", {"instance": "SIP_EDGE", "priority": "1; rm"}, "is not a VRRP priority"),
    # A real edge host claiming what it is not: it says BACKUP when asked.
    ("kam-mel-1", "master", {"instance": "SIP_EDGE", "priority": "100"}, "kam-mel-1 itself reports BACKUP, not MASTER"),
]


@pytest.mark.parametrize("sender, state, payload, reason", FORGERIES)
def test_a_forged_or_malformed_transition_changes_nothing(master, edge, sender, state, payload, reason):
    before = records(master)
    minion = edge[sender]
    factory = minion.factory if sender != "stranger" else minion
    args = [f"{key}={value}" for key, value in payload.items()]
    assert factory.salt_call_cli().run("event.send", f"gopbx/keepalived/{state}", *args).returncode == 0
    assert wait_for(lambda: reason in master_log(master), timeout=60), reason
    assert records(master) == before


@pytest.mark.parametrize("shape", ["preload", "batch"])
def test_a_minion_claiming_another_hosts_id_is_refused_by_that_host(master, edge, shape):
    # A minion chooses its event's payload, and Salt's batched form (and a preload)
    # let it write the very id a reactor sees: the runner asks the named host instead.
    edge["kam-mel-1"].set_state("BACKUP")
    before = records(master)
    forged = {"id": "kam-mel-1", "tag": "gopbx/keepalived/master", "data": {"instance": "SIP_EDGE", "priority": "100"}}
    if shape == "preload":
        call = ["event.fire_master", json.dumps(forged["data"]), "gopbx/keepalived/master",
                f"preload={json.dumps({'id': 'kam-mel-1'})}"]
    else:
        call = ["event.fire_master", "{}", "gopbx/ignored",
                f"preload={json.dumps({'events': [{'tag': 'gopbx/keepalived/master', 'data': forged}]})}"]
    edge["stranger"].salt_call_cli().run(*call)
    assert wait_for(lambda: master_log(master).count("kam-mel-1 itself reports BACKUP, not MASTER") >= 2
                    or "claiming to be from 'fs-syd-9'" in master_log(master), timeout=60)
    assert records(master) == before
    assert master.salt_run_cli().run("gopbx_edge.status").data["masters"] == ["coord-syd-1"]
