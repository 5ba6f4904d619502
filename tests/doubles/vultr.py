"""
A DOUBLE of Vultr's API v2 (the real one can't be reached from tests): the
documented shapes of /instances, /regions, /plans and /os, bearer-key auth, cursor
pagination, instances that turn active after a few polls, and failures on demand
(any status with Vultr's {"error", "status"} body, a slow answer, or one that
comes late after the request was carried out, as when a reply is lost).
"""

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from tests.doubles import ServedDouble

REGIONS = [{"id": "syd", "city": "Sydney", "country": "AU", "continent": "Australia", "options": []},
           {"id": "mel", "city": "Melbourne", "country": "AU", "continent": "Australia", "options": []}]
PLANS = [{"id": "vc2-2c-4gb", "vcpu_count": 2, "ram": 4096, "disk": 80, "monthly_cost": 20, "type": "vc2",
          "locations": ["syd", "mel"]},
         {"id": "vc2-4c-8gb", "vcpu_count": 4, "ram": 8192, "disk": 160, "monthly_cost": 40, "type": "vc2",
          "locations": ["syd"]}]
OS = [{"id": 2136, "name": "Debian 12 x64 (bookworm)", "arch": "x64", "family": "debian"}]


class VultrDouble(ServedDouble):
    def __init__(self, api_key="vultr-double-key", polls_until_active=2, page_size=None, port=0):
        self.api_key, self.polls_until_active, self.page_size = api_key, polls_until_active, page_size
        self.instances, self.requests, self.failures = {}, [], []
        self.delay = 0.0
        # {method: seconds}: wait after acting on such a request, before answering it.
        self.late = {}
        # Called with (method, path) before each answer: lets a test see the world as Vultr is asked.
        self.on_request = None
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), _handler(self))
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v2"

    def fail(self, status, times=1, message="double says no", method=None):
        """The next TIMES requests (of METHOD, if given) get STATUS."""
        self.failures += [(status, message, method)] * times

    def answer(self, method, path, query, body, key):
        if self.on_request:
            self.on_request(method, path)
        with self._lock:
            self.requests.append((method, path))
            if key != self.api_key:
                return 401, {"error": "Invalid API token.", "status": 401}
            failure = next((item for item in self.failures if item[2] in (None, method)), None)
            if failure:
                self.failures.remove(failure)
                return failure[0], {"error": failure[1], "status": failure[0]}
        catalogue = {"/v2/regions": ("regions", REGIONS), "/v2/plans": ("plans", PLANS), "/v2/os": ("os", OS)}
        if method == "GET" and path in catalogue:
            return 200, self._page(*catalogue[path], query)
        if path == "/v2/instances" and method == "GET":
            return 200, self._page("instances", list(self.instances.values()), query)
        if path == "/v2/instances" and method == "POST":
            return self._create(body)
        instance_id = path.rsplit("/", 1)[-1]
        if not path.startswith("/v2/instances/") or instance_id not in self.instances:
            return 404, {"error": "Invalid instance-id.", "status": 404}
        if method == "DELETE":
            del self.instances[instance_id]
            return 204, None
        return 200, {"instance": self._poll(instance_id)}

    def _page(self, key, items, query):
        size = self.page_size or int(query.get("per_page", ["100"])[0])
        start = int(query.get("cursor", ["0"])[0])
        following = str(start + size) if start + size < len(items) else ""
        return {key: items[start:start + size],
                "meta": {"total": len(items), "links": {"next": following, "prev": ""}}}

    def _create(self, body):
        for field in ("region", "plan", "label"):
            if not body.get(field):
                return 400, {"error": f"Missing {field}.", "status": 400}
        if body["region"] not in {r["id"] for r in REGIONS} or body["plan"] not in {p["id"] for p in PLANS}:
            return 400, {"error": "Invalid region or plan.", "status": 400}
        instance = {"id": str(uuid.uuid4()), "label": body["label"], "hostname": body.get("hostname", ""),
                    "region": body["region"], "plan": body["plan"], "os_id": body.get("os_id"),
                    "main_ip": "0.0.0.0", "status": "pending", "power_status": "stopped", "server_status": "none",
                    "tags": body.get("tags", []), "user_data": body.get("user_data", ""), "polls": 0,
                    "date_created": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())}
        self.instances[instance["id"]] = instance
        return 202, {"instance": instance}

    def _poll(self, instance_id):
        instance = self.instances[instance_id]
        instance["polls"] += 1
        if instance["polls"] >= self.polls_until_active:
            number = list(self.instances).index(instance_id) + 10
            instance.update(status="active", power_status="running", server_status="ok",
                            main_ip=f"192.0.2.{number}")
        return instance


def _handler(double):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _serve(self):
            url = urlparse(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}") if length else {}
            key = self.headers.get("Authorization", "").removeprefix("Bearer ")
            if double.delay:
                time.sleep(double.delay)
            status, payload = double.answer(self.command, url.path, parse_qs(url.query), body, key)
            time.sleep(double.late.get(self.command, 0))
            data = b"" if payload is None else json.dumps(payload).encode()
            self.send_response(status)
            if data:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_DELETE = _serve

    return Handler


def main():
    """Serve the double on its own (the multi-host lab's master runs salt-cloud against it)."""
    import argparse

    parser = argparse.ArgumentParser(description="Vultr API v2 DOUBLE, on 127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--api-key-file", required=True)
    args = parser.parse_args()
    with open(args.api_key_file, encoding="utf-8") as handle:
        double = VultrDouble(api_key=handle.read().strip(), port=args.port)
    double._server.serve_forever()


if __name__ == "__main__":
    main()
