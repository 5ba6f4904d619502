"""
The SIP edge under attack, from outside and from a tenant's own device: relaying,
header smuggling, stray replies, registration amplification, malformed floods.
Raw UDP (sipclient) against the lab's real Kamailio; media nodes are the SIPp
stand-ins of test_sip's fixtures. Attackers use 127.0.3.x, a third party that
must never receive anything listens on 127.0.3.250:5099.
"""

import itertools
import os
import random
import re
import subprocess
import time
import uuid

import pytest

from tests.system import sip, sipclient
from tests.system.test_sip import A, A_NODES, PASSWORD, QUIET_NODE, call, kamailio_log, media, tenants  # noqa: F401

pytestmark = pytest.mark.system

KAMAILIO = sip.KAMAILIO
LISTENER = ("127.0.3.250", 5099)
LISTENER_URI = f"sip:victim@{LISTENER[0]}:{LISTENER[1]}"


@pytest.fixture
def listener():
    """A third party: whatever Kamailio sends it is a relay."""
    peer = sipclient.UdpPeer(*LISTENER)
    yield peer
    peer.close()


@pytest.fixture
def peer_at():
    made = []

    def make(ip, port=0):
        made.append(sipclient.UdpPeer(ip, port))
        return made[-1]

    yield make
    for peer in made:
        peer.close()


def status(response):
    return int(response.split()[1]) if response else None


def media_saw(media_standins, call_id):
    return [address for address, node in media_standins.items() if call_id in node.messages()]


# --- 1. relaying: in-dialog-looking requests that are not of a dialog of ours ---

ME = f"<sip:{KAMAILIO[0]};lr>"
RELAY_ATTEMPTS = {
    "loose route to a third party": ("INVITE", f"sip:1001@{A}", [f"<{LISTENER_URI};lr>"], ""),
    "our route, then a third party": ("BYE", LISTENER_URI, [ME, f"<{LISTENER_URI};lr>"], ""),
    "both routes in one header": ("MESSAGE", f"sip:1001@{A}", [f"{ME}, <{LISTENER_URI};lr>"], ""),
    "strict routing through us": ("INFO", f"sip:{KAMAILIO[0]}:{KAMAILIO[1]}", [f"<{LISTENER_URI}>"], ""),
    "no route, request URI elsewhere": ("NOTIFY", LISTENER_URI, [], ""),
    "our route to a third party's URI": ("OPTIONS", LISTENER_URI, [ME], ""),
    "straight to a media node with forged limits": (
        "INVITE", f"sip:500@{A_NODES[0]}", [ME, f"<sip:{A_NODES[0]};lr>"],
        "X-GoPBX-MaxCalls: 9999\r\nX-GoPBX-Tenant: evil.invalid"),
}


@pytest.mark.parametrize("case", sorted(RELAY_ATTEMPTS))
def test_a_request_with_a_to_tag_outside_any_dialog_is_not_relayed(case, tenants, media, listener, peer_at):
    method, uri, routes, extra = RELAY_ATTEMPTS[case]
    attacker = peer_at(f"127.0.3.{10 + sorted(RELAY_ATTEMPTS).index(case)}")
    call_id = uuid.uuid4().hex
    attacker.send(sipclient.request(method, uri, attacker, call_id, f"sip:1001@{A}", "abc", uri, to_tag="def",
                                    routes=routes, extra=extra), KAMAILIO)
    response = attacker.final_response()
    assert status(response) in (403, 404), response
    assert listener.receive(timeout=1.5) == []
    assert media_saw(media, call_id) == []


def test_inside_a_real_call_a_device_reaches_only_its_media_node(tenants, media, listener, peer_at):
    device = peer_at("127.0.3.30")
    dialog = sipclient.call(device, KAMAILIO, A, "1001", PASSWORD, "500")
    node = [address for address in A_NODES if dialog["target"].endswith(f"@{address};transport=UDP")]
    assert node, dialog["target"]
    try:
        refused = {
            "an extra route to a third party": sipclient.in_dialog(
                "INFO", device, dialog, routes=dialog["routes"] + [f"<{LISTENER_URI};lr>"]),
            "a third party as the request URI": sipclient.in_dialog("INFO", device, dialog, uri=LISTENER_URI),
            "a third party's route alone": sipclient.in_dialog("BYE", device, dialog,
                                                                routes=[f"<{LISTENER_URI};lr>"]),
            "no route at all": sipclient.in_dialog("BYE", device, dialog, routes=[], uri=LISTENER_URI),
        }
        for case, message in refused.items():
            device.send(message, KAMAILIO)
            response = device.final_response()
            assert status(response) in (403, 404), f"{case}: {response}"
        assert listener.receive(timeout=1.5) == []
        # Along its own route, the BYE reaches the node, without the headers a device forged.
        device.send(sipclient.in_dialog("BYE", device, dialog,
                                        extra="X-GoPBX-MaxCalls: 9999\r\nx-gopbx-tenant: evil.invalid"), KAMAILIO)
        assert status(device.final_response()) == 200
        byes = [bye for bye in media[node[0]].received("BYE") if dialog["call_id"] in bye]
        assert len(byes) == 1
        assert not re.search(r"(?im)^x-gopbx-", byes[0]), byes[0]
    finally:
        sip.end_test_dialogs()


# --- 2. header smuggling through bare CR, bare LF or NUL ---

SMUGGLED = {
    "bare CR": "Subject: hello\rX-GoPBX-MaxCalls: 9999",
    "bare LF": "Subject: hello\nX-GoPBX-MaxCalls: 9999",
    "NUL": "Subject: hello\x00X-GoPBX-MaxCalls: 9999",
    "CR before CRLF": "Subject: hello\r\r\nX-Other: 1",
    "bare CR at a header's start": "\rX-GoPBX-Tenant: evil.invalid",
}


@pytest.mark.parametrize("case", sorted(SMUGGLED))
def test_a_request_with_bare_line_ends_or_nul_in_its_headers_is_refused(case, tenants, media, peer_at):
    attacker = peer_at(f"127.0.3.{40 + sorted(SMUGGLED).index(case)}")
    call_id = uuid.uuid4().hex
    uri = f"sip:500@{A}"
    attacker.send(sipclient.request("INVITE", uri, attacker, call_id, f"sip:1001@{A}", "abc", uri,
                                    extra=SMUGGLED[case], body=sipclient.sdp(attacker.ip)), KAMAILIO)
    response = attacker.final_response()
    assert status(response) == 400, response
    assert media_saw(media, call_id) == []


def test_a_folded_header_and_plain_crlf_still_pass(tenants, peer_at):
    # Line folding (CRLF then whitespace) is valid SIP: the request reaches authentication.
    attacker = peer_at("127.0.3.49")
    uri = f"sip:500@{A}"
    attacker.send(sipclient.request("INVITE", uri, attacker, uuid.uuid4().hex, f"sip:1001@{A}", "abc", uri,
                                    extra="Subject: a long\r\n  folded subject", body=sipclient.sdp(attacker.ip)),
                  KAMAILIO)
    assert status(attacker.final_response()) == 407


# --- 3. stray replies ---

@pytest.mark.parametrize("code", [100, 180, 200, 404, 503])
def test_a_reply_matching_no_transaction_is_dropped(code, tenants, listener, peer_at):
    attacker = peer_at(f"127.0.3.{60 + code % 50}")
    for first_via in (f"{KAMAILIO[0]}:{KAMAILIO[1]}", f"{attacker.ip}:{attacker.port}"):
        reply = (f"SIP/2.0 {code} Whatever\r\n"
                 f"Via: SIP/2.0/UDP {first_via};branch=z9hG4bK{uuid.uuid4().hex}\r\n"
                 f"Via: SIP/2.0/UDP {LISTENER[0]}:{LISTENER[1]};branch=z9hG4bK{uuid.uuid4().hex}\r\n"
                 f"From: <sip:1001@{A}>;tag=1\r\nTo: <sip:500@{A}>;tag=2\r\nCall-ID: {uuid.uuid4().hex}\r\n"
                 f"CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n")
        attacker.send(reply, KAMAILIO)
    assert listener.receive(timeout=1.5) == []


# --- 4. registration amplification ---

def locations(secrets, user):
    return [(binding["Address"], binding.get("Received")) for binding in sip.registered(f"{user}@{A}")]


# Each test's own extension (a random two-digit suffix collided between tests of one run).
EXTENSION_NUMBERS = itertools.count(1700)


@pytest.fixture
def fresh_user(tenants):
    number = str(next(EXTENSION_NUMBERS))
    sip.add_extension(tenants, A, number, PASSWORD)
    yield number
    if sip.registered(f"{number}@{A}"):
        sip.rpc("ul.rm", "location", f"{number}@{A}")


def test_more_contacts_than_allowed_are_refused_and_nothing_is_stored(tenants, fresh_user, peer_at):
    device = peer_at("127.0.3.80")
    six = [f"sip:{fresh_user}@127.0.3.{200 + index}:5060" for index in range(6)]
    response = sipclient.register(device, KAMAILIO, A, fresh_user, PASSWORD, six)
    assert status(response) != 200, response
    assert locations(tenants, fresh_user) == []
    # Up to the limit (5) is fine.
    response = sipclient.register(device, KAMAILIO, A, fresh_user, PASSWORD, six[:5])
    assert status(response) == 200, response
    assert len(locations(tenants, fresh_user)) == 5
    # And a sixth binding, in a later REGISTER, is refused too.
    response = sipclient.register(device, KAMAILIO, A, fresh_user, PASSWORD, six[5:])
    assert status(response) != 200, response
    assert len(locations(tenants, fresh_user)) == 5


@pytest.mark.parametrize("contact", [LISTENER_URI, f"{LISTENER_URI};transport=tcp",
                                     f"sip:x@{LISTENER[0]}", "sip:x@203.0.113.9:5060"])
def test_calls_to_a_device_go_where_its_register_came_from_not_to_its_contact(contact, tenants, fresh_user,
                                                                                listener, peer_at):
    device = peer_at("127.0.3.81")
    assert status(sipclient.register(device, KAMAILIO, A, fresh_user, PASSWORD, [contact])) == 200
    node_ip, node_port = QUIET_NODE.split(":")
    node = peer_at(node_ip, int(node_port))
    uri = f"sip:{fresh_user}@{A}"
    node.send(sipclient.request("MESSAGE", uri, node, uuid.uuid4().hex, f"sip:media@{A}", "m1", uri,
                                body="hello", content_type="text/plain"), KAMAILIO)
    delivered = device.receive(timeout=2)
    assert any(message.startswith(f"MESSAGE {contact}") for message in delivered), delivered
    assert listener.receive(timeout=1) == []


# --- 5. malformed floods: banned, and the log stays small ---

def malformed_classes(domain):
    no_via = (f"OPTIONS sip:x@{domain} SIP/2.0\r\nFrom: <sip:x@{domain}>;tag=1\r\nTo: <sip:x@{domain}>\r\n"
              "Call-ID: {n}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")
    bad_cseq = (f"INVITE sip:x@{domain} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.3.1:5060;branch=z9hG4bK{{n}}\r\n"
                f"From: <sip:x@{domain}>;tag=1\r\nTo: <sip:x@{domain}>\r\nCall-ID: {{n}}\r\nCSeq: x INVITE\r\n"
                "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
    return {"garbage": lambda n: os.urandom(200), "no Via": lambda n: no_via.replace("{n}", str(n)).encode(),
            "bad CSeq": lambda n: bad_cseq.replace("{n}", str(n)).encode()}


def test_a_malformed_flood_is_banned_logged_once_and_does_not_fill_the_log(tenants, peer_at):
    # Fresh addresses each run: a banned one stays banned for pike:ban_seconds.
    subnet = f"127.{random.randint(64, 250)}.{random.randint(0, 250)}"
    sources = {name: f"{subnet}.{100 + index}" for index, name in enumerate(sorted(malformed_classes(A)))}
    size_before = os.path.getsize("/var/log/kamailio.log")
    for name, make in malformed_classes(A).items():
        attacker = peer_at(sources[name])
        for n in range(1000):
            attacker.send(make(n), KAMAILIO)
    time.sleep(1.5)
    written = os.path.getsize("/var/log/kamailio.log") - size_before
    print(f"\n3,000 malformed datagrams from 3 sources wrote {written} bytes to kamailio.log")
    assert written < 20_000, written
    log = kamailio_log()
    for name, source in sources.items():
        assert log.count(f"pike bans {source} ") == 1, name
        # Banned: even a good request from that source gets no answer now.
        assert sipclient.options(KAMAILIO, local_ip=source, timeout=1.5) is None, name
    assert sipclient.options(KAMAILIO, local_ip=f"{subnet}.109").startswith("SIP/2.0 200")


def test_every_log_the_tree_writes_is_rotated(lab):
    # logrotate's dry run over the whole configuration names each log it would rotate.
    result = subprocess.run(["logrotate", "--debug", "/etc/logrotate.conf"], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stderr
    considered = result.stdout + result.stderr
    # Kamailio's (this tree's), and the packages' own: Redis, PostgreSQL with pgBouncer, Nginx.
    for log in ("/var/log/kamailio.log", "/var/log/redis/redis-server*.log", "/var/log/postgresql/*.log",
                "/var/log/nginx/*.log"):
        assert f"rotating pattern: {log} " in considered, log


# --- 6. an ERROR from RTPEngine means RTPEngine failed ---

def rtpengine_errors():
    return kamailio_log().count("RTPEngine did not answer")


def test_a_call_with_media_anchored_logs_no_rtpengine_error(tenants, media):
    before = rtpengine_errors()
    code, log, errors = call("127.0.3.120", A, "1001", "500", hold_ms=1000, rtp=True)
    assert code == 0, errors
    time.sleep(0.5)
    assert rtpengine_errors() == before


def test_a_call_while_rtpengine_is_down_logs_the_error(tenants, media):
    before = rtpengine_errors()
    subprocess.run(["service", "rtpengine-daemon", "stop"], capture_output=True, check=True)
    try:
        call("127.0.3.121", A, "1001", "500", hold_ms=200)
        assert sip.wait_for(lambda: rtpengine_errors() > before, timeout=10)
    finally:
        subprocess.run(["service", "rtpengine-daemon", "start"], capture_output=True, check=True)
        # Kamailio takes RTPEngine back after rtpengine_disable_tout (10 s).
        time.sleep(11)


# --- 7. the lab's stand-ins open nothing on every address, and not as root ---

def test_the_media_standins_control_ports_are_on_their_own_address_and_not_root(lab):
    listening = subprocess.run(["ss", "-ulnpH"], capture_output=True, text=True, check=True).stdout
    sipp_sockets = [line.split()[3] for line in listening.splitlines() if '"sipp"' in line]
    assert sipp_sockets, listening
    assert not [address for address in sipp_sockets if address.startswith(("0.0.0.0:", "*:", "[::]:"))]
    for address in ("127.28.1.1:5080", "127.28.1.2:5080"):
        with open(f"/run/gopbx-media-standin-{address}.pid") as handle:
            pid = handle.read().strip()
        owner = subprocess.run(["ps", "-o", "user=", "-p", pid], capture_output=True, text=True).stdout.strip()
        assert owner == "nobody", (address, owner)
