"""
The GoPBX runners' settings: the master's ``gopbx`` key, updated from
``master.d/gopbx-runner.conf`` (root-only; the salt_master formula writes it from
encrypted pillar). The file is read at every call, so the master process (which
runs reactor-called runners) need not restart when it changes.
"""

import os

import salt.utils.files
import salt.utils.yaml

RUNNER_CONFIG = "master.d/gopbx-runner.conf"


def settings(opts):
    """The runners' settings, as a dict (empty keys where nothing is set)."""
    found = dict(opts.get("gopbx") or {})
    path = os.path.join(os.path.dirname(opts["conf_file"]), RUNNER_CONFIG)
    if os.path.exists(path):
        with salt.utils.files.fopen(path) as handle:
            found.update((salt.utils.yaml.safe_load(handle) or {}).get("gopbx") or {})
    return found
