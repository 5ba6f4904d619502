"""
Keepalived's notify FIFO handler (salt/keepalived/files/libexec/keepalived-notify)
on the lines Keepalived writes, and on lines it never should: only a well-formed
INSTANCE line with a known state is recorded or sent to the masters.
"""

import json
import os
import subprocess
import sys
import time

import pytest

from tests.support import REPO

HANDLER = REPO / "salt" / "keepalived" / "files" / "libexec" / "keepalived-notify"


def run_handler(tmp_path, lines, salt_call_seconds=0):
    """The handler, its salt-call replaced by a recorder, reading LINES as its FIFO (EOF ends it)."""
    calls = tmp_path / "calls"
    recorder = tmp_path / "salt-call"
    recorder.write_text(f"#!/bin/sh\necho \"$@\" >> {calls}\nsleep {salt_call_seconds}\n")
    recorder.chmod(0o755)
    handler = tmp_path / "keepalived-notify"
    handler.write_text(HANDLER.read_text().replace('["/usr/bin/salt-call"]', json.dumps([str(recorder)]))
                       .replace("/run/gopbx-edge", str(tmp_path / "run")))
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    process = subprocess.Popen([sys.executable, str(handler), str(fifo)])
    with open(fifo, "wb") as writer:  # held open, as Keepalived does, while the handler works
        writer.write(b"".join(lines))
        writer.flush()
        time.sleep(1.5)
    assert process.wait(timeout=30) == 0
    state = tmp_path / "run" / "vrrp-state"
    return (state.read_text().strip() if state.exists() else None,
            calls.read_text().splitlines() if calls.exists() else [])


def test_a_transition_is_recorded_sent_and_reconciled(tmp_path):
    state, calls = run_handler(tmp_path, [b'INSTANCE "SIP_EDGE" MASTER 150\n'])
    assert state == "MASTER"
    assert "--out-file=/dev/null event.send gopbx/keepalived/master instance=SIP_EDGE priority=150" in calls
    assert any(call.endswith("gopbx_edge.reconcile transition=True") for call in calls)


MALFORMED = [
    b'INSTANCE "SIP_EDGE" LEADER 150\n',            # not a VRRP state
    b'INSTANCE "SIP_EDGE" master 150\n',            # not as Keepalived writes it
    b'INSTANCE "SIP_EDGE" MASTER\n',                 # a field short
    b'INSTANCE "SIP_EDGE" MASTER 150 extra\n',       # a field long
    b'GROUP "G" MASTER 150\n',                       # a sync group, not the instance
    b'INSTANCE "SIP_EDGE" MAS\x00TER 150\n',         # a control character
    b'INSTANCE "SIP_EDGE" MASTER 150' + b"9" * 100000 + b"\n",  # oversized
    b'\xff\xfe INSTANCE "SIP_EDGE" MASTER 150\n',    # not ASCII
    b'INSTANCE "SIP_EDGE" MASTER 256\n',             # not a VRRP priority
    b'INSTANCE "SIP\x00EDGE" MASTER 150\n',          # a NUL in the instance name
    b'INSTANCE "SIP_EDGE\x1b[2J" MASTER 150\n',      # an escape sequence for the log
    b'INSTANCE "SIP_EDGE" MASTER \xd9\xa1\n',        # a non-ASCII digit
    b"\n",
]


@pytest.mark.parametrize("line", MALFORMED, ids=range(len(MALFORMED)))
def test_a_malformed_line_records_and_sends_nothing(tmp_path, line):
    state, calls = run_handler(tmp_path, [b'INSTANCE "SIP_EDGE" BACKUP 100\n', line])
    assert state == "BACKUP"
    assert [call for call in calls if "event.send" in call] == [
        "--out-file=/dev/null event.send gopbx/keepalived/backup instance=SIP_EDGE priority=100"]


def test_a_burst_is_folded_into_the_newest_state_one_salt_call_at_a_time(tmp_path):
    # A flapping link: forty transitions at once, each salt-call taking 0.3 s.
    burst = [f'INSTANCE "SIP_EDGE" {state} 150\n'.encode() for state in ("BACKUP", "MASTER") * 20]
    burst.append(b'INSTANCE "SIP_EDGE" FAULT 150\n')
    state, calls = run_handler(tmp_path, burst, salt_call_seconds=0.3)
    assert state == "FAULT"
    sent = [call for call in calls if "event.send" in call]
    reconciles = [call for call in calls if "gopbx_edge.reconcile" in call]
    # The first at once, then one more for all that came meanwhile: the newest.
    assert 1 <= len(sent) <= 2 and sent[-1].endswith("event.send gopbx/keepalived/fault instance=SIP_EDGE priority=150")
    assert 1 <= len(reconciles) <= 2
