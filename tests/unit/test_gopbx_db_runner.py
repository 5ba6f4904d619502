"""
The gopbx_db runner's role-change events (reactor/postgres-role-changed.sls): a
minion writes its event's payload, and in Salt's batched form even the id, so
every bad shape is refused and logged before the runner asks anyone anything.
"""

import logging

import pytest

from tests.support import load_module

HOSTS = ["coord-syd-1", "pgrep-syd-1"]


@pytest.fixture
def runner(monkeypatch):
    module = load_module("_runners", "gopbx_db", alias="gopbx_db_runner_under_test")
    module.__opts__ = {"conf_file": "/nonexistent/master"}
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
