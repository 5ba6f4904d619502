"""
System tests: the lab applied to this host for real by the lab command, then
real clients against the real services on their plan addresses.
"""

import subprocess
import time

import pytest

from tests.support import REPO, lab_secrets

LAB_CONFIG = REPO / ".lab" / "etc" / "salt"
PLAN = {"postgres": "127.28.0.10", "redis": "127.28.0.11", "pgbouncer": "127.28.0.12", "dns": "127.28.0.53"}


@pytest.fixture(scope="session")
def lab():
    """Bring the lab up with the README's lab command; its secrets and timing."""
    started = time.monotonic()
    proc = subprocess.run([str(REPO / "scripts" / "lab"), "up"], capture_output=True, text=True, check=False,
                          timeout=1800)
    assert proc.returncode == 0, f"lab up failed:\n{proc.stdout}\n{proc.stderr}"
    return {"secrets": lab_secrets(), "output": proc.stdout, "seconds": time.monotonic() - started}
