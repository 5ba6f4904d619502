"""The API as the lab deploys it: a service on its plan address, in its own venv."""

import pytest
import requests

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
