"""The API as the lab deploys it: a service on its plan address, in its own venv."""

import subprocess

import pytest
import requests

from tests.support import wait_for

pytestmark = pytest.mark.system
URL = "http://127.28.0.30:8080"


def test_it_answers_on_its_plan_address_and_checks_postgresql_and_redis(lab):
    assert requests.get(f"{URL}/healthz", timeout=10).json() == {"postgresql": True, "redis": True}


def test_the_labs_admin_gets_a_token_and_uses_it(lab):
    password = lab["secrets"]["api"]["admin_password"]
    reply = requests.post(f"{URL}/v1/token", json={"username": "admin", "password": password}, timeout=10)
    assert reply.status_code == 200
    token = reply.json()["access_token"]
    listing = requests.get(f"{URL}/v1/tenants", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert listing.status_code == 200 and "items" in listing.json()


def test_bad_logins_and_bodies_get_a_json_reason(lab):
    wrong = requests.post(f"{URL}/v1/token", json={"username": "admin", "password": "nope"}, timeout=10)
    assert wrong.status_code == 401 and wrong.json()["detail"]
    odd = requests.post(f"{URL}/v1/token", json={"username": "admin", "password": "x", "extra": 1}, timeout=10)
    assert odd.status_code == 422 and "extra" in odd.text


def test_while_its_database_is_away_it_answers_503_with_retry_after_and_writes_nothing(lab):
    """A failover (pgBouncer repointed, the primary gone) looks like this to the API: not a 500."""
    password = lab["secrets"]["api"]["admin_password"]
    token = requests.post(f"{URL}/v1/token", json={"username": "admin", "password": password},
                          timeout=10).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    assert requests.get(f"{URL}/v1/tenants", headers=headers, timeout=10).status_code == 200
    subprocess.run(["service", "pgbouncer", "stop"], check=True, capture_output=True)
    try:
        for _ in range(3):  # pooled connections that broke, then new ones that cannot connect
            listing = requests.get(f"{URL}/v1/tenants", headers=headers, timeout=10)
            assert listing.status_code == 503 and listing.headers["Retry-After"] == "1", listing.text
            assert "database" in listing.json()["detail"]
        made = requests.post(f"{URL}/v1/tenants", headers=headers, timeout=10, json={
            "domain": "away.lab.invalid", "name": "away", "max_calls": 2, "calls_per_second": 2, "dispatcher_set": 1})
        assert made.status_code == 503, made.text
    finally:
        subprocess.run(["service", "pgbouncer", "start"], check=True, capture_output=True)
    assert wait_for(lambda: requests.get(f"{URL}/v1/tenants", headers=headers, timeout=10).status_code == 200,
                    timeout=30)
    assert requests.get(f"{URL}/v1/tenants/away.lab.invalid", headers=headers, timeout=10).status_code == 404
