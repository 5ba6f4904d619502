"""
Devices on the internet's side of the multi-host lab, run in its network
namespace: REGISTERs (digest-authenticated) to the SIP address over and over,
from each of LOCAL_IPS in turn (one address asking five times a second is a
flood Kamailio bans), until one is answered 200; then prints, as JSON, the
wall-clock time of that answer and how many attempts it took. The failover
tests and bench/edge_failover.py take the time from the fault to that first 200.

    python -m tests.multihost.edge_probe LOCAL_IP[,LOCAL_IP...] TARGET_IP DOMAIN USER PASSWORD [TIMEOUT]
"""

import json
import sys
import time

from tests.system import sipclient


class QuickPeer(sipclient.UdpPeer):
    """A device that gives up on an answer after 0.2 s and asks again (a real phone waits longer)."""

    def final_response(self, timeout=0.2):
        return super().final_response(timeout)


def first_registration(local_ips, target, domain, user, password, timeout=30.0):
    deadline = time.monotonic() + timeout
    attempts = 0
    while time.monotonic() < deadline:
        local_ip = local_ips[attempts % len(local_ips)]
        attempts += 1
        peer = QuickPeer(local_ip)
        try:
            # One device's one binding, however many attempts: new contacts would pile up
            # to kamailio:max_contacts, and then every REGISTER is refused.
            response = sipclient.register(peer, (target, 5060), domain, user, password,
                                          [f"sip:{user}@{local_ips[0]}:5999"], expires=300)
        finally:
            peer.close()
        if response and response.startswith("SIP/2.0 200"):
            return {"answered_at": time.time(), "attempts": attempts}
        time.sleep(0.02)
    return {"answered_at": None, "attempts": attempts}


if __name__ == "__main__":
    local_ips, target, domain, user, password = sys.argv[1:6]
    timeout = float(sys.argv[6]) if len(sys.argv) > 6 else 30.0
    print(json.dumps(first_registration(local_ips.split(","), target, domain, user, password, timeout)))
