"""
The SIP edge of the lab, with SIPp against the real Kamailio, RTPEngine,
PostgreSQL (through pgBouncer) and Redis. Media nodes are SIPp stand-ins.
"""

import re
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.system import sip, sipclient

pytestmark = pytest.mark.system

A = "a" + sip.TEST_DOMAIN_SUFFIX  # tenant A: two media nodes, at most 2 calls
B = "b" + sip.TEST_DOMAIN_SUFFIX  # tenant B: one media node
C = "c" + sip.TEST_DOMAIN_SUFFIX  # tenant C: disabled
D = "d" + sip.TEST_DOMAIN_SUFFIX  # tenant D: at most 1 call per second
PASSWORD = "Correct-Horse-42"
A_NODES = ["127.28.2.1:5080", "127.28.2.2:5080"]
B_NODE = "127.28.2.3:5080"
# A media node address with no stand-in behind it: the source of calls to devices.
QUIET_NODE = "127.28.2.9:5080"
# A device's SIP stack: a SIPp UAS that answers calls and OPTIONS pings.
CALLEE = sip.REPO / "tests" / "system" / "scenarios" / "callee.xml"


def kamailio_log():
    with open("/var/log/kamailio.log", errors="replace") as handle:
        return handle.read()


@pytest.fixture(scope="module")
def media(lab):
    with sip.standins(*A_NODES, B_NODE) as running:
        yield running


@pytest.fixture(scope="module")
def tenants(lab, media):
    secrets = lab["secrets"]
    sip.remove_test_tenants(secrets)
    sip.add_dispatcher_set(secrets, 101, A_NODES)
    sip.add_dispatcher_set(secrets, 102, [B_NODE])
    sip.add_dispatcher_set(secrets, 103, [QUIET_NODE])
    sip.add_tenant(secrets, A, 101, max_calls=2, calls_per_second=50)
    sip.add_tenant(secrets, B, 102, max_calls=5, calls_per_second=50)
    sip.add_tenant(secrets, C, 102, max_calls=5, calls_per_second=50, enabled=False)
    sip.add_tenant(secrets, D, 102, max_calls=5, calls_per_second=1)
    for domain, numbers in ((A, ["1001", "1002", "1003"]), (B, ["2001"]), (C, ["3001"]), (D, ["4001"])):
        for number in numbers:
            sip.add_extension(secrets, domain, number, PASSWORD)
    sip.reload_kamailio()
    sip.end_test_dialogs()
    # A Kamailio restarted just before (an earlier module's apply) may not have probed them yet.
    sip.wait_until_active(A_NODES + [B_NODE])
    yield secrets
    sip.remove_test_tenants(secrets)
    sip.reload_kamailio()


def register(local_ip, domain, user, password, final="200", contact=None, port=5060):
    contact = contact or f"{local_ip}:{port}"
    return sip.sipp(sip.register_scenario(final), local_ip, {"tenant": domain, "user": user, "contact_host": contact},
                    auth=(user, password), port=port)


def call(local_ip, domain, user, callee, password=PASSWORD, **scenario):
    keys = {"tenant": domain, "user": user, "service": callee}
    return sip.sipp(sip.call_scenario(**scenario), local_ip, keys, auth=(user, password))


# --- registration and tenancy ---


def test_register_with_the_right_password(tenants):
    code, log, errors = register("127.0.0.11", A, "1001", PASSWORD)
    assert code == 0, errors
    assert "SIP/2.0 200 OK" in log


def test_register_with_a_wrong_password_is_challenged_again(tenants):
    code, log, errors = register("127.0.0.12", A, "1001", "wrong-password", final="401")
    assert code == 0, errors
    assert "SIP/2.0 200 OK" not in log


def test_register_to_an_unknown_domain_is_forbidden(tenants):
    code, log, errors = register("127.0.0.13", "nobody" + sip.TEST_DOMAIN_SUFFIX, "1001", PASSWORD, final="403")
    assert code == 0, errors
    assert "403 Unknown Domain" in log


def test_register_to_a_disabled_tenant_is_forbidden(tenants):
    code, log, errors = register("127.0.0.14", C, "3001", PASSWORD, final="403")
    assert code == 0, errors
    assert "403 Tenant Disabled" in log


def test_a_user_of_one_tenant_cannot_register_as_another(tenants):
    # 1001 exists in A only; B's realm has no such account, whatever the password.
    code, log, errors = register("127.0.0.15", B, "1001", PASSWORD, final="401")
    assert code == 0, errors
    assert "SIP/2.0 200 OK" not in log


def test_registrations_survive_a_kamailio_restart(tenants):
    # In memory, written back to this host's own SQLite file (usrloc db_mode 2): a
    # restart flushes and reloads them. Never in PostgreSQL, which may be read-only.
    with sip.db(tenants, "kamailio") as conn, conn.cursor() as cur:
        cur.execute("SELECT now()")
        started = cur.fetchone()[0]
    assert register("127.0.0.16", A, "1003", PASSWORD)[0] == 0
    assert [binding["Address"] for binding in sip.registered(f"1003@{A}")] == ["sip:1003@127.0.0.16:5060"]
    subprocess.run(["service", "kamailio", "restart"], capture_output=True, check=True)
    assert sip.wait_for(lambda: sipclient.options(sip.KAMAILIO, local_ip="127.0.0.79").startswith("SIP/2.0 200"),
                        timeout=30)
    assert [binding["Address"] for binding in sip.registered(f"1003@{A}")] == ["sip:1003@127.0.0.16:5060"]
    with sip.db(tenants, "kamailio") as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM location WHERE last_modified >= %s", (started,))
        assert cur.fetchone() == (0,)


def test_register_over_tls(tenants):
    response = sipclient.register_tls(sip.KAMAILIO_TLS, A, "1002", PASSWORD, local_ip="127.0.0.17")
    assert response.startswith("SIP/2.0 200"), response


# --- calls to media nodes ---


def test_a_call_reaches_the_tenants_media_node_with_its_limit_and_no_spoofed_header(tenants, media):
    before = sum(len(node.received("INVITE")) for node in media.values())
    code, log, errors = call("127.0.0.21", A, "1001", "500", hold_ms=500)
    assert code == 0, errors
    invites = [invite for address in A_NODES for invite in media[address].received("INVITE")]
    assert sum(len(node.received("INVITE")) for node in media.values()) == before + 1
    invite = invites[-1]
    assert re.search(r"^X-GoPBX-MaxCalls: 2\s*$", invite, re.M), invite
    assert re.search(rf"^X-GoPBX-Tenant: {re.escape(A)}\s*$", invite, re.M)
    assert "999" not in invite and "spoofed.invalid" not in invite


def test_rtp_is_relayed_through_rtpengine(tenants, media):
    before = sip.rtpengine_relayed_packets()
    code, log, errors = call("127.0.0.22", A, "1001", "500", hold_ms=2500, rtp=True)
    assert code == 0, errors
    relayed = sip.rtpengine_relayed_packets() - before
    # The pcap's RTP to the stand-in, and the stand-in's echo back, both through RTPEngine.
    assert relayed > 100, relayed
    assert "c=IN IP4 127.0.0.1" in log  # the answer's media address is RTPEngine's


def test_the_call_over_the_tenants_limit_is_refused_and_not_forwarded(tenants, media):
    procs = []
    for index in range(2):
        procs.append(_background_call(f"127.0.0.{31 + index}", A, "1001", hold_ms=6000))
    try:
        assert sip.wait_for(lambda: sip.rpc("dlg.stats_active")["all"] >= 2, timeout=10)
        invites_before = sum(len(media[address].received("INVITE")) for address in A_NODES)
        code, log, errors = call("127.0.0.33", A, "1001", "500", answered=False, rejected=["403"])
        assert code == 0, errors
        assert "403 Tenant Call Limit Reached" in log
        assert 'Reason: SIP;cause=403;text="tenant concurrent call limit"' in log
        assert sum(len(media[address].received("INVITE")) for address in A_NODES) == invites_before
        # Another tenant is not held back by A's limit.
        assert call("127.0.0.34", B, "2001", "500", hold_ms=200)[0] == 0
    finally:
        for proc in procs:
            proc.wait(timeout=30)
    # Once the held calls end, A may call again.
    assert call("127.0.0.35", A, "1001", "500", hold_ms=200)[0] == 0


def _background_call(local_ip, domain, user, hold_ms):
    directory = tempfile.mkdtemp(prefix="gopbx-sipp-")
    path = f"{directory}/scenario.xml"
    with open(path, "w") as handle:
        handle.write(sip.call_scenario(hold_ms=hold_ms))
    return subprocess.Popen(["sipp", "127.0.0.1:5060", "-sf", path, "-i", local_ip, "-ci", local_ip, "-m", "1",
                             "-nostdin", "-timeout", "30s", "-au", user, "-ap", PASSWORD, "-key", "tenant", domain,
                             "-key", "user", user, "-s", "500"], cwd=directory,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_calls_per_second_are_limited_per_tenant(tenants, media):
    code, log, errors = sip.sipp(sip.call_scenario(rejected=["503"], hold_ms=100), "127.0.0.41",
                                 {"tenant": D, "user": "4001", "service": "500"}, calls=4, rate=20, limit=4,
                                 auth=("4001", PASSWORD))
    assert code == 0, errors
    assert log.count("503 Tenant Call Rate Exceeded") >= 2
    assert "Retry-After: 1" in log


def test_a_call_to_another_tenant_is_refused(tenants, media):
    # 1001 of tenant A calls 2001 of tenant B.
    scenario = sip.call_scenario(answered=False, rejected=["403"]).replace("INVITE sip:[service]@[tenant]",
                                                                            "INVITE sip:[service]@" + B)
    scenario = scenario.replace("To: <sip:[service]@[tenant]>", "To: <sip:[service]@" + B + ">")
    code, log, errors = sip.sipp(scenario, "127.0.0.42", {"tenant": A, "user": "1001", "service": "2001"},
                                 auth=("1001", PASSWORD))
    assert code == 0, errors
    assert "403 Cross-Tenant Requests Not Allowed" in log


def test_with_one_media_node_down_calls_go_to_the_other(tenants, media):
    down, up = media[A_NODES[0]], media[A_NODES[1]]
    down.stop()
    try:
        before = len(up.received("INVITE"))
        for index in range(3):
            code, log, errors = call(f"127.0.0.{51 + index}", A, "1001", "500", hold_ms=100)
            assert code == 0, errors
        assert len(up.received("INVITE")) == before + 3
        # The failed INVITE, or else dispatcher's probing (lab: one missed OPTIONS
        # every 2 s), marks the dead node inactive. A dispatcher.reload by an
        # earlier test resets the flags, so allow a few probe rounds.
        def dead_node_flags():
            return sip.dispatcher_flags().get(f"sip:{A_NODES[0]}", "")
        assert sip.wait_for(lambda: dead_node_flags().startswith("I"), timeout=20), dead_node_flags()
        # And it stays out: a probe that times out (a local 408) must not count as an answer.
        time.sleep(6)
        assert dead_node_flags().startswith("I"), dead_node_flags()
    finally:
        media[A_NODES[0]] = sip.standin(A_NODES[0])


# --- calls to devices ---


def test_a_media_node_rings_a_registered_device(tenants, media):
    # A device registers from the socket it answers on (Kamailio reaches it there).
    assert register("127.0.0.61", A, "1002", PASSWORD, contact="127.0.0.61:5090", port=5090)[0] == 0
    callee = sip.SippProcess(CALLEE, "127.0.0.61", 5090)
    try:
        ip, port = QUIET_NODE.split(":")
        code, log, errors = sip.sipp(sip.call_scenario(authenticate=False, hold_ms=200), ip,
                                     {"tenant": A, "user": "media", "service": "1002"}, port=int(port))
        assert code == 0, errors
        invites = callee.received("INVITE")
        assert len(invites) == 1
        # The lab offers devices optional SRTP (OSRTP): one audio line, RTP/AVP, with
        # the seed's two SDES suites and nothing else.
        audio = re.findall(r"(?m)^m=audio \d+ (\S+)", invites[0])
        assert audio == ["RTP/AVP"], invites[0]
        suites = re.findall(r"(?m)^a=crypto:\d+ (\S+)", invites[0])
        assert sorted(suites) == ["AES_CM_128_HMAC_SHA1_32", "AES_CM_128_HMAC_SHA1_80"], invites[0]
        assert "a=fingerprint" not in invites[0]  # SDES only, no DTLS-SRTP
    finally:
        callee.stop()


def test_a_device_speaking_srtp_gets_srtp_and_the_media_node_plain_rtp(tenants, media):
    # SRTP is the edge's business: RTPEngine decrypts, the node sees RTP/AVP without keys.
    device = sipclient.UdpPeer("127.0.0.64")
    try:
        dialog = sipclient.call(device, sip.KAMAILIO, A, "1001", PASSWORD, "500", srtp=True)
        node_invites = [invite for address in A_NODES for invite in media[address].received("INVITE")
                        if dialog["call_id"] in invite]
        assert len(node_invites) == 1
        assert re.findall(r"(?m)^m=audio \d+ (\S+)", node_invites[0]) == ["RTP/AVP"]
        assert "a=crypto" not in node_invites[0]
        # The device's answer is SRTP, with a key of the suite it offered.
        assert re.findall(r"(?m)^m=audio \d+ (\S+)", dialog["answer"]) == ["RTP/SAVP"]
        assert re.search(r"(?m)^a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:", dialog["answer"])
        device.send(sipclient.in_dialog("BYE", device, dialog), sip.KAMAILIO)
        assert device.final_response().startswith("SIP/2.0 200")
    finally:
        device.close()
        sip.end_test_dialogs()


def test_the_same_call_from_any_other_address_is_challenged(tenants, media):
    code, log, errors = sip.sipp(sip.call_scenario(authenticate=False, answered=False, rejected=["407"]),
                                 "127.0.0.62", {"tenant": A, "user": "media", "service": "1002"})
    assert code == 0, errors
    assert "407 Proxy Authentication Required" in log


def test_a_call_to_an_unregistered_device_is_480(tenants, media):
    ip, port = QUIET_NODE.split(":")
    code, log, errors = sip.sipp(sip.call_scenario(authenticate=False, answered=False, rejected=["480"]), ip,
                                 {"tenant": A, "user": "media", "service": "1001-nobody"}, port=int(port))
    assert code == 0, errors
    assert "480 Temporarily Unavailable" in log


def test_a_device_behind_nat_is_reached_at_its_public_address(tenants, media):
    # The device says it is at a private address; Kamailio must use where the
    # REGISTER came from (127.0.0.63:5062, its "public" NAT binding).
    assert register("127.0.0.63", A, "1003", PASSWORD, contact="192.168.1.23:5060", port=5062)[0] == 0
    callee = sip.SippProcess(CALLEE, "127.0.0.63", 5062)
    try:
        ip, port = QUIET_NODE.split(":")
        code, log, errors = sip.sipp(sip.call_scenario(authenticate=False, hold_ms=200), ip,
                                     {"tenant": A, "user": "media", "service": "1003"}, port=int(port))
        assert code == 0, errors
        assert len(callee.received("INVITE")) == 1
        # Kamailio keeps the device's NAT binding alive with OPTIONS pings.
        assert sip.wait_for(lambda: callee.received("OPTIONS"), timeout=15)
    finally:
        callee.stop()


# --- protection ---


def test_a_flooding_source_is_banned_while_others_still_register(tenants):
    flood = sip._scenario("flood", ["""
  <send><![CDATA[
      OPTIONS sip:flood@[tenant] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:flood@[tenant]>;tag=[call_number]
      To: <sip:flood@[tenant]>
      Call-ID: [call_id]
      CSeq: 1 OPTIONS
      Max-Forwards: 70
      Content-Length: 0

    ]]></send>"""])
    sip.sipp(flood, "127.0.0.71", {"tenant": A}, calls=600, rate=300, timeout=20)
    # The flooder gets no answer at all now ...
    code, log, errors = register("127.0.0.71", A, "1001", PASSWORD)
    assert code != 0 and not re.search(r"^SIP/2.0 \d{3}", log, re.M)
    # ... while another source registers.
    assert register("127.0.0.72", A, "1001", PASSWORD)[0] == 0
    assert sip.wait_for(lambda: "pike bans 127.0.0.71" in kamailio_log(), timeout=5)


def test_malformed_requests_do_not_crash_kamailio(tenants):
    pids = set(subprocess.run(["pgrep", "-x", "kamailio"], capture_output=True, text=True).stdout.split())
    sent = sipclient.send_malformed(sip.KAMAILIO, local_ips=[f"127.0.0.{80 + i}" for i in range(10)])
    assert sent >= 100
    time.sleep(1)
    assert set(subprocess.run(["pgrep", "-x", "kamailio"], capture_output=True, text=True).stdout.split()) == pids
    assert sipclient.options(sip.KAMAILIO, local_ip="127.0.0.79").startswith("SIP/2.0 200 Keepalive")
    assert register("127.0.0.78", A, "1001", PASSWORD)[0] == 0


def test_call_rates_do_not_depend_on_redis(tenants, media):
    # Kamailio counts calls per second in its own (DMQ-shared) table: Redis, on the
    # coordinator only, is not on a call's path.
    logged_before = len(kamailio_log())
    subprocess.run(["service", "redis-server", "stop"], capture_output=True, check=True)
    try:
        code, log, errors = call("127.0.0.91", B, "2001", "500", hold_ms=100)
        assert code == 0, errors
        assert "redis" not in kamailio_log()[logged_before:].lower()
        assert not re.search(r"(?m)^loadmodule \"ndb_redis", Path("/etc/kamailio/kamailio.cfg").read_text())
    finally:
        subprocess.run(["service", "redis-server", "start"], capture_output=True, check=True)


def test_rpc_is_on_the_internal_address_only(lab):
    with socket.socket() as sock:
        sock.settimeout(2)
        assert sock.connect_ex(("127.0.0.1", 8080)) != 0
    assert sip.rpc("core.version").startswith("kamailio")


def test_the_labs_media_standins_are_its_dispatcher_set(lab):
    listing = sip.rpc("dispatcher.list")
    lab_set = [dset["SET"] for dset in listing["RECORDS"] if dset["SET"]["ID"] == 1][0]
    targets = {target["DEST"]["URI"]: target["DEST"]["FLAGS"] for target in lab_set["TARGETS"]}
    assert targets == {"sip:127.28.1.1:5080": "AP", "sip:127.28.1.2:5080": "AP"}
