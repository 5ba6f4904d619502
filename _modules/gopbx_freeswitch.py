"""
What a FreeSWITCH media node knows about itself: the private address it serves on,
and the credentials it fetches its configuration with (mod_xml_curl).

The credentials are derived from the minion's own private key, so they are there
before the first highstate, never leave the node except as a PBKDF2 hash (sent to
the master in the ``gopbx/freeswitch/ready`` event, whose sender Salt
authenticates), and stay the same on every run (a second highstate changes
nothing). A new minion key gives new credentials, and the next highstate
announces them.
"""

import base64
import hashlib
import hmac
import ipaddress
import json
import os

from salt.exceptions import CommandExecutionError

__virtualname__ = "gopbx_freeswitch"
# What the node announced last (freeswitch/ready.sls writes it before the event), in its cache.
ANNOUNCEMENT = os.path.join("gopbx", "freeswitch-announcement.json")
# The API's stored form (gopbx_api.passwords): pbkdf2_sha256$<iterations>$<salt>$<digest>.
PBKDF2_ITERATIONS = 200_000


def __virtual__():
    return __virtualname__


def _minion_key():
    path = os.path.join(__opts__["pki_dir"], "minion.pem")  # noqa: F821  (a loader dunder)
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise CommandExecutionError(f"no minion key to derive the node's credentials from: {exc}") from None


def _b64(data):
    return base64.b64encode(data).decode("ascii")


def pbkdf2_hash(password, iterations=PBKDF2_ITERATIONS):
    """PBKDF2-SHA256 of ``password`` with a salt derived from it (the same hash on every run)."""
    salt = hmac.new(password.encode(), b"gopbx-node-salt", hashlib.sha256).digest()[:16]
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return f"pbkdf2_sha256${iterations}${_b64(salt)}${_b64(digest)}"


def xml_curl_credentials():
    """
    This node's mod_xml_curl login: its minion id, a password derived from its
    minion key, and that password's hash for the master.

    CLI Example:

    .. code-block:: bash

        salt-call gopbx_freeswitch.xml_curl_credentials
    """
    password = base64.urlsafe_b64encode(
        hmac.new(_minion_key(), b"gopbx xml_curl password", hashlib.sha256).digest()).decode().rstrip("=")
    return {"username": __opts__["id"], "password": password, "password_hash": pbkdf2_hash(password)}  # noqa: F821


def private_address(network):
    """
    This node's IPv4 address inside ``network`` (the private network media nodes
    live on), from its interfaces.

    CLI Example:

    .. code-block:: bash

        salt-call gopbx_freeswitch.private_address 10.28.0.0/20
    """
    wanted = ipaddress.ip_network(network)
    for addresses in (__grains__.get("ip4_interfaces") or {}).values():  # noqa: F821
        for address in addresses:
            if ipaddress.ip_address(address) in wanted:
                return address
    raise CommandExecutionError(f"this node has no address inside {network} (pillar freeswitch:node_network)")


def announcement():
    """
    What this node announced in its last ``gopbx/freeswitch/ready`` event (address,
    capacity, xml_curl_password_hash), or None. The master's register runner asks
    the node itself: an event's payload, and in Salt's batched form even the id it
    carries, are the sender's to write.

    CLI Example:

    .. code-block:: bash

        salt fs-syd-1 gopbx_freeswitch.announcement
    """
    try:
        with open(os.path.join(__opts__["cachedir"], ANNOUNCEMENT), encoding="utf-8") as handle:  # noqa: F821
            value = json.load(handle)
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None
