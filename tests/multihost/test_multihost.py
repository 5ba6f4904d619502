"""
The multi-host lab (scripts/mlab): the seed's hosts as real systemd machines, a
salt-master on the coordinator, every role applied from it the production way.
"""

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.multihost import database, edge
from tests.support import REPO, wait_for

TOPOLOGY, STATE = edge.TOPOLOGY, edge.STATE
# Each role's services, as systemd units (and whatever later roles add).
SERVICES = {
    "coord-syd-1": ["patroni", "etcd", "gopbx-db-role-changed.path", "pgbouncer", "redis-server", "kamailio", "rtpengine-daemon", "nginx",
                    "gopbx-api", "gopbx-call-events", "salt-master", "knot", "wg-quick@wg-gopbx", "keepalived"],
    "kam-mel-1": ["kamailio", "rtpengine-daemon", "wg-quick@wg-gopbx", "keepalived", "etcd"],
    "pgrep-syd-1": ["wg-quick@wg-gopbx", "etcd", "patroni", "gopbx-db-role-changed.path"],
    "fs-syd-1": ["freeswitch"],  # the named double of FreeSWITCH (lab/salt/freeswitch_double)
    "fs-syd-2": ["freeswitch"],
}


FS_MACHINES = [name for name in TOPOLOGY["machines"] if name.startswith("fs-")]


mlab = edge.mlab


def master_json(*command):
    result = mlab("master", *command, "--out=json", *(["--static"] if command[0] == "salt" else []))
    assert result.returncode == 0 or result.stdout, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def lab():
    started = time.monotonic()
    try:
        up = mlab("up")
        print(up.stdout[-3000:], f"\nmlab up: {time.monotonic() - started:.0f} s")
        assert up.returncode == 0, up.stdout[-5000:] + up.stderr[-3000:]
        yield up.stdout
    finally:
        mlab("down")  # also when up failed: no machine outlives the tests


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


DATABASE_SECRETS = {"postgres:kamailio", "postgres:api", "postgres:salt", "postgres:metrics", "postgres:replicator",
                    "postgres:superuser", "postgres:patroni_rest"}
ALL_SECRETS = DATABASE_SECRETS | {"redis:password", "api:jwt_key", "api:admin_password_hash", "freeswitch:esl_password",
               "vultr:api_key", "vultr:edge_api_key"}
SECRETS = {"coord-syd-1": ALL_SECRETS, "kam-mel-1": {"postgres:kamailio", "vultr:edge_api_key"}, "pgrep-syd-1": DATABASE_SECRETS,
           "fs-syd-1": {"freeswitch:esl_password"}, "fs-syd-2": {"freeswitch:esl_password"}}


@pytest.mark.parametrize("name", list(TOPOLOGY["machines"]))
def test_each_machine_holds_only_the_secrets_of_its_roles(lab, name):
    result = mlab("run", name, "salt-call", "pillar.get", "secrets", "--out=json")
    held = json.loads(result.stdout)["local"] or {}
    assert {f"{group}:{key}" for group, names in held.items() for key in names} == SECRETS[name]
    # Nor anywhere on its disk: no other secret's value in its configuration, Salt's caches or the code it runs.
    made = json.loads((STATE / "secrets.json").read_text())
    others = [value for group, names in made.items() for key, value in names.items()
              if f"{group}:{key}" not in SECRETS[name] and key != "admin_password"]
    if others:
        found = mlab("run", name, "grep", "-rlF", *[arg for value in others for arg in ("-e", value)],
                     "/etc", "/var/cache/salt", "/var/lib/salt", "/opt", "/usr/local", "/srv", "/root")
        assert found.stdout == "", found.stdout


def test_machines_reach_the_coordinators_services(lab):
    # The standby's Kamailio uses the coordinator's pgBouncer, through the mesh.
    result = mlab("run", "kam-mel-1", "bash", "-c", "exec 3<>/dev/tcp/172.28.0.12/5432 && echo open")
    assert result.stdout.strip() == "open", result.stderr


MESH = ["coord-syd-1", "kam-mel-1", "pgrep-syd-1"]


@pytest.mark.parametrize("name", ["kam-mel-1", "pgrep-syd-1", "fs-syd-1"])
def test_mesh_hosts_reach_the_plan_only_through_the_mesh(lab, name):
    route = mlab("run", name, "ip", "route", "get", "172.28.0.12").stdout
    if name in MESH:
        assert "dev wg-gopbx" in route, route
        handshakes = mlab("run", name, "wg", "show", "wg-gopbx", "latest-handshakes").stdout.split()
        coordinator_key = mlab("run", "coord-syd-1", "salt-call", "--local", "--out=json",
                               "gopbx_wireguard.public_key").stdout
        assert json.loads(coordinator_key)["local"] in handshakes
    else:
        # Media nodes are not on the mesh: the VPC, through the coordinator.
        assert "dev eth0" in route and "via 10.28.0.2" in route, route


def test_each_mesh_hosts_private_key_stays_on_it(lab):
    keys = {name: mlab("run", name, "cat", "/etc/wireguard/wg-gopbx.key").stdout.strip() for name in MESH}
    assert all(len(key) == 44 for key in keys.values()), keys
    # The master's mine holds the public halves, and each is the host's own.
    mine = master_json("salt", "coord-syd-1", "mine.get", ",".join(MESH), "gopbx_wireguard.public_key", "list")
    for name in MESH:
        derived = mlab("run", name, "sh", "-c", "wg pubkey < /etc/wireguard/wg-gopbx.key").stdout.strip()
        assert mine["coord-syd-1"][name] == derived
    for name in TOPOLOGY["machines"]:
        others = [key for host, key in keys.items() if host != name]
        found = mlab("run", name, "grep", "-rlF", *[arg for key in others for arg in ("-e", key)],
                     "/etc", "/var/cache/salt", "/var/lib/salt", "/opt", "/srv", "/root")
        assert found.stdout == "", (name, found.stdout)


def test_media_nodes_register_through_the_masters_reactor_on_their_first_highstate(lab):
    # The fs-* machines ran the real freeswitch formula (with the named FreeSWITCH
    # double) and freeswitch.ready; the master's reactor handed each ready event to
    # gopbx.register, whose settings the salt_master formula wrote (without them:
    # "master config key 'gopbx' lacks database_dsn, ..."). Kamailio probes them.
    def nodes():
        return master_json("salt-run", "gopbx.nodes")

    assert wait_for(lambda: all(nodes().get(name, {}).get("kamailio") == "AP" for name in FS_MACHINES),
                    timeout=60, interval=2), nodes()
    registered = nodes()
    for name in FS_MACHINES:
        assert registered[name]["address"] == TOPOLOGY["machines"][name] and registered[name]["setid"] == 1
        assert registered[name]["state"] == "active"


E2E_TENANT, E2E_PASSWORD = "e2e.mlab.invalid", edge.DEVICE_PASSWORD
# The devices are on the internet's side: SIPp in the outside namespace (see `outside`), through the public ports.
# RTPEngine's own count of relayed packets, read on the coordinator with the SIP tests' helper.
RTPENGINE_RELAYED = ("import sys; sys.path.insert(0, '/srv/gopbx'); from tests.system.sip import "
                     "rtpengine_relayed_packets; print(rtpengine_relayed_packets(('172.28.0.1', 2223)))")


@pytest.fixture(scope="module")
def e2e_tenant(lab):
    return edge.make_tenant(E2E_TENANT, max_calls=4, numbers=["1001", "1002"])


on_devices = edge.on_devices


def sipp_on_devices(*args):
    return on_devices("sipp", "10.28.0.2:5060", "-i", TOPOLOGY["outside"], "-ci", TOPOLOGY["outside"], "-m", "1",
                      "-nostdin", "-timeout", "30s", "-timeout_error", *args)


def test_a_call_goes_from_a_device_through_kamailio_and_a_media_node_to_another_device(e2e_tenant, outside,
                                                                                        tmp_path):
    from tests.system import sip  # the SIPp scenarios of the single-host lab's SIP tests

    here = tmp_path
    (here / "register.xml").write_text(sip.register_scenario("200"))
    (here / "call.xml").write_text(sip.call_scenario(hold_ms=3000, rtp=True))
    (here / "callee.xml").write_text((REPO / "tests/system/scenarios/callee.xml").read_text())
    address = TOPOLOGY["outside"]
    # 1002 registers from the socket it answers on, then waits for a call there.
    registered = sipp_on_devices("-sf", here / "register.xml", "-p", "5090", "-au", "1002", "-ap",
                                 E2E_PASSWORD, "-key", "tenant", e2e_tenant, "-key", "user", "1002",
                                 "-key", "contact_host", f"{address}:5090")
    assert registered.returncode == 0, registered.stdout[-2000:] + registered.stderr[-2000:]
    callee = on_devices("sipp", "-sf", here / "callee.xml", "-i", address, "-p", "5090",
                        "-mi", address, "-ci", address, "-rtp_echo", "-m", "1", "-bg", "-trace_msg", "-message_file",
                        here / "callee.log")
    assert "Background mode" in callee.stdout, callee.stdout + callee.stderr  # SIPp's -bg parent exits 99
    before = int(edge.api_on_coordinator(RTPENGINE_RELAYED))
    # 1001 calls 1002 with RTP: Kamailio, a media node (its dialplan from the API), Kamailio, 1002.
    called = sipp_on_devices("-sf", here / "call.xml", "-p", "5070", "-s", "1002", "-au", "1001", "-ap",
                             E2E_PASSWORD, "-key", "tenant", e2e_tenant, "-key", "user", "1001",
                             "-trace_msg", "-message_file", here / "caller.log")
    assert called.returncode == 0, (here / "caller.log").read_text()[-4000:] if (here / "caller.log").exists() \
        else called.stdout[-2000:]
    relayed = int(edge.api_on_coordinator(RTPENGINE_RELAYED)) - before
    print(f"\nRTP packets RTPEngine relayed for the call: {relayed}")
    assert relayed > 200  # the caller's RTP and the callee's echo, on both legs through the node
    received = [block for block in (here / "callee.log").read_text().split("-" * 46)
                if "message received" in block and "\nINVITE sip:" in block]
    assert len(received) == 1, received
    # The callee sees the tenant as the caller's domain, one audio line, no X-GoPBX-* headers.
    assert re.search(rf"(?m)^From: .*<sip:1001@{re.escape(e2e_tenant)}>", received[0]), received[0]
    assert len(re.findall(r"(?m)^m=audio", received[0])) == 1
    assert not re.search(r"(?im)^x-gopbx-", received[0])


def test_salt_cloud_on_the_master_makes_and_destroys_a_media_node(lab):
    # The master's cloud configuration comes from the salt_master formula; Vultr is
    # its double (tests/doubles/vultr.py), served on the coordinator's loopback.
    started = mlab("run", "coord-syd-1", "systemd-run", "--unit=gopbx-vultr-double",
                   "--setenv=PYTHONPATH=/srv/gopbx", "python3", "-m", "tests.doubles.vultr", "--port", "8099",
                   "--api-key-file", "/etc/salt/vultr-api-key")
    assert started.returncode == 0, started.stderr
    try:
        assert wait_for(lambda: mlab("run", "coord-syd-1", "bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8099")
                        .returncode == 0, timeout=30, interval=1), "the Vultr double did not start"
        made = mlab("master", "salt-cloud", "-p", "freeswitch", "fs-syd-3", "--out=json")
        assert made.returncode == 0, made.stdout[-3000:] + made.stderr[-3000:]
        assert "fs-syd-3" in master_json("salt-key", "--list=all")["minions"]
        listed = mlab("master", "salt-cloud", "-Q", "--out=json")
        assert "fs-syd-3" in listed.stdout, listed.stdout
        destroyed = mlab("master", "salt-cloud", "-y", "-d", "fs-syd-3", "--out=json")
        assert destroyed.returncode == 0, destroyed.stdout[-3000:] + destroyed.stderr[-3000:]
        assert "fs-syd-3" not in master_json("salt-key", "--list=all")["minions"]
        assert "fs-syd-3" not in mlab("master", "salt-cloud", "-Q", "--out=json").stdout
    finally:
        mlab("run", "coord-syd-1", "systemctl", "stop", "gopbx-vultr-double")


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
    assert wait_for(lambda: "evil-1" in master_json("salt-key", "--list=all").get("minions_pre", []),
                    timeout=60, interval=2), "evil-1's key never reached the master"
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


def ancestry(pid):
    """A process's ancestors' PIDs, nearest first."""
    chain = []
    while pid not in ("0", "1"):
        try:
            pid = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]
        except (OSError, IndexError):
            break
        chain.append(pid)
    return chain


def pid_namespaces():
    """{pid: its PID namespace} for every process of this host."""
    found = {}
    for link in Path("/proc").glob("[0-9]*/ns/pid"):
        try:
            found[link.parent.parent.name] = os.readlink(link)
        except OSError:
            continue
    return found


OUTSIDE_NS = edge.OUTSIDE_NS


@pytest.fixture
def outside(lab):
    with edge.outside_namespace() as namespace:
        yield namespace


PROBE = """
import socket, sys
kind, address, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
if kind == "tcp":
    with socket.socket() as sock:
        sock.settimeout(3)
        print("open" if sock.connect_ex((address, port)) == 0 else "closed")
    sys.exit()
# UDP: RTPEngine's ng ping, or a SIP OPTIONS; open means it answered.
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
    sock.settimeout(3)
    sock.connect((address, port))
    here = "%s:%d" % sock.getsockname()
    options = ("OPTIONS sip:%s SIP/2.0\\r\\nVia: SIP/2.0/UDP %s;branch=z9hG4bK-ufw\\r\\n"
               "From: <sip:probe@%s>;tag=1\\r\\nTo: <sip:%s>\\r\\nCall-ID: ufw-probe-%s\\r\\n"
               "CSeq: 1 OPTIONS\\r\\nMax-Forwards: 70\\r\\nContent-Length: 0\\r\\n\\r\\n"
               % (address, here, here, address, here))
    sock.send(b"ufw1 d7:command4:pinge" if kind == "ng" else options.encode())
    try:
        print("open" if sock.recv(4096) else "closed")
    except OSError:
        print("closed")
"""
COORD, KAM, FS = (TOPOLOGY["machines"][name] for name in ("coord-syd-1", "kam-mel-1", "fs-syd-1"))
# (what, kind, address, port): the public side of the seed's table, and control ports.
PUBLIC = [("SIP/UDP, coordinator", "udp", COORD, 5060), ("SIP/TCP, coordinator", "tcp", COORD, 5060),
          ("SIP/TLS, coordinator", "tcp", COORD, 5061), ("SIP/UDP, standby", "udp", KAM, 5060),
          ("SIP/TLS, standby", "tcp", KAM, 5061)]
# PostgreSQL itself (Patroni) listens only on loopback and the mesh: pgBouncer is the plan's database.
CONTROL = [("RTPEngine ng", "ng", "172.28.0.1", 2223),
           ("pgBouncer", "tcp", "172.28.0.12", 5432), ("Redis", "tcp", "172.28.0.11", 6379),
           ("Kamailio RPC", "tcp", "172.28.0.15", 8080), ("API", "tcp", "172.28.0.30", 8080),
           ("salt-master", "tcp", COORD, 4506), ("event socket, media node", "tcp", FS, 8021),
           ("SIP, media node", "udp", FS, 5080)]


def probe_from_outside(namespace, kind, address, port):
    return subprocess.run(["ip", "netns", "exec", namespace, "python3", "-c", PROBE, kind, address, str(port)],
                          capture_output=True, text=True, check=True, timeout=30).stdout.strip()


def probe_from(machine, kind, address, port):
    return mlab("run", machine, "python3", "-c", PROBE, kind, address, str(port)).stdout.strip()


@pytest.mark.parametrize("what,kind,address,port", PUBLIC, ids=[case[0] for case in PUBLIC])
def test_from_outside_the_region_the_public_ports_are_open(outside, what, kind, address, port):
    assert probe_from_outside(outside, kind, address, port) == "open", what


@pytest.mark.parametrize("what,kind,address,port", CONTROL, ids=[case[0] for case in CONTROL])
def test_from_outside_the_region_every_control_port_is_closed_and_from_inside_open(outside, what, kind, address,
                                                                                   port):
    assert probe_from_outside(outside, kind, address, port) == "closed", what
    # The same port answers a machine of the region: it is the firewall that closes it. (A media node
    # answers SIP from Kamailio's addresses only, so the coordinator asks it.)
    inside = {COORD: "kam-mel-1", FS: "coord-syd-1"}.get(address, "pgrep-syd-1")
    assert probe_from(inside, kind, address, port) == "open", what


def test_every_machine_runs_ufw_denying_what_is_not_allowed(lab):
    for name in TOPOLOGY["machines"]:
        status = mlab("run", name, "ufw", "status", "verbose").stdout
        assert "Status: active" in status and "deny (incoming)" in status, f"{name}: {status}"


# --- the SIP edge pair: Keepalived, DMQ, the reserved SIP address (issue 14) ---

EDGE_TENANT = "edge.mlab.invalid"


@pytest.fixture(scope="module")
def edge_tenant(lab):
    return edge.make_tenant(EDGE_TENANT, max_calls=1, numbers=["1001", "1002", "1003"])


def test_the_edge_pair_has_one_active_host_holding_the_sip_address(lab):
    assert wait_for(lambda: edge.edge_holders() == ["coord-syd-1"] and edge.attached_instance() == "coord-syd-1", timeout=60)
    assert edge.edge_status("coord-syd-1")["state"] == "MASTER"
    assert edge.edge_status("kam-mel-1")["state"] == "BACKUP"


def test_a_registration_reaches_the_standby_over_dmq(edge_tenant, outside):
    assert edge.probe_registration(EDGE_TENANT, "1003")["answered_at"]
    aor = f"1003@{EDGE_TENANT}"
    assert wait_for(lambda: "result" in edge.kamailio_rpc("kam-mel-1", "ul.lookup", "location", aor), timeout=5)
    contacts = edge.kamailio_rpc("kam-mel-1", "ul.lookup", "location", aor)["result"]["Contacts"]
    assert [contact["Contact"]["Socket"] for contact in contacts] == [f"udp:{edge.SIP_ADDRESS}:5060"]


def sipp_to_sip_address(tmp_path, scenario, port, user, tenant, *args, background=False):
    (tmp_path / f"{port}.xml").write_text(scenario)
    command = ["sipp", f"{edge.SIP_ADDRESS}:5060", "-i", edge.DEVICE, "-ci", edge.DEVICE, "-m", "1", "-nostdin", "-timeout", "60s",
               "-timeout_error", "-sf", str(tmp_path / f"{port}.xml"), "-p", str(port), "-au", user, "-ap",
               E2E_PASSWORD, "-key", "tenant", tenant, "-key", "user", user, "-trace_msg", "-message_file",
               str(tmp_path / f"{port}.log"), *map(str, args)]
    if background:
        return subprocess.Popen(["ip", "netns", "exec", OUTSIDE_NS, *command], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    return on_devices(*command)


def log_of(tmp_path, port):
    path = tmp_path / f"{port}.log"
    return path.read_text()[-4000:] if path.exists() else "(no log)"


def test_sigkill_of_the_active_kamailio_moves_the_sip_address_and_keeps_devices_and_call_counts(
        edge_tenant, e2e_tenant, outside, tmp_path):
    from tests.system import sip

    # Two callees register with the active host: 1002 of the edge tenant (one call
    # allowed) and 1002 of the e2e tenant; one device answers for both, on the
    # port it registered from (where Kamailio sends, whatever the Contact says).
    for tenant in (EDGE_TENANT, e2e_tenant):
        registered = sipp_to_sip_address(tmp_path, sip.register_scenario("200"), 5090, "1002", tenant,
                                         "-key", "contact_host", f"{edge.DEVICE}:5090")
        assert registered.returncode == 0, log_of(tmp_path, 5090)
    callee = on_devices("sipp", "-sf", REPO / "tests/system/scenarios/callee.xml", "-i", edge.DEVICE, "-p", "5090",
                        "-mi", edge.DEVICE, "-ci", edge.DEVICE, "-rtp_echo", "-m", "3", "-bg")
    assert "Background mode" in callee.stdout, callee.stdout + callee.stderr
    # The edge tenant's one call, held through the active host; the standby counts it too (DMQ).
    held = sipp_to_sip_address(tmp_path, sip.call_scenario(hold_ms=40000), 5072, "1001", EDGE_TENANT, "-s", "1002",
                               background=True)
    profile = ("dlg.profile_get_size", "tenant_calls", EDGE_TENANT)
    try:
        assert wait_for(lambda: edge.kamailio_rpc("kam-mel-1", *profile).get("result") == 1, timeout=20), \
            edge.kamailio_rpc("kam-mel-1", *profile)
        # Kamailio dies on the active host and stays down (systemd would restart it).
        assert edge.edge_holders() == ["coord-syd-1"]
        killed_at = time.time()
        edge.kill_kamailio("coord-syd-1")
        first = edge.probe_registration(EDGE_TENANT, "1003", timeout=30)
        assert first["answered_at"], "no REGISTER answered 200 after the failover"
        print(f"\nSIGKILL of Kamailio to the first REGISTER answered 200 through {edge.SIP_ADDRESS}: "
              f"{first['answered_at'] - killed_at:.2f} s ({first['attempts']} attempts)")
        assert wait_for(lambda: edge.edge_holders() == ["kam-mel-1"] and edge.attached_instance() == "kam-mel-1", timeout=30)
        # The edge tenant's held call still counts: a second call is refused.
        refused = sipp_to_sip_address(tmp_path, sip.call_scenario(rejected=["403"], hold_ms=100), 5074, "1001",
                                      EDGE_TENANT, "-s", "1002")
        assert refused.returncode == 0, log_of(tmp_path, 5074)
        assert "Tenant Call Limit Reached" in log_of(tmp_path, 5074)
        # The e2e tenant's 1002, registered before the failure, is reached by a call
        # from a media node, through the standby.
        called = sipp_to_sip_address(tmp_path, sip.call_scenario(hold_ms=2000, rtp=True), 5076, "1001", e2e_tenant,
                                     "-s", "1002")
        assert called.returncode == 0, log_of(tmp_path, 5076)
    finally:
        held.kill()
        on_devices("pkill", "-x", "sipp")
        edge.restore_kamailio("coord-syd-1")


def mesh_link(action):
    """Cut (or heal) the private network between the two edge hosts: their WireGuard packets dropped."""
    flag = "-I" if action == "cut" else "-D"
    kam = TOPOLOGY["machines"]["kam-mel-1"]
    for chain, side in (("INPUT", "-s"), ("OUTPUT", "-d")):
        result = subprocess.run(["ip", "netns", "exec", "mlab-coord-syd-1", "iptables", flag, chain, side, kam,
                                 "-p", "udp", "--dport" if chain == "OUTPUT" else "--sport", "51820", "-j", "DROP"],
                                capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stderr


def test_a_cut_private_link_heals_to_one_holder_with_registrations_kept(edge_tenant, e2e_tenant, outside,
                                                                        tmp_path):
    from tests.system import sip

    assert wait_for(lambda: len(edge.edge_holders()) == 1, timeout=90)
    registered = sipp_to_sip_address(tmp_path, sip.register_scenario("200"), 5090, "1002", e2e_tenant,
                                     "-key", "contact_host", f"{edge.DEVICE}:5090")
    assert registered.returncode == 0, log_of(tmp_path, 5090)
    mesh_link("cut")
    try:
        # Each side hears no adverts: both act as master (Keepalived has no quorum),
        # and the timer's reconcile hands Vultr's address back to the higher one.
        assert wait_for(lambda: edge.edge_status("kam-mel-1")["state"] == "MASTER", timeout=30)
        assert wait_for(lambda: edge.attached_instance() == "coord-syd-1", timeout=30)
        assert edge.probe_registration(EDGE_TENANT, "1003", timeout=20)["answered_at"]
    finally:
        mesh_link("heal")
    # Healed: exactly one holder again, and it stays so.
    assert wait_for(lambda: edge.edge_holders() == ["coord-syd-1"] and edge.attached_instance() == "coord-syd-1",
                    timeout=30)
    time.sleep(3)
    assert edge.edge_holders() == ["coord-syd-1"]
    assert edge.edge_status("kam-mel-1")["state"] == "BACKUP"
    # New registrations work, and the device registered before the cut is reached by a call.
    assert edge.probe_registration(EDGE_TENANT, "1003", timeout=20)["answered_at"]
    callee = on_devices("sipp", "-sf", REPO / "tests/system/scenarios/callee.xml", "-i", edge.DEVICE, "-p", "5090",
                        "-mi", edge.DEVICE, "-ci", edge.DEVICE, "-rtp_echo", "-m", "1", "-bg")
    assert "Background mode" in callee.stdout, callee.stdout + callee.stderr
    try:
        called = sipp_to_sip_address(tmp_path, sip.call_scenario(hold_ms=2000, rtp=True), 5076, "1001", e2e_tenant,
                                     "-s", "1002")
        assert called.returncode == 0, log_of(tmp_path, 5076)
    finally:
        on_devices("pkill", "-x", "sipp")


DB_TENANT = "db.mlab.invalid"


@pytest.fixture(scope="module")
def db_tenant(lab):
    return edge.make_tenant(DB_TENANT, max_calls=4, numbers=["1001"])


def runner_json(*args):
    """salt-run ARGS on the master, its return (the master may print warnings around the JSON)."""
    text = mlab("master", "salt-run", *args, "--out=json", timeout=300).stdout
    return json.JSONDecoder().raw_decode(text[text.index("{"):])[0]


def test_the_database_runs_under_patroni_with_a_synchronous_replica_over_tls(lab):
    database.ensure_leader("coord-syd-1")
    status = runner_json("gopbx.db_status")
    assert status["primary"] == "coord-syd-1" and status["etcd_quorum"] is True
    assert status["etcd"] == {"coord-syd-1": True, "kam-mel-1": True, "pgrep-syd-1": True}
    assert {name: member["role"] for name, member in status["members"].items()} == {
        "coord-syd-1": "leader", "pgrep-syd-1": "sync_standby"}
    assert status["members"]["pgrep-syd-1"]["lag"] == 0
    # The replica streams synchronously, over TLS, from its mesh address.
    assert database.psql("coord-syd-1", "SELECT r.client_addr, r.sync_state, s.ssl FROM pg_stat_replication r "
                                        "JOIN pg_stat_ssl s USING (pid)", "postgres") == [["10.29.0.3", "sync", "t"]]
    assert database.psql("pgrep-syd-1", "SELECT pg_is_in_recovery()", "postgres") == [["t"]]
    # The seed's settings, and what pg_rewind needs.
    assert database.psql("pgrep-syd-1", "SELECT current_setting('wal_log_hints'), current_setting('max_wal_senders'),"
                                        " current_setting('wal_keep_size'), current_setting('password_encryption')",
                         "postgres") == [["on", "3", "256MB", "scram-sha-256"]]
    # Migrations ran once, on the primary, and reached the replica by replication.
    assert database.psql("pgrep-syd-1", "SELECT count(*) FROM public.gopbx_schema_migrations") == \
        database.psql("coord-syd-1", "SELECT count(*) FROM public.gopbx_schema_migrations")


def test_failover_dry_run_changes_nothing_and_a_switchover_goes_and_comes_back(db_tenant):
    database.ensure_leader("coord-syd-1")
    before = database.cluster()
    dry = runner_json("gopbx.failover", "test=True")
    assert dry["result"] is None and "coord-syd-1 -> pgrep-syd-1; nothing changed" in dry["table"]
    time.sleep(3)
    after = database.cluster()
    assert [(m["name"], m["role"], m["timeline"]) for m in after["members"]] == [
        (m["name"], m["role"], m["timeline"]) for m in before["members"]]
    writer = database.Writer(DB_TENANT, first=20000)
    try:
        there = runner_json("gopbx.failover")
        print("\n" + there["table"])
        assert there["result"] is True, there["table"]
        assert [step["step"] for step in there["steps"]][-4:] == [
            "Patroni switchover", "pgBouncer follows", "new primary running", "clients reconnect"]
        assert there["steps"][-1]["outcome"] == "runners ok, api ok, kamailio ok"
        # Asked from the pgBouncer host (the coordinator), whose pgBouncer followed at that moment.
        assert there["steps"][-4]["outcome"].startswith("coord-syd-1: Patroni answered 200"), there["table"]
        assert database.wait_healthy("pgrep-syd-1"), database.roles()
        back = runner_json("gopbx.failover")
        print(back["table"])
        assert back["result"] is True, back["table"]
        assert database.wait_healthy("coord-syd-1"), database.roles()
        time.sleep(2)
    finally:
        answers = writer.stop()
    acknowledged = {answer["number"] for answer in answers if 200 <= answer["status"] < 300}
    assert acknowledged and acknowledged <= database.present("coord-syd-1", DB_TENANT)
    # Writes went on after each switchover.
    assert answers[-1]["status"] == 201, answers[-5:]


def database_hosts_apply(*args):
    """state.apply postgres on both database hosts: {minion: {state id: (result, changes)}} of what changed or failed."""
    text = mlab("master", "salt", "-L", "coord-syd-1,pgrep-syd-1", "state.apply", "postgres", *args, "--out=json",
                "--static", timeout=900).stdout
    answers = json.JSONDecoder().raw_decode(text[text.index("{"):])[0]
    return {minion: {key.split("_|-")[1]: (state["result"], state["changes"]) for key, state in states.items()
                     if state["changes"] or state["result"] is not True} for minion, states in answers.items()}


def test_pillars_patroni_settings_reach_a_running_cluster_and_test_mode_tells_the_truth(lab):
    database.ensure_leader("coord-syd-1")
    database.patch_dynamic_config({"ttl": 14, "loop_wait": 3})
    dry = database_hosts_apply("test=True")
    for minion in ("coord-syd-1", "pgrep-syd-1"):
        assert dry[minion] == {"postgres-patroni-dynamic-config": (None, {"ttl": {"old": 14, "new": 10},
                                                                          "loop_wait": {"old": 3, "new": 2}})}
    assert database.dynamic_config()["ttl"] == 14
    applied = database_hosts_apply()
    assert all(set(changed) <= {"postgres-patroni-dynamic-config"} for changed in applied.values()), applied
    assert any(changed for changed in applied.values()), applied
    assert {key: database.dynamic_config()[key] for key in ("ttl", "loop_wait")} == {"ttl": 10, "loop_wait": 2}
    assert database_hosts_apply() == {"coord-syd-1": {}, "pgrep-syd-1": {}}


@pytest.mark.parametrize("args", [("candidate=kam-mel-1",), ("candidate=fs-syd-1",), ("candidate=coord-syd-1",),
                                  ("candidate=nobody-syd-9", "force=True")])
def test_a_failover_whose_checks_fail_is_refused_and_changes_nothing(lab, args):
    database.ensure_leader("coord-syd-1")
    refused = runner_json("gopbx.failover", *args)
    assert refused["result"] is False and refused["refused"] is True, refused["table"]
    assert not any(step["step"].startswith("Patroni") for step in refused["steps"])
    assert database.healthy("coord-syd-1")


def test_sigkill_of_the_primarys_postmaster_loses_no_acknowledged_write(db_tenant):
    database.ensure_leader("coord-syd-1")
    writer = database.Writer(DB_TENANT, first=30000)
    try:
        time.sleep(2)
        fault = time.time()
        database.kill_postmaster("coord-syd-1")
        resumed = database.wait_writes_resume(writer, fault, timeout=90)
        assert resumed is not None
        print(f"\nwrites stalled {resumed:.2f} s after SIGKILL of the primary's postmaster")
        assert wait_for(lambda: database.leader() == "pgrep-syd-1", timeout=60), database.roles()
        time.sleep(2)
    finally:
        answers = writer.stop()
    acknowledged = {answer["number"] for answer in answers if 200 <= answer["status"] < 300}
    assert acknowledged <= database.present("pgrep-syd-1", DB_TENANT)
    # The old primary rejoins as the synchronous replica, with no manual step.
    assert database.wait_healthy("pgrep-syd-1"), database.roles()


def test_power_off_of_the_primarys_machine_loses_no_acknowledged_write_and_it_rejoins_as_replica(db_tenant):
    database.ensure_leader("pgrep-syd-1")
    writer = database.Writer(DB_TENANT, first=40000)
    try:
        time.sleep(2)
        edge.power_off("pgrep-syd-1")
        fault = time.time()  # once every process of the machine is frozen
        try:
            resumed = database.wait_writes_resume(writer, fault, timeout=90)
            assert resumed is not None
            print(f"\nwrites stalled {resumed:.2f} s after the primary's machine lost power")
            assert wait_for(lambda: database.leader() == "coord-syd-1", timeout=30), database.roles()
        finally:
            edge.power_on("pgrep-syd-1")
        # Back, its Patroni finds the lock held and its lease gone: it never leads again by itself.
        for _ in range(15):
            assert database.leader() == "coord-syd-1", database.roles()
            time.sleep(1)
    finally:
        answers = writer.stop()
    acknowledged = {answer["number"] for answer in answers if 200 <= answer["status"] < 300}
    assert acknowledged <= database.present("coord-syd-1", DB_TENANT)
    assert database.wait_healthy("coord-syd-1", timeout=240), database.roles()


def test_split_brain_a_primary_cut_off_from_etcd_and_the_replica_stops_accepting_writes(db_tenant):
    database.ensure_leader("coord-syd-1")
    # The coordinator loses the replica and the third etcd member (the mesh stays up for VRRP).
    database.cut("coord-syd-1", ["pgrep-syd-1", "kam-mel-1"], "cut")
    try:
        assert wait_for(lambda: database.psql("pgrep-syd-1", "SELECT pg_is_in_recovery()", "postgres") == [["f"]],
                        timeout=60, interval=1.0)
        # The cut-off primary demoted itself: it refuses writes (or has none to give), and acknowledges none.
        assert wait_for(lambda: database.psql("coord-syd-1", "SELECT pg_is_in_recovery()", "postgres") != [["f"]],
                        timeout=60, interval=1.0)
        attempt = database.run("coord-syd-1", "timeout", "10", "runuser", "-u", "postgres", "--", "psql", "-X", "-h",
                               "/var/run/postgresql", "-p", "5432", "-d", "gopbx", "-c",
                               "INSERT INTO gopbx.audit (actor, action, object_type, object_id) "
                               "VALUES ('split', 'split', 'split', 'split')")
        assert attempt.returncode != 0, attempt.stdout
    finally:
        database.cut("coord-syd-1", ["pgrep-syd-1", "kam-mel-1"], "heal")
    assert database.psql("pgrep-syd-1", "SELECT count(*) FROM gopbx.audit WHERE actor = 'split'") == [["0"]]
    # Healed: the old primary is rewound and rejoins as the replica.
    assert database.wait_healthy("pgrep-syd-1", timeout=240), database.roles()
    database.ensure_leader("coord-syd-1")


@pytest.mark.parametrize("forged", [
    # A media node claims a role change in its own name, in a database host's (the batched form lets it write
    # the id), and with payloads that are not Patroni's.
    ["event.fire_master", '{"role": "primary"}', "gopbx/postgres/role_changed"],
    ["event.fire_master", "{}", "gopbx/ignored",
     'preload={"events": [{"tag": "gopbx/postgres/role_changed", "data": {"id": "pgrep-syd-1", "data": {"role": '
     '"primary"}}}]}'],
    ["event.fire_master", '{"role": "primary; rm -rf /"}', "gopbx/postgres/role_changed"],
    ["event.fire_master", '["primary"]', "gopbx/postgres/role_changed"],
])
def test_a_forged_role_change_event_changes_nothing(lab, forged):
    database.ensure_leader("coord-syd-1")
    ini = edge.STATE / "machines" / "coord-syd-1" / "root" / "etc" / "pgbouncer" / "databases.ini"
    before = ini.read_text()
    log = edge.STATE / "machines" / "coord-syd-1" / "root" / "var" / "log" / "salt" / "master"
    seen = log.read_text().count("gopbx/postgres/role_changed event claiming")
    mlab("run", "fs-syd-1", "salt-call", *forged)
    if forged[2] == "gopbx/ignored":
        # The id the reactor sees is a database host's: the runner asks the cluster, which says nothing changed.
        time.sleep(10)
    else:
        assert wait_for(lambda: log.read_text().count("gopbx/postgres/role_changed event claiming") > seen,
                        timeout=60), log.read_text()[-3000:]
    assert ini.read_text() == before and "10.29.0.1" in before
    assert database.healthy("coord-syd-1")


FLOOD = """
import salt.client
caller = salt.client.Caller()
for _ in range(60):
    caller.cmd("event.fire_master", {"role": "master"}, "gopbx/postgres/role_changed")
"""


def test_a_flood_of_role_change_events_from_a_database_host_is_folded_into_few_runs(lab):
    database.ensure_leader("coord-syd-1")
    log = edge.STATE / "machines" / "coord-syd-1" / "root" / "var" / "log" / "salt" / "master"

    def runs():
        return log.read_text().count("database role change on pgrep-syd-1")

    before = runs()
    flooded = mlab("run", "pgrep-syd-1", "/opt/saltstack/venv/bin/python3", "-c", FLOOD)
    assert flooded.returncode == 0, flooded.stdout + flooded.stderr
    assert wait_for(lambda: runs() > before, timeout=60), log.read_text()[-3000:]
    settled = None
    while settled != runs():  # until no run has been added for 10 s
        settled = runs()
        time.sleep(10)
    # 60 well-formed events, each of which alone makes a run: a few runs did the work of all.
    assert 1 <= settled - before <= 10, settled - before
    assert database.healthy("coord-syd-1")


def test_teardown_leaves_nothing_behind(lab):
    # The machines' PID namespaces: those of the processes under each systemd-nspawn.
    nspawns = subprocess.run(["pgrep", "-f", "systemd-nspawn"], capture_output=True, text=True).stdout.split()
    ours = os.readlink("/proc/self/ns/pid")
    namespaces = pid_namespaces()
    lab = {namespace for pid, namespace in namespaces.items() if namespace != ours
           and any(f"/{nspawn}/" in "/".join(["", *ancestry(pid), ""]) for nspawn in nspawns)}
    assert len(lab) == len(TOPOLOGY["machines"]), lab
    assert mlab("down").returncode == 0
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert "mlab-" not in namespaces and "gopbx-mlab" not in namespaces
    assert str(STATE / "machines") not in Path("/proc/mounts").read_text()
    processes = subprocess.run(["pgrep", "-f", "systemd-nspawn"], capture_output=True, text=True).stdout
    assert processes.strip() == ""
    # Nor any process of a machine (a killed nspawn once left its machine's systemd running).
    assert [pid for pid, namespace in pid_namespaces().items() if namespace in lab] == []
    assert not (STATE / "machines").exists() or not any((STATE / "machines").iterdir())

