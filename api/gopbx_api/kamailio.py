"""Tell Kamailio what changed, over its JSONRPC on the internal address."""

import logging

import requests

log = logging.getLogger(__name__)


class Kamailio:
    def __init__(self, url):
        self.url = url

    def rpc(self, method, *params):
        reply = requests.post(self.url, json={"jsonrpc": "2.0", "method": method, "params": list(params), "id": 1},
                              timeout=5).json()
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result")

    def reload_domains(self):
        """Tenants live in Kamailio's domain cache; accounts are read from the database each time."""
        try:
            self.rpc("domain.reload")
        except (requests.RequestException, RuntimeError) as exc:
            # The write stands; the next reload (or Kamailio's restart) picks it up.
            log.error("Kamailio domain.reload failed: %s", exc)
            return False
        return True
