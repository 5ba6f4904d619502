"""
SIP edge failover on the multi-host lab: the time from a fault on the active
Kamailio host to the first REGISTER answered 200 through the SIP address.

    scripts/mlab up && .venv/bin/python bench/edge_failover.py [--runs 5]

Faults, each run on whichever edge host is active at the time (they alternate):

- Kamailio SIGKILL: Kamailio killed and kept down (systemd would restart it);
  Keepalived's track script notices (check_interval x check_fall) and gives up.
- power off: every process of the active host frozen at once (cgroup freezer),
  as a machine that loses power: nothing on it reacts, its peers hear silence;
  then thawed, as if powered on with its memory intact.

Each fault runs with GoPBX's settings (VRRPv3 adverts every 0.1 s) and, as the
baseline in the same run, with the seed's (adverts every 1 s, Keepalived's
default); the seed itself states ~3 s. A device in the lab's outside namespace
REGISTERs every 0.2 s from the fault on (tests/multihost/edge_probe.py); the
table gives the median of the runs and the ratio to the baseline. Both hosts are
kept from taking the address back during the benchmark (preempt_delay 1000, the most the schema allows) and
the lab's settings are applied again at the end.

What the lab cannot show: the Vultr reserved-IP move is made against Vultr's
double, whose attach does not route anything, so the address answers as soon
as Keepalived puts it on the new host; on Vultr the move adds its API time.
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.multihost import edge  # noqa: E402

TENANT = "bench-edge.mlab.invalid"
SETTINGS = {"GoPBX": 0.1, "seed": 1}


def keepalived_settings(advert_interval, preempt_delay):
    pillar = json.dumps({"keepalived": {"advert_interval": advert_interval, "preempt_delay": preempt_delay}})
    result = edge.mlab("master", "salt", "-L", ",".join(edge.EDGE), "state.apply", "keepalived",
                       f"pillar={pillar}", "--out=json", "--static", "--timeout=300")
    states = json.loads(result.stdout) if result.stdout else {}
    # A host whose states did not render answers a list of errors instead.
    failed = [host for host, ran in states.items()
              if not isinstance(ran, dict) or not all(state.get("result") for state in ran.values())]
    if result.returncode != 0 or failed or len(states) != len(edge.EDGE):
        raise SystemExit(f"keepalived settings not applied: {result.stdout[-2000:]}{result.stderr[-2000:]}")


def active_host(timeout=90):
    """The one edge host that holds the SIP address (waits until exactly one does)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        holders = edge.edge_holders()
        if len(holders) == 1 and edge.edge_status(holders[0])["state"] == "MASTER":
            return holders[0]
        time.sleep(1)
    raise SystemExit(f"no single active edge host after {timeout} s: {edge.edge_holders()}")


FAULTS = {"Kamailio SIGKILL": (edge.kill_kamailio, edge.restore_kamailio), "power off": (edge.power_off, edge.power_on)}


def settled(timeout=90):
    """One host active, holding the address alone, the other a healthy backup (after a split: the higher one)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = sorted(edge.edge_status(host)["state"] for host in edge.EDGE)
        if states == ["BACKUP", "MASTER"] and len(edge.edge_holders()) == 1:
            return
        time.sleep(1)
    raise SystemExit(f"the edge pair did not settle within {timeout} s: {states}")


def one_run(fault):
    active = active_host()
    make, undo = FAULTS[fault]
    at = time.time()
    make(active)
    try:
        answered = edge.probe_registration(TENANT, "1001", timeout=30)["answered_at"]
    finally:
        undo(active)
    settled()
    return (answered - at) if answered else None


def print_table(results, runs):
    print(f"\nSIP edge failover, fault to the first REGISTER answered 200 through {edge.SIP_ADDRESS}: "
          f"median of {runs} runs (seconds)")
    print(f"{'fault':<18} {'GoPBX (0.1 s adverts)':>22} {'seed (1 s adverts)':>19} {'ratio':>7} {'lost':>5}")
    for fault in FAULTS:
        ours, seed = (results[(name, fault)] for name in SETTINGS)
        lost = sum(value is None for value in ours + seed)
        ours_median = statistics.median([v for v in ours if v is not None] or [float("nan")])
        seed_median = statistics.median([v for v in seed if v is not None] or [float("nan")])
        print(f"{fault:<18} {ours_median:>22.2f} {seed_median:>19.2f} {ours_median / seed_median:>7.2f} {lost:>5}")
    print("(the seed states ~3 s; 'lost': runs with no REGISTER answered within 30 s)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    results = {(name, fault): [] for name in SETTINGS for fault in FAULTS}
    with edge.outside_namespace():
        edge.make_tenant(TENANT, max_calls=4, numbers=["1001"])
        for host in edge.EDGE:  # bans left by earlier runs (shared over DMQ)
            edge.kamailio_rpc(host, "htable.flush", "ipban")
        try:
            for name, advert in SETTINGS.items():
                keepalived_settings(advert, preempt_delay=1000)
                settled()
                for run in range(args.runs):
                    for fault in FAULTS:
                        seconds = one_run(fault)
                        results[(name, fault)].append(seconds)
                        print(f"{name} run {run + 1} {fault}: "
                              + (f"{seconds:.2f} s" if seconds is not None else "no answer"), flush=True)
        finally:
            keepalived_settings(0.1, preempt_delay=60)
    print_table(results, args.runs)


if __name__ == "__main__":
    main()
