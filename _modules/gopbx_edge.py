"""
The SIP edge's public side, made to match this host's VRRP state.

    salt-call --local gopbx_edge.reconcile
    salt-call --local gopbx_edge.status

Keepalived elects the active Kamailio host and, on a host in the SIP address's own
Vultr location, puts that address on the interface itself within its advert
interval. What Keepalived cannot do is tell Vultr, which routes a reserved IP to
the instance it is attached to, and a reserved IP belongs to one location. This
reconcile owns that side, from the settings the keepalived formula writes to
``/etc/gopbx/edge.json`` (readable by root only: it holds the Vultr key):

- the active host in the reserved IP's location attaches the reserved IP to its
  own instance (``gopbx_vultr.move_reserved_ip``: detach finishes later, so it
  polls and retries "already attached", then verifies) and points the SIP name's
  A record at it;
- the active host in another location (Melbourne for Sydney's address) cannot
  take it: it points the A record at its own public address (short TTL; the SRV
  records list both sites by priority);
- every host holds the reserved address on its interface exactly when it is the
  active host of that location, and drops it otherwise (after a SIGKILL the dead
  Keepalived leaves it behind).

It runs from Keepalived's ``notify_fifo`` (one transition at a time, in order) and
from a timer: after a short split the old master hears no transition. Each step
checks before it changes, so a second run changes nothing. It needs no master
(``--local``): the coordinator may be the host that just died.
"""

import errno
import fcntl
import ipaddress
import json
import logging
import os
import re
import subprocess
import time

import salt.utils.files
from salt.exceptions import CommandExecutionError

log = logging.getLogger(__name__)
__virtualname__ = "gopbx_edge"

CONFIG = "/etc/gopbx/edge.json"
RUN_DIR = "/run/gopbx-edge"
# Written by the notify_fifo handler (keepalived/files/notify-fifo): the last
# transition Keepalived announced for the instance.
STATE_FILE = "vrrp-state"
LOCK_FILE = "reconcile.lock"
# Keepalived's VRRP child; without it this host is not active whatever the state file says.
VRRP_PID_FILE = "/run/keepalived_vrrp.pid"
STATES = ("MASTER", "BACKUP", "FAULT", "STOP")
REQUIRED = ("minion_id", "location", "interface", "sip_address", "sip_address_location", "dns")


def __virtual__():
    return __virtualname__


def _config(path=None):
    path = path or __opts__.get("gopbx_edge_config", CONFIG)  # noqa: F821  (a loader dunder)
    try:
        with salt.utils.files.fopen(path) as handle:
            config = json.load(handle)
    except (OSError, ValueError) as exc:
        raise CommandExecutionError(f"the edge settings {path} cannot be read: {exc}") from None
    missing = [key for key in REQUIRED if key not in config]
    if missing:
        raise CommandExecutionError(f"the edge settings {path} lack {', '.join(missing)}")
    return config


def _run_dir(config):
    return config.get("run_dir", RUN_DIR)


def _alive(pid_file):
    try:
        with salt.utils.files.fopen(pid_file) as handle:
            pid = int(handle.read().split()[0])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return False
    return True


def vrrp_state(config=None):
    """
    This host's VRRP state: what Keepalived last announced (MASTER, BACKUP, FAULT,
    STOP), or STOP when its VRRP process is not running.

    CLI Example:

    .. code-block:: bash

        salt-call --local gopbx_edge.vrrp_state
    """
    config = config or _config()
    if not _alive(config.get("vrrp_pid_file", VRRP_PID_FILE)):
        return "STOP"
    try:
        with salt.utils.files.fopen(os.path.join(_run_dir(config), STATE_FILE)) as handle:
            state = handle.read().strip()
    except OSError:
        return "BACKUP"  # running, no transition announced yet: it has not won an election
    return state if state in STATES else "BACKUP"


def _ip(*args):
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise CommandExecutionError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def _on_interface(address, interface):
    shown = _ip("-o", "addr", "show", "dev", interface)
    return re.search(rf"\binet6? {re.escape(address)}/", shown) is not None


def _prefix(address):
    return 32 if ipaddress.ip_address(address).version == 4 else 128


def _set_interface_address(config, wanted, changes):
    address, interface = config["sip_address"], config["interface"]
    present = _on_interface(address, interface)
    if present == wanted:
        return
    # Keepalived adds it itself and announces it (gratuitous ARP, garp_master_refresh);
    # this repairs what a killed Keepalived left or a hand removed.
    _ip("addr", "add" if wanted else "del", f"{address}/{_prefix(address)}", "dev", interface)
    changes["interface"] = f"{address} {'added to' if wanted else 'removed from'} {interface}"
    log.warning("gopbx_edge: %s", changes["interface"])


def _vultr(config):
    return __utils__["gopbx_vultr.client"](config["api_key"], url=config.get("vultr_url") or  # noqa: F821
                                           "https://api.vultr.com/v2")


def _holds_reserved_ip(config):
    return config["location"] == config["sip_address_location"]


def _public_side(config, changes):
    """Vultr routes the SIP address (or its name) to this host."""
    vultr = _vultr(config)
    if _holds_reserved_ip(config):
        if not config.get("reserved_ip_id") or not config.get("instance_id"):
            raise CommandExecutionError("reserved_ip_id and instance_id are needed to take the reserved IP")
        before = vultr.reserved_ip(config["reserved_ip_id"]).get("instance_id")
        if before != config["instance_id"]:
            vultr.move_reserved_ip(config["reserved_ip_id"], config["instance_id"],
                                   timeout=config.get("move_timeout", 30))
            changes["reserved_ip"] = f"{config['sip_address']} moved from {before or 'nothing'} to " \
                                     f"{config['instance_id']}"
            log.warning("gopbx_edge: %s", changes["reserved_ip"])
        record = config["sip_address"]
    else:
        record = config["public_address"]
    dns = config["dns"]
    if vultr.set_dns_record(dns["domain"], dns["name"], "A", record, dns["ttl"]):
        changes["dns"] = f"{dns['name']}.{dns['domain']} A {record} (TTL {dns['ttl']})"
        log.warning("gopbx_edge: %s", changes["dns"])


class _Lock:
    """One reconcile at a time on a host (the notify handler and the timer may meet)."""

    def __init__(self, path, timeout):
        self.path, self.timeout, self.handle = path, timeout, None

    def __enter__(self):
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        self.handle = open(self.path, "w")  # noqa: SIM115  (held until __exit__)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES) or time.monotonic() >= deadline:
                    self.handle.close()
                    raise CommandExecutionError(f"another reconcile holds {self.path}") from None
                time.sleep(0.1)

    def __exit__(self, *exc):
        self.handle.close()


def reconcile(config_path=None):
    """
    Make the public side match this host's VRRP state. Returns the state, what
    changed and, if a step failed, why (the rest is retried on the next run).

    CLI Example:

    .. code-block:: bash

        salt-call --local gopbx_edge.reconcile
    """
    config = _config(config_path)
    with _Lock(os.path.join(_run_dir(config), LOCK_FILE), timeout=config.get("lock_timeout", 60)):
        state = vrrp_state(config)
        active = state == "MASTER"
        changes, result = {}, {"state": state, "minion_id": config["minion_id"]}
        try:
            # The interface first: it is this host's alone and quick. Vultr's side
            # takes seconds and may fail; the next run (timer) finishes it.
            _set_interface_address(config, active and _holds_reserved_ip(config), changes)
            if active:
                _public_side(config, changes)
        except Exception as exc:  # noqa: BLE001  (any failure: logged, reported, retried by the timer)
            log.error("gopbx_edge: reconcile as %s failed: %s", state, exc)
            result.update(result=False, error=str(exc))
        else:
            result["result"] = True
        result["changes"] = changes
        return result


def status(config_path=None):
    """
    This host's VRRP state and whether the SIP address is on its interface (what
    the master's runner asks each edge host to tell a split from a stale record).

    CLI Example:

    .. code-block:: bash

        salt gopbx-edge-hosts gopbx_edge.status
    """
    config = _config(config_path)
    return {"minion_id": config["minion_id"], "state": vrrp_state(config),
            "holds_address": _on_interface(config["sip_address"], config["interface"])}
