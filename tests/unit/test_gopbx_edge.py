"""
The edge reconcile (_modules/gopbx_edge.py) against the Vultr double and real
interfaces: two "hosts" are two bridges in a network namespace this test makes
(the reconcile's `ip` runs there), Keepalived's VRRP process is a pid file and
its announced state the file the notify handler writes.
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

    def __init__(self, tmp_path, netns, double, name, location, interface, instance_id, public_address):
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

    def reconcile(self):
        return self.module.reconcile(str(self.config))

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
    hosts = {"a": Host(tmp_path, netns, double, "coord-syd-1", "syd", "edge-a", made["coord-syd-1"], "149.28.188.104"),
             "b": Host(tmp_path, netns, double, "kam-syd-2", "syd", "edge-b", made["kam-syd-2"], "149.28.188.105")}
    hosts["mel"] = Host(tmp_path, netns, double, "kam-mel-1", "mel", "edge-b", made["kam-mel-1"], "45.76.112.9")
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
    assert set(first["changes"]) == {"interface", "reserved_ip", "dns"}
    assert a.holds()
    assert double.reserved_ips[double.sip_ip]["instance_id"] == a.settings["instance_id"]
    assert sip_records(double) == [(SIP_ADDRESS, 30)]
    before = len(writes(double))
    second = a.reconcile()
    assert second == {"state": "MASTER", "minion_id": "coord-syd-1", "result": True, "changes": {}}
    assert len(writes(double)) == before  # only reads the second time


@pytest.mark.parametrize("state", ["BACKUP", "FAULT", "STOP", "", "master", "GARBAGE\nMASTER"])
def test_a_host_that_is_not_master_drops_the_address_and_leaves_vultr_alone(pair, double, state):
    a = pair["a"]
    a.announce("MASTER")
    a.reconcile()
    before = len(double.requests)
    a.announce(state)
    result = a.reconcile()
    assert result["result"] is True and result["state"] in ("BACKUP", "FAULT", "STOP")
    assert result["changes"] == {"interface": f"{SIP_ADDRESS} removed from edge-a"}
    assert not a.holds()
    assert len(double.requests) == before  # a backup never talks to Vultr


def test_a_killed_keepalived_leaves_no_address_behind_whatever_it_last_announced(pair):
    a = pair["a"]
    a.announce("MASTER")
    a.reconcile()
    a.alive(False)  # SIGKILL: the state file still says MASTER
    assert a.module.vrrp_state(a.module._config(str(a.config))) == "STOP"
    assert a.reconcile()["changes"] == {"interface": f"{SIP_ADDRESS} removed from edge-a"}
    assert not a.holds()


def test_a_same_location_failover_moves_the_reserved_ip_through_vultrs_slow_detach(pair, double):
    a, b = pair["a"], pair["b"]
    a.announce("MASTER")
    a.reconcile()
    # b wins the election; a hears it (or its timer runs): each reconciles its own side.
    b.announce("MASTER")
    a.announce("BACKUP")
    moved = b.reconcile()
    a.reconcile()
    assert moved["result"] is True and "reserved_ip" in moved["changes"], moved
    assert double.reserved_ips[double.sip_ip]["instance_id"] == b.settings["instance_id"]
    assert b.holds() and not a.holds()
    assert sip_records(double) == [(SIP_ADDRESS, 30)]  # the name never moved: the address did
    assert double.requests.count(("POST", f"/v2/reserved-ips/{double.sip_ip}/detach")) == 1


def test_a_cross_location_master_moves_the_name_to_its_own_address_and_back(pair, double):
    a, mel = pair["a"], pair["mel"]
    a.announce("MASTER")
    a.reconcile()
    a.alive(False)
    a.reconcile()
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
    assert a.reconcile()["changes"] == {"interface": f"{SIP_ADDRESS} added to edge-a",
                                        "dns": f"sip.gopbx.au A {SIP_ADDRESS} (TTL 30)"}
    assert mel.reconcile()["changes"] == {}
    assert sip_records(double) == [(SIP_ADDRESS, 30)]


@pytest.mark.parametrize("status", [429, 500, 503])
def test_a_failed_vultr_call_is_logged_retried_by_the_next_run_and_never_leaves_two_holders(pair, double, caplog,
                                                                                            status):
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
    a.reconcile()
    assert [a.holds(), b.holds()] == [False, True]  # the interfaces follow VRRP, never both
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
    assert a.holds()  # the interface is local and Keepalived's decision; only Vultr's side waits
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
    a.reconcile()
    assert a.module.status(str(a.config)) == {"minion_id": "coord-syd-1", "state": "MASTER", "holds_address": True}
