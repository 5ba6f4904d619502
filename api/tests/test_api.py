"""The API against real PostgreSQL and Kamailio: tenants, extensions, tokens, bad input."""

import secrets
import time

import jwt
import pytest
from fastapi.testclient import TestClient

from gopbx_api import auth, passwords
from gopbx_api.app import create_app
from tests.system import sip

SUFFIX = ".apitest.invalid"  # conftest removes these tenants before and after
A = "a" + SUFFIX
B = "b" + SUFFIX


def tenant(domain, **extra):
    return {"domain": domain, "name": domain, "max_calls": 5, "calls_per_second": 10, "dispatcher_set": 1, **extra}


def last_audit_id(app):
    with app.state.db.transaction() as cursor:
        cursor.execute("SELECT coalesce(max(id), 0) AS id FROM gopbx.audit")
        return cursor.fetchone()["id"]


def audit_count(app):
    with app.state.db.transaction() as cursor:
        cursor.execute("SELECT count(*) AS n FROM gopbx.audit")
        return cursor.fetchone()["n"]


@pytest.fixture(scope="module")
def tenant_a(client, admin, app):
    since = last_audit_id(app)
    reply = client.post("/v1/tenants", json=tenant(A), headers=admin)
    assert reply.status_code == 201, reply.text
    return {**reply.json(), "audit_since": since}


def test_wrong_password_gets_no_token(client):
    reply = client.post("/v1/token", json={"username": "admin", "password": "nope"})
    assert reply.status_code == 401 and reply.json() == {"detail": "wrong username or password"}


def test_every_route_needs_a_token(client):
    for method, path in (("get", "/v1/tenants"), ("post", "/v1/tenants"), ("get", f"/v1/tenants/{A}")):
        reply = getattr(client, method)(path)
        assert reply.status_code == 401 and "detail" in reply.json()


def test_a_tenant_is_created_in_one_transaction_and_kamailio_knows_it(client, admin, app, tenant_a):
    assert tenant_a["domain"] == A
    got = client.get(f"/v1/tenants/{A}", headers=admin).json()
    assert got == {"domain": A, "name": A, "max_calls": 5, "calls_per_second": 10, "enabled": True,
                   "dispatcher_set": 1}
    with app.state.db.transaction() as cursor:
        cursor.execute("SELECT name, value FROM domain_attrs WHERE did = %s ORDER BY name", (A,))
        assert {row["name"]: row["value"] for row in cursor.fetchall()} == {
            "calls_per_second": "10", "dispatcher_set": "1", "enabled": "1", "max_calls": "5"}
        # The audit log is append-only: look at what this run wrote.
        cursor.execute("SELECT actor, action FROM gopbx.audit WHERE object_id = %s AND id > %s",
                       (A, tenant_a["audit_since"]))
        assert cursor.fetchall() == [{"actor": "admin", "action": "create"}]
    # Kamailio reloads its domains within about a second of the answer.
    assert sip.wait_for(lambda: A in str(app.state.kamailio.rpc("domain.dump")), timeout=5)


def test_a_burst_of_tenant_writes_costs_few_domain_reloads(app):
    kamailio = app.state.kamailio
    before = kamailio.reloads
    for _ in range(200):
        kamailio.reload_domains()
    assert sip.wait_for(lambda: kamailio.reloads > before, timeout=5)
    time.sleep(kamailio.min_interval * 1.5)
    assert 1 <= kamailio.reloads - before <= 2


def test_a_duplicate_tenant_is_409_and_writes_nothing(client, admin, app, tenant_a):
    before = audit_count(app)
    reply = client.post("/v1/tenants", json=tenant(A), headers=admin)
    assert reply.status_code == 409 and reply.json()["detail"]
    assert audit_count(app) == before


@pytest.mark.parametrize("body,reason", [
    (tenant("Not A Domain"), "domain"),
    (tenant("x" + SUFFIX, max_calls=0), "max_calls"),
    (tenant("x" + SUFFIX, max_calls="5"), "max_calls"),
    (tenant("x" + SUFFIX, surprise=True), "surprise"),
    (tenant("x" + SUFFIX, dispatcher_set=987654), "dispatcher set 987654 does not exist"),
])
def test_bad_tenants_are_refused_and_write_nothing(client, admin, app, body, reason):
    before = audit_count(app)
    reply = client.post("/v1/tenants", json=body, headers=admin)
    assert reply.status_code == 422 and reason in reply.text
    assert audit_count(app) == before
    assert client.get("/v1/tenants/x" + SUFFIX, headers=admin).status_code == 404


def test_a_huge_body_is_refused(client, admin):
    reply = client.post("/v1/tenants", content=b"{" + b" " * 70000 + b"}", headers={**admin,
                        "Content-Type": "application/json"})
    assert reply.status_code == 413 and "detail" in reply.json()


def test_tenants_are_listed_paginated_and_filtered(client, admin, tenant_a):
    client.post("/v1/tenants", json=tenant(B, enabled=False), headers=admin)
    page = client.get("/v1/tenants", params={"domain_prefix": "", "limit": 1}, headers=admin).json()
    assert len(page["items"]) == 1 and page["total"] >= 2
    enabled = client.get("/v1/tenants", params={"enabled": "false", "domain_prefix": "b.apitest"},
                         headers=admin).json()
    assert [item["domain"] for item in enabled["items"]] == [B]


def test_an_extension_is_stored_as_ha1_only_and_registers_at_once(client, admin, app, tenant_a):
    reply = client.post(f"/v1/tenants/{A}/extensions", json={"number": "1001", "password": "Good-Pass-1234"},
                        headers=admin)
    answered = time.monotonic()
    assert reply.status_code == 201 and "password" not in reply.json()
    with app.state.db.transaction() as cursor:
        cursor.execute("SELECT password, ha1 FROM subscriber WHERE username = '1001' AND domain = %s", (A,))
        row = cursor.fetchone()
    assert row["password"] == "" and row["ha1"] == passwords.sip_ha1("1001", A, "Good-Pass-1234")[0]
    code, log, errors = sip.sipp(sip.register_scenario("200"), "127.0.0.101",
                                 {"tenant": A, "user": "1001", "contact_host": "127.0.0.101:5060"},
                                 auth=("1001", "Good-Pass-1234"), port=5060)
    assert code == 0, errors
    assert time.monotonic() - answered < 2


def test_a_duplicate_extension_is_409(client, admin, tenant_a):
    client.post(f"/v1/tenants/{A}/extensions", json={"number": "1002", "password": "Good-Pass-1234"}, headers=admin)
    reply = client.post(f"/v1/tenants/{A}/extensions", json={"number": "1002", "password": "Good-Pass-1234"},
                        headers=admin)
    assert reply.status_code == 409


@pytest.mark.parametrize("body", [
    {"number": "1003", "password": "short"},
    {"number": "1003", "password": "alllowercaseletters"},
    {"number": "1x", "password": "Good-Pass-1234"},
    {"number": 1003, "password": "Good-Pass-1234"},
])
def test_bad_extensions_are_422(client, admin, tenant_a, body):
    assert client.post(f"/v1/tenants/{A}/extensions", json=body, headers=admin).status_code == 422


def test_a_tenant_token_cannot_touch_another_tenant(client, app, keys, tenant_a):
    token = auth.issue(app.state.settings, auth.Principal("alice", auth.TENANT, A))
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get(f"/v1/tenants/{A}", headers=headers).status_code == 200
    for domain in (B, "nonexistent" + SUFFIX):
        reply = client.get(f"/v1/tenants/{domain}", headers=headers)
        # The same answer whether the other tenant exists or not: nothing leaks.
        assert reply.status_code == 403 and reply.json() == {"detail": "this token may not act on that tenant"}
    reply = client.post(f"/v1/tenants/{B}/extensions", json={"number": "2001", "password": "Good-Pass-1234"},
                        headers=headers)
    assert reply.status_code == 403
    assert client.get("/v1/tenants", headers=headers).status_code == 403


def test_keys_rotate_without_downtime(settings_for, keys, app):
    old = auth.issue(app.state.settings, auth.Principal("admin", auth.PLATFORM))
    rotated = TestClient(create_app(settings_for([keys[1], keys[0]]), database=app.state.db))
    assert rotated.get(f"/v1/tenants/{A}", headers={"Authorization": f"Bearer {old}"}).status_code == 200
    retired = TestClient(create_app(settings_for([keys[1]]), database=app.state.db))
    assert retired.get(f"/v1/tenants/{A}", headers={"Authorization": f"Bearer {old}"}).status_code == 401


def test_expired_and_forged_tokens_are_refused(client, app):
    settings = app.state.settings
    expired = jwt.encode({"iss": "gopbx", "sub": "admin", "scope": "platform", "iat": 1, "exp": 2},
                         settings.jwt_keys[0], algorithm="HS256")
    forged = jwt.encode({"iss": "gopbx", "sub": "admin", "scope": "platform", "iat": int(time.time()),
                         "exp": int(time.time()) + 60}, secrets.token_urlsafe(32), algorithm="HS256")
    for token in (expired, forged, "not-a-jwt"):
        assert client.get("/v1/tenants", headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_healthz_checks_postgresql_and_redis(client, app):
    assert client.get("/healthz").json() == {"postgresql": True, "redis": True}
    working = app.state.redis
    app.state.redis = type(working).from_url("redis://:wrong-password@127.28.0.11:6379/0", socket_timeout=1)
    try:
        reply = client.get("/healthz")
        assert reply.status_code == 503 and reply.json() == {"postgresql": True, "redis": False}
    finally:
        app.state.redis = working


def test_metrics_count_requests_by_route(client, admin):
    client.get(f"/v1/tenants/{A}", headers=admin)
    text = client.get("/metrics").text
    assert 'gopbx_api_requests_total{method="GET",route="/v1/tenants/{domain}",status="200"}' in text
    assert A not in text


def test_a_request_waits_for_a_connection_then_gets_503_with_retry_after(settings_for, keys):
    # One connection, held by another request: the next waits, then answers 503, never 500.
    from gopbx_api.db import Database
    settings = settings_for(keys[:1])
    application = create_app(settings, database=Database(settings.database_dsn, maxconn=1, wait_seconds=0.2))
    token = auth.issue(settings, auth.Principal("admin", auth.PLATFORM))
    try:
        with application.state.db.transaction():
            reply = TestClient(application).get("/v1/tenants", headers={"Authorization": f"Bearer {token}"})
        assert reply.status_code == 503 and reply.headers["retry-after"] == "1"
        assert "busy" in reply.json()["detail"]
        # Free again: served.
        reply = TestClient(application).get("/v1/tenants", headers={"Authorization": f"Bearer {token}"})
        assert reply.status_code == 200
    finally:
        application.state.db.close()


@pytest.mark.parametrize("username", ["admin", "nobody-at-all", "tenant-admin-that-is-not"])
def test_every_login_checks_exactly_one_full_strength_hash(client, monkeypatch, username):
    checked = []
    real = passwords.verify_password
    monkeypatch.setattr(passwords, "verify_password",
                        lambda password, stored: checked.append(stored.split("$")[1]) or real(password, stored))
    assert client.post("/v1/token", json={"username": username, "password": "Wrong-Pass-123"}).status_code == 401
    assert checked == [str(passwords.ITERATIONS)]
