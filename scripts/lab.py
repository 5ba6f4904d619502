"""
The single-host lab: the coordinator role applied masterless on this machine.

    scripts/lab up            apply the lab highstate, print what runs where
    scripts/lab status        print what runs where
    scripts/lab call ARGS...  salt-call with the lab's configuration

Everything the lab writes lives under .lab/ (git-ignored): the masterless minion
configuration, Salt's own state, and the throwaway secrets made on first run.
"""

import argparse
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "api"))
from gopbx_api.passwords import hash_password  # noqa: E402  (no third-party imports)
LAB = REPO / ".lab"
MINION_ID = "lab-coord-1"
SECRET_NAMES = {
    "postgres": ["kamailio", "api", "salt", "metrics", "replicator", "superuser", "patroni_rest"],
    "redis": ["password"],
    "api": ["jwt_key", "admin_password"],
    "freeswitch": ["esl_password"],
    # A throwaway key: the labs' salt-cloud talks only to the Vultr double.
    "vultr": ["api_key", "edge_api_key"],
}


SECRETS = LAB / "secrets.sls"


def ensure_secrets():
    """Make the lab's throwaway secrets once; later runs keep them and add any new ones."""
    path = SECRETS
    data = json.loads(path.read_text().split("\n", 1)[1]) if path.exists() else {"secrets": {}}
    before = json.dumps(data, sort_keys=True)
    for group, names in SECRET_NAMES.items():
        for name in names:
            data["secrets"].setdefault(group, {}).setdefault(name, secrets.token_urlsafe(32))
    api = data["secrets"]["api"]
    if "admin_password_hash" not in api:
        # Pillar holds only the hash; the lab keeps the password for its operator.
        api["admin_password_hash"] = hash_password(api["admin_password"])
    if json.dumps(data, sort_keys=True) != before:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write("# Throwaway lab secrets, made by scripts/lab. Never used outside the lab.\n")
            handle.write(json.dumps(data, indent=2) + "\n")
    return path


def write_minion_config(config_dir, root, secrets_file, minion_id=MINION_ID, site_pillar=None):
    """A masterless minion configuration for this tree and the lab's parts (the lab's, and the tests')."""
    config_dir = Path(config_dir)
    config_dir.mkdir(parents=True, exist_ok=True)
    config = {
        "id": minion_id,
        "file_client": "local",
        "root_dir": str(root),
        "log_file": str(Path(root) / "var" / "log" / "salt" / "minion"),
        "file_roots": {"base": [str(REPO / "salt"), str(REPO / "lab" / "salt")]},
        "pillar_roots": {"base": [str(REPO / "pillar"), str(REPO / "lab" / "pillar")]
                         + ([str(site_pillar)] if site_pillar else [])},
        "ext_pillar": [{"gopbx_secrets": str(secrets_file)}],
        "pillar_dirs": [str(REPO / "_pillar")],
        "pillar_safe_render_error": True,
        "state_verbose": False,
        # systemctl is installed but systemd is not PID 1 here: without this Salt
        # loads systemd_service in "offline" mode and every service state does
        # nothing (see lab/salt/_modules/gopbx_initscripts.py).
        "providers": {"service": "gopbx_initscripts"},
    }
    (config_dir / "minion").write_text(json.dumps(config, indent=2) + "\n")
    return config_dir


def minion_config():
    """Write the lab's masterless minion configuration for this checkout; return its directory."""
    return write_minion_config(LAB / "etc" / "salt", LAB / "salt-root", SECRETS)


def salt_call(args, capture=False):
    config_dir = minion_config()
    command = [str(REPO / ".venv" / "bin" / "salt-call"), "--local", "-c", str(config_dir), *args]
    if capture:
        return subprocess.run(command, capture_output=True, text=True, check=False)
    return subprocess.run(command, check=False)


def apply(extra=()):
    """Apply the highstate; return (return code, parsed state results or errors)."""
    ensure_secrets()
    started = time.monotonic()
    # top.sls and every map.jinja call the custom modules, so sync them first.
    sync = salt_call(["saltutil.sync_all", "--out=json"], capture=True)
    if sync.returncode != 0:
        return sync.returncode, sync.stdout + sync.stderr, time.monotonic() - started
    proc = salt_call(["state.apply", "--out=json", "--retcode-passthrough", *extra], capture=True)
    elapsed = time.monotonic() - started
    try:
        result = json.loads(proc.stdout)["local"]
    except (ValueError, KeyError):
        result = proc.stdout + proc.stderr
    return proc.returncode, result, elapsed


def summarize(result):
    """(states, changed, failed) counts, and the failures' comments."""
    if not isinstance(result, dict):
        return 0, 0, 1, [str(result)]
    changed = [key for key, value in result.items() if value.get("changes")]
    failed = [f"{value.get('__id__', key)}: {value.get('comment')}" for key, value in result.items() if not value.get("result")]
    return len(result), len(changed), len(failed), failed


def listening(address, port):
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((address, port)) == 0


def ng_state(address, port):
    """RTPEngine answers an ng ping over UDP."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(1)
        cookie = secrets.token_hex(4)
        try:
            sock.sendto(f"{cookie} d7:command4:pinge".encode(), (address, port))
            return "answering" if b"pong" in sock.recv(1024) else "DOWN"
        except OSError:
            return "DOWN"


def status():
    """Print what runs where, from the lab's own pillar."""
    proc = salt_call(["gopbx_pillar.network", "--out=json"], capture=True)
    plan = json.loads(proc.stdout)["local"]["services"]
    sip = json.loads(salt_call(["gopbx_pillar.plain", "kamailio:sip_addresses", "--out=json"], capture=True).stdout)["local"]
    rows = [
        ("PostgreSQL", plan["postgres"], 5432, "tcp"),
        ("pgBouncer", plan["pgbouncer"], 5432, "tcp"),
        ("Redis", plan["redis"], 6379, "tcp"),
        ("Kamailio", sip[0], 5060, "tcp"),
        ("Kamailio", sip[0], 5061, "tls"),
        ("Kamailio", plan["kamailio"], 8080, "rpc"),
        ("RTPEngine", plan["rtpengine_ng"], 2223, "ng"),
        ("API", plan["api"], 8080, "http"),
        ("Nginx", plan["nginx"], 443, "https"),
        ("Knot", plan["dns"], 53, "tcp"),
    ]
    print(f"{'service':<12} {'address':<22} {'what':<5} state")
    for label, address, port, what in rows:
        state = ("listening" if listening(address, port) else "DOWN") if what != "ng" else ng_state(address, port)
        print(f"{label:<12} {address + ':' + str(port):<22} {what:<5} {state}")
    print(f"secrets: {SECRETS} (throwaway, git-ignored; the API's admin password "
          "is secrets:api:admin_password there)")


def main(argv):
    parser = argparse.ArgumentParser(prog="scripts/lab", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["up", "status", "call"])
    parser.add_argument("args", nargs=argparse.REMAINDER)
    options = parser.parse_args(argv)
    if options.command == "call":
        ensure_secrets()
        return salt_call(options.args).returncode
    if options.command == "status":
        status()
        return 0
    code, result, elapsed = apply(options.args)
    states, changed, failed, failures = summarize(result)
    print(f"lab highstate on {MINION_ID}: {states} states, {changed} changed, {failed} failed, {elapsed:.1f} s")
    for failure in failures:
        print(f"  FAILED {failure}")
    if code == 0 and not failed:
        status()
    return code or (1 if failed else 0)


if __name__ == "__main__":
    # Piped into head and the like, stop quietly like any command-line tool.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    sys.exit(main(sys.argv[1:]))
