"""The Vultr v2 client (_utils/gopbx_vultr.py) against the Vultr double: shapes, pagination, failures."""

import base64

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
    return vultr.Vultr(key, url=double.url, sleep=lambda seconds: None, **kwargs)


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


def test_429_and_5xx_are_retried_with_backoff(double):
    waits = []
    api = vultr.Vultr("vultr-double-key", url=double.url, sleep=waits.append, backoff=0.5)
    double.fail(429, times=2, message="Rate limit reached")
    double.fail(503)
    assert api.regions()[0]["id"] == "syd"
    assert waits == [0.5, 1.0, 2.0]
    double.fail(500, times=10, message="boom")
    with pytest.raises(vultr.VultrError, match="500: boom"):
        api.plans()


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
