"""
A DOUBLE of Vultr's API v2 (the real one can't be reached from tests): the
documented shapes of /instances, /regions, /plans, /os, /reserved-ips (each in one
location; attach and detach answer 204 at once and finish after `settle_seconds`,
and an attach while the IP is still held fails "already attached", as FIELD-NOTES
records) and /domains/{domain}/records, bearer-key auth, cursor pagination,
instances that turn active after a few polls, and failures on demand
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
    def __init__(self, api_key="vultr-double-key", polls_until_active=2, page_size=None, port=0, host="127.0.0.1"):
        self.api_key, self.polls_until_active, self.page_size = api_key, polls_until_active, page_size
        self.instances, self.requests, self.failures = {}, [], []
        self.reserved_ips, self.domains, self.settle_seconds = {}, {}, 0.2
        self.delay = 0.0
        # {method: seconds}: wait after acting on such a request, before answering it.
        self.late = {}
        # Called with (method, path) before each answer: lets a test see the world as Vultr is asked.
        self.on_request = None
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((host, port), _handler(self))
        self.url = f"http://{host}:{self._server.server_address[1]}/v2"

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
        if path.startswith("/v2/reserved-ips"):
            return self._reserved_ip(method, path, body, query)
        if path.startswith("/v2/domains/"):
            return self._dns(method, path, body, query)
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

    def reserve_ip(self, region, subnet, label=""):
        """A reserved IP of REGION, as the operator would have made it; returns its id."""
        reserved_id = str(uuid.uuid4())
        self.reserved_ips[reserved_id] = {"id": reserved_id, "region": region, "ip_type": "v4", "subnet": subnet,
                                          "subnet_size": 32, "label": label, "instance_id": None, "_pending": None}
        return reserved_id

    def seed(self, world):
        """What the operator made before: {"instances": [{id, label, region}], "reserved_ips":
        [{id, region, subnet}], "domains": [name]} (the multi-host lab's SIP edge)."""
        for spec in world.get("instances", []):
            self.instances[spec["id"]] = {"id": spec["id"], "label": spec["label"], "hostname": spec["label"],
                                          "region": spec["region"], "plan": "vc2-2c-4gb", "os_id": 2136,
                                          "main_ip": spec.get("main_ip", "0.0.0.0"), "status": "active",
                                          "power_status": "running", "server_status": "ok", "tags": [],
                                          "user_data": "", "polls": self.polls_until_active, "date_created": ""}
        for spec in world.get("reserved_ips", []):
            self.reserved_ips[spec["id"]] = {"id": spec["id"], "region": spec["region"], "ip_type": "v4",
                                             "subnet": spec["subnet"], "subnet_size": 32, "label": "",
                                             "instance_id": None, "_pending": None}
        for name in world.get("domains", []):
            self.domains.setdefault(name, {})

    def _settled(self, reserved):
        pending = reserved["_pending"]
        if pending and time.monotonic() >= pending[1]:
            reserved["instance_id"], reserved["_pending"] = pending[0], None
        return {key: value for key, value in reserved.items() if not key.startswith("_")}

    def _reserved_ip(self, method, path, body, query):
        parts = path.split("/")[3:]  # after /v2/reserved-ips
        if not parts and method == "GET":
            return 200, self._page("reserved_ips", [self._settled(item) for item in self.reserved_ips.values()], query)
        reserved = self.reserved_ips.get(parts[0]) if parts else None
        if reserved is None:
            return 404, {"error": "Invalid reserved IP.", "status": 404}
        current = self._settled(reserved)
        if len(parts) == 1 and method == "GET":
            return 200, {"reserved_ip": current}
        action = parts[1] if len(parts) == 2 and method == "POST" else None
        if action == "detach":
            if not current["instance_id"]:
                return 400, {"error": "Reserved IP is not attached to a server.", "status": 400}
            reserved["_pending"] = (None, time.monotonic() + self.settle_seconds)
            return 204, None
        if action == "attach":
            instance = self.instances.get(body.get("instance_id"))
            if instance is None:
                return 400, {"error": "Invalid instance-id.", "status": 400}
            if current["instance_id"] or reserved["_pending"]:
                return 400, {"error": "Reserved IP is already attached to a server.", "status": 400}
            if instance["region"] != reserved["region"]:
                return 400, {"error": "Reserved IP and instance must be in the same location.", "status": 400}
            reserved["_pending"] = (instance["id"], time.monotonic() + self.settle_seconds)
            return 204, None
        return 404, {"error": "Not found.", "status": 404}

    def _dns(self, method, path, body, query):
        parts = path.split("/")[3:]  # {domain}/records[/{id}]
        if len(parts) < 2 or parts[1] != "records" or parts[0] not in self.domains:
            return 404, {"error": "Invalid domain.", "status": 404}
        records = self.domains[parts[0]]
        if len(parts) == 2 and method == "GET":
            return 200, self._page("records", list(records.values()), query)
        if len(parts) == 2 and method == "POST":
            if not body.get("type") or "data" not in body or "name" not in body:
                return 400, {"error": "Missing type, name or data.", "status": 400}
            record = {"id": str(uuid.uuid4()), "type": body["type"], "name": body["name"], "data": body["data"],
                      "priority": body.get("priority", 0), "ttl": body.get("ttl", 300)}
            records[record["id"]] = record
            return 201, {"record": record}
        record = records.get(parts[2]) if len(parts) == 3 else None
        if record is None:
            return 404, {"error": "Invalid record.", "status": 404}
        if method == "PATCH":
            record.update({key: body[key] for key in ("name", "data", "ttl", "priority") if key in body})
            return 204, None
        if method == "DELETE":
            del records[record["id"]]
            return 204, None
        return 404, {"error": "Not found.", "status": 404}

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

        do_GET = do_POST = do_DELETE = do_PATCH = _serve

    return Handler


def main():
    """Serve the double on its own (the multi-host lab's master runs salt-cloud against it)."""
    import argparse

    parser = argparse.ArgumentParser(description="Vultr API v2 DOUBLE")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--api-key-file", required=True)
    parser.add_argument("--world", help="a JSON file of what exists already (VultrDouble.seed)")
    args = parser.parse_args()
    with open(args.api_key_file, encoding="utf-8") as handle:
        double = VultrDouble(api_key=handle.read().strip(), port=args.port, host=args.host)
    if args.world:
        with open(args.world, encoding="utf-8") as handle:
            double.seed(json.load(handle))
    double._server.serve_forever()


if __name__ == "__main__":
    main()
