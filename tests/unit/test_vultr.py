"""The Vultr v2 client (_utils/gopbx_vultr.py) against the Vultr double: shapes, pagination, failures."""

import base64
import time

import pytest

from tests.doubles.vultr import VultrDouble
from tests.support import load_module

vultr = load_module("_utils", "gopbx_vultr")


@pytest.fixture
def double():
    server = VultrDouble(page_size=1).start()
    yield server
    server.stop()


def client(double, key="vultr-double-key", **kwargs):
    kwargs.setdefault("sleep", lambda seconds: None)
    return vultr.Vultr(key, url=double.url, **kwargs)


def test_an_instance_is_created_waited_for_listed_and_destroyed(double):
    api = client(double)
    os_id = api.lookup("syd", "vc2-2c-4gb", "Debian 12 x64 (bookworm)")
    made = api.create("fs-syd-1", "syd", "vc2-2c-4gb", os_id, user_data="#cloud-config\n", tags=["gopbx"])
    assert made["status"] == "pending" and made["main_ip"] == "0.0.0.0"
    assert base64.b64decode(double.instances[made["id"]]["user_data"]) == b"#cloud-config\n"
    active = api.wait_until_active(made["id"], timeout=5, interval=0)
    assert active["status"] == "active" and active["main_ip"].startswith("192.0.2.")
    api.create("fs-syd-2", "syd", "vc2-2c-4gb", os_id)
    assert [i["label"] for i in api.instances()] == ["fs-syd-1", "fs-syd-2"]  # two pages of one
    assert api.find("fs-syd-2")["label"] == "fs-syd-2" and api.find("fs-syd-9") is None
    api.delete(made["id"])
    assert [i["label"] for i in api.instances()] == ["fs-syd-2"]


@pytest.mark.parametrize("region, plan, image, message", [
    ("ams", "vc2-2c-4gb", "Debian 12 x64 (bookworm)", "unknown region 'ams'"),
    ("syd", "vc2-9c-1tb", "Debian 12 x64 (bookworm)", "unknown plan 'vc2-9c-1tb'"),
    ("mel", "vc2-4c-8gb", "Debian 12 x64 (bookworm)", "plan 'vc2-4c-8gb' is not offered in 'mel'"),
    ("syd", "vc2-2c-4gb", "Windows 95", "unknown image 'Windows 95'"),
])
def test_bad_profiles_are_named(double, region, plan, image, message):
    with pytest.raises(vultr.VultrError, match=message):
        client(double).lookup(region, plan, image)


def test_vultrs_own_error_messages_are_surfaced(double):
    with pytest.raises(vultr.VultrError, match="401: Invalid API token"):
        client(double, key="wrong").instances()
    with pytest.raises(vultr.VultrError, match="404: Invalid instance-id"):
        client(double).instance("no-such-id")
    with pytest.raises(vultr.VultrError, match="400: Missing label"):
        client(double).create("", "syd", "vc2-2c-4gb", 2136)


def test_idempotent_calls_are_retried_on_429_and_5xx(double):
    api = client(double, backoff=0)
    double.fail(429, times=2, message="Rate limit reached")
    double.fail(503)
    assert api.regions()[0]["id"] == "syd"
    assert double.requests == [("GET", "/v2/regions")] * 5  # three refused, then two pages
    double.fail(500, times=10, message="boom")
    with pytest.raises(vultr.VultrError, match="500: boom"):
        api.plans()
    assert double.requests.count(("GET", "/v2/plans")) == 5  # the first try and 4 retries


def test_a_create_that_times_out_after_vultr_accepted_it_leaves_exactly_one_vm(double):
    api = client(double, timeout=0.3, backoff=0)
    double.late["POST"] = 1.0  # Vultr makes the VM, the answer comes too late
    made = api.create("fs-syd-5", "syd", "vc2-2c-4gb", 2136)
    assert [item["label"] for item in double.instances.values()] == ["fs-syd-5"]
    assert made["id"] in double.instances
    assert double.requests.count(("POST", "/v2/instances")) == 1


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_a_refused_create_is_sent_again_only_when_vultr_has_no_such_instance(double, status):
    api = client(double, backoff=0)
    double.fail(status, times=2, method="POST")
    made = api.create("fs-syd-6", "syd", "vc2-2c-4gb", 2136)
    assert [item["label"] for item in double.instances.values()] == ["fs-syd-6"] and made["label"] == "fs-syd-6"
    # POST, lookup, POST, lookup, POST: never two creates without a lookup between them.
    posts = [index for index, request in enumerate(double.requests) if request == ("POST", "/v2/instances")]
    assert len(posts) == 3 and all(("GET", "/v2/instances") in double.requests[a:b] for a, b in zip(posts, posts[1:]))


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_a_create_refused_for_a_reason_that_will_not_pass_is_not_sent_again(double, status):
    double.fail(status, message="no")
    with pytest.raises(vultr.VultrError, match=f"{status}: no"):
        client(double, backoff=0).create("fs-syd-7", "syd", "vc2-2c-4gb", 2136)
    assert double.requests == [("POST", "/v2/instances")] and not double.instances


def test_a_slow_answer_times_out_with_a_clear_error(double):
    double.delay = 0.5
    with pytest.raises(vultr.VultrError, match="GET /regions"):
        client(double, timeout=0.1, retries=1).regions()


def test_an_instance_that_never_becomes_active_times_out(double):
    double.polls_until_active = 10**6
    api = client(double)
    made = api.create("fs-syd-3", "syd", "vc2-2c-4gb", 2136)
    with pytest.raises(vultr.VultrError, match="not active after 0 s"):
        api.wait_until_active(made["id"], timeout=0, interval=0)


def test_no_api_key_is_refused_before_any_request():
    with pytest.raises(vultr.VultrError, match="no API key"):
        vultr.Vultr("")


# --- reserved IPs and DNS (the SIP edge's public side) ---


def two_instances(api, regions=("syd", "syd")):
    return [api.create(f"kam-{region}-{n}", region, "vc2-2c-4gb", 2136)["id"] for n, region in enumerate(regions)]


def test_a_reserved_ip_moves_between_instances_of_its_location_through_a_slow_detach(double):
    api = client(double, sleep=time.sleep, backoff=0)
    first, second = two_instances(api)
    reserved = double.reserve_ip("syd", "103.43.75.51", "sip")
    assert api.move_reserved_ip(reserved, first, interval=0.05)["instance_id"] == first
    double.requests.clear()
    moved = api.move_reserved_ip(reserved, second, interval=0.05)
    assert moved["instance_id"] == second and api.reserved_ip(reserved)["instance_id"] == second
    # The attach right after the detach met "already attached" and was tried again once the detach finished.
    attaches = double.requests.count(("POST", f"/v2/reserved-ips/{reserved}/attach"))
    assert attaches >= 2 and double.requests.count(("POST", f"/v2/reserved-ips/{reserved}/detach")) >= 1


def test_moving_a_reserved_ip_where_it_already_is_changes_nothing(double):
    api = client(double, sleep=time.sleep, backoff=0)
    first, _ = two_instances(api)
    reserved = double.reserve_ip("syd", "103.43.75.51")
    api.move_reserved_ip(reserved, first, interval=0.05)
    double.requests.clear()
    api.move_reserved_ip(reserved, first, interval=0.05)
    assert [request for request in double.requests if request[0] != "GET"] == []


def test_a_reserved_ip_is_never_sent_to_another_location(double):
    api = client(double, sleep=time.sleep, backoff=0)
    sydney, melbourne = two_instances(api, ("syd", "mel"))
    reserved = double.reserve_ip("syd", "103.43.75.51")
    api.move_reserved_ip(reserved, sydney, interval=0.05)
    double.requests.clear()
    with pytest.raises(vultr.VultrError, match="belongs to syd; instance .* is in mel: move the name"):
        api.move_reserved_ip(reserved, melbourne, interval=0.05)
    assert [request for request in double.requests if request[0] != "GET"] == []
    assert api.reserved_ip(reserved)["instance_id"] == sydney


def test_a_failing_move_is_retried_and_ends_in_a_clear_error_with_the_ip_on_one_host_at_most(double, caplog):
    api = client(double, sleep=time.sleep, backoff=0, retries=0)
    first, second = two_instances(api)
    reserved = double.reserve_ip("syd", "103.43.75.51")
    api.move_reserved_ip(reserved, first, interval=0.05)
    double.fail(503, times=3, method="POST", message="try later")
    assert api.move_reserved_ip(reserved, second, interval=0.05)["instance_id"] == second
    assert "moving reserved IP 103.43.75.51" in caplog.text and "503: try later; trying again" in caplog.text
    double.fail(500, times=50, method="POST", message="down")
    with pytest.raises(vultr.VultrError, match=r"not on .* after 0.3 s \(on .*last: Vultr API 500: down\)"):
        api.move_reserved_ip(reserved, first, timeout=0.3, interval=0.05)
    assert api.reserved_ip(reserved)["instance_id"] in (second, None)


def test_a_dns_record_is_set_once_and_updated_only_when_it_differs(double):
    api = client(double, sleep=time.sleep, backoff=0)
    double.domains["gopbx.au"] = {}
    assert api.set_dns_record("gopbx.au", "sip", "A", "103.43.75.51", 30) is True
    double.requests.clear()
    assert api.set_dns_record("gopbx.au", "sip", "A", "103.43.75.51", 30) is False
    assert [request for request in double.requests if request[0] != "GET"] == []
    assert api.set_dns_record("gopbx.au", "sip", "A", "45.76.112.9", 30) is True
    records = [item for item in api.dns_records("gopbx.au") if item["name"] == "sip"]
    assert [(item["type"], item["data"], item["ttl"]) for item in records] == [("A", "45.76.112.9", 30)]
    # Two records for one name (a half-done earlier run) end as one.
    api.request("POST", "/domains/gopbx.au/records", {"name": "sip", "type": "A", "data": "192.0.2.1", "ttl": 30})
    assert api.set_dns_record("gopbx.au", "sip", "A", "45.76.112.9", 30) is True
    assert [item["data"] for item in api.dns_records("gopbx.au") if item["name"] == "sip"] == ["45.76.112.9"]


def test_the_double_serves_a_world_seeded_as_the_lab_names_it(double):
    # scripts/mlab starts the edge's double with the ids its site pillar names.
    double.seed({"instances": [{"id": "i-1", "label": "coord-syd-1", "region": "syd", "main_ip": "10.28.0.2"}],
                 "reserved_ips": [{"id": "r-1", "region": "syd", "subnet": "10.28.0.50"}],
                 "domains": ["gopbx.mlab.invalid"]})
    key = double.api_key
    assert double.answer("GET", "/v2/instances/i-1", {}, {}, key)[1]["instance"]["status"] == "active"
    reserved = double.answer("GET", "/v2/reserved-ips/r-1", {}, {}, key)[1]["reserved_ip"]
    assert reserved["subnet"] == "10.28.0.50" and reserved["instance_id"] is None
    assert double.answer("POST", "/v2/reserved-ips/r-1/attach", {}, {"instance_id": "i-1"}, key)[0] == 204
    assert double.answer("GET", "/v2/domains/gopbx.mlab.invalid/records", {}, {}, key)[0] == 200
