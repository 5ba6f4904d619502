"""
The SIP edge pair of the multi-host lab, as its tests and bench/edge_failover.py
see it: which host Keepalived made active, who holds the SIP address and whom
Vultr's double attaches it to, each host's Kamailio, and a device on the
internet's side of the lab (network namespace gopbx-outside) that registers.
"""

import json
import subprocess
from contextlib import contextmanager
from pathlib import Path

import yaml

from tests.support import REPO

MLAB = REPO / "scripts" / "mlab"
STATE = Path("/var/lib/gopbx-mlab")
TOPOLOGY = yaml.safe_load((REPO / "lab" / "mlab" / "topology.yaml").read_text())["mlab"]
SIP_ADDRESS = "10.28.0.50"
EDGE = ("coord-syd-1", "kam-mel-1")
OUTSIDE_NS = "gopbx-outside"
DEVICE = TOPOLOGY["outside"]
# More devices on the internet's side, for the probe: it REGISTERs every 0.2 s, and
# from one address that is a flood Kamailio's pike bans (as it should).
PROBE_DEVICES = [f"10.28.0.{201 + index}" for index in range(20)]
DEVICE_PASSWORD = "Mlab-Device-Pass-42"


def mlab(*args, timeout=3600):
    return subprocess.run([str(MLAB), *args], capture_output=True, text=True, timeout=timeout, check=False)


def on_devices(*command, timeout=120):
    return subprocess.run(["ip", "netns", "exec", OUTSIDE_NS, *map(str, command)], capture_output=True, text=True,
                          check=False, timeout=timeout)


@contextmanager
def outside_namespace():
    """A host on the internet's side: on the lab's bridge, outside the region's private network (the VPC)."""
    def run(*command):
        subprocess.run(command, check=True)

    def remove():
        # Deleting the link deletes both ends now; a namespace's own deletion frees its
        # veth peer only later (the kernel cleans up namespaces asynchronously).
        subprocess.run(["ip", "-n", "gopbx-mlab", "link", "delete", "mv-outside"], check=False, capture_output=True)
        subprocess.run(["ip", "netns", "delete", OUTSIDE_NS], check=False, capture_output=True)

    remove()
    run("ip", "netns", "add", OUTSIDE_NS)
    try:
        run("ip", "link", "add", "mv-outside", "netns", "gopbx-mlab", "type", "veth", "peer", "name", "eth0",
            "netns", OUTSIDE_NS)
        run("ip", "-n", "gopbx-mlab", "link", "set", "mv-outside", "master", "br0", "up")
        run("ip", "-n", OUTSIDE_NS, "addr", "add", f"{DEVICE}/24", "dev", "eth0")
        for address in PROBE_DEVICES:
            run("ip", "-n", OUTSIDE_NS, "addr", "add", f"{address}/32", "dev", "eth0")
        run("ip", "-n", OUTSIDE_NS, "link", "set", "eth0", "up")
        run("ip", "-n", OUTSIDE_NS, "link", "set", "lo", "up")
        # Even knowing the plan's private addresses and routing to them through the coordinator.
        run("ip", "-n", OUTSIDE_NS, "route", "add", "172.28.0.0/24", "via", TOPOLOGY["machines"]["coord-syd-1"])
        yield OUTSIDE_NS
    finally:
        remove()


def api_on_coordinator(code):
    """Python with the API's venv on the coordinator, where the API is (its plan address)."""
    result = mlab("run", "coord-syd-1", "/opt/gopbx/api/venv/bin/python", "-c", code)
    if result.returncode != 0:
        raise RuntimeError(result.stdout + result.stderr)
    return result.stdout


def make_tenant(domain, max_calls, numbers):
    """The tenant DOMAIN (made again if it exists), with extensions NUMBERS, through the API."""
    password = json.loads((STATE / "secrets.json").read_text())["api"]["admin_password"]
    api_on_coordinator(f"""
import requests
api = "http://172.28.0.30:8080"
token = requests.post(api + "/v1/token", json={{"username": "admin", "password": {password!r}}}).json()["access_token"]
headers = {{"Authorization": "Bearer " + token}}
requests.delete(api + "/v1/tenants/{domain}", headers=headers)
made = requests.post(api + "/v1/tenants", headers=headers, json={{"domain": "{domain}", "name": "mlab",
                     "max_calls": {max_calls}, "calls_per_second": 10, "dispatcher_set": 1}})
assert made.status_code == 201, made.text
for number in {list(numbers)!r}:
    made = requests.post(api + "/v1/tenants/{domain}/extensions", headers=headers,
                         json={{"number": number, "password": "{DEVICE_PASSWORD}"}})
    assert made.status_code == 201, made.text
""")
    # Every edge host's Kamailio reads tenants from the database: reload each one's domain cache.
    for name in EDGE:
        kamailio_rpc(name, "domain.reload")
    return domain


def kill_kamailio(name):
    """SIGKILL every Kamailio process on NAME and keep it down: masked, so systemd does
    not restart it (this container's systemd cannot kill a unit's control group, so
    `systemctl kill` and `stop` leave Kamailio's children running)."""
    mlab("run", name, "bash", "-c", "systemctl mask --runtime kamailio; pkill -KILL -x kamailio")


def restore_kamailio(name):
    mlab("run", name, "bash", "-c", "systemctl unmask --runtime kamailio; systemctl reset-failed kamailio; "
                                    "systemctl start kamailio")


FREEZER = Path("/sys/fs/cgroup/freezer")


def machine_pids(name):
    """Every process of machine NAME (its PID namespace, seen from the host)."""
    init = subprocess.run(["pgrep", "-P", (STATE / "machines" / name / "nspawn.pid").read_text().strip()],
                          capture_output=True, text=True, check=True).stdout.split()[0]
    return subprocess.run(["pgrep", "--ns", init, "--nslist", "pid"], capture_output=True, text=True,
                          check=True).stdout.split()


def power_off(name):
    """NAME stops dead, all at once, as a machine that loses power: its processes frozen
    (cgroup freezer), so nothing on it notices or says goodbye; its peers hear silence."""
    group = FREEZER / f"gopbx-mlab-{name}"
    group.mkdir(exist_ok=True)
    for pid in machine_pids(name):
        try:
            (group / "cgroup.procs").write_text(pid)
        except OSError:
            pass  # gone meanwhile
    (group / "freezer.state").write_text("FROZEN")


def power_on(name):
    """NAME runs again where it stopped (its clocks jump; its peers see it come back).
    Its processes stay in the thawed group, which scripts/mlab down removes."""
    (FREEZER / f"gopbx-mlab-{name}" / "freezer.state").write_text("THAWED")


def edge_status(name):
    result = mlab("run", name, "salt-call", "--local", "--out=json", "gopbx_edge.status")
    return json.loads(result.stdout)["local"] if result.returncode == 0 else {"state": "UNREACHABLE"}


def edge_holders():
    """The edge hosts with the SIP address on an interface."""
    return [name for name in EDGE if edge_status(name).get("holds_address")]


def attached_instance():
    """The edge host the reserved SIP address is attached to, as Vultr's double says."""
    world = json.loads((STATE / "edge-world.json").read_text())
    key = (STATE / "edge-api-key").read_text()
    asked = subprocess.run(["ip", "netns", "exec", "gopbx-mlab", "curl", "-sf", "-H", f"Authorization: Bearer {key}",
                            f"http://10.28.0.250:8098/v2/reserved-ips/{world['reserved_ips'][0]['id']}"],
                           capture_output=True, text=True, check=False)
    instance = json.loads(asked.stdout)["reserved_ip"]["instance_id"] if asked.returncode == 0 else None
    return next((item["label"] for item in world["instances"] if item["id"] == instance), None)


def kamailio_rpc(name, method, *params):
    """Kamailio's JSONRPC on NAME's own management address (the plan's, local on each edge host)."""
    body = json.dumps({"jsonrpc": "2.0", "method": method, "params": list(params), "id": 1})
    result = mlab("run", name, "curl", "-s", "--max-time", "5", "-d", body, "http://172.28.0.15:8080/jsonrpc")
    return json.loads(result.stdout) if result.stdout else {"error": result.stderr}


def probe_registration(domain, user, timeout=30):
    """REGISTER as USER from the device side until answered 200: {'answered_at': epoch or None, 'attempts'}."""
    result = on_devices("env", f"PYTHONPATH={REPO}", REPO / ".venv/bin/python", "-m", "tests.multihost.edge_probe",
                        ",".join(PROBE_DEVICES), SIP_ADDRESS, domain, user, DEVICE_PASSWORD, timeout,
                        timeout=timeout + 30)
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-2000:])
    return json.loads(result.stdout)
