"""
Database failover on the multi-host lab: the write stall, the longest time from a
fault on the primary on without a write acknowledged through the API (pgBouncer,
then the new primary), and the acknowledged writes lost.

    scripts/mlab up && .venv/bin/python bench/db_failover.py [--runs 5]

Faults:

- SIGKILL: the primary's postmaster (on the coordinator) killed; Patroni, alive,
  sees PostgreSQL gone.
- power off: the primary's machine (the replica host, made primary first: the
  coordinator carries the API and pgBouncer the writer goes through) frozen at
  once (cgroup freezer), as a machine that loses power; then thawed.
- switchover: ``salt-run gopbx.failover``, a planned switchover.

A writer on the coordinator makes extensions through the API without pause
(tests/multihost/database.py). Each fault runs with GoPBX's Patroni settings
(ttl 10, loop_wait 2, retry_timeout 3, primary_start_timeout 0) and, as the
baseline in the same run, with Patroni's defaults (ttl 30, loop_wait 10,
retry_timeout 10, primary_start_timeout 300), both in synchronous mode; the
lab's settings are put back at the end.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.multihost import database, edge  # noqa: E402

TENANT = "bench-db.mlab.invalid"
SETTINGS = {
    "GoPBX": {"ttl": 10, "loop_wait": 2, "retry_timeout": 3, "primary_start_timeout": 0},
    "Patroni defaults": {"ttl": 30, "loop_wait": 10, "retry_timeout": 10, "primary_start_timeout": 300},
}
FAULTS = ("SIGKILL", "power off", "switchover")
# The member that leads when each fault strikes, and the one that should lead after.
LEADS = {"SIGKILL": "coord-syd-1", "power off": "pgrep-syd-1", "switchover": "coord-syd-1"}


def patroni_settings(values):
    """Patroni's dynamic configuration, read by every member's next loop."""
    database.patch_dynamic_config(values)
    time.sleep(values["loop_wait"] + 2)


def one_run(fault, first):
    target = LEADS[fault]
    database.ensure_leader(target)
    writer = database.Writer(TENANT, first=first)
    power_on = False
    try:
        time.sleep(2)
        if fault == "SIGKILL":
            fault_at = time.time()
            database.kill_postmaster(target)
        elif fault == "power off":
            edge.power_off(target)
            power_on = True
            fault_at = time.time()
        else:
            fault_at = time.time()
            assert database.failover_run()["result"] is True
        seconds = database.wait_writes_resume(writer, fault_at, timeout=120)
    finally:
        if power_on:
            edge.power_on(target)
        answers = writer.stop()
    new_leader = database.leader()
    acknowledged = {answer["number"] for answer in answers if 200 <= answer["status"] < 300}
    present = database.present(new_leader, TENANT) if new_leader else None
    lost = None if present is None else len(acknowledged - present)
    assert database.wait_healthy(timeout=300), database.roles()
    return seconds, lost


def print_table(results, runs, loads, faults):
    names = list(SETTINGS)
    print(f"\nDatabase failover, the longest time from the fault on without an acknowledged write through the API: "
          f"median of {runs} runs (seconds); acknowledged writes lost, summed over the runs")
    print(f"{'fault':<12} {names[0]:>8} {names[1]:>18} {'ratio':>7} {'lost':>6}")
    for fault in faults:
        medians = []
        for name in names:
            values = [seconds for seconds, _ in results[(name, fault)] if seconds is not None]
            medians.append(statistics.median(values) if values else float("nan"))
        lost = sum(lost or 0 for name in names for _, lost in results[(name, fault)])
        unknown = sum(seconds is None or lost is None for name in names for seconds, lost in results[(name, fault)])
        ratio = medians[0] / medians[1] if medians[1] else float("nan")
        print(f"{fault:<12} {medians[0]:>8.2f} {medians[1]:>18.2f} {ratio:>7.2f} {lost:>6}"
              + (f"  ({unknown} runs without an answer)" if unknown else ""))
    print(f"load average (1 min) before and after: {loads[0]:.2f}, {loads[1]:.2f} on {os.cpu_count()} cores")


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--faults", nargs="+", choices=FAULTS, default=list(FAULTS))
    args = parser.parse_args()
    results = {(name, fault): [] for name in SETTINGS for fault in FAULTS}
    loads = [os.getloadavg()[0]]
    edge.make_tenant(TENANT, max_calls=4, numbers=["1001"])
    first = 100000
    try:
        for name, values in SETTINGS.items():
            patroni_settings(values)
            for run in range(args.runs):
                for fault in args.faults:
                    first += 10000
                    seconds, lost = one_run(fault, first)
                    results[(name, fault)].append((seconds, lost))
                    print(f"{name} run {run + 1} {fault}: "
                          + (f"{seconds:.2f} s" if seconds is not None else "no answer") + f", lost {lost}",
                          flush=True)
    finally:
        patroni_settings(SETTINGS["GoPBX"])
        database.ensure_leader("coord-syd-1")
    loads.append(os.getloadavg()[0])
    print_table(results, args.runs, loads, args.faults)


if __name__ == "__main__":
    main()
