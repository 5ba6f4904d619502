"""
This host's WireGuard public key, for the Salt mine (the wireguard formula).

The private key is made on the host by ``wg genkey`` and never leaves it: only
its public half, derived here with ``wg pubkey``, is published. Pillar enables
the mine function on mesh hosts::

    mine_functions:
      gopbx_wireguard.public_key: []
"""

import re
import subprocess

import salt.utils.files
from salt.exceptions import CommandExecutionError

__virtualname__ = "gopbx_wireguard"
KEY = re.compile(r"^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$")


def __virtual__():
    return __virtualname__


def public_key(interface="wg-gopbx", key_dir="/etc/wireguard"):
    """
    The public key of this host's mesh interface, or None before its key exists.

    CLI Example:

    .. code-block:: bash

        salt-call gopbx_wireguard.public_key
    """
    path = f"{key_dir}/{interface}.key"
    try:
        with salt.utils.files.fopen(path) as handle:
            private = handle.read()
    except FileNotFoundError:
        return None
    result = subprocess.run(["wg", "pubkey"], input=private, capture_output=True, text=True, check=False)
    key = result.stdout.strip()
    if result.returncode != 0 or not KEY.fullmatch(key):
        raise CommandExecutionError(f"wg pubkey could not read {path}: {result.stderr.strip()}")
    return key
