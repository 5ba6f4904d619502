"""
SIP edge benchmark: GoPBX's Kamailio configuration against Kamailio's stock
sample configuration, on the same machine, database and media stand-ins.

    .venv/bin/python bench/sip_bench.py [--runs 3]

Needs the lab up (scripts/lab up). Prints a table of medians over --runs runs,
the two configurations alternating within each run:

- REGISTER/s: digest-authenticated registrations (401 challenge, then 200) of
  400 distinct users over 100 tenants, four SIPp processes.
- call setups/s: authenticated INVITE, 200, ACK and BYE at once.
- concurrent calls: the most calls held at once, each playing 7 s of G.711 RTP
  that the stand-in echoes, with RTPEngine relaying every packet (no loss).

The baseline is the sample kamailio.cfg of the installed Kamailio package,
unchanged, with its documented kamailio-local.cfg hook defining WITH_AUTH,
WITH_USRLOCDB, WITH_MULTIDOMAIN, WITH_NAT and WITH_RTPENGINE, PostgreSQL through
pgBouncer as DBURL, and a second RTPEngine on the sample's ng address. During
the benchmark GoPBX's pike limit is raised (one source sends thousands of
requests per second); the lab is re-applied as it was at the end.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


from tests.system import sip, sipclient  # noqa: E402
from tests import support  # noqa: E402
from tests.support import REPO, salt_call  # noqa: E402

LAB_CONFIG = REPO / ".lab" / "etc" / "salt"
TENANTS = [f"t{n:03d}.bench.invalid" for n in range(100)]
CALLERS = ["1001", "1002", "1003", "1004"]
CALLEE = "2001"
PASSWORD = "Bench-Passw0rd-1"
SETID = 201
STANDINS = ["127.28.3.1:5080", "127.28.3.2:5080"]
PCAP_PACKETS = 236  # /usr/share/sip-tester/g711a.pcap: 236 RTP packets, 7.05 s
CONCURRENCY_LEVELS = [100, 200, 300, 400]
CALL_RATES = [200, 400, 600, 800, 1000, 1200]


# --- data ---


def provision(secrets):
    """Bench tenants, users (ha1 for GoPBX; the sample computes ha1 from 'password') and a dispatcher set."""
    with sip.db(secrets, "gopbx_api") as api, api.cursor() as cur:
        cur.execute("DELETE FROM subscriber WHERE domain LIKE '%.bench.invalid'")
        cur.execute("DELETE FROM domain_attrs WHERE did LIKE '%.bench.invalid'")
        cur.execute("DELETE FROM domain WHERE domain LIKE '%.bench.invalid'")
        cur.execute("DELETE FROM gopbx.tenants WHERE domain LIKE '%.bench.invalid'")
    with sip.db(secrets, "kamailio") as kam, kam.cursor() as cur:
        cur.execute("DELETE FROM location WHERE domain LIKE '%.bench.invalid'")
    with sip.db(secrets, "gopbx_salt") as salt, salt.cursor() as cur:
        cur.execute("DELETE FROM dispatcher WHERE setid = %s", (SETID,))
        cur.execute("DELETE FROM gopbx.dispatcher_sets WHERE setid = %s", (SETID,))
    sip.add_dispatcher_set(secrets, SETID, STANDINS)
    with sip.db(secrets, "gopbx_api") as api, api.cursor() as cur:
        for domain in TENANTS:
            cur.execute("INSERT INTO gopbx.tenants (domain, name, max_calls, calls_per_second) "
                        "VALUES (%s, %s, 100000, 100000)", (domain, domain))
            cur.execute("INSERT INTO domain (domain, did) VALUES (%s, %s)", (domain, domain))
            for name, value in (("dispatcher_set", SETID), ("max_calls", 100000), ("calls_per_second", 100000),
                                ("enabled", 1)):
                cur.execute("INSERT INTO domain_attrs (did, name, type, value) VALUES (%s, %s, 0, %s)",
                            (domain, name, str(value)))
            for user in CALLERS + [CALLEE]:
                cur.execute("INSERT INTO subscriber (username, domain, password, ha1, ha1b) VALUES (%s, %s, %s, %s, %s)",
                            (user, domain, PASSWORD, sip.md5(f"{user}:{domain}:{PASSWORD}"),
                             sip.md5(f"{user}@{domain}:{domain}:{PASSWORD}")))


def tenants_csv(directory):
    path = Path(directory) / "tenants.csv"
    path.write_text("SEQUENTIAL\n" + "".join(f"{domain};\n" for domain in TENANTS))
    return path


# --- the two Kamailio configurations ---


def apply_lab(pike_density=None):
    args = ["state.apply"]
    if pike_density:
        args.append("pillar=" + json.dumps({"kamailio": {"pike": {"reqs_density": pike_density}}}))
    code, result = salt_call(LAB_CONFIG, *args, check=False)
    if code != 0:
        raise SystemExit(f"lab apply failed: {result}")


def sample_config(directory, secrets):
    """The installed package's own sample kamailio.cfg plus a kamailio-local.cfg."""
    version = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "kamailio"], capture_output=True, text=True,
                             check=True).stdout
    subprocess.run(["apt-get", "download", "-q", f"kamailio={version}"], cwd=directory, check=True,
                   capture_output=True)
    deb = next(Path(directory).glob("kamailio_*.deb"))
    sample = subprocess.run(f"dpkg-deb --fsys-tarfile {deb} | tar -x ./etc/kamailio/kamailio.cfg -O", shell=True,
                            capture_output=True, check=True).stdout
    (Path(directory) / "kamailio.cfg").write_bytes(sample)
    password = secrets["postgres"]["kamailio"]
    (Path(directory) / "kamailio-local.cfg").write_text(
        "#!define WITH_AUTH\n#!define WITH_USRLOCDB\n#!define WITH_MULTIDOMAIN\n"
        "#!define WITH_NAT\n#!define WITH_RTPENGINE\n"
        f'#!define DBURL "postgres://kamailio:{password}@{sip.PGBOUNCER}:5432/gopbx"\n'
        'loadmodule "db_postgres.so"\n'
        "listen=udp:127.0.0.1:5060\nlisten=tcp:127.0.0.1:5060\nchildren=8\n"
    )
    return Path(directory) / "kamailio.cfg"


@contextmanager
def running(name, sample_cfg, workdir):
    """GoPBX's Kamailio (the lab service) or the sample with its own RTPEngine, on 127.0.0.1:5060."""
    if name == "gopbx":
        subprocess.run(["service", "kamailio", "start"], capture_output=True, check=True)
        _wait_for_options()
        yield sip.RTPENGINE_NG
        return
    subprocess.run(["service", "kamailio", "stop"], capture_output=True, check=True)
    rtpengine = subprocess.Popen(
        ["rtpengine", "--config-file", "/etc/rtpengine/rtpengine.conf", "--foreground", "--table", "-1",
         "--interface", "127.0.0.1", "--listen-ng", "127.0.0.1:2223", "--listen-cli", "127.0.0.1:2226",
         "--port-min", "40000", "--port-max", "50000", "--pidfile", f"{workdir}/rtpengine.pid"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kamailio = subprocess.Popen(
        ["kamailio", "-f", str(sample_cfg), "-D", "-E", "-m", "512", "-M", "32", "-P", f"{workdir}/kamailio.pid",
         "-u", "kamailio", "-g", "kamailio"], stdout=subprocess.DEVNULL, stderr=open(f"{workdir}/sample.log", "w"))
    try:
        _wait_for_options()
        yield ("127.0.0.1", 2223)
    finally:
        kamailio.terminate()
        kamailio.wait(timeout=30)
        rtpengine.terminate()
        rtpengine.wait(timeout=30)
        subprocess.run(["service", "kamailio", "start"], capture_output=True, check=False)


def _wait_for_options():
    for _ in range(100):
        try:
            if sipclient.options(sip.KAMAILIO, local_ip="127.0.4.100").startswith("SIP/2.0"):
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit("Kamailio did not answer")


# --- SIPp loads ---


def _sipp(scenario, csv, local_ip, user, calls, rate, limit, extra=(), timeout=300):
    """Run one SIPp UAC; returns (successful calls, failed calls)."""
    with tempfile.TemporaryDirectory(prefix="gopbx-bench-") as tmp:
        path = Path(tmp) / "scenario.xml"
        path.write_text(scenario.replace("[tenant]", "[field0]"))
        command = ["sipp", "127.0.0.1:5060", "-sf", str(path), "-inf", str(csv), "-i", local_ip, "-m", str(calls),
                   "-r", str(rate), "-l", str(limit), "-au", user, "-ap", PASSWORD, "-key", "user", user,
                   "-s", CALLEE, "-nostdin", "-timeout", f"{timeout}s", "-recv_timeout", "10000",
                   "-trace_stat", "-stf", f"{tmp}/stat.csv", "-fd", "1", *extra]
        subprocess.run(command, capture_output=True, text=True, cwd=tmp, timeout=timeout + 60, check=False)
        return _final_counts(Path(tmp) / "stat.csv")


def _final_counts(stat_csv):
    lines = stat_csv.read_text().splitlines()
    header, last = lines[0].split(";"), lines[-1].split(";")
    row = dict(zip(header, last))
    return int(row["SuccessfulCall(C)"]), int(row["FailedCall(C)"])


def _parallel(jobs):
    """Run SIPp jobs at once; returns (total successful, total failed, seconds)."""
    started = time.monotonic()
    with ThreadPoolExecutor(len(jobs)) as pool:
        results = list(pool.map(lambda job: _sipp(**job), jobs))
    return sum(ok for ok, _ in results), sum(bad for _, bad in results), time.monotonic() - started


def measure_registers(csv):
    scenario = sip.register_scenario("200")
    jobs = [dict(scenario=scenario, csv=csv, local_ip=f"127.0.4.{index + 1}", user=user, calls=3000, rate=3000,
                 limit=200, extra=["-key", "contact_host", f"127.0.4.{index + 1}:5060"])
            for index, user in enumerate(CALLERS)]
    ok, failed, seconds = _parallel(jobs)
    return ok / seconds, failed


def register_callees(csv):
    """The sample routes calls to registered users: 2001 of every tenant, at the stand-ins."""
    for index, standin in enumerate(STANDINS):
        ok, _ = _sipp(sip.register_scenario("200"), csv, f"127.0.5.{index + 1}", CALLEE, calls=len(TENANTS),
                      rate=200, limit=50, extra=["-key", "contact_host", standin])
        assert ok == len(TENANTS), f"callee registrations: {ok}"


def measure_call_setups(csv, name):
    """The highest offered rate (calls/s, two callers) at which under 0.5% of calls fail, over 6 s."""
    scenario = sip.call_scenario(hold_ms=0)
    best, failures = 0, 0
    for rate in CALL_RATES:
        wait_until_media_active(name)
        jobs = [dict(scenario=scenario, csv=csv, local_ip=f"127.0.6.{index + 1}", user=user, calls=rate * 3,
                     rate=rate // 2, limit=400) for index, user in enumerate(CALLERS[:2])]
        ok, failed, _ = _parallel(jobs)
        if failed > 0.005 * (ok + failed):
            failures = failed
            break
        best = rate
    return best, failures


def wait_until_media_active(name):
    """
    Both stand-ins active again (GoPBX's dispatcher marks a node it saw fail as
    inactive), and Kamailio using RTPEngine again (it stops for a while after ng
    timeouts, and calls then pass without anchoring).
    """
    if name != "gopbx":
        return
    if not sip.wait_for(lambda: all(not entry["disabled"] for entry in sip.rpc("rtpengine.show", "all")),
                        timeout=30):
        raise SystemExit("Kamailio did not take RTPEngine back")
    def active():
        records = sip.rpc("dispatcher.list")["RECORDS"]
        flags = [target["DEST"]["FLAGS"] for record in records if record["SET"]["ID"] == SETID
                 for target in record["SET"]["TARGETS"]]
        return flags and all(flag.startswith("A") for flag in flags)
    if not sip.wait_for(active, timeout=30):
        raise SystemExit("the media stand-ins did not come back")


def measure_concurrency(csv, ng, name):
    """The largest level of simultaneous RTP calls that all completed with every packet relayed."""
    # A private Contact marks the caller as behind NAT, so the sample anchors its media too.
    scenario = sip.call_scenario(hold_ms=9000, rtp=True).replace(
        "Contact: <sip:[user]@[local_ip]:[local_port]>", "Contact: <sip:[user]@192.168.77.7:[local_port]>")
    best = 0
    for level in CONCURRENCY_LEVELS:
        wait_until_media_active(name)
        # Start with every RTP port free: earlier calls hold theirs for the delete delay.
        if not sip.wait_for(lambda: sip.rtpengine_sessions(ng) == 0, timeout=120, interval=1):
            raise SystemExit("RTPEngine kept sessions for two minutes")
        before = sip.rtpengine_relayed_packets(ng)
        ok, failed = _sipp(scenario, csv, "127.0.7.1", CALLERS[0], calls=level, rate=50, limit=level,
                           extra=["-mp", "20000"], timeout=120)
        time.sleep(1)
        relayed = sip.rtpengine_relayed_packets(ng) - before
        if failed or ok < level or relayed < level * PCAP_PACKETS * 2:
            break
        best = level
    return best


# --- the table ---


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    options = parser.parse_args()
    secrets = support.lab_secrets()
    workdir = tempfile.mkdtemp(prefix="gopbx-bench-")
    shutil.chown(workdir, "kamailio", "kamailio")
    os.chmod(workdir, 0o755)
    sample_cfg = sample_config(workdir, secrets)
    csv = tenants_csv(workdir)
    provision(secrets)
    results = {name: {"register": [], "calls": [], "concurrent": []} for name in ("gopbx", "baseline")}
    apply_lab(pike_density=1000000)
    try:
        with sip.standins(*STANDINS):
            sip.reload_kamailio()
            for run in range(options.runs):
                for name in ("gopbx", "baseline"):
                    with running(name, sample_cfg, workdir) as ng:
                        if name == "baseline":
                            register_callees(csv)
                        registers, register_failures = measure_registers(csv)
                        calls, call_failures = measure_call_setups(csv, name)
                        concurrent = measure_concurrency(csv, ng, name)
                    results[name]["register"].append(registers)
                    results[name]["calls"].append(calls)
                    results[name]["concurrent"].append(concurrent)
                    print(f"run {run + 1} {name:8}: {registers:7.0f} REGISTER/s ({register_failures} failed), "
                          f"{calls:6.0f} calls/s ({call_failures} failed at the next rate), {concurrent} concurrent RTP calls",
                          flush=True)
    finally:
        apply_lab()
    print_table(results, options.runs)


def print_table(results, runs):
    rows = [("REGISTER/s, digest auth, 400 users / 100 tenants", "register", "{:,.0f}"),
            ("call setups/s with <0.5% failed (INVITE+auth, 200, ACK, BYE)", "calls", "{:,.0f}"),
            ("concurrent calls with RTP, no loss (levels 100-400)", "concurrent", "{:d}")]
    print(f"\nmedian of {runs} runs | GoPBX | stock sample | GoPBX / sample")
    print("---|---:|---:|---:")
    for label, key, fmt in rows:
        gopbx = statistics.median(results["gopbx"][key])
        base = statistics.median(results["baseline"][key])
        gopbx = int(gopbx) if key == "concurrent" else gopbx
        base = int(base) if key == "concurrent" else base
        ratio = f"{gopbx / base:.2f}" if base else "n/a"
        print(f"{label} | {fmt.format(gopbx)} | {fmt.format(base)} | {ratio}")


if __name__ == "__main__":
    main()
