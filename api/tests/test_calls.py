"""
Live calls over FreeSWITCH's event socket: the call-events follower, hang-up and the
SSE stream, against real PostgreSQL and Redis, with FreeSWITCH's side played by the
event-socket double (tests/doubles), which speaks the real protocol.
"""

import threading
import time

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from gopbx_api import auth
from gopbx_api.app import create_app
from gopbx_api.call_events import CallEvents
from tests.doubles.event_socket import EventSocketDouble
from tests.support import wait_for
from tests.support import sse_events

SUFFIX = ".apitest.invalid"
T, OTHER = "calls" + SUFFIX, "other-calls" + SUFFIX
NODE, NODE_ADDRESS = "fs-apitest-7", "127.0.0.7"
ESL_PASSWORD = "esl-double-password"


@pytest.fixture(scope="module")
def freeswitch():
    double = EventSocketDouble(NODE_ADDRESS, 0, ESL_PASSWORD).start()
    yield double
    double.stop()


@pytest.fixture(scope="module")
def settings(settings_for, keys, freeswitch):
    return settings_for(keys[:1], esl_password=ESL_PASSWORD, esl_port=freeswitch.port,
                        node_refresh_seconds=0.2, sse_heartbeat_seconds=0.5)


@pytest.fixture(scope="module")
def calls_app(settings):
    application = create_app(settings)
    yield application
    application.state.db.close()


@pytest.fixture(scope="module")
def api(calls_app, admin, salt_db):
    client = TestClient(calls_app)
    for domain in (T, OTHER):
        body = {"domain": domain, "name": domain, "max_calls": 5, "calls_per_second": 5, "dispatcher_set": 1}
        assert client.post("/v1/tenants", json=body, headers=admin).status_code == 201
    with salt_db() as conn, conn.cursor() as cursor:
        cursor.execute("INSERT INTO gopbx.nodes (minion_id, address, setid, capacity) VALUES (%s, %s, 1, 100)",
                       (NODE, NODE_ADDRESS))
    return client


@pytest.fixture(scope="module")
def follower(api, calls_app, settings, freeswitch):
    """The call-events service, in a thread, following the node row above."""
    service = CallEvents(settings, calls_app.state.db, calls_app.state.redis)
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    assert wait_for(lambda: NODE in service.followers and service.followers[NODE].connected.is_set())
    yield service
    service.stop()
    thread.join(5)


def token_for(settings, domain):
    return {"Authorization": f"Bearer {auth.issue(settings, auth.Principal('boss@' + domain, auth.TENANT, domain))}"}


def live(api, headers, domain=T):
    reply = api.get(f"/v1/tenants/{domain}/calls", headers=headers)
    assert reply.status_code == 200, reply.text
    return {call["uuid"]: call for call in reply.json()["items"]}


def test_a_call_on_a_node_shows_in_its_tenants_live_calls(api, follower, freeswitch, settings):
    headers = token_for(settings, T)
    call = freeswitch.create_call(T, "1001", "1002")
    assert wait_for(lambda: call in live(api, headers))
    assert live(api, headers)[call] | {"created_at": 0} == {
        "uuid": call, "node": NODE, "tenant": T, "caller": "1001", "callee": "1002", "state": "ringing",
        "created_at": 0, "answered_at": None}
    freeswitch.answer(call)
    assert wait_for(lambda: live(api, headers)[call]["state"] == "answered")
    freeswitch.hangup(call)
    assert wait_for(lambda: call not in live(api, headers))


def test_b_legs_and_other_tenants_calls_are_not_listed(api, follower, freeswitch, settings):
    headers = token_for(settings, T)
    b_leg = freeswitch.create_call(T, "1001", "1002", direction="outbound")
    theirs = freeswitch.create_call(OTHER, "2001", "2002")
    assert wait_for(lambda: theirs in live(api, token_for(settings, OTHER), OTHER))
    assert b_leg not in live(api, headers) and theirs not in live(api, headers)
    freeswitch.hangup(b_leg)
    freeswitch.hangup(theirs)


def test_a_tenant_hangs_up_its_call_through_the_node(api, follower, freeswitch, settings, calls_app):
    headers = token_for(settings, T)
    call = freeswitch.create_call(T, "1001", "1003")
    assert wait_for(lambda: call in live(api, headers))
    reply = api.delete(f"/v1/tenants/{T}/calls/{call}", headers=headers)
    assert reply.status_code == 204, reply.text
    assert f"uuid_kill {call}" in freeswitch.commands and call not in freeswitch.channels
    assert wait_for(lambda: call not in live(api, headers))
    with calls_app.state.db.transaction() as cursor:
        cursor.execute("SELECT actor, detail FROM gopbx.audit WHERE action = 'hangup' AND object_id = %s", (call,))
        assert cursor.fetchone() == {"actor": "boss@" + T, "detail": {"tenant": T, "node": NODE}}


def test_a_tenant_cannot_see_or_hang_up_another_tenants_call(api, follower, freeswitch, settings):
    theirs = freeswitch.create_call(OTHER, "2001", "2003")
    assert wait_for(lambda: theirs in live(api, token_for(settings, OTHER), OTHER))
    mine = token_for(settings, T)
    # Through its own tenant: the call is not there. Through the other tenant: refused.
    assert api.delete(f"/v1/tenants/{T}/calls/{theirs}", headers=mine).status_code == 404
    reply = api.get(f"/v1/tenants/{OTHER}/calls", headers=mine)
    assert reply.status_code == 403 and theirs not in reply.text
    assert api.delete(f"/v1/tenants/{OTHER}/calls/{theirs}", headers=mine).status_code == 403
    assert theirs in freeswitch.channels and not any(theirs in c for c in freeswitch.commands)
    freeswitch.hangup(theirs)


@pytest.mark.parametrize("call, status", [("not-a-uuid", 422), ("00000000-0000-0000-0000-000000000000", 404)])
def test_hanging_up_a_bad_or_unknown_call_is_4xx(api, follower, settings, call, status):
    reply = api.delete(f"/v1/tenants/{T}/calls/{call}", headers=token_for(settings, T))
    assert reply.status_code == status and "detail" in reply.json()


def test_a_reconnect_resyncs_the_nodes_calls(api, calls_app, settings, freeswitch, follower):
    headers = token_for(settings, T)
    stays = freeswitch.create_call(T, "1001", "1004")
    goes = freeswitch.create_call(T, "1001", "1005")
    assert wait_for(lambda: {stays, goes} <= set(live(api, headers)))
    freeswitch.answer(stays)
    # The node drops the connection, and a call ends while nobody is listening.
    freeswitch.drop_connections(forget=[goes])
    calls = wait_for(lambda: (lambda c: c if goes not in c else None)(live(api, headers)), 10)
    assert calls and calls[stays]["state"] == "answered"
    freeswitch.hangup(stays)


def test_a_wrong_event_socket_password_follows_nothing(calls_app, settings_for, keys, freeswitch, api):
    service = CallEvents(settings_for(keys[:1], esl_password="wrong-password", esl_port=freeswitch.port,
                                      node_refresh_seconds=0.2), calls_app.state.db, calls_app.state.redis)
    service.refresh()
    time.sleep(0.5)
    assert not service.followers[NODE].connected.is_set()
    service.stop()


@pytest.fixture(scope="module")
def served(calls_app, follower):
    """The app on a real socket, for streaming (TestClient waits for a response to end)."""
    server = uvicorn.Server(uvicorn.Config(calls_app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    assert wait_for(lambda: server.started)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(5)


def read_events(lines, wanted):
    events, heartbeats = [], 0
    for event in sse_events(lines):
        if event is None:
            heartbeats += 1
        else:
            events.append(event)
        if len(events) >= wanted:
            break
    return events, heartbeats


def test_sse_streams_a_tenants_call_events_with_heartbeats(served, freeswitch, settings):
    with httpx.Client(base_url=served, timeout=10) as http:
        with http.stream("GET", f"/v1/tenants/{T}/events", headers=token_for(settings, T)) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            lines = response.iter_lines()
            assert next(lines) == ": connected"
            time.sleep(1.2)  # two heartbeat periods with nothing happening
            other = freeswitch.create_call(OTHER, "2001", "2009")
            call = freeswitch.create_call(T, "1001", "1006")
            freeswitch.answer(call)
            freeswitch.hangup(call)
            freeswitch.hangup(other)
            events, heartbeats = read_events(lines, 3)
    assert heartbeats >= 1
    assert [(e["event"], e["data"]["uuid"]) for e in events] == [
        ("created", call), ("answered", call), ("hung_up", call)]
    assert events[2]["data"]["cause"] == "NORMAL_CLEARING"


def test_sse_is_tenant_scoped(served, settings):
    with httpx.Client(base_url=served, timeout=10) as http:
        reply = http.get(f"/v1/tenants/{OTHER}/events", headers=token_for(settings, T))
        assert reply.status_code == 403 and reply.json()["detail"]
        assert http.get(f"/v1/tenants/{T}/events").status_code == 401
