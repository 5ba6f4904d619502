"""
The multi-host lab (scripts/mlab): the seed's hosts as real systemd machines, a
salt-master on the coordinator, every role applied from it the production way.
"""

import json
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.support import REPO

MLAB = REPO / "scripts" / "mlab"
TOPOLOGY = yaml.safe_load((REPO / "pillar" / "mlab" / "topology.sls").read_text())["mlab"]
STATE = Path("/var/lib/gopbx-mlab")
# Each role's services, as systemd units (and whatever later roles add).
SERVICES = {
    "coord-syd-1": ["postgresql@15-main", "pgbouncer", "redis-server", "kamailio", "rtpengine-daemon", "nginx",
                    "gopbx-api", "gopbx-call-events", "salt-master"],
    "kam-mel-1": ["kamailio"],
    "pgrep-syd-1": [],
    "fs-syd-1": ["gopbx-media-standin"],
    "fs-syd-2": ["gopbx-media-standin"],
}


def mlab(*args, timeout=3600):
    return subprocess.run([str(MLAB), *args], capture_output=True, text=True, timeout=timeout, check=False)


def master_json(*command):
    result = mlab("master", *command, "--out=json", *(["--static"] if command[0] == "salt" else []))
    assert result.returncode == 0 or result.stdout, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def lab():
    started = time.monotonic()
    up = mlab("up")
    print(up.stdout[-3000:], f"\nmlab up: {time.monotonic() - started:.0f} s")
    assert up.returncode == 0, up.stdout[-5000:] + up.stderr[-3000:]
    yield up.stdout
    mlab("down")


def test_exactly_the_expected_minions_are_accepted(lab):
    keys = master_json("salt-key", "--list=all")
    assert sorted(keys["minions"]) == sorted(TOPOLOGY["machines"])
    audit = [json.loads(line) for line in (STATE / "key-acceptance.log").read_text().splitlines()]
    assert {entry["minion"] for entry in audit} >= set(TOPOLOGY["machines"])
    assert all(entry["fingerprint"] for entry in audit)


def test_the_first_highstate_succeeded_on_every_machine(lab):
    summary = json.loads((STATE / "highstate.json").read_text())
    print(f"\nfirst highstate across the lab: {summary['seconds']:.0f} s")
    assert sorted(summary["minions"]) == sorted(TOPOLOGY["machines"])
    for minion, result in summary["minions"].items():
        assert result["failed"] == [] and result["states"] > 0, minion


@pytest.mark.parametrize("name", list(TOPOLOGY["machines"]))
def test_each_role_runs_its_services_under_systemd(lab, name):
    for unit in SERVICES[name] + ["salt-minion", "rsyslog", "systemd-networkd"]:
        result = mlab("run", name, "systemctl", "is-active", unit)
        assert result.stdout.strip() == "active", f"{name}: {unit} is {result.stdout.strip()}"
    # PID 1 is systemd: the states drove systemd units, not init scripts.
    assert mlab("run", name, "cat", "/proc/1/comm").stdout.strip() == "systemd"


def test_machines_reach_the_coordinators_services(lab):
    # The standby's Kamailio uses the coordinator's pgBouncer and Redis, routed over the lab network.
    result = mlab("run", "kam-mel-1", "bash", "-c", "exec 3<>/dev/tcp/172.28.0.12/5432 && echo open")
    assert result.stdout.strip() == "open", result.stderr


def test_a_second_highstate_changes_nothing(lab):
    started = time.monotonic()
    returned = master_json("salt", "*", "state.apply", "--timeout=900")
    print(f"\nsecond highstate across the lab: {time.monotonic() - started:.0f} s")
    assert sorted(returned) == sorted(TOPOLOGY["machines"])
    for minion, states in returned.items():
        assert isinstance(states, dict), states
        assert all(state["result"] for state in states.values()), minion
        assert [key for key, state in states.items() if state["changes"]] == [], minion


def test_a_minion_with_an_unexpected_id_is_not_accepted_and_gets_nothing(lab):
    # A minion that calls itself evil-1, on the coordinator's network.
    start = ("mkdir -p /tmp/evil && printf 'id: evil-1\\nmaster: salt.gopbx.internal\\nroot_dir: /tmp/evil\\n' "
             "> /tmp/evil/minion && salt-minion -c /tmp/evil -d")
    assert mlab("run", "fs-syd-2", "bash", "-c", start).returncode == 0
    deadline = time.monotonic() + 60
    while "evil-1" not in master_json("salt-key", "--list=all").get("minions_pre", []):
        assert time.monotonic() < deadline, "evil-1's key never reached the master"
        time.sleep(2)
    # The lab's own key step accepts only the topology's machines.
    up = mlab("up", "--no-highstate")
    assert up.returncode == 0 and "left unaccepted (not in the topology): evil-1" in up.stdout
    keys = master_json("salt-key", "--list=all")
    assert "evil-1" in keys["minions_pre"] and "evil-1" not in keys["minions"]
    assert "No minions matched the target" in mlab("master", "salt", "evil-1", "test.ping").stdout
    pillar = mlab("run", "fs-syd-2", "salt-call", "-c", "/tmp/evil", "--retcode-passthrough", "pillar.items")
    assert pillar.returncode != 0
    mlab("run", "fs-syd-2", "bash", "-c", "pkill -f 'salt-minion -c /tmp/evil'")
    mlab("master", "salt-key", "--yes", "--delete", "evil-1")


def test_teardown_leaves_nothing_behind(lab):
    assert mlab("down").returncode == 0
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert "mlab-" not in namespaces and "gopbx-mlab" not in namespaces
    assert str(STATE / "machines") not in Path("/proc/mounts").read_text()
    processes = subprocess.run(["pgrep", "-f", "systemd-nspawn"], capture_output=True, text=True).stdout
    assert processes.strip() == ""
    assert not (STATE / "machines").exists() or not any((STATE / "machines").iterdir())
