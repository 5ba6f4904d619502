"""
The SIP edge as the masters see it: Keepalived transitions recorded, and a
split (two active hosts) or no active host reported.

    salt-run gopbx_edge.status
    salt-run gopbx_edge.transition event='{"id": "kam-mel-1", "tag": "gopbx/keepalived/master", ...}'

Each edge host's Keepalived notify handler fires ``gopbx/keepalived/<state>``;
the reactor (reactor/keepalived-transition.sls) hands the event to
:func:`transition`. The event only says "look": a minion chooses its event's
tag and payload, and in Salt's batched event form even the ``id`` a reactor
sees is the sender's to write. So the runner checks that the id is one of the
edge hosts (``gopbx:edge_hosts``, written by the salt_master formula from
``keepalived:peers``) with an accepted key, then asks that minion itself
(``gopbx_edge.status``, answered over its own key) and records only what it
says, refusing the event when it says otherwise. Then it asks every edge host
and reports the hosts that are MASTER: two or more is a split
(``gopbx/edge/split``), none is an outage (``gopbx/edge/none``).

Records are the master's own (``<cachedir>/gopbx/edge.json``, and every
accepted transition in the master log): with the coordinator gone the
second master keeps its own.
"""

import json
import logging
import os
import re
import time

import salt.client
import salt.key
import salt.utils.atomicfile
import salt.utils.event
import salt.utils.files
import salt.utils.yaml

log = logging.getLogger(__name__)
__virtualname__ = "gopbx_edge"

EDGE_ID = re.compile(r"^(coord|kam)-[a-z]+-[0-9]+$")
TAG = re.compile(r"^gopbx/keepalived/(master|backup|fault|stop)$")
PRIORITY = re.compile(r"^[0-9]{1,3}$")
ASK_TIMEOUT = 10


def __virtual__():
    return __virtualname__


def _edge_hosts():
    settings = __utils__["gopbx_runner.settings"](__opts__)  # noqa: F821  (a loader dunder)
    return [name for name in settings.get("edge_hosts") or [] if isinstance(name, str) and EDGE_ID.fullmatch(name)]


def _records_path():
    return os.path.join(__opts__["cachedir"], "gopbx", "edge.json")  # noqa: F821


def _records():
    try:
        with salt.utils.files.fopen(_records_path()) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return {}


def _save(records):
    with salt.utils.atomicfile.atomic_open(_records_path(), "w") as handle:
        json.dump(records, handle, indent=1, sort_keys=True)


def _ask(minions):
    """{minion: its gopbx_edge.status} from those that answer in time."""
    client = salt.client.get_local_client(__opts__["conf_file"])  # noqa: F821
    answers = client.cmd(list(minions), "gopbx_edge.status", tgt_type="list", timeout=ASK_TIMEOUT)
    return {minion: answer for minion, answer in (answers or {}).items()
            if isinstance(answer, dict) and answer.get("minion_id") == minion}


def _fire(tag, data):
    with salt.utils.event.get_master_event(__opts__, __opts__["sock_dir"], listen=False) as event:  # noqa: F821
        event.fire_event(data, tag)


def _refuse(claimed, reason):
    log.warning("gopbx/keepalived event claiming to be from %r refused: %s", claimed, reason)
    return {"recorded": False, "minion": claimed, "reason": reason}


def _check(event, edge_hosts):
    """(minion id, claimed state, priority) from a transition event, or a reason to refuse it."""
    if not isinstance(event, dict):
        return None, "the event is not a mapping"
    minion_id, tag, payload = event.get("id"), event.get("tag"), event.get("data")
    if not isinstance(minion_id, str) or minion_id not in edge_hosts:
        return None, "the minion is not one of the edge hosts (gopbx:edge_hosts)"
    if minion_id not in salt.key.get_key(__opts__).list_status("accepted").get("minions", []):  # noqa: F821
        return None, "the minion's key is not accepted"
    matched = TAG.fullmatch(tag) if isinstance(tag, str) else None
    if matched is None:
        return None, f"tag {tag!r} is not gopbx/keepalived/<master|backup|fault|stop>"
    if not isinstance(payload, dict) or payload.get("instance") != "SIP_EDGE":
        return None, "the event names no SIP_EDGE instance"
    priority = str(payload.get("priority"))
    if not PRIORITY.fullmatch(priority) or int(priority) > 255:
        return None, f"priority {payload.get('priority')!r} is not a VRRP priority"
    return (minion_id, matched.group(1).upper(), int(priority)), None


def _report(answers):
    masters = sorted(minion for minion, answer in answers.items() if answer.get("state") == "MASTER")
    report = {"masters": masters, "split": len(masters) > 1, "none": not masters,
              "answered": sorted(answers)}
    if report["split"]:
        log.error("SIP edge split: %s all report MASTER", ", ".join(masters))
        _fire("gopbx/edge/split", report)
    elif report["none"]:
        log.error("SIP edge: no edge host reports MASTER (answered: %s)", ", ".join(report["answered"]) or "none")
        _fire("gopbx/edge/none", report)
    return report


def transition(event=None):
    """
    Record a Keepalived transition once its host confirms it, and report the
    edge's masters. Called by the reactor with the whole event.

    CLI Example:

    .. code-block:: bash

        salt-run gopbx_edge.transition event='{"id": "kam-mel-1", "tag": "gopbx/keepalived/master",
            "data": {"instance": "SIP_EDGE", "priority": "100"}}'
    """
    if isinstance(event, str):
        try:
            event = json.loads(event)
        except ValueError:
            return _refuse(None, "the event is not JSON")
    edge_hosts = _edge_hosts()
    checked, reason = _check(event, edge_hosts)
    if reason:
        return _refuse(event.get("id") if isinstance(event, dict) else None, reason)
    minion_id, claimed, priority = checked
    answers = _ask(edge_hosts)
    said = (answers.get(minion_id) or {}).get("state")
    if said != claimed:
        return _refuse(minion_id, f"{minion_id} itself reports {said or 'nothing'}, not {claimed}")
    # The reactor runs runners in parallel: two hosts' transitions must not lose each other's record.
    os.makedirs(os.path.dirname(_records_path()), mode=0o700, exist_ok=True)
    with salt.utils.files.flopen(_records_path() + ".lock", "w"):
        records = _records()
        records[minion_id] = {"state": claimed, "priority": priority,
                              "holds_address": answers[minion_id]["holds_address"],
                              "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        _save(records)
    log.warning("SIP edge: %s is %s (priority %s)", minion_id, claimed, priority)
    return {"recorded": True, "minion": minion_id, "state": claimed, **_report(answers)}


def status():
    """
    Each edge host's state as it reports it now, beside the last transition
    recorded here, and whether exactly one is MASTER.

    CLI Example:

    .. code-block:: bash

        salt-run gopbx_edge.status
    """
    edge_hosts = _edge_hosts()
    answers = _ask(edge_hosts)
    records = _records()
    hosts = {minion: {"now": (answers.get(minion) or {}).get("state", "no answer"),
                      "recorded": records.get(minion)} for minion in edge_hosts}
    return {"hosts": hosts, **_report(answers)}
