"""
A client for Vultr's API v2 (https://www.vultr.com/api/), for the salt-cloud
driver: instances (create, get, list, delete, wait until active) and the region,
plan and OS catalogues. Vultr's own error message is surfaced; 429 and 5xx are
retried with exponential backoff (honouring Retry-After).
"""

import base64
import time

import requests

API_URL = "https://api.vultr.com/v2"
RETRIED = {429, 500, 502, 503, 504}


class VultrError(Exception):
    def __init__(self, status, message):
        super().__init__(f"Vultr API {status}: {message}")
        self.status, self.message = status, message


class Vultr:
    def __init__(self, api_key, url=API_URL, timeout=30, retries=4, backoff=1.0, sleep=time.sleep):
        if not api_key:
            raise VultrError(401, "no API key: set it in the provider config or VULTR_API_KEY")
        self.url, self.timeout, self.retries, self.backoff, self.sleep = url.rstrip("/"), timeout, retries, backoff, sleep
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {api_key}"

    def request(self, method, path, body=None, params=None):
        for attempt in range(self.retries + 1):
            try:
                reply = self.session.request(method, self.url + path, json=body, params=params, timeout=self.timeout)
            except requests.RequestException as exc:
                if attempt == self.retries:
                    raise VultrError(0, f"{method} {path}: {exc}") from None
                self.sleep(self.backoff * 2 ** attempt)
                continue
            if reply.status_code in RETRIED and attempt < self.retries:
                wait = reply.headers.get("Retry-After", "")
                self.sleep(float(wait) if wait.replace(".", "", 1).isdigit() else self.backoff * 2 ** attempt)
                continue
            if reply.status_code >= 400:
                raise VultrError(reply.status_code, _message(reply))
            return reply.json() if reply.content else {}
        raise AssertionError("unreachable")

    def _all(self, path, key):
        items, cursor = [], None
        while True:
            page = self.request("GET", path, params={"per_page": 100, **({"cursor": cursor} if cursor else {})})
            items += page.get(key, [])
            cursor = ((page.get("meta") or {}).get("links") or {}).get("next")
            if not cursor:
                return items

    def regions(self):
        return self._all("/regions", "regions")

    def plans(self):
        return self._all("/plans", "plans")

    def operating_systems(self):
        return self._all("/os", "os")

    def instances(self):
        return self._all("/instances", "instances")

    def instance(self, instance_id):
        return self.request("GET", f"/instances/{instance_id}")["instance"]

    def find(self, label):
        return next((item for item in self.instances() if item.get("label") == label), None)

    def create(self, label, region, plan, os_id, user_data="", tags=(), extra=None):
        """A new instance; ``extra`` adds request fields such as ``attach_vpc`` or ``sshkey_id``."""
        body = {"label": label, "hostname": label, "region": region, "plan": plan, "os_id": os_id,
                "tags": list(tags), "backups": "disabled", **(extra or {})}
        if user_data:
            body["user_data"] = base64.b64encode(user_data.encode()).decode()
        return self.request("POST", "/instances", body)["instance"]

    def delete(self, instance_id):
        self.request("DELETE", f"/instances/{instance_id}")

    def wait_until_active(self, instance_id, timeout=600, interval=5):
        """The instance once it is active, running and has its address."""
        deadline = time.monotonic() + timeout
        while True:
            instance = self.instance(instance_id)
            if (instance.get("status") == "active" and instance.get("power_status") == "running"
                    and instance.get("main_ip") not in (None, "", "0.0.0.0")):
                return instance
            if time.monotonic() >= deadline:
                raise VultrError(0, f"instance {instance_id} not active after {timeout} s "
                                    f"(status {instance.get('status')})")
            self.sleep(interval)

    def lookup(self, region, plan, os_name):
        """Check a profile's region and plan exist (and that the plan is sold there); the OS id by name."""
        if region not in {item["id"] for item in self.regions()}:
            raise VultrError(400, f"unknown region {region!r}")
        offered = {item["id"]: item.get("locations", []) for item in self.plans()}
        if plan not in offered:
            raise VultrError(400, f"unknown plan {plan!r}")
        if region not in offered[plan]:
            raise VultrError(400, f"plan {plan!r} is not offered in {region!r}")
        matches = [item["id"] for item in self.operating_systems() if item["name"] == os_name]
        if not matches:
            raise VultrError(400, f"unknown image {os_name!r}")
        return matches[0]


def client(api_key, url=API_URL, **options):
    """A Vultr client (Salt's loader hands modules functions, not classes)."""
    return Vultr(api_key, url=url, **options)


def _message(reply):
    try:
        return reply.json().get("error") or reply.text
    except ValueError:
        return reply.text or reply.reason
