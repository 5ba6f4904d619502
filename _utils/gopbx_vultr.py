"""
A client for Vultr's API v2 (https://www.vultr.com/api/), for the salt-cloud
driver and the SIP edge's failover: instances (create, get, list, delete, wait
until active), the region, plan and OS catalogues, reserved IPs (moved between
instances of their location) and DNS records. Vultr's own error message is surfaced.

Only idempotent calls are retried as such (urllib3's Retry: 429 and 5xx, with
exponential backoff honouring Retry-After, and lost connections). A create is
never simply sent again: a timeout after Vultr accepted it would make a second
paid VM with the same label. After a failed create the client looks the label
up first, and creates again only if Vultr has no such instance.
"""

import base64
import logging
import time

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

log = logging.getLogger(__name__)
API_URL = "https://api.vultr.com/v2"
RETRIED = frozenset({429, 500, 502, 503, 504})
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})


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
        retry = Retry(total=retries, backoff_factor=backoff, status_forcelist=RETRIED, allowed_methods=IDEMPOTENT,
                      respect_retry_after_header=True, raise_on_status=False)
        self.session.mount(self.url.split("://", 1)[0] + "://", HTTPAdapter(max_retries=retry))

    def request(self, method, path, body=None, params=None):
        try:
            reply = self.session.request(method, self.url + path, json=body, params=params, timeout=self.timeout)
        except requests.RequestException as exc:
            raise VultrError(0, f"{method} {path}: {exc}") from None
        if reply.status_code >= 400:
            raise VultrError(reply.status_code, _message(reply))
        return reply.json() if reply.content else {}

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
        """
        A new instance; ``extra`` adds request fields such as ``attach_vpc`` or
        ``sshkey_id``. On a timeout, a lost connection, 429 or 5xx the label is
        looked up before any new attempt: Vultr may have made the VM already.
        """
        body = {"label": label, "hostname": label, "region": region, "plan": plan, "os_id": os_id,
                "tags": list(tags), "backups": "disabled", **(extra or {})}
        if user_data:
            body["user_data"] = base64.b64encode(user_data.encode()).decode()
        for attempt in range(self.retries + 1):
            try:
                return self.request("POST", "/instances", body)["instance"]
            except VultrError as exc:
                if exc.status not in RETRIED | {0} or attempt == self.retries:
                    raise
                self.sleep(self.backoff * 2 ** attempt)
                made = self.find(label)
                if made is not None:
                    return made
        raise AssertionError("unreachable")

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

    # --- reserved IPs: attach and detach answer at once and finish later ---

    def reserved_ips(self):
        return self._all("/reserved-ips", "reserved_ips")

    def reserved_ip(self, reserved_ip_id):
        return self.request("GET", f"/reserved-ips/{reserved_ip_id}")["reserved_ip"]

    def move_reserved_ip(self, reserved_ip_id, instance_id, timeout=30, interval=0.5):
        """
        Attach a reserved IP to an instance of its location, detaching it from any
        other first, and return it once Vultr reports it there. Idempotent: an IP
        already on the instance costs one GET. While a detach is still finishing,
        Vultr refuses the attach ("already attached"): poll and try again.
        """
        reserved = self.reserved_ip(reserved_ip_id)
        region = self.instance(instance_id)["region"]
        if reserved["region"] != region:
            raise VultrError(400, f"reserved IP {reserved['subnet']} belongs to {reserved['region']}; instance "
                                  f"{instance_id} is in {region}: move the name (DNS) instead")
        deadline, last_error = time.monotonic() + timeout, None
        detached_from, attached = None, False
        while reserved.get("instance_id") != instance_id:
            if time.monotonic() >= deadline:
                raise VultrError(0, f"reserved IP {reserved['subnet']} not on {instance_id} after {timeout} s "
                                    f"(on {reserved.get('instance_id') or 'nothing'}; last: {last_error})")
            try:
                # Each call once: a second detach or attach would only restart Vultr's work.
                holder = reserved.get("instance_id")
                if holder and holder != detached_from:
                    self.request("POST", f"/reserved-ips/{reserved_ip_id}/detach")
                    detached_from = holder
                if not attached:
                    self.request("POST", f"/reserved-ips/{reserved_ip_id}/attach", {"instance_id": instance_id})
                    attached = True
            except VultrError as exc:
                if exc.status not in RETRIED | {0, 400}:
                    raise
                last_error = exc
                log.warning("moving reserved IP %s to %s: %s; trying again", reserved["subnet"], instance_id, exc)
            self.sleep(interval)
            reserved = self.reserved_ip(reserved_ip_id)
        return reserved

    # --- DNS records ---

    def dns_records(self, domain):
        return self._all(f"/domains/{domain}/records", "records")

    def set_dns_record(self, domain, name, record_type, data, ttl, priority=0):
        """
        Make the zone's NAME/TYPE hold exactly one record with DATA (and TTL,
        priority); return True if anything changed. Idempotent: a record that
        already matches costs one GET.
        """
        return self.set_dns_records(domain, name, record_type, [{"data": data, "ttl": ttl, "priority": priority}])

    def set_dns_records(self, domain, name, record_type, wanted, existing=None):
        """
        Make the zone's NAME/TYPE hold exactly the WANTED records ({data, ttl,
        priority} each); return True if anything changed. A record that differs
        only in TTL or priority is updated in place, extra ones deleted, missing
        ones created.
        """
        existing = self.dns_records(domain) if existing is None else existing
        same = [item for item in existing if item["name"] == name and item["type"] == record_type]
        missing, changed = [], False
        for record in wanted:
            match = next((item for item in same if item["data"] == record["data"]), None)
            if match is None:
                missing.append(record)
                continue
            same.remove(match)
            if (match.get("ttl"), match.get("priority", 0)) != (record["ttl"], record.get("priority", 0)):
                self.request("PATCH", f"/domains/{domain}/records/{match['id']}",
                             {"ttl": record["ttl"], "priority": record.get("priority", 0)})
                changed = True
        for record, reused in zip(missing, same):
            self.request("PATCH", f"/domains/{domain}/records/{reused['id']}",
                         {"data": record["data"], "ttl": record["ttl"], "priority": record.get("priority", 0)})
        for item in same[len(missing):]:
            self.request("DELETE", f"/domains/{domain}/records/{item['id']}")
        for record in missing[len(same):]:
            self.request("POST", f"/domains/{domain}/records", {"name": name, "type": record_type, **record})
        return changed or bool(missing) or len(same) > len(missing)

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
