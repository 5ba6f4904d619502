"""
The edge reconcile (_modules/gopbx_edge.py) against the Vultr double and real
interfaces: two "hosts" are two bridges in a network namespace this test makes
(the reconcile's `ip` runs there), Keepalived's VRRP process is a pid file and
its announced state the file the notify handler writes. While Keepalived runs
it owns the address on the interface (tests/integration/test_keepalived_edge.py
runs the real one): here `keepalived_adds` stands for it.
"""

import json
import os
import subprocess
import threading
import time

import pytest

from tests.doubles.vultr import VultrDouble
from tests.support import load_module

vultr = load_module("_utils", "gopbx_vultr")
SIP_ADDRESS = "103.43.75.51"
NETNS = f"gopbx-edge-unit-{os.getpid()}"


@pytest.fixture(scope="module")
def netns():
    subprocess.run(["ip", "netns", "add", NETNS], check=True)
    try:
        for bridge in ("edge-a", "edge-b"):
            subprocess.run(["ip", "-n", NETNS, "link", "add", bridge, "type", "bridge"], check=True)
            subprocess.run(["ip", "-n", NETNS, "link", "set", bridge, "up"], check=True)
        yield NETNS
    finally:
        subprocess.run(["ip", "netns", "del", NETNS], check=False)


@pytest.fixture
def double():
    server = VultrDouble().start()
    server.domains["gopbx.au"] = {}
    server.settle_seconds = 0.3
    yield server
    server.stop()


def edge_module(netns):
    module = load_module("_modules", "gopbx_edge", alias=f"gopbx_edge_{time.monotonic_ns()}")
    real_ip = module._ip

    def ip_in_namespace(*args):
        return real_ip("-n", netns, *args)

    module._ip = ip_in_namespace
    module.__opts__ = {}
    module.__utils__ = {"gopbx_vultr.client": lambda key, url: vultr.Vultr(key, url=url, backoff=0.05)}
    return module


def addresses(netns, interface):
    shown = subprocess.run(["ip", "-n", netns, "-o", "addr", "show", "dev", interface], capture_output=True,
                           text=True, check=True).stdout
    return [part.split("/")[0] for part in shown.split() if "/" in part and part[0].isdigit()]


class Host:
    """One edge host: its settings file, run dir, VRRP pid file and interface."""

    def __init__(self, tmp_path, netns, double, name, location, interface, instance_id, public_address, peers):
        self.netns, self.interface = netns, interface
        self.run_dir = tmp_path / name / "run"
        self.run_dir.mkdir(parents=True)
        self.pid_file = tmp_path / name / "keepalived_vrrp.pid"
        self.alive()
        self.config = tmp_path / name / "edge.json"
        self.settings = {"minion_id": name, "location": location, "instance_id": instance_id,
                         "public_address": public_address, "interface": interface, "sip_address": SIP_ADDRESS,
                         "sip_address_location": "syd", "reserved_ip_id": double.sip_ip,
                         "dns": {"domain": "gopbx.au", "name": "sip", "ttl": 30},
                         "vultr_url": double.url, "api_key": double.api_key, "run_dir": str(self.run_dir),
                         "peers": peers,
                         "vrrp_pid_file": str(self.pid_file)}
        self.write()
        self.module = edge_module(netns)

    def write(self):
        self.config.write_text(json.dumps(self.settings))

    def alive(self, alive=True):
        # Our own pid stands for a running VRRP process; pid 2**22+1 can't exist.
        self.pid_file.write_text(f"{os.getpid() if alive else 2**22 + 1}\n")

    def announce(self, state):
        (self.run_dir / "vrrp-state").write_text(state + "\n")

    def keepalived_adds(self):
        subprocess.run(["ip", "-n", self.netns, "addr", "add", f"{SIP_ADDRESS}/32", "dev", self.interface], check=True)

    def reconcile(self, transition=True):
        return self.module.reconcile(str(self.config), transition=transition)

    def holds(self):
        return SIP_ADDRESS in addresses(self.netns, self.interface)


@pytest.fixture
def pair(tmp_path, netns, double):
    """Two Sydney hosts and a Melbourne one, as Vultr instances; the reserved IP is Sydney's."""
    made = {}
    for label, region in (("coord-syd-1", "syd"), ("kam-syd-2", "syd"), ("kam-mel-1", "mel")):
        instance = double.answer("POST", "/v2/instances", {}, {"label": label, "region": region,
                                                               "plan": "vc2-2c-4gb"}, double.api_key)[1]["instance"]
        made[label] = instance["id"]
    double.sip_ip = double.reserve_ip("syd", SIP_ADDRESS, "sip")
    public = {"coord-syd-1": "149.28.188.104", "kam-syd-2": "149.28.188.105", "kam-mel-1": "45.76.112.9"}
    peers = {name: {"address": f"10.29.0.{number}", "priority": 150 - 50 * number, "location": name.split("-")[1],
                    "instance_id": made[name], "public_address": public[name]} for number, name in enumerate(made)}
    hosts = {key: Host(tmp_path, netns, double, name, name.split("-")[1], interface, made[name], public[name], peers)
             for key, name, interface in (("a", "coord-syd-1", "edge-a"), ("b", "kam-syd-2", "edge-b"),
                                          ("mel", "kam-mel-1", "edge-b"))}
    double.requests.clear()  # the operator's set-up above; tests count the reconcile's own
    yield hosts
    for interface in ("edge-a", "edge-b"):
        subprocess.run(["ip", "-n", netns, "addr", "flush", "dev", interface], check=False)


def sip_records(double):
    return [(item["data"], item["ttl"]) for item in double.domains["gopbx.au"].values() if item["name"] == "sip"]


def writes(double):
    return [request for request in double.requests if request[0] != "GET"]


def test_the_master_takes_the_reserved_ip_and_the_name_then_a_second_run_changes_nothing(pair, double):
    a = pair["a"]
    a.announce("MASTER")
    first = a.reconcile()
    assert first["result"] is True and first["state"] == "MASTER", first
    assert set(first["changes"]) == {"reserved_ip", "dns"}
    assert not a.holds()  # the interface is Keepalived's while it runs
    assert double.reserved_ips[double.sip_ip]["instance_id"] == a.settings["instance_id"]
    assert sip_records(double) == [(SIP_ADDRESS, 30)]
    before = len(writes(double))
    second = a.reconcile()
    assert second == {"state": "MASTER", "minion_id": "coord-syd-1", "result": True, "changes": {}}
    assert len(writes(double)) == before  # only reads the second time


@pytest.mark.parametrize("state", ["BACKUP", "FAULT", "STOP", "", "master", "GARBAGE\nMASTER"])
def test_a_host_that_is_not_master_changes_nothing_and_leaves_vultr_alone(pair, double, state):
    a = pair["a"]
    a.announce(state)
    result = a.reconcile()
    assert result == {"state": state if state in ("BACKUP", "FAULT", "STOP") else "BACKUP",
                      "minion_id": "coord-syd-1", "result": True, "changes": {}}
    assert double.requests == []  # a backup never talks to Vultr


def test_the_address_is_left_to_a_running_keepalived_whatever_the_state_file_says(pair):
    a = pair["a"]
    a.keepalived_adds()
    a.announce("BACKUP")  # a line still waiting its turn in the FIFO: Keepalived knows better
    assert a.reconcile()["changes"] == {}
    assert a.holds()


@pytest.mark.parametrize("last_announced", ["MASTER", "BACKUP", None])
def test_a_killed_keepalived_leaves_no_address_behind_whatever_it_last_announced(pair, double, last_announced):
    a = pair["a"]
    a.keepalived_adds()
    if last_announced:
        a.announce(last_announced)
    a.alive(False)  # SIGKILL: the address stays, the state file says what it said
    assert a.module.vrrp_state(a.module._config(str(a.config))) == "STOP"
    assert a.reconcile()["changes"] == {"interface": f"{SIP_ADDRESS} removed from edge-a"}
    assert not a.holds()
    assert double.requests == []  # a dead Keepalived's host is no one to move the address


def test_a_same_location_failover_moves_the_reserved_ip_through_vultrs_slow_detach(pair, double):
    a, b = pair["a"], pair["b"]
    a.announce("MASTER")
    a.reconcile()
    # b wins the election; a hears it (or its timer runs): each reconciles its own side.
    b.announce("MASTER")
    a.announce("BACKUP")
    moved = b.reconcile()
    assert a.reconcile()["changes"] == {}
    assert moved["result"] is True and set(moved["changes"]) == {"reserved_ip"}, moved
    assert double.reserved_ips[double.sip_ip]["instance_id"] == b.settings["instance_id"]
    assert sip_records(double) == [(SIP_ADDRESS, 30)]  # the name never moved: the address did
    assert double.requests.count(("POST", f"/v2/reserved-ips/{double.sip_ip}/detach")) == 1


def test_a_cross_location_master_moves_the_name_to_its_own_address_and_back(pair, double):
    a, mel = pair["a"], pair["mel"]
    a.announce("MASTER")
    a.reconcile()
    a.alive(False)
    mel.announce("MASTER")
    result = mel.reconcile()
    assert result["result"] is True and set(result["changes"]) == {"dns"}, result
    assert sip_records(double) == [("45.76.112.9", 30)]
    assert not mel.holds()  # Sydney's reserved IP can't be Melbourne's
    assert double.reserved_ips[double.sip_ip]["instance_id"] == a.settings["instance_id"]  # untouched
    # Sydney comes back and wins: the name returns to the reserved IP.
    a.alive()
    a.announce("MASTER")
    mel.announce("BACKUP")
    assert a.reconcile()["changes"] == {"dns": f"sip.gopbx.au A {SIP_ADDRESS} (TTL 30)"}
    assert mel.reconcile()["changes"] == {}
    assert sip_records(double) == [(SIP_ADDRESS, 30)]


@pytest.mark.parametrize("status", [429, 500, 503])
def test_a_failed_vultr_call_is_logged_and_retried_by_the_next_run(pair, double, caplog, status):
    a, b = pair["a"], pair["b"]
    a.announce("MASTER")
    a.reconcile()
    b.announce("MASTER")
    a.announce("BACKUP")
    b.settings["move_timeout"] = 1  # the move gives up within the run; the timer runs it again
    b.write()
    double.fail(status, times=10**6, message="Vultr is having a moment", method="POST")
    failed = b.reconcile()
    assert failed["result"] is False and "Vultr is having a moment" in failed["error"], failed
    assert "gopbx_edge: reconcile as MASTER failed" in caplog.text
    assert double.reserved_ips[double.sip_ip]["instance_id"] in (a.settings["instance_id"], None)
    double.failures.clear()
    retried = b.reconcile()  # the timer's next run
    assert retried["result"] is True and "reserved_ip" in retried["changes"], retried
    assert double.reserved_ips[double.sip_ip]["instance_id"] == b.settings["instance_id"]


def test_a_4xx_from_vultr_is_not_resent_and_is_reported(pair, double):
    a = pair["a"]
    a.settings["api_key"] = "revoked-key"
    a.write()
    a.announce("MASTER")
    result = a.reconcile()
    assert result["result"] is False and "401" in result["error"]
    assert double.requests.count(("GET", f"/v2/reserved-ips/{double.sip_ip}")) == 1


@pytest.mark.parametrize("content, message", [
    (None, "cannot be read"),
    ("{not json", "cannot be read"),
    ("{}", "lack minion_id, location, interface, sip_address, sip_address_location, dns"),
    ('{"minion_id": "x", "location": "syd", "interface": "eth0", "sip_address": "1.2.3.4", "dns": {}}',
     "lack sip_address_location"),
])
def test_bad_settings_are_refused_naming_the_problem(tmp_path, netns, content, message):
    module = edge_module(netns)
    path = tmp_path / "edge.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(module.CommandExecutionError, match=message):
        module.reconcile(str(path))


def test_reconciles_on_one_host_run_one_at_a_time(pair, double):
    a = pair["a"]
    a.announce("MASTER")
    double.delay = 0.2  # each Vultr call takes a while
    results = []
    threads = [threading.Thread(target=lambda: results.append(a.reconcile())) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(bool(result["changes"]) for result in results) == [False, True]
    assert double.requests.count(("POST", f"/v2/reserved-ips/{double.sip_ip}/attach")) == 1


def test_status_tells_the_state_and_whether_the_address_is_here(pair):
    a = pair["a"]
    a.announce("MASTER")
    a.keepalived_adds()
    assert a.module.status(str(a.config)) == {"minion_id": "coord-syd-1", "state": "MASTER", "holds_address": True}


def test_while_the_private_network_is_cut_the_timer_leaves_the_address_to_the_higher_priority_master(pair, double):
    a, b = pair["a"], pair["b"]
    # Both are MASTER: b won its own election (a transition) and took the reserved IP.
    a.announce("MASTER")
    b.announce("MASTER")
    assert "reserved_ip" in b.reconcile(transition=True)["changes"]
    # a's timer takes it back (a outranks b); b's timer then leaves it to a: no ping-pong.
    assert "reserved_ip" in a.reconcile(transition=False)["changes"]
    moves = double.requests.count(("POST", f"/v2/reserved-ips/{double.sip_ip}/attach"))
    for _ in range(3):
        assert b.reconcile(transition=False)["changes"] == {}
        assert a.reconcile(transition=False)["changes"] == {}
    assert double.requests.count(("POST", f"/v2/reserved-ips/{double.sip_ip}/attach")) == moves
    assert double.reserved_ips[double.sip_ip]["instance_id"] == a.settings["instance_id"]


def test_across_locations_the_timer_leaves_the_name_to_the_higher_priority_site(pair, double):
    a, mel = pair["a"], pair["mel"]
    a.announce("MASTER")
    a.reconcile()
    mel.announce("MASTER")  # a split between Sydney and Melbourne: both MASTER
    assert mel.reconcile(transition=False)["changes"] == {}
    assert sip_records(double) == [(SIP_ADDRESS, 30)]
    # On its own transition Melbourne takes the name (Sydney may be gone); Sydney's timer takes it back.
    assert set(mel.reconcile(transition=True)["changes"]) == {"dns"}
    assert sip_records(double) == [("45.76.112.9", 30)]
    assert set(a.reconcile(transition=False)["changes"]) == {"dns"}
    assert mel.reconcile(transition=False)["changes"] == {}
    assert sip_records(double) == [(SIP_ADDRESS, 30)]
