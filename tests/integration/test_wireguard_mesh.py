"""
The wireguard formula's mesh with the real WireGuard tools: two hosts are two
network namespaces joined by a veth (their "endpoints"), each makes its key as
the formula does, publishes its public half with gopbx_wireguard.public_key,
and brings up the configuration the formula renders with `wg-quick`, which
falls back to wireguard-go (this kernel has no WireGuard module). The second
host then reaches a plan address the first serves, through the tunnel only.
"""

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import jinja2
import pytest
import salt.utils.jinja  # noqa: F401  (registers Salt's Jinja filters)
import yaml
from salt.utils.decorators.jinja import JinjaFilter

from tests.support import REPO, load_module, wait_for

FORMULA = REPO / "salt" / "wireguard"
PID = os.getpid()
# Interface names differ: wireguard-go's control sockets share this host's /run.
HOSTS = {
    "coord-syd-1": {"netns": f"wg-a-{PID}", "interface": f"wga{PID % 10000}", "endpoint": "10.28.9.1",
                    "address": "10.29.0.1", "routes": ["172.28.0.10/32"]},
    "kam-mel-1": {"netns": f"wg-b-{PID}", "interface": f"wgb{PID % 10000}", "endpoint": "10.28.9.2",
                  "address": "10.29.0.2"},
}
POSTGRES = "172.28.0.10"


def run(*command, check=True, netns=None, **kwargs):
    prefix = ["ip", "netns", "exec", netns] if netns else []
    return subprocess.run([*prefix, *map(str, command)], check=check, capture_output=True, text=True, **kwargs)


@pytest.fixture(scope="module")
def hosts():
    directory = Path(tempfile.mkdtemp(prefix="gopbx-wg-", dir="/run"))
    made = []
    try:
        for host in HOSTS.values():
            run("ip", "netns", "add", host["netns"])
            made.append(host["netns"])
            run("ip", "-n", host["netns"], "link", "set", "lo", "up")
        a, b = HOSTS["coord-syd-1"], HOSTS["kam-mel-1"]
        run("ip", "link", "add", "veth0", "netns", a["netns"], "type", "veth", "peer", "name", "veth0",
            "netns", b["netns"])
        for host in (a, b):
            run("ip", "-n", host["netns"], "addr", "add", f"{host['endpoint']}/24", "dev", "veth0")
            run("ip", "-n", host["netns"], "link", "set", "veth0", "up")
        # The coordinator's plan address (the network formula's gopbx0).
        run("ip", "-n", a["netns"], "link", "add", "gopbx0", "type", "bridge")
        run("ip", "-n", a["netns"], "addr", "add", f"{POSTGRES}/24", "dev", "gopbx0")
        run("ip", "-n", a["netns"], "link", "set", "gopbx0", "up")
        for name, host in HOSTS.items():
            host["key_dir"] = directory / name
            host["key_dir"].mkdir(mode=0o700)
            # What the formula's wireguard-private-key-made runs.
            run("sh", "-c", f"umask 077 && wg genkey > {host['key_dir'] / host['interface']}.key")
        yield HOSTS
    finally:
        for host in HOSTS.values():
            conf = host.get("key_dir", directory) / f"{host['interface']}.conf"
            if conf.exists():
                run("wg-quick", "down", conf, netns=host["netns"], check=False)
        for name in made:
            run("ip", "netns", "del", name, check=False)
        shutil.rmtree(directory, ignore_errors=True)


def render(name, published):
    defaults = yaml.safe_load((FORMULA / "defaults.yaml").read_text())
    defaults["hosts"] = {other: {key: spec[key] for key in ("address", "endpoint", "routes") if key in spec}
                         for other, spec in HOSTS.items()}
    host = HOSTS[name]
    template = jinja2.Environment(extensions=["jinja2.ext.do"])
    template.filters["regex_match"] = JinjaFilter.salt_jinja_filters["regex_match"]  # Salt's own filter
    return template.from_string((FORMULA / "files" / "wg.conf.jinja").read_text()).render(
        wireguard=defaults, me=defaults["hosts"][name], minion_id=name,
        key_file=f"{host['key_dir'] / host['interface']}.key", published=published)


def test_the_mesh_carries_the_plan_addresses_between_hosts(hosts):
    module = load_module("_modules", "gopbx_wireguard")
    # What each host's mine publishes: the public half only.
    published = {name: module.public_key(host["interface"], key_dir=str(host["key_dir"]))
                 for name, host in hosts.items()}
    for name, key in published.items():
        assert module.KEY.fullmatch(key)
        assert key not in (hosts[name]["key_dir"] / f"{hosts[name]['interface']}.key").read_text()
    a, b = hosts["coord-syd-1"], hosts["kam-mel-1"]
    # The standby comes up before the coordinator's key is in the mine, as on a new region's
    # first run; its next highstate adds the peer by a reload (the formula's wg-reload).
    for name, host in hosts.items():
        conf = host["key_dir"] / f"{host['interface']}.conf"
        conf.write_text(render(name, published if name == "coord-syd-1" else {}))
        up = run("wg-quick", "up", conf, netns=host["netns"], check=False)
        assert up.returncode == 0, up.stderr
    assert "dev " + b["interface"] not in run("ip", "route", "get", POSTGRES, netns=b["netns"], check=False).stdout
    conf = b["key_dir"] / f"{b['interface']}.conf"
    conf.write_text(render("kam-mel-1", published))
    reloaded = run(FORMULA / "files" / "wg-reload", conf, netns=b["netns"], check=False)
    assert reloaded.returncode == 0, reloaded.stderr
    # The route to the coordinator's plan address goes into the tunnel.
    route = run("ip", "route", "get", POSTGRES, netns=b["netns"]).stdout
    assert f"dev {b['interface']}" in route, route
    server = subprocess.Popen(["ip", "netns", "exec", a["netns"], "python3", "-m", "http.server", "--bind", POSTGRES,
                               "5432"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def reached():
        return run("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "2",
                   f"http://{POSTGRES}:5432/", netns=b["netns"], check=False).stdout == "200"

    try:
        assert wait_for(reached, timeout=20), "the coordinator's plan address is not reachable through the mesh"
        # A reload (the formula's, for a changed peer list) keeps the key and the tunnels.
        conf = a["key_dir"] / f"{a['interface']}.conf"
        conf.write_text(conf.read_text().replace("PersistentKeepalive = 25", "PersistentKeepalive = 15"))
        reloaded = run(FORMULA / "files" / "wg-reload", conf, netns=a["netns"], check=False)
        assert reloaded.returncode == 0, reloaded.stderr
        shown = run("wg", "show", a["interface"], netns=a["netns"]).stdout
        assert f"public key: {published['coord-syd-1']}" in shown and "every 15 seconds" in shown, shown
        assert reached(), "the mesh stopped carrying traffic after a reload"
    finally:
        server.terminate()
        server.wait(timeout=10)
    handshake = run("wg", "show", b["interface"], "latest-handshakes", netns=b["netns"]).stdout
    assert published["coord-syd-1"] in handshake and not handshake.strip().endswith("\t0")
    # The private keys never appear in a configuration: wg-quick's PostUp reads the file.
    for name, host in hosts.items():
        text = (host["key_dir"] / f"{host['interface']}.conf").read_text()
        assert "PrivateKey" not in text and (host["key_dir"] / f"{host['interface']}.key").read_text().strip() not in text


@pytest.mark.parametrize("forged", [
    "AAAA\nAllowedIPs = 0.0.0.0/0",
    "not-a-key",
    "A" * 43 + "=\n[Peer]",
    "A" * 43 + "=\n",
    42,
    None,
])
def test_a_peers_malformed_mine_entry_never_reaches_the_configuration(hosts, forged):
    conf = render("kam-mel-1", {"coord-syd-1": forged})
    assert "[Peer]" not in conf and "0.0.0.0/0" not in conf
    assert "# coord-syd-1: no well-formed public key in the mine yet" in conf


def test_a_reload_drops_the_routes_of_a_removed_peer(hosts):
    b = hosts["kam-mel-1"]
    conf = b["key_dir"] / f"{b['interface']}.conf"
    assert conf.exists(), "the mesh of the test above is not up"
    conf.write_text(render("kam-mel-1", {}))  # the coordinator left wireguard:hosts
    reloaded = run(FORMULA / "files" / "wg-reload", conf, netns=b["netns"], check=False)
    assert reloaded.returncode == 0, reloaded.stderr
    assert "172.28.0.0/24" not in run("ip", "route", "show", "dev", b["interface"], netns=b["netns"]).stdout
    assert run("wg", "show", b["interface"], "peers", netns=b["netns"]).stdout.strip() == ""
