"""
End to end through Nginx over HTTPS, as a customer's admin would use the platform:
a tenant and an extension made through the API at https://api.gopbx.au, that
extension registering with SIPp through Kamailio and calling the lab's media
stand-in; live calls, hang-up and the SSE stream through Nginx from the deployed
call-events service, with FreeSWITCH's event socket played by its double.
"""

import os
import ssl
import threading

import httpx
import pytest

from tests.doubles.event_socket import EventSocketDouble
from tests.support import sse_events
from tests.system import sip

pytestmark = pytest.mark.system

NAME, NGINX = "api.gopbx.au", "127.28.0.13"
CERTIFICATE = "/etc/nginx/tls/cert.pem"
TENANT = "e2e" + sip.TEST_DOMAIN_SUFFIX
PASSWORD = "E2e-Device-Pass-7"
NODE, NODE_ADDRESS = "fs-endtoend-1", "127.28.3.1"


class Https:
    """HTTPS to api.gopbx.au at the lab's Nginx: the name in SNI and Host, the lab's certificate verified."""

    def __init__(self):
        context = ssl.create_default_context(cafile=CERTIFICATE)
        self.client = httpx.Client(base_url=f"https://{NGINX}", verify=context, timeout=15,
                                   headers={"Host": NAME})
        self.headers = {}

    def request(self, method, path, **kwargs):
        return self.client.request(method, path, extensions={"sni_hostname": NAME},
                                   headers={**self.headers, **kwargs.pop("headers", {})}, **kwargs)

    def stream(self, path):
        return self.client.stream("GET", path, extensions={"sni_hostname": NAME}, headers=self.headers)


@pytest.fixture(scope="module")
def https(lab):
    client = Https()
    password = lab["secrets"]["api"]["admin_password"]
    reply = client.request("POST", "/v1/token", json={"username": "admin", "password": password})
    assert reply.status_code == 200, reply.text
    client.headers = {"Authorization": f"Bearer {reply.json()['access_token']}"}
    client.request("DELETE", f"/v1/tenants/{TENANT}")
    yield client
    client.request("DELETE", f"/v1/tenants/{TENANT}")


@pytest.fixture(scope="module")
def tenant(https):
    body = {"domain": TENANT, "name": "End to end", "max_calls": 4, "calls_per_second": 20, "dispatcher_set": 1}
    reply = https.request("POST", "/v1/tenants", json=body)
    assert reply.status_code == 201, reply.text
    assert sip.wait_for(lambda: TENANT in str(sip.rpc("domain.dump")), timeout=5), "Kamailio never loaded it"
    return TENANT


def test_a_tenant_made_over_https_registers_and_calls_the_media_node(https, tenant):
    reply = https.request("POST", f"/v1/tenants/{tenant}/extensions",
                          json={"number": "2101", "password": PASSWORD, "caller_id_name": "Front desk"})
    assert reply.status_code == 201, reply.text
    keys = {"tenant": tenant, "user": "2101", "contact_host": "127.0.0.61:5060"}
    code, log, errors = sip.sipp(sip.register_scenario("200"), "127.0.0.61", keys, auth=("2101", PASSWORD))
    assert code == 0, errors + log
    # The lab's media stand-ins (dispatcher set 1) answer; SIPp holds the call, then BYE.
    keys = {"tenant": tenant, "user": "2101", "service": "600"}
    code, log, errors = sip.sipp(sip.call_scenario(hold_ms=300), "127.0.0.61", keys, auth=("2101", PASSWORD))
    assert code == 0, errors + log
    assert "SIP/2.0 200 OK" in log and "X-GoPBX" not in log.split("SIP/2.0 200 OK")[1].split("\n\n")[0]


def test_http_redirects_to_https_except_the_acme_challenge(lab):
    with httpx.Client(base_url=f"http://{NGINX}", headers={"Host": NAME}, timeout=10) as http:
        reply = http.get("/v1/tenants?limit=1")
        assert reply.status_code == 301 and reply.headers["location"] == f"https://{NAME}/v1/tenants?limit=1"
        challenge = "/var/www/acme/.well-known/acme-challenge/gopbx-e2e-token"
        try:
            os.makedirs(os.path.dirname(challenge), exist_ok=True)
            with open(challenge, "w") as handle:
                handle.write("token-value")
            reply = http.get("/.well-known/acme-challenge/gopbx-e2e-token")
            assert reply.status_code == 200 and reply.text == "token-value"
        finally:
            os.remove(challenge)


def test_https_answers_with_security_headers_and_limits(https):
    reply = https.request("GET", "/healthz")
    assert reply.status_code == 200 and reply.http_version in ("HTTP/1.1", "HTTP/2")
    assert reply.headers["strict-transport-security"].startswith("max-age=")
    assert reply.headers["x-content-type-options"] == "nosniff" and "server" in reply.headers
    assert reply.headers["server"] == "nginx"  # no version
    huge = https.request("POST", "/v1/tenants", content=b"{" + b" " * 100_000 + b"}",
                         headers={"Content-Type": "application/json"})
    assert huge.status_code == 413
    # Internal endpoints are not served on the public name.
    assert https.request("POST", "/v1/freeswitch/directory").status_code == 404
    assert https.request("GET", "/metrics").status_code == 404


@pytest.fixture(scope="module")
def freeswitch(lab, tenant):
    """A node the deployed call-events service follows: its row, and the event-socket double at its address."""
    double = EventSocketDouble(NODE_ADDRESS, 8021, lab["secrets"]["freeswitch"]["esl_password"]).start()
    with sip.db(lab["secrets"], "gopbx_salt") as conn, conn.cursor() as cursor:
        cursor.execute("DELETE FROM gopbx.nodes WHERE minion_id = %s", (NODE,))
        cursor.execute("INSERT INTO gopbx.nodes (minion_id, address, setid, capacity) VALUES (%s, %s, 1, 50)",
                       (NODE, NODE_ADDRESS))
    # The service reads the node list every 10 s; it subscribes once it has connected.
    assert sip.wait_for(lambda: double.sessions, timeout=30), "the call-events service never connected"
    yield double
    with sip.db(lab["secrets"], "gopbx_salt") as conn, conn.cursor() as cursor:
        cursor.execute("DELETE FROM gopbx.nodes WHERE minion_id = %s", (NODE,))
    double.stop()


def test_live_calls_stream_and_hang_up_through_nginx(https, tenant, freeswitch):
    events, ready = [], threading.Event()

    def listen():
        with https.stream(f"/v1/tenants/{tenant}/events") as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            lines = (ready.set() or line for line in response.iter_lines())
            for event in sse_events(lines):
                if event is not None:
                    events.append(event)
                if len(events) == 3:
                    return

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    # Nginx must pass the first line on at once (buffering off), or this never fires.
    assert ready.wait(10), "no SSE line came through Nginx"
    call = freeswitch.create_call(tenant, "2101", "600")
    freeswitch.answer(call)
    live = sip.wait_for(lambda: [c for c in https.request("GET", f"/v1/tenants/{tenant}/calls").json()["items"]
                                 if c["uuid"] == call and c["state"] == "answered"], timeout=10)
    assert live and live[0]["node"] == NODE
    assert https.request("DELETE", f"/v1/tenants/{tenant}/calls/{call}").status_code == 204
    listener.join(10)
    assert [(e["event"], e["data"]["uuid"]) for e in events] == [
        ("created", call), ("answered", call), ("hung_up", call)]
    assert events[2]["data"]["cause"] == "MANAGER_REQUEST"
    assert sip.wait_for(lambda: not https.request("GET", f"/v1/tenants/{tenant}/calls").json()["items"])
