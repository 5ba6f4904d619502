"""Helpers shared by the test suites."""

import importlib.util
import json
import secrets
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = REPO / ".venv" / "bin"


def load_module(folder, name, alias=None):
    """Import a Salt extension module (e.g. _modules/gopbx_db.py) under a unique name."""
    path = REPO / folder / f"{name}.py"
    spec = importlib.util.spec_from_file_location(alias or f"{folder.strip('_')}_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


LAB_SECRETS = REPO / ".lab" / "secrets.sls"


def lab_secrets():
    """The single-host lab's throwaway secrets (scripts/lab makes them on its first run)."""
    import yaml  # here: tests/system/sip.py, which imports this module, also runs in the API's venv

    return yaml.safe_load(LAB_SECRETS.read_text())["secrets"]


def fake_secrets():
    """Random secrets in the shape the lab makes (scripts/lab.py SECRET_NAMES)."""
    lab = load_module("scripts", "lab", alias="gopbx_lab_script")
    made = {group: {name: secrets.token_urlsafe(24) for name in names} for group, names in lab.SECRET_NAMES.items()}
    made["api"]["admin_password_hash"] = lab.hash_password(made["api"]["admin_password"])
    return made


def write_minion_config(directory, secrets_file, site_pillar=None, minion_id="lab-coord-1"):
    """The lab's masterless minion configuration, with its own root, secrets file and site pillar root."""
    lab = load_module("scripts", "lab", alias="gopbx_lab_script")
    return lab.write_minion_config(directory, Path(directory) / "root", secrets_file, minion_id, site_pillar)


def master_config(site_dir, secrets, site_pillar=None, lab=False, **overrides):
    """
    etc/salt/master.d/gopbx.conf as a test master's configuration: the tree at
    this checkout, the site (secrets.sls, pillar/site/au.sls) under ``site_dir``.
    ``lab`` adds the labs' file and pillar roots, as the lab configurations do.
    """
    import yaml

    site_dir = Path(site_dir)
    (site_dir / "pillar" / "site").mkdir(parents=True, exist_ok=True)
    (site_dir / "secrets.sls").write_text(json.dumps({"secrets": secrets}))
    (site_dir / "pillar" / "site" / "au.sls").write_text(json.dumps(site_pillar or {}))
    text = (REPO / "etc" / "salt" / "master.d" / "gopbx.conf").read_text()
    config = yaml.safe_load(text.replace("/srv/gopbx-site", str(site_dir)).replace("/srv/gopbx", str(REPO)))
    if lab:
        config["file_roots"]["base"].append(str(REPO / "lab" / "salt"))
        config["pillar_roots"]["base"].append(str(REPO / "lab" / "pillar"))
    config.update(interface="127.0.0.1", **overrides)
    return config


def salt_call(config_dir, *args, minion_id=None, check=True):
    """Run salt-call --local with JSON output; return (return code, parsed 'local' value or raw text)."""
    command = [str(VENV_BIN / "salt-call"), "--local", "-c", str(config_dir), "--out=json", "--retcode-passthrough"]
    if minion_id:
        command += ["--id", minion_id]
    proc = subprocess.run(command + list(args), capture_output=True, text=True, check=False, timeout=600)
    try:
        value = json.loads(proc.stdout)["local"]
    except (ValueError, KeyError):
        value = proc.stdout + proc.stderr
    if check and proc.returncode != 0:
        raise AssertionError(f"salt-call {' '.join(args)} failed ({proc.returncode}): {value}")
    return proc.returncode, value


def wait_for(check, timeout=15, interval=0.1):
    """Call check until it returns something true (returned) or timeout seconds pass (its last value)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    return check()


def sse_events(lines):
    """Server-sent events from an iterator of text lines: each event as {"event", "data"}, None for a comment."""
    current = {}
    for line in lines:
        if line.startswith(":"):
            yield None
        elif line.startswith("event: "):
            current["event"] = line[7:]
        elif line.startswith("data: "):
            current["data"] = json.loads(line[6:])
        elif not line and current:
            yield current
            current = {}
