"""Tell Kamailio what changed, over its JSONRPC on the internal address."""

import logging
import threading

import requests

log = logging.getLogger(__name__)


class Kamailio:
    """
    Tenant writes ask for a domain reload; one thread per worker does them, at most
    one per `min_interval` seconds. A reload reads every domain and attribute, so
    one per write made bulk provisioning quadratic (8,000 tenants: ~3 writes/s);
    coalesced, a burst of writes costs one reload, and a tenant is routable within
    about a second of the API's answer.
    """

    def __init__(self, url, min_interval=1.0):
        self.url = url
        self.min_interval = min_interval
        self._wanted = threading.Event()
        self.reloads = 0
        threading.Thread(target=self._reloader, name="kamailio-domain-reload", daemon=True).start()

    def rpc(self, method, *params):
        reply = requests.post(self.url, json={"jsonrpc": "2.0", "method": method, "params": list(params), "id": 1},
                              timeout=5).json()
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result")

    def reload_domains(self):
        """Tenants live in Kamailio's domain cache; accounts are read from the database each time."""
        self._wanted.set()

    def _reloader(self):
        while True:
            self._wanted.wait()
            self._wanted.clear()
            try:
                self.rpc("domain.reload")
                self.reloads += 1
            except (requests.RequestException, RuntimeError, ValueError) as exc:
                # The write stands; retry shortly (a restarted Kamailio loads everything anyway).
                log.error("Kamailio domain.reload failed: %s", exc)
                self._wanted.set()
            threading.Event().wait(self.min_interval)
