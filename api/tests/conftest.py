"""
The API against the lab's real PostgreSQL (through pgBouncer) and Kamailio:
the lab is brought up by the README's lab command, as for the system tests.
"""

import secrets

import pytest
from fastapi.testclient import TestClient

from gopbx_api import passwords
from gopbx_api.app import create_app
from gopbx_api.settings import Settings
from tests.system import sip
from tests.system.conftest import lab  # noqa: F401  (a fixture)

ADMIN_PASSWORD = "Platform-Admin-Pass-1"
SUFFIX = ".apitest.invalid"


@pytest.fixture(scope="session")
def lab_secrets(lab):  # noqa: F811  (the system tests' lab fixture: the lab command, once a session)
    return lab["secrets"]


def make_settings(lab_secrets, keys, **extra):
    return Settings(
        database_dsn=(f"host=127.28.0.12 port=5432 dbname=gopbx user=gopbx_api "
                      f"password={lab_secrets['postgres']['api']}"),
        kamailio_rpc_url="http://127.28.0.15:8080/jsonrpc",
        redis_url=f"redis://:{lab_secrets['redis']['password']}@127.28.0.11:6379/0",
        jwt_keys=keys,
        platform_admins={"admin": passwords.hash_password(ADMIN_PASSWORD)},
        **extra,
    )


@pytest.fixture(scope="session")
def settings_for(lab_secrets):
    """Settings for the lab with these JWT keys (the first signs) and any other fields."""
    return lambda keys, **extra: make_settings(lab_secrets, keys, **extra)


@pytest.fixture(scope="session")
def keys():
    return [secrets.token_urlsafe(32), secrets.token_urlsafe(32)]


@pytest.fixture(scope="session")
def app(lab_secrets, keys):
    application = create_app(make_settings(lab_secrets, keys[:1]))
    yield application
    application.state.db.close()


@pytest.fixture(scope="session")
def client(app):
    return TestClient(app)


@pytest.fixture(scope="session")
def admin(client):
    reply = client.post("/v1/token", json={"username": "admin", "password": ADMIN_PASSWORD})
    assert reply.status_code == 200, reply.text
    return {"Authorization": f"Bearer {reply.json()['access_token']}"}


@pytest.fixture(scope="session")
def salt_db(lab_secrets):
    """A connection as gopbx_salt, the role that registers FreeSWITCH nodes."""
    return lambda: sip.db(lab_secrets, "gopbx_salt")


@pytest.fixture(autouse=True, scope="session")
def clean(app, lab_secrets):
    def remove():
        with app.state.db.transaction() as cursor:
            cursor.execute("DELETE FROM subscriber WHERE domain LIKE %s", (f"%{SUFFIX}",))
            cursor.execute("DELETE FROM domain_attrs WHERE did LIKE %s", (f"%{SUFFIX}",))
            cursor.execute("DELETE FROM domain WHERE domain LIKE %s", (f"%{SUFFIX}",))
            cursor.execute("DELETE FROM gopbx.tenants WHERE domain LIKE %s", (f"%{SUFFIX}",))
        with sip.db(lab_secrets, "gopbx_salt") as conn, conn.cursor() as cursor:
            cursor.execute("DELETE FROM gopbx.nodes WHERE minion_id LIKE 'fs-apitest-%%'")
    remove()
    yield
    remove()
