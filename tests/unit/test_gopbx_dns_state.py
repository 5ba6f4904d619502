"""The dns formula's Vultr state (_states/gopbx_dns.py) against the Vultr double."""

import pytest

from tests.doubles.vultr import VultrDouble
from tests.support import load_module

vultr = load_module("_utils", "gopbx_vultr")
RECORDS = [
    {"name": "api", "type": "A", "data": "149.28.188.104", "ttl": 300, "priority": 0},
    {"name": "sip", "type": "A", "data": "103.43.75.51", "ttl": 30, "priority": 0},
    {"name": "sip-mel", "type": "A", "data": "45.76.112.9", "ttl": 30, "priority": 0},
    {"name": "_sip._udp", "type": "SRV", "data": "0 5060 sip.gopbx.au", "ttl": 30, "priority": 10},
    {"name": "_sip._udp", "type": "SRV", "data": "0 5060 sip-mel.gopbx.au", "ttl": 30, "priority": 20},
]


@pytest.fixture
def double():
    server = VultrDouble().start()
    server.domains["gopbx.au"] = {}
    yield server
    server.stop()


def state(double, test=False):
    module = load_module("_states", "gopbx_dns", alias=f"gopbx_dns_state_{test}")
    module.__opts__ = {"test": test}
    module.__utils__ = {"gopbx_vultr.client": lambda key, url: vultr.Vultr(key, url=url, sleep=lambda s: None)}

    def apply(records=RECORDS, key=double.api_key):
        return module.vultr_records_managed("gopbx.au", records, key, failover_names=["sip"], url=double.url)

    return apply


def zone(double):
    return sorted((r["name"], r["type"], r["data"], r["ttl"], r["priority"]) for r in double.domains["gopbx.au"].values())


def add(double, **record):
    vultr.Vultr(double.api_key, url=double.url).request("POST", "/domains/gopbx.au/records", record)


def test_an_empty_zone_gets_every_record_and_a_second_run_changes_nothing(double):
    first = state(double)()
    assert first["result"] is True and set(first["changes"]) == {"api A", "sip A", "sip-mel A", "_sip._udp SRV"}
    assert zone(double) == sorted((r["name"], r["type"], r["data"], r["ttl"], r["priority"]) for r in RECORDS)
    writes = [request for request in double.requests if request[0] != "GET"]
    assert state(double)() == {"name": "gopbx.au", "result": True, "changes": {},
                               "comment": "the zone gopbx.au holds its records"}
    assert [request for request in double.requests if request[0] != "GET"] == writes


def test_a_failed_over_sip_name_is_never_undone_by_a_highstate(double):
    state(double)()
    add(double, name="sip", type="A", data="45.76.112.9", ttl=30)  # the reconcile moved it to Melbourne
    for record in list(double.domains["gopbx.au"].values()):
        if record["name"] == "sip" and record["data"] == "103.43.75.51":
            del double.domains["gopbx.au"][record["id"]]
    assert state(double)()["changes"] == {}
    assert ("sip", "A", "45.76.112.9", 30, 0) in zone(double)


def test_drift_is_corrected_and_test_mode_only_reports_it(double):
    state(double)()
    add(double, name="_sip._udp", type="SRV", data="0 5060 evil.example", ttl=30, priority=5)
    record = next(r for r in double.domains["gopbx.au"].values() if r["name"] == "api")
    record["ttl"] = 3600
    before = zone(double)
    dry = state(double, test=True)()
    assert dry["result"] is None and set(dry["changes"]) == {"api A", "_sip._udp SRV"}
    assert zone(double) == before
    fixed = state(double)()
    assert fixed["result"] is True and set(fixed["changes"]) == {"api A", "_sip._udp SRV"}
    assert ("_sip._udp", "SRV", "0 5060 evil.example", 30, 5) not in zone(double)
    assert ("api", "A", "149.28.188.104", 300, 0) in zone(double)


def test_records_it_does_not_manage_are_left_alone(double):
    add(double, name="", type="NS", data="ns1.vultr.com", ttl=300)
    add(double, name="www", type="CNAME", data="gopbx.au", ttl=300)
    state(double)()
    assert ("", "NS", "ns1.vultr.com", 300, 0) in zone(double) and ("www", "CNAME", "gopbx.au", 300, 0) in zone(double)


@pytest.mark.parametrize("key, message", [("revoked-key", "401: Invalid API token")])
def test_vultrs_refusal_fails_the_state_with_its_reason(double, key, message):
    result = state(double)(key=key)
    assert result["result"] is False and message in result["comment"] and result["changes"] == {}


def test_a_vultr_outage_fails_the_state_and_writes_nothing(double):
    double.fail(503, times=100)
    result = state(double)()
    assert result["result"] is False and "503" in result["comment"]
    double.failures.clear()
    assert zone(double) == []
