"""
The gopbx_db runner's role-change events (reactor/postgres-role-changed.sls): a
minion writes its event's payload, and in Salt's batched form even the id, so
every bad shape is refused and logged before the runner asks anyone anything.
"""

import logging
import threading
import time

import pytest

from tests.support import load_module

HOSTS = ["coord-syd-1", "pgrep-syd-1"]


@pytest.fixture
def runner(monkeypatch, tmp_path):
    module = load_module("_runners", "gopbx_db", alias="gopbx_db_runner_under_test")
    module.__opts__ = {"conf_file": "/nonexistent/master", "cachedir": str(tmp_path)}
    module.__utils__ = {"gopbx_runner.settings": lambda opts: {"database_hosts": HOSTS + ["evil host"]}}

    class Keys:
        def list_status(self, status):
            return {"minions": ["coord-syd-1", "pgrep-syd-1", "fs-syd-1"]}

    monkeypatch.setattr(module.salt.key, "get_key", lambda opts: Keys())
    asked = []
    monkeypatch.setattr(module, "_cluster", lambda: asked.append("cluster") or (None, {"members": []}))
    module.asked = asked
    return module


@pytest.mark.parametrize("event", [
    None, "primary", ["pgrep-syd-1"], 42,
    {},  # no id
    {"id": "fs-syd-1", "data": {"role": "primary"}},  # a media node, accepted key
    {"id": "evil host", "data": {"role": "primary"}},  # in the settings, not a host name
    {"id": "pgrep-syd-1\nfs-syd-1", "data": {"role": "primary"}},
    {"id": "pgrep-syd-1\x00", "data": {"role": "primary"}},
    {"id": "pgrep-syd-1" * 1000, "data": {"role": "primary"}},
    {"id": ["pgrep-syd-1"], "data": {"role": "primary"}},
    {"id": "pgrep-syd-1", "data": None},
    {"id": "pgrep-syd-1", "data": "primary"},
    {"id": "pgrep-syd-1", "data": {"role": "primary; rm -rf /"}},
    {"id": "pgrep-syd-1", "data": {"role": "PRIMARY"}},
    {"id": "pgrep-syd-1", "data": {"role": "primary" * 10000}},
    {"id": "pgrep-syd-1", "data": {"role": ["primary"]}},
    {"id": "pgrep-syd-1", "data": {}},
])
def test_a_bad_event_is_refused_logged_and_asks_nobody(runner, event, caplog):
    with caplog.at_level(logging.WARNING):
        found = runner.role_changed(event=event)
    assert found["followed"] is False and found["reason"]
    assert "refused" in caplog.text
    assert runner.asked == []


def test_an_event_from_a_host_whose_key_is_not_accepted_is_refused(runner, monkeypatch):
    runner.__utils__ = {"gopbx_runner.settings": lambda opts: {"database_hosts": HOSTS + ["pgrep-syd-2"]}}
    found = runner.role_changed(event={"id": "pgrep-syd-2", "data": {"role": "primary"}})
    assert found["followed"] is False and "key" in found["reason"] and runner.asked == []


def test_a_well_formed_event_only_makes_the_runner_ask_the_cluster(runner):
    found = runner.role_changed(event={"id": "pgrep-syd-1", "data": {"role": "master"}})
    # The cluster (asked, not the event) names no running primary: nothing is repointed.
    assert runner.asked == ["cluster"] and found == {"followed": False, "minion": "pgrep-syd-1",
                                                     "reason": "no running primary yet"}


def preflight(runner, monkeypatch, view, candidate=None):
    monkeypatch.setattr(runner, "_etcd", lambda: {"members": {"coord-syd-1": True}, "quorum": True})
    return {check: ok for check, ok, _ in runner._preflight(view, candidate, False)[2]}


def members(*replicas):
    return [{"name": "coord-syd-1", "role": "leader", "state": "running"}, *replicas]


def test_without_synchronous_commits_a_streaming_replica_may_take_over(runner, monkeypatch):
    view = {"synchronous_mode": False,
            "members": members({"name": "pgrep-syd-1", "role": "replica", "state": "streaming", "lag": 0})}
    checks = preflight(runner, monkeypatch, view)
    assert "candidate synchronous" not in checks and all(checks.values())


@pytest.mark.parametrize("view", [
    # Synchronous mode on, the replica not (yet) the synchronous one.
    {"synchronous_mode": True, "members": members({"name": "pgrep-syd-1", "role": "replica", "state": "streaming",
                                                    "lag": 0})},
    # The mode unknown (no /config answer): the stricter reading.
    {"members": members({"name": "pgrep-syd-1", "role": "replica", "state": "streaming", "lag": 0})},
    # Asynchronous, but far behind.
    {"synchronous_mode": False, "members": members({"name": "pgrep-syd-1", "role": "replica", "state": "streaming",
                                                     "lag": 50 * 1048576})},
    # Asynchronous, but not replicating.
    {"synchronous_mode": False, "members": members({"name": "pgrep-syd-1", "role": "replica", "state": "stopped",
                                                     "lag": 0})},
])
def test_a_replica_that_could_lose_commits_is_refused(runner, monkeypatch, view):
    assert not all(preflight(runner, monkeypatch, view).values())


@pytest.mark.parametrize("answering, asker", [
    ({"coord-syd-1": True}, "coord-syd-1"),  # the pgBouncer host asks: its pgBouncer follows at once
    ({}, "pgrep-syd-1"),  # the coordinator is gone: the candidate asks
    ({"kam-mel-1": True}, "pgrep-syd-1"),  # a pgBouncer host that is no database host is not a member
])
def test_the_hand_over_is_asked_from_a_pgbouncer_host_that_answers(runner, monkeypatch, answering, asker):
    monkeypatch.setattr(runner, "_ask", lambda target, function, *args, **kwargs: answering)
    assert runner._asker("pgrep-syd-1") == asker


def slow_cluster(runner, monkeypatch, seconds):
    """Each ask of the cluster takes SECONDS (a Salt round trip) and finds a running primary."""
    asks = []

    def cluster():
        asks.append(time.monotonic())
        time.sleep(seconds)
        return "coord-syd-1", {"members": [{"name": "coord-syd-1", "role": "leader", "state": "running"}]}

    monkeypatch.setattr(runner, "_cluster", cluster)
    monkeypatch.setattr(runner, "follow", lambda: {"coord-syd-1": {"primary": "coord-syd-1", "changed": False}})
    monkeypatch.setattr(runner, "clients_reconnect", lambda: {"api": True})
    return asks


def test_a_flood_of_events_is_folded_into_a_run_or_two(runner, monkeypatch):
    asks = slow_cluster(runner, monkeypatch, 0.3)
    answers = []
    events = [threading.Thread(target=lambda: answers.append(runner.role_changed(
        event={"id": "pgrep-syd-1", "data": {"role": "master"}}))) for _ in range(50)]
    for thread in events:
        thread.start()
    for thread in events:
        thread.join()
    assert len(answers) == 50 and 1 <= len(asks) <= 3
    assert 1 <= sum(answer["followed"] for answer in answers) <= len(asks)
    assert all(answer["followed"] or answer["reason"] == "folded into the run under way" for answer in answers)


def test_an_event_during_a_run_gets_a_run_of_its_own_after_it(runner, monkeypatch):
    asks = slow_cluster(runner, monkeypatch, 0.5)
    first = threading.Thread(target=runner.role_changed, kwargs={"event": {"id": "coord-syd-1",
                                                                           "data": {"role": "replica"}}})
    first.start()
    time.sleep(0.2)
    late = time.monotonic()
    assert runner.role_changed(event={"id": "pgrep-syd-1", "data": {"role": "master"}})["followed"] is False
    first.join()
    # The run under way asked the cluster once more, after the late event came.
    assert len(asks) == 2 and asks[1] > late
    # And with no run under way, an event is followed at once.
    assert runner.role_changed(event={"id": "pgrep-syd-1", "data": {"role": "master"}})["followed"] is True
