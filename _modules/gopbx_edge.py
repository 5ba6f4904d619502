"""
The SIP edge's public side, made to match this host's VRRP state.

    salt-call --local gopbx_edge.reconcile
    salt-call --local gopbx_edge.status

Keepalived elects the active Kamailio host and, on a host in the SIP address's own
Vultr location, puts that address on the interface itself within its advert
interval (and takes it off again). What Keepalived cannot do is tell Vultr, which routes a reserved IP to
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
- a host whose Keepalived is not running drops the reserved address from its
  interface: a SIGKILLed Keepalived leaves it behind. While Keepalived runs the
  address is its alone: a reconcile acting on a state a moment old would fight it.

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


def _drop_leftover_address(config, changes):
    """The SIP address off the interface of a host whose Keepalived is gone."""
    address, interface = config["sip_address"], config["interface"]
    if not _on_interface(address, interface):
        return
    _ip("addr", "del", f"{address}/{_prefix(address)}", "dev", interface)
    changes["interface"] = f"{address} removed from {interface}"
    log.warning("gopbx_edge: %s (Keepalived is not running)", changes["interface"])


def _vultr(config):
    return __utils__["gopbx_vultr.client"](config["api_key"], url=config.get("vultr_url") or  # noqa: F821
                                           "https://api.vultr.com/v2")


def _holds_reserved_ip(config):
    return config["location"] == config["sip_address_location"]


def _outranked_by(config, holder, what, transition):
    """
    Whether a peer of higher priority holds WHAT, and this run must leave it. A run
    on a transition to MASTER takes it from anyone: this host just won the
    election. A later run (the timer) does not take it from a higher-priority
    peer: while the private network is cut both hosts are MASTER, and each timer
    would otherwise move the address back and forth every few seconds.
    """
    peers = config.get("peers") or {}
    mine = (peers.get(config["minion_id"]) or {}).get("priority", 0)
    theirs = (peers.get(holder) or {}).get("priority", 0)
    if transition or holder in (None, config["minion_id"]) or theirs <= mine:
        return False
    log.info("gopbx_edge: %s is held by %s, of higher priority: left to it", what, holder)
    return True


def _peer(config, key, value):
    return next((name for name, peer in (config.get("peers") or {}).items() if value and peer.get(key) == value),
                None if not value else "someone else")


def _public_side(config, changes, transition):
    """Vultr routes the SIP address (or its name) to this host."""
    vultr = _vultr(config)
    dns = config["dns"]
    if _holds_reserved_ip(config):
        if not config.get("reserved_ip_id") or not config.get("instance_id"):
            raise CommandExecutionError("reserved_ip_id and instance_id are needed to take the reserved IP")
        before = vultr.reserved_ip(config["reserved_ip_id"]).get("instance_id")
        if before != config["instance_id"]:
            if _outranked_by(config, _peer(config, "instance_id", before), "the reserved IP", transition):
                return
            vultr.move_reserved_ip(config["reserved_ip_id"], config["instance_id"],
                                   timeout=config.get("move_timeout", 30))
            changes["reserved_ip"] = f"{config['sip_address']} moved from {before or 'nothing'} to " \
                                     f"{config['instance_id']}"
            log.warning("gopbx_edge: %s", changes["reserved_ip"])
        record = config["sip_address"]
    else:
        record = config["public_address"]
        current = [item["data"] for item in vultr.dns_records(dns["domain"])
                   if item["name"] == dns["name"] and item["type"] == "A"]
        if current and current[0] != record:
            holder = _peer(config, "public_address", current[0])
            if current[0] == config["sip_address"]:
                holder = _peer(config, "instance_id", vultr.reserved_ip(config["reserved_ip_id"]).get("instance_id"))
            if _outranked_by(config, holder, "the SIP name", transition):
                return
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


def reconcile(config_path=None, transition=False):
    """
    Make the public side match this host's VRRP state. Returns the state, what
    changed and, if a step failed, why (the rest is retried on the next run).
    ``transition=True`` (the notify handler, on a transition) takes the public
    side from any peer; otherwise a higher-priority peer keeps it.

    CLI Example:

    .. code-block:: bash

        salt-call --local gopbx_edge.reconcile
        salt-call --local gopbx_edge.reconcile transition=True
    """
    config = _config(config_path)
    with _Lock(os.path.join(_run_dir(config), LOCK_FILE), timeout=config.get("lock_timeout", 60)):
        state = vrrp_state(config)
        active = state == "MASTER"
        changes, result = {}, {"state": state, "minion_id": config["minion_id"]}
        try:
            # Vultr's side takes seconds and may fail: the next run (timer) finishes it.
            if state == "STOP":
                _drop_leftover_address(config, changes)
            elif active:
                _public_side(config, changes, transition)
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
