#!/usr/bin/env python3
"""
The multi-host lab: the seed's hosts as real systemd machines on this one box, and a
salt-master on the coordinator driving every role the production way.

    scripts/mlab up                 # template (cached), machines, master, keys, highstate
    scripts/mlab status             # machines, addresses, minion keys
    scripts/mlab run NAME CMD...    # a command on a machine (nsenter into it)
    scripts/mlab master CMD...      # a command on the coordinator, e.g. salt '*' test.ping
    scripts/mlab down               # machines, mounts, namespaces, processes: all gone

Machines are systemd-nspawn containers booting real systemd, one network namespace
each, joined by a bridge in a lab namespace (lab/mlab/topology.yaml gives the
addresses, a private plan that exists only inside those namespaces). Each machine
is an overlay on one template root built with debootstrap; the template holds every
package the roles install, Salt and the API's wheels, since machines have no route
to the package registries. It is rebuilt only when its inputs change.
"""

import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
# Outside the tree: the lab and the master serve the tree's root as file roots.
STATE = Path("/var/lib/gopbx-mlab")
TEMPLATE = STATE / "template"
TOPOLOGY = yaml.safe_load((REPO / "lab" / "mlab" / "topology.yaml").read_text())["mlab"]
LAB_NS = "gopbx-mlab"
MIRROR = "http://deb.debian.org/debian"
SALT_VENV = "/opt/saltstack/venv"
WHEELS = "/var/cache/gopbx/wheels"
SALT_WHEELS = "/var/cache/gopbx/salt-wheels"
# Everything a role's formula installs (machines can't reach the registries), plus
# what a machine needs to boot and be reached: baked into the template.
BASE_PACKAGES = ["systemd", "systemd-sysv", "dbus", "iproute2", "ifupdown", "iputils-ping", "procps",
                 "ca-certificates", "curl", "python3", "python3-venv", "less"]
ROLE_PACKAGES = ["rsyslog", "postgresql-15", "postgresql-client-15", "pgbouncer", "redis-server",
                 "kamailio", "kamailio-postgres-modules", "kamailio-tls-modules", "kamailio-sqlite-modules", "sqlite3",
                 "kamailio-xml-modules", "rtpengine-daemon", "nginx", "openssl", "sip-tester",
                 "python3-dev", "gcc", "libpq-dev", "logrotate", "ufw", "gnupg", "keepalived",
                 "wireguard-tools", "wireguard-go", "knot", "knot-dnsutils", "patroni", "etcd-server", "etcd-client"]
# Packages enable their services; a fresh VM has none running until Salt says so.
PACKAGE_SERVICES = ["postgresql", "pgbouncer", "redis-server", "kamailio", "rtpengine-daemon", "nginx",
                    "keepalived", "knot", "etcd", "patroni"]
# The Vultr double's port on the coordinator (the lab's salt-cloud talks to it).
VULTR_DOUBLE_PORT = 8099
# The SIP edge's Vultr double: on the lab's segment (both Kamailio hosts reach it,
# as they reach Vultr's API), holding both hosts' instances and the reserved SIP
# address. Its ids are fixed, as the operator's site pillar names them.
EDGE_DOUBLE = ("10.28.0.250", 8098)
EDGE_HOSTS = {"coord-syd-1": 150, "kam-mel-1": 100}
SIP_ADDRESS = "10.28.0.50"
MESH = {"coord-syd-1": "10.29.0.1", "kam-mel-1": "10.29.0.2", "pgrep-syd-1": "10.29.0.3"}
# The region's internal service network (pillar/regions/au.sls network:internal:cidr).
PLAN_NETWORK = "172.28.0.0/24"
# Bump when build_template changes what it makes.
TEMPLATE_VERSION = "2"


def log(message):
    print(f"mlab: {message}", flush=True)


def run(*command, check=True, **kwargs):
    return subprocess.run([str(part) for part in command], check=check, **kwargs)


def output(*command):
    return subprocess.run([str(part) for part in command], check=False, capture_output=True,
                          text=True).stdout


# --- the template ---


def template_inputs():
    digest = hashlib.sha256()
    for part in (TEMPLATE_VERSION, " ".join(BASE_PACKAGES + ROLE_PACKAGES + PACKAGE_SERVICES),
                 (REPO / "requirements" / "salt.txt").read_text(), (REPO / "api" / "requirements.txt").read_text()):
        digest.update(part.encode())
    return digest.hexdigest()


def chroot(*command, env=None):
    run("chroot", TEMPLATE, *command, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
                                           "DEBIAN_FRONTEND": "noninteractive", **(env or {})})


def build_template():
    """debootstrap a Debian 12 root with every package, Salt and the API's wheels (cached)."""
    stamp = TEMPLATE / ".gopbx-template"
    wanted = template_inputs()
    if stamp.exists() and stamp.read_text() == wanted:
        log("template is up to date (cached)")
        return False
    started = time.monotonic()
    if TEMPLATE.exists():
        shutil.rmtree(TEMPLATE)
    TEMPLATE.mkdir(parents=True)
    run("debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", "bookworm", TEMPLATE, MIRROR,
        stdout=subprocess.DEVNULL)
    # No service starts inside the chroot while packages install.
    (TEMPLATE / "usr/sbin/policy-rc.d").write_text("#!/bin/sh\nexit 101\n")
    (TEMPLATE / "usr/sbin/policy-rc.d").chmod(0o755)
    mounts = [("proc", TEMPLATE / "proc", ["-t", "proc"]), ("/dev", TEMPLATE / "dev", ["--bind"])]
    for source, target, options in mounts:
        run("mount", *options, source, target)
    try:
        (TEMPLATE / "etc/resolv.conf").write_text(Path("/etc/resolv.conf").read_text())
        chroot("apt-get", "update", "-q")
        chroot("apt-get", "install", "-y", "-q", "--no-install-recommends", *ROLE_PACKAGES)
        chroot("systemctl", "disable", *PACKAGE_SERVICES)
        chroot("systemctl", "enable", "systemd-networkd")
        # Salt 3008 in its own venv, and the API's wheels for its venv on the coordinator
        # (pip --no-index --find-links). The wheels are made on this host, whose pip
        # reaches PyPI; the chroot's would not (same Debian 12 and Python 3.11).
        for requirements, wheels in ((REPO / "requirements" / "salt.txt", SALT_WHEELS),
                                     (REPO / "api" / "requirements.txt", WHEELS)):
            run(REPO / ".venv/bin/pip", "wheel", "-q", "--disable-pip-version-check", "-w",
                TEMPLATE / wheels.lstrip("/"), "-r", requirements)
        shutil.copy(REPO / "requirements" / "salt.txt", TEMPLATE / "tmp/salt.txt")
        chroot("python3", "-m", "venv", SALT_VENV)
        chroot(f"{SALT_VENV}/bin/pip", "install", "-q", "--disable-pip-version-check", "--no-index",
               "--find-links", SALT_WHEELS, "-r", "/tmp/salt.txt")
        for program in ("salt", "salt-master", "salt-minion", "salt-key", "salt-run", "salt-call", "salt-cp",
                        "salt-cloud"):
            link = TEMPLATE / "usr/bin" / program
            if not link.is_symlink():
                link.symlink_to(f"{SALT_VENV}/bin/{program}")
        for name, description in (("salt-master", "The Salt Master Server"), ("salt-minion", "The Salt Minion")):
            (TEMPLATE / f"etc/systemd/system/{name}.service").write_text(
                f"[Unit]\nDescription={description}\nAfter=network-online.target\nWants=network-online.target\n\n"
                f"[Service]\nType=notify\nNotifyAccess=all\nLimitNOFILE=16384\n"
                f"ExecStart=/usr/bin/{name}\nKillMode=process\nRestart=on-failure\n\n"
                f"[Install]\nWantedBy=multi-user.target\n")
        chroot("apt-get", "clean")
    finally:
        for _, target, _ in reversed(mounts):
            run("umount", target, check=False)
        (TEMPLATE / "usr/sbin/policy-rc.d").unlink(missing_ok=True)
        (TEMPLATE / "tmp/salt.txt").unlink(missing_ok=True)
    stamp.write_text(wanted)
    log(f"template built in {time.monotonic() - started:.0f} s")
    return True


# --- machines ---


def machine_dir(name):
    return STATE / "machines" / name


def netns(name):
    return f"mlab-{name}"


def coordinator():
    return next(name for name in TOPOLOGY["machines"] if name.startswith("coord-"))


def prefix_length():
    return TOPOLOGY["network"].split("/")[1]


def write(root, path, text, mode=0o644):
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    target.chmod(mode)


def on_mesh(name):
    """The hosts on the region's WireGuard mesh (the wireguard formula's roles)."""
    return name.startswith(("coord-", "kam-", "pgrep-"))


def network_config(name):
    """
    systemd-networkd for the machine's end of its veth. Mesh hosts reach the plan
    only through the mesh; media nodes (in the VPC, not on the mesh) through the
    coordinator, which routes it for them.
    """
    address = TOPOLOGY["machines"][name]
    lines = ["[Match]", "Name=eth0", "", "[Network]", f"Address={address}/{prefix_length()}", "LinkLocalAddressing=no"]
    if name == coordinator():
        lines.append("IPForward=ipv4")
    elif not on_mesh(name):
        lines += ["", "[Route]", f"Destination={PLAN_NETWORK}", f"Gateway={TOPOLOGY['machines'][coordinator()]}"]
    return "\n".join(lines) + "\n"


def hosts_file():
    lines = ["127.0.0.1 localhost"]
    lines += [f"{address} {name}" for name, address in TOPOLOGY["machines"].items()]
    # The name every minion's configuration (etc/salt/minion.d/gopbx.conf) points at.
    lines.append(f"{TOPOLOGY['machines'][coordinator()]} salt.gopbx.internal")
    return "\n".join(lines) + "\n"


def lab_secrets():
    """Throwaway secrets for this lab, made once (scripts/lab.py's names; new names are added)."""
    path = STATE / "secrets.json"
    sys.path.insert(0, str(REPO / "scripts"))
    import lab  # noqa: E402  (the single-host lab's secret names and hashing)

    made = json.loads(path.read_text()) if path.exists() else {}
    for group, names in lab.SECRET_NAMES.items():
        for name in names:
            made.setdefault(group, {}).setdefault(name, secrets.token_urlsafe(32))
    made["api"].setdefault("admin_password_hash", lab.hash_password(made["api"]["admin_password"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(made))
    path.chmod(0o600)
    return made


def secrets_file():
    """The region's secrets file (outside pillar_roots; gopbx_secrets hands them out by role)."""
    return "# Written by scripts/mlab: the multi-host lab's throwaway secrets.\n" + json.dumps(
        {"secrets": lab_secrets()}) + "\n"


def vultr_id(name):
    """A fixed Vultr id for the lab's instance or reserved IP NAME."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"gopbx-mlab:{name}"))


def edge_world():
    """What exists at (the double of) Vultr before the lab: the edge hosts and the reserved SIP address."""
    return {"instances": [{"id": vultr_id(name), "label": name, "region": "syd", "main_ip": TOPOLOGY["machines"][name]}
                          for name in EDGE_HOSTS],
            "reserved_ips": [{"id": vultr_id("sip"), "region": "syd", "subnet": SIP_ADDRESS}],
            "domains": ["gopbx.mlab.invalid"]}


def edge_pillar():
    """The SIP edge pair: both hosts on one segment, as a pair in one Vultr location is."""
    machines = TOPOLOGY["machines"]
    peers = {name: {"address": MESH[name], "priority": priority, "location": "syd", "instance_id": vultr_id(name),
                    "public_address": machines[name]} for name, priority in EDGE_HOSTS.items()}
    return {"public_interface": "eth0", "sip_address": SIP_ADDRESS, "sip_address_location": "syd",
            "reserved_ip_id": vultr_id("sip"), "vultr_api_url": "http://%s:%d/v2" % EDGE_DOUBLE,
            "dns": {"domain": "gopbx.mlab.invalid", "name": "sip", "ttl": 30}, "peers": peers}


def site_pillar():
    """The deployment's site pillar for this topology: what differs from AU."""
    coord = TOPOLOGY["machines"][coordinator()]
    machines = TOPOLOGY["machines"]
    edge = list(EDGE_HOSTS)
    return "\n".join([
        "#!jinja|yaml",
        "# Written by scripts/mlab: the multi-host lab's site pillar.",
        "# This kernel has no dummy driver: the plan's addresses sit on a bridge with no ports.",
        "network: {internal: {link_type: bridge}}",
        "postgres: {version: 15, pgdg: false, extra_listen_addresses: [], replicas: []}",
        "{%- set machines = " + json.dumps(machines) + " %}",
        "# SIP on the lab's SIP address (the reserved IP, which Keepalived and the reconcile",
        "# move) and on each Kamailio host's own lab address, where media nodes reach it and",
        "# it relays media (RTPEngine): the floating IP is public, and no traffic of the lab",
        "# may go to a public address.",
        "{%- set own = machines[opts.id] if opts.id in " + json.dumps(edge) + " else machines[\"" + coordinator()
        + "\"] %}",
        "kamailio: {version: '5.6', repo: false, sip_addresses: ['{{ own }}', " + SIP_ADDRESS + "], "
        "media_address: '{{ own }}'}",
        "rtpengine: {interface_address: '{{ own }}', kernel_forwarding: false}",
        "nginx: {certificate: self_signed, extra_listen_addresses: []}",
        "# The SIP edge pair: VRRP over the mesh, the SIP address on eth0, Vultr's double on the segment.",
        "keepalived: " + json.dumps(edge_pillar()),
        "# The mesh over the lab network, in wireguard-go (this kernel has no WireGuard module).",
        "# The coordinator carries the plan's services the Kamailio standby does not run itself.",
        "wireguard: {userspace: true, hosts: {coord-syd-1: {endpoint: " + coord + ", routes: ["
        + PLAN_NETWORK + "]}, kam-mel-1: {endpoint: " + machines["kam-mel-1"] + "}, pgrep-syd-1: {endpoint: "
        + machines["pgrep-syd-1"] + "}}}",
        "# The zone served by Knot on the coordinator, each site's SIP name at its lab address.",
        "dns: {server: knot, zone: gopbx.mlab.invalid, nameservers: [ns1.gopbx.mlab.invalid],",
        "      hostmaster: hostmaster.gopbx.mlab.invalid, addresses: {api: " + coord + ", sip: " + coord
        + ", sip-mel: " + machines["kam-mel-1"] + "}}",
        "# salt-cloud on the master talks to the Vultr double (tests/doubles/vultr.py) there.",
        f"salt_master: {{vultr_api_url: 'http://127.0.0.1:{VULTR_DOUBLE_PORT}/v2'}}",
        f"api: {{salt_webhook_url: 'http://127.0.0.1:8000/gopbx/provision', "
        f"pip_options: '--no-index --find-links {WHEELS}'}}",
        "# FreeSWITCH can't be installed here: media nodes run the real freeswitch formula",
        "# with a named double in place of the FreeSWITCH binary (lab/salt/freeswitch_double).",
        "freeswitch: {binary: double, repo: false, node_network: " + TOPOLOGY["vpc"] + ", "
        "extra_kamailio_addresses: " + json.dumps([machines[name] for name in edge]) + "}",
    ]) + "\n"


def prepare(name):
    """The machine's overlay on the template, with its own identity and network."""
    base = machine_dir(name)
    for part in ("upper", "work", "root"):
        (base / part).mkdir(parents=True, exist_ok=True)
    root = base / "root"
    if not os.path.ismount(root):
        run("mount", "-t", "overlay", "overlay", "-o",
            f"lowerdir={TEMPLATE},upperdir={base / 'upper'},workdir={base / 'work'}", root)
    write(root, "/etc/hostname", name + "\n")
    write(root, "/etc/hosts", hosts_file())
    write(root, "/etc/systemd/network/10-eth0.network", network_config(name))
    write(root, "/etc/salt/minion_id", name + "\n")
    write(root, "/etc/salt/minion.d/gopbx.conf", (REPO / "etc/salt/minion.d/gopbx.conf").read_text())
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    units = ["salt-minion"] + (["salt-master"] if name == coordinator() else [])
    for unit in units:
        link = wants / f"{unit}.service"
        if not link.is_symlink():
            link.symlink_to(f"/etc/systemd/system/{unit}.service")
    if name == coordinator():
        write(root, "/etc/salt/master.d/gopbx.conf", (REPO / "etc/salt/master.d/gopbx.conf").read_text())
        write(root, "/etc/salt/master.d/lab.conf", (REPO / "lab/mlab/master.d-lab.conf").read_text())
        write(root, "/srv/gopbx-site/pillar/site/au.sls", site_pillar(), mode=0o600)
        write(root, "/srv/gopbx-site/secrets.sls", secrets_file(), mode=0o600)
    return root


def network_up():
    if LAB_NS not in output("ip", "netns", "list"):
        run("ip", "netns", "add", LAB_NS)
        run("ip", "-n", LAB_NS, "link", "add", "br0", "type", "bridge")
        run("ip", "-n", LAB_NS, "addr", "add", f"{EDGE_DOUBLE[0]}/{prefix_length()}", "dev", "br0")
        run("ip", "-n", LAB_NS, "link", "set", "br0", "up")
        run("ip", "-n", LAB_NS, "link", "set", "lo", "up")  # the double answers its own address over lo
    for name in TOPOLOGY["machines"]:
        if netns(name) in output("ip", "netns", "list"):
            continue
        run("ip", "netns", "add", netns(name))
        peer = f"mv-{name}"[:15]
        run("ip", "link", "add", peer, "netns", LAB_NS, "type", "veth", "peer", "name", "eth0", "netns", netns(name))
        run("ip", "-n", LAB_NS, "link", "set", peer, "master", "br0", "up")
        run("ip", "-n", netns(name), "link", "set", "lo", "up")


def pid_file(name):
    return machine_dir(name) / "nspawn.pid"


def nspawn_pid(name):
    try:
        pid = int(pid_file(name).read_text())
    except (OSError, ValueError):
        return None
    return pid if Path(f"/proc/{pid}").exists() else None


def boot(name, root):
    if nspawn_pid(name):
        return
    command = ["systemd-nspawn", "--boot", "--directory", str(root), "--machine", name, "--register=no",
               "--keep-unit", f"--network-namespace-path=/run/netns/{netns(name)}",
               "--capability=CAP_NET_ADMIN,CAP_NET_RAW", "--console=read-only"]
    if name == coordinator():
        # The tree, as production deploys it at /srv/gopbx (read-only: the master only reads it).
        command.append(f"--bind-ro={REPO}:/srv/gopbx")
    console = open(machine_dir(name) / "console.log", "wb")
    # /proc/sys/net writable, as on a VM: Salt sets ip_nonlocal_bind, networkd ip_forward.
    environment = {**os.environ, "SYSTEMD_NSPAWN_API_VFS_WRITABLE": "network"}
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
                               start_new_session=True, env=environment)
    pid_file(name).write_text(str(process.pid))


def init_pid(name):
    """The machine's PID 1 as this host sees it: the systemd under its nspawn."""
    parent = nspawn_pid(name)
    if parent is None:
        return None
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
        except OSError:
            continue
        namespaced = fields.get("NSpid", "").split()
        if len(namespaced) > 1 and namespaced[-1] == "1" and _descends_from(int(status.parent.name), parent):
            return int(status.parent.name)
    return None


def _descends_from(pid, ancestor):
    while pid > 1:
        if pid == ancestor:
            return True
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            return False
    return False


def in_machine(name, *command, check=False, capture=True, timeout=None):
    pid = init_pid(name)
    if pid is None:
        raise SystemExit(f"mlab: machine {name} is not running")
    return subprocess.run(["nsenter", "-t", str(pid), "-a", "--", *map(str, command)], check=check,
                          capture_output=capture, text=True, timeout=timeout)


def wait_booted(name, timeout=180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if init_pid(name):
            state = in_machine(name, "systemctl", "is-system-running").stdout.strip()
            if state in ("running", "degraded"):
                return state
        time.sleep(1)
    raise SystemExit(f"mlab: {name} did not finish booting in {timeout} s (see {machine_dir(name) / 'console.log'})")


# --- salt, the production way ---


def on_master(*command, timeout=900):
    return in_machine(coordinator(), *command, timeout=timeout)


def salt_json(*command, timeout=900):
    # salt gathers every minion's return into one document with --static; salt-key has no such option.
    result = on_master(*command, "--out=json", *(["--static"] if command[0] == "salt" else []), timeout=timeout)
    try:
        return json.loads(result.stdout or "{}")
    except ValueError:
        raise SystemExit(f"mlab: {' '.join(command)} printed no JSON: {result.stdout}{result.stderr}") from None


def keys():
    return salt_json("salt-key", "--list=all")


def accept_keys(timeout=180):
    """The expected minions' keys, accepted one by one and written to the audit log; nothing else."""
    expected = set(TOPOLOGY["machines"])
    deadline = time.monotonic() + timeout
    while True:
        listed = keys()
        waiting = expected - set(listed.get("minions", [])) - set(listed.get("minions_pre", []))
        if not waiting:
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"mlab: no key from {', '.join(sorted(waiting))} after {timeout} s")
        time.sleep(2)
    audit = STATE / "key-acceptance.log"
    for name in sorted(expected & set(listed.get("minions_pre", []))):
        fingerprint = salt_json("salt-key", "--finger", name).get("minions_pre", {}).get(name)
        on_master("salt-key", "--yes", "--accept", name)
        entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "minion": name,
                 "fingerprint": fingerprint, "by": "scripts/mlab up", "expected_from": "lab/mlab/topology.yaml"}
        with audit.open("a") as handle:
            handle.write(json.dumps(entry) + "\n")
        on_master("logger", "-t", "gopbx-key-acceptance", json.dumps(entry))
        log(f"accepted {name} ({fingerprint})")
    strangers = set(keys().get("minions_pre", [])) - expected
    if strangers:
        log(f"left unaccepted (not in the topology): {', '.join(sorted(strangers))}")


def wait_for_minions(timeout=300):
    """
    Until every machine's minion answers: a freshly accepted minion retries its
    authentication only every few seconds, and `salt '*'` leaves out any minion
    that has not answered its presence ping (its modules would go unsynced).
    """
    deadline = time.monotonic() + timeout
    while True:
        answered = {minion for minion, pong in salt_json("salt", "*", "test.ping", "--timeout=10").items()
                    if pong is True}
        missing = set(TOPOLOGY["machines"]) - answered
        if not missing:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"mlab: no answer from {', '.join(sorted(missing))} after {timeout} s")
        time.sleep(2)


def highstate():
    """
    The highstate from the master, the coordinator first (a region comes up from its
    database: the dispatcher sets media nodes register into, the API they fetch
    from), then every other machine at once. {minion: (states, changed, failed)}.
    """
    started = time.monotonic()
    wait_for_minions()
    salt_json("salt", "*", "saltutil.sync_all", "--timeout=300")
    # The mesh first, as on a new region: every mesh host makes its key and publishes
    # it (the mine), so the highstate below lists every peer.
    mesh = ",".join(name for name in TOPOLOGY["machines"] if on_mesh(name))
    for minion, states in salt_json("salt", "-L", mesh, "state.apply", "wireguard", "--timeout=300").items():
        if not isinstance(states, dict) or not all(state.get("result") for state in states.values()):
            log(f"the mesh on {minion} did not come up first: {str(states)[:2000]}")
    salt_json("salt", "-L", mesh, "mine.update", "--timeout=120")
    # Then the mesh with every peer, and etcd on it: the database's first primary
    # (Patroni, in the coordinator's highstate) needs etcd's quorum of two.
    for minion, states in salt_json("salt", "-L", mesh, "state.apply", "wireguard,etcd", "--timeout=300").items():
        if not isinstance(states, dict) or not all(state.get("result") for state in states.values()):
            log(f"the mesh or etcd on {minion} did not come up: {str(states)[:2000]}")
    returned = salt_json("salt", coordinator(), "state.apply", "--timeout=900")
    returned.update(salt_json("salt", "-C", f"* and not {coordinator()}", "state.apply", "--timeout=900"))
    summary = {}
    for minion, states in returned.items():
        if not isinstance(states, dict):
            summary[minion] = (0, 0, [str(states)])
            continue
        failed = [key for key, state in states.items() if not state.get("result")]
        changed = sum(1 for state in states.values() if state.get("changes"))
        summary[minion] = (len(states), changed, failed)
    seconds = time.monotonic() - started
    (STATE / "highstate.json").write_text(json.dumps({"seconds": seconds, "minions": {
        minion: {"states": total, "changed": changed, "failed": failed}
        for minion, (total, changed, failed) in summary.items()}}))
    log(f"highstate in {seconds:.0f} s: " + ", ".join(
        f"{minion} {total} states {changed} changed {len(failed)} failed"
        for minion, (total, changed, failed) in sorted(summary.items())))
    return summary


def edge_double_pid():
    path = STATE / "edge-double.pid"
    pid = int(path.read_text()) if path.exists() else 0
    return pid if pid and Path(f"/proc/{pid}").exists() else 0


def edge_double_up():
    """The SIP edge's Vultr double, on the lab's segment, with the edge key of this lab's secrets."""
    if edge_double_pid():
        return
    key_file, world_file = STATE / "edge-api-key", STATE / "edge-world.json"
    key_file.write_text(lab_secrets()["vultr"]["edge_api_key"])
    key_file.chmod(0o600)
    world_file.write_text(json.dumps(edge_world()))
    with open(STATE / "edge-double.log", "ab") as log_file:
        process = subprocess.Popen(
            ["ip", "netns", "exec", LAB_NS, str(REPO / ".venv/bin/python"), "-m", "tests.doubles.vultr",
             "--host", EDGE_DOUBLE[0], "--port", str(EDGE_DOUBLE[1]), "--api-key-file", str(key_file),
             "--world", str(world_file)], cwd=REPO, stdout=log_file, stderr=log_file, start_new_session=True)
    (STATE / "edge-double.pid").write_text(str(process.pid))
    url = "http://%s:%d/v2/regions" % EDGE_DOUBLE
    for _ in range(50):
        if process.poll() is not None:
            raise SystemExit(f"mlab: the edge's Vultr double exited: see {STATE / 'edge-double.log'}")
        if subprocess.run(["ip", "netns", "exec", LAB_NS, "curl", "-s", "--max-time", "2", "-o", "/dev/null", url],
                          check=False).returncode == 0:
            return
        time.sleep(0.2)
    raise SystemExit(f"mlab: the edge's Vultr double does not answer on {url}")


def edge_double_down():
    pid = edge_double_pid()
    if pid:
        os.kill(pid, signal.SIGTERM)
    (STATE / "edge-double.pid").unlink(missing_ok=True)


# --- commands ---


def up(args):
    started = time.monotonic()
    build_template()
    network_up()
    edge_double_up()
    for name in TOPOLOGY["machines"]:
        boot(name, prepare(name))
    boot_started = time.monotonic()
    for name in TOPOLOGY["machines"]:
        log(f"{name} booted ({wait_booted(name)})")
    log(f"machines booted in {time.monotonic() - boot_started:.0f} s")
    accept_keys()
    if "--no-highstate" not in args:
        summary = highstate()
        if any(failed for _, _, failed in summary.values()):
            for minion, (_, _, failed) in sorted(summary.items()):
                for key in failed:
                    log(f"FAILED on {minion}: {key}")
            return 1
    status([])
    log(f"up in {time.monotonic() - started:.0f} s")
    return 0


def status(args):
    listed = keys() if init_pid(coordinator()) else {}
    for name, address in TOPOLOGY["machines"].items():
        running = "running" if init_pid(name) else "stopped"
        key = ("accepted" if name in listed.get("minions", []) else
               "unaccepted" if name in listed.get("minions_pre", []) else "no key")
        print(f"{name:14} {address:12} {running:8} key {key}")
    return 0


def run_on(args):
    if len(args) < 2:
        raise SystemExit("usage: scripts/mlab run NAME COMMAND...")
    return in_machine(args[0], *args[1:], capture=False).returncode


def master(args):
    return in_machine(coordinator(), *args, capture=False).returncode


def down(args):
    for name in TOPOLOGY["machines"]:
        pid = nspawn_pid(name)
        if pid:
            os.kill(pid, signal.SIGTERM)  # nspawn asks the machine's systemd to power off
    deadline = time.monotonic() + 90
    for name in TOPOLOGY["machines"]:
        while nspawn_pid(name) and time.monotonic() < deadline:
            time.sleep(0.5)
        pid = nspawn_pid(name)
        if pid:
            # The machine's PID 1 first: killing it makes the kernel kill every process
            # of its PID namespace. Killing only nspawn left the machine running, orphaned.
            init = init_pid(name)
            if init:
                os.kill(init, signal.SIGKILL)
            os.killpg(pid, signal.SIGKILL)
            log(f"{name} did not power off in time: killed")
        root = machine_dir(name) / "root"
        if os.path.ismount(root):
            run("umount", root)
        shutil.rmtree(machine_dir(name), ignore_errors=True)
        if netns(name) in output("ip", "netns", "list").split():
            run("ip", "netns", "del", netns(name))
    edge_double_down()
    # The freezer groups the edge tests and benchmark power machines off with (tests/multihost/edge.py).
    for group in Path("/sys/fs/cgroup/freezer").glob("gopbx-mlab-*"):
        group.rmdir()
    if LAB_NS in output("ip", "netns", "list").split():
        run("ip", "netns", "del", LAB_NS)
    log("down: no machine, mount or namespace left")
    return 0


def main(argv):
    commands = {"up": up, "status": status, "run": run_on, "master": master, "down": down,
                "template": lambda args: build_template()}
    if not argv or argv[0] not in commands:
        print(__doc__)
        return 2
    result = commands[argv[0]](argv[1:])
    return result if isinstance(result, int) and not isinstance(result, bool) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
