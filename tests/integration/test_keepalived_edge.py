"""
The SIP edge pair with the real programs: two hosts are two network namespaces
on one segment, each running the real Kamailio (a minimal configuration that
answers OPTIONS, as the production one does), the real RTPEngine and the real
Keepalived on the configuration the keepalived formula renders. Transitions go
through Keepalived's notify FIFO to the formula's handler, which runs the real
`salt-call --local gopbx_edge.reconcile` against the Vultr DOUBLE (served on the
segment, as Vultr is reached over the network).

Replaced for the test, and only these: paths (scripts, FIFO, run directory,
salt-call with this tree's masterless configuration), and the handler's
event.send to the masters, which goes to a file here (the master's side is
tests/integration/test_edge_events.py).
"""

import ctypes
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import jinja2
import pytest
import yaml

from tests.doubles.vultr import VultrDouble
from tests.support import REPO, VENV_BIN, wait_for

FORMULA = REPO / "salt" / "keepalived"
SIP_ADDRESS = "10.29.0.50"
DOUBLE_ADDRESS = "10.29.0.100"
LAN = f"ka-lan-{os.getpid()}"
HOSTS = {"coord-syd-1": {"address": "10.29.0.1", "priority": 150, "location": "syd", "netns": f"ka-a-{os.getpid()}"},
         "kam-syd-2": {"address": "10.29.0.2", "priority": 100, "location": "syd", "netns": f"ka-b-{os.getpid()}"}}
KAMAILIO_CFG = """#!KAMAILIO
children=1
listen=udp:127.0.0.1:5060
loadmodule "pv.so"
loadmodule "textops.so"
loadmodule "sl.so"
request_route {
    if (is_method("OPTIONS") && uri == myself && $rU == $null) {
        sl_send_reply("200", "Keepalive");
    }
    exit;
}
"""


def ip(*args):
    subprocess.run(["ip", *args], check=True, capture_output=True)


@contextmanager
def in_netns(name):
    """This thread inside netns NAME (sockets made here stay there)."""
    libc = ctypes.CDLL(None, use_errno=True)
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        assert libc.setns(target, 0x40000000) == 0, os.strerror(ctypes.get_errno())  # CLONE_NEWNET
        yield
    finally:
        assert libc.setns(home, 0x40000000) == 0
        os.close(home)
        os.close(target)


@pytest.fixture(scope="module")
def segment():
    """A bridge in its own namespace, each host's namespace joined to it by a veth."""
    ip("netns", "add", LAN)
    made = [LAN]
    try:
        ip("-n", LAN, "link", "add", "br0", "type", "bridge")
        ip("-n", LAN, "addr", "add", f"{DOUBLE_ADDRESS}/24", "dev", "br0")
        ip("-n", LAN, "link", "set", "br0", "up")
        for number, host in enumerate(HOSTS.values()):
            ip("netns", "add", host["netns"])
            made.append(host["netns"])
            ip("link", "add", f"kav{number}-{os.getpid()}"[:15], "netns", LAN, "type", "veth", "peer", "name",
               "eth0", "netns", host["netns"])
            ip("-n", LAN, "link", "set", f"kav{number}-{os.getpid()}"[:15], "master", "br0", "up")
            ip("-n", host["netns"], "addr", "add", f"{host['address']}/24", "dev", "eth0")
            ip("-n", host["netns"], "link", "set", "eth0", "up")
            ip("-n", host["netns"], "link", "set", "lo", "up")
        yield
    finally:
        for name in made:
            subprocess.run(["ip", "netns", "del", name], check=False)


@pytest.fixture(scope="module")
def vultr(segment):
    with in_netns(LAN):
        double = VultrDouble(host=DOUBLE_ADDRESS)
    double.start()
    double.settle_seconds = 0.5
    double.domains["gopbx.lab.invalid"] = {}
    for name in HOSTS:
        made = double.answer("POST", "/v2/instances", {}, {"label": name, "region": "syd", "plan": "vc2-2c-4gb"},
                             double.api_key)[1]["instance"]
        HOSTS[name]["instance_id"] = made["id"]
    double.sip_ip = double.reserve_ip("syd", SIP_ADDRESS, "sip")
    yield double
    double.stop()


class EdgeHost:
    """One host's processes and files; everything it starts is stopped by pid."""

    def __init__(self, name, base, vultr):
        self.name, self.spec, self.base = name, HOSTS[name], base
        self.netns = self.spec["netns"]
        self.run_dir = base / "run"
        self.run_dir.mkdir(parents=True, mode=0o700)
        self.events = base / "events"
        self.processes = {}
        # Keepalived refuses scripts in a path anyone but root may write: under /run, 0755.
        self.libexec = Path(tempfile.mkdtemp(prefix="gopbx-ka-", dir="/run"))
        self.libexec.chmod(0o755)
        self._write_scripts()
        self._write_salt(vultr)
        self.config = base / "keepalived.conf"
        self.config.write_text(self._render())

    def _write_scripts(self):
        salt_call = [str(VENV_BIN / "salt-call"), "-c", str(self.base / "etc")]
        for script in (FORMULA / "files" / "libexec").iterdir():
            text = script.read_text()
            text = text.replace('["timeout", "30", *SALT_CALL, "--out-file=/dev/null", "event.send"]',
                                json.dumps([str(self.libexec / "record-event")]))
            text = text.replace('["/usr/bin/salt-call"]', json.dumps(salt_call))
            text = text.replace("/usr/bin/salt-call", " ".join(salt_call)).replace("/run/gopbx-edge",
                                                                                   str(self.run_dir))
            (self.libexec / script.name).write_text(text)
            (self.libexec / script.name).chmod(0o755)
        (self.libexec / "record-event").write_text(f'#!/bin/sh\necho "$@" >> {self.events}\n')
        (self.libexec / "record-event").chmod(0o755)

    def _write_salt(self, vultr):
        edge = {"minion_id": self.name, "location": "syd", "instance_id": self.spec["instance_id"],
                "public_address": self.spec["address"], "interface": "eth0", "sip_address": SIP_ADDRESS,
                "sip_address_location": "syd", "reserved_ip_id": vultr.sip_ip,
                "dns": {"domain": "gopbx.lab.invalid", "name": "sip", "ttl": 30}, "vultr_url": vultr.url,
                "api_key": vultr.api_key, "run_dir": str(self.run_dir), "peers": HOSTS,
                "vrrp_pid_file": str(self.base / "keepalived_vrrp.pid")}
        (self.base / "edge.json").write_text(json.dumps(edge))
        (self.base / "etc").mkdir()
        (self.base / "etc" / "minion").write_text(yaml.safe_dump({
            "id": self.name, "file_client": "local", "root_dir": str(self.base / "root"),
            "module_dirs": [str(REPO / "_modules")], "utils_dirs": [str(REPO / "_utils")],
            "file_roots": {"base": []}, "pillar_roots": {"base": []},
            "gopbx_edge_config": str(self.base / "edge.json"), "log_level_logfile": "info"}))

    def _render(self):
        defaults = yaml.safe_load((FORMULA / "defaults.yaml").read_text())
        defaults.update(peers={name: {key: spec[key] for key in ("address", "priority", "location")}
                               for name, spec in HOSTS.items()},
                        vrrp_interface="eth0", public_interface="eth0", sip_address=SIP_ADDRESS,
                        sip_address_location="syd", preempt_delay=2)
        template = jinja2.Template((FORMULA / "files" / "keepalived.conf.jinja").read_text())
        text = template.render(keepalived=defaults, me=defaults["peers"][self.name], minion_id=self.name,
                               libexec=str(self.libexec), checks={"sip": "127.0.0.1 5060", "ng": "127.0.0.1 2223"})
        return text.replace("/run/gopbx-edge/notify.fifo", str(self.base / "notify.fifo"))

    def start(self, what, command):
        log = open(self.base / f"{what}.log", "ab")  # noqa: SIM115  (the child keeps it)
        self.processes[what] = subprocess.Popen(["ip", "netns", "exec", self.netns, *command], stdout=log,
                                                stderr=subprocess.STDOUT, start_new_session=True)

    def start_kamailio(self):
        (self.base / "kamailio.cfg").write_text(KAMAILIO_CFG)
        (self.base / "kamailio-run").mkdir(exist_ok=True)
        self.start("kamailio", ["kamailio", "-DD", "-E", "-f", self.base / "kamailio.cfg", "-m", "64", "-M", "8",
                                "-Y", self.base / "kamailio-run", "-P", self.base / "kamailio.pid"])

    def start_rtpengine(self):
        self.start("rtpengine", ["rtpengine", "--foreground", "--log-stderr", "--interface", "127.0.0.1",
                                 "--listen-ng", "127.0.0.1:2223", "--listen-cli", "127.0.0.1:9900", "--table", "-1",
                                 "--pidfile", self.base / "rtpengine.pid"])

    def start_keepalived(self):
        self.start("keepalived", ["keepalived", "-n", "-l", "-D", "-P", "-f", self.config,
                                  "-p", self.base / "keepalived.pid", "-r", self.base / "keepalived_vrrp.pid"])

    def kill(self, what):
        process = self.processes.pop(what, None)
        if process and process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)

    def stop(self):
        for what in list(self.processes):
            self.kill(what)
        shutil.rmtree(self.libexec, ignore_errors=True)

    def state(self):
        path = self.run_dir / "vrrp-state"
        return path.read_text().strip() if path.exists() else None

    def holds(self):
        shown = subprocess.run(["ip", "-n", self.netns, "-o", "addr", "show", "dev", "eth0"], capture_output=True,
                               text=True, check=True).stdout
        return f" {SIP_ADDRESS}/" in shown

    def reconcile(self):
        """What the host's timer runs."""
        result = subprocess.run(["ip", "netns", "exec", self.netns, VENV_BIN / "salt-call", "-c", self.base / "etc",
                                 "--local", "--out=json", "gopbx_edge.reconcile"], capture_output=True, text=True,
                                check=False, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
        return json.loads(result.stdout)["local"]

    def recorded_events(self):
        return self.events.read_text().split("\n") if self.events.exists() else []


@pytest.fixture(scope="module")
def edge(vultr, tmp_path_factory):
    hosts = {name: EdgeHost(name, tmp_path_factory.mktemp(name), vultr) for name in HOSTS}
    try:
        for host in hosts.values():
            host.start_kamailio()
            host.start_rtpengine()
        for host in hosts.values():
            host.start_keepalived()
        yield hosts
    finally:
        for host in hosts.values():
            host.stop()


def reserved_on(vultr):
    reserved = vultr.reserved_ips[vultr.sip_ip]
    return vultr._settled(reserved)["instance_id"]


def holders(edge):
    return [name for name, host in edge.items() if host.holds()]


def sip_record(vultr):
    return [item["data"] for item in vultr.domains["gopbx.lab.invalid"].values() if item["name"] == "sip"]


def test_the_highest_priority_host_takes_the_address_the_reserved_ip_and_the_name(edge, vultr):
    a, b = edge["coord-syd-1"], edge["kam-syd-2"]
    assert wait_for(lambda: a.state() == "MASTER" and reserved_on(vultr) == a.spec["instance_id"], timeout=60), (
        a.state(), b.state(), (a.base / "keepalived.log").read_text()[-3000:])
    assert wait_for(lambda: b.state() == "BACKUP", timeout=10), b.state()
    assert holders(edge) == ["coord-syd-1"]
    assert sip_record(vultr) == [SIP_ADDRESS]
    assert "gopbx/keepalived/master instance=SIP_EDGE priority=150" in a.recorded_events()
    # The timer's next run on either host finds nothing to do.
    assert a.reconcile()["changes"] == {} and b.reconcile()["changes"] == {}


def test_sigkill_of_the_active_keepalived_moves_everything_and_the_dead_hosts_leftover_is_removed(edge, vultr):
    a, b = edge["coord-syd-1"], edge["kam-syd-2"]
    killed = time.monotonic()
    a.kill("keepalived")
    assert wait_for(lambda: b.holds(), timeout=10, interval=0.05)
    print(f"\nSIGKILL: the backup holds the address after {time.monotonic() - killed:.2f} s")
    assert wait_for(lambda: reserved_on(vultr) == b.spec["instance_id"], timeout=60), reserved_on(vultr)
    # A SIGKILLed Keepalived leaves its address behind (FIELD-NOTES): its host's timer removes it.
    assert a.holds()
    assert a.reconcile() == {"state": "STOP", "minion_id": "coord-syd-1", "result": True,
                             "changes": {"interface": f"{SIP_ADDRESS} removed from eth0"}}
    assert holders(edge) == ["kam-syd-2"]
    assert sip_record(vultr) == [SIP_ADDRESS]
    assert "gopbx/keepalived/master instance=SIP_EDGE priority=100" in b.recorded_events()


def test_the_higher_priority_host_returns_after_its_preempt_delay(edge, vultr):
    a, b = edge["coord-syd-1"], edge["kam-syd-2"]
    a.start_keepalived()
    assert wait_for(lambda: a.state() == "MASTER" and reserved_on(vultr) == a.spec["instance_id"], timeout=60)
    assert wait_for(lambda: holders(edge) == ["coord-syd-1"], timeout=10), holders(edge)
    assert b.state() == "BACKUP"


def test_a_dead_rtpengine_fails_its_host_over(edge, vultr):
    a, b = edge["coord-syd-1"], edge["kam-syd-2"]
    a.kill("rtpengine")
    assert wait_for(lambda: a.state() == "FAULT", timeout=15), a.state()
    assert wait_for(lambda: b.state() == "MASTER" and reserved_on(vultr) == b.spec["instance_id"], timeout=60)
    assert wait_for(lambda: holders(edge) == ["kam-syd-2"], timeout=10), holders(edge)
    assert "gopbx/keepalived/fault instance=SIP_EDGE priority=150" in a.recorded_events()


def test_a_dead_kamailio_keeps_its_host_out_until_it_answers_again(edge, vultr):
    a, b = edge["coord-syd-1"], edge["kam-syd-2"]
    a.start_rtpengine()
    a.kill("kamailio")
    time.sleep(4)  # a has RTPEngine again but no Kamailio: it must not take over
    assert a.state() == "FAULT" and holders(edge) == ["kam-syd-2"]
    a.start_kamailio()
    assert wait_for(lambda: a.state() == "MASTER" and holders(edge) == ["coord-syd-1"], timeout=30), (
        a.state(), holders(edge))
    assert wait_for(lambda: reserved_on(vultr) == a.spec["instance_id"], timeout=60)


def vrrp_cut(host, cut=True):
    """Drop VRRP both ways at HOST: the private link is down, Vultr still answers both."""
    for chain in ("INPUT", "OUTPUT"):
        subprocess.run(["ip", "netns", "exec", host.netns, "iptables", "-A" if cut else "-D", chain, "-p", "vrrp",
                        "-j", "DROP"], check=True)


def test_a_cut_between_the_hosts_heals_to_one_holder_and_the_timer_does_not_ping_pong(edge, vultr):
    a, b = edge["coord-syd-1"], edge["kam-syd-2"]
    assert wait_for(lambda: holders(edge) == ["coord-syd-1"], timeout=30)
    vrrp_cut(b)
    try:
        # No quorum in VRRP: each side is MASTER. b's transition takes the reserved IP.
        assert wait_for(lambda: b.state() == "MASTER" and reserved_on(vultr) == b.spec["instance_id"], timeout=60)
        assert a.state() == "MASTER"
        # a's timer takes it back (a outranks b); b's timer leaves it there.
        assert "reserved_ip" in a.reconcile()["changes"]
        assert reserved_on(vultr) == a.spec["instance_id"]
        assert b.reconcile()["changes"] == {}
        assert reserved_on(vultr) == a.spec["instance_id"]
    finally:
        vrrp_cut(b, cut=False)
    healed = time.monotonic()
    assert wait_for(lambda: holders(edge) == ["coord-syd-1"] and b.state() == "BACKUP", timeout=10, interval=0.05), (
        holders(edge), b.state())
    print(f"\nheal: one holder again after {time.monotonic() - healed:.2f} s")
    assert reserved_on(vultr) == a.spec["instance_id"]
    assert a.reconcile()["changes"] == {} and b.reconcile()["changes"] == {}
