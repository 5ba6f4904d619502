"""mod_xml_curl: FreeSWITCH's directory and dialplan, served only to registered nodes."""

import subprocess
from xml.etree import ElementTree as ET

import pytest
from fastapi.testclient import TestClient

from gopbx_api import passwords
from tests.doubles import freeswitch_rules

SUFFIX = ".apitest.invalid"
T = "x" + SUFFIX
NODE, NODE_ADDRESS, NODE_PASSWORD = "fs-apitest-1", "127.0.0.5", "node-password-123456"


@pytest.fixture(scope="module")
def setup(app, admin, client, salt_db):
    with salt_db() as conn, conn.cursor() as cursor:
        cursor.execute("INSERT INTO gopbx.nodes (minion_id, address, setid, capacity, xml_curl_password_hash) "
                       "VALUES (%s, %s, 1, 100, %s)", (NODE, NODE_ADDRESS, passwords.hash_password(NODE_PASSWORD)))
    body = {"domain": T, "name": T, "max_calls": 3, "calls_per_second": 5, "dispatcher_set": 1}
    assert client.post("/v1/tenants", json=body, headers=admin).status_code == 201
    reply = client.post(f"/v1/tenants/{T}/extensions",
                        json={"number": "1001", "password": "Good-Pass-1234", "caller_id_name": "Reception"},
                        headers=admin)
    assert reply.status_code == 201


@pytest.fixture(scope="module")
def node(app, setup):
    return TestClient(app, client=(NODE_ADDRESS, 50000))


def post(client, path, form, auth=(NODE, NODE_PASSWORD)):
    return client.post(f"/v1/freeswitch/{path}", data=form, auth=auth)


def well_formed(text):
    result = subprocess.run(["xmllint", "--noout", "-"], input=text, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    return ET.fromstring(text.encode())


DIRECTORY = {"section": "directory", "tag_name": "domain", "key_name": "name", "key_value": T, "user": "1001",
             "domain": T, "action": "sip_auth"}


def test_the_directory_gives_a_tenants_user_with_its_ha1(node):
    reply = post(node, "directory", DIRECTORY)
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/xml")
    document = well_formed(reply.text)
    assert document.tag == "document" and document.get("type") == "freeswitch/xml"
    user = document.find("./section[@name='directory']/domain[@name='%s']/user[@id='1001']" % T)
    assert user is not None
    params = {p.get("name"): p.get("value") for p in user.findall("./params/param")}
    assert params == {"a1-hash": passwords.sip_ha1("1001", T, "Good-Pass-1234")[0]}
    variables = {v.get("name"): v.get("value") for v in user.findall("./variables/variable")}
    assert variables["user_context"] == T and variables["effective_caller_id_name"] == "Reception"


@pytest.mark.parametrize("change", [{"user": "9999"}, {"domain": "other" + SUFFIX}, {"section": "configuration"},
                                    {"user": "1001' OR 1=1 --"}])
def test_a_miss_is_the_not_found_document(node, change):
    reply = post(node, "directory", {**DIRECTORY, **change})
    result = well_formed(reply.text).find("./section[@name='result']/result")
    assert reply.status_code == 200 and result is not None and result.get("status") == "not found"


def test_the_dialplan_is_a_context_per_tenant_with_a_guarded_limit(node):
    reply = post(node, "dialplan", {"section": "dialplan", "Hunt-Context": T, "Caller-Destination-Number": "1002"})
    document = well_formed(reply.text)
    context = document.find("./section[@name='dialplan']/context[@name='%s']" % T)
    assert context is not None
    limit = context.find("./extension[@name='gopbx-tenant-limit']")
    condition = limit.find("condition")
    assert (condition.get("field"), condition.get("expression")) == ("${sip_h_X-GoPBX-MaxCalls}", "^[0-9]+$")
    assert condition.find("action[@application='limit']").get("data") == \
        f"hash gopbx {T} ${{sip_h_X-GoPBX-MaxCalls}} !USER_BUSY"
    assert condition.find("anti-action").get("data").startswith("403")
    assert_freeswitch_would_call_the_extension_through_kamailio(context)
    # Nothing in the context leads to another tenant.
    assert all(T in action.get("data", T) or "@" not in action.get("data", "")
               for action in context.iter("action"))


def test_a_call_from_kamailio_takes_its_tenant_from_the_header(node):
    # Calls from Kamailio land in the SIP profile's context with X-GoPBX-Tenant.
    reply = post(node, "dialplan", {"section": "dialplan", "Hunt-Context": "kamailio",
                                    "variable_sip_h_X-GoPBX-Tenant": T, "Caller-Destination-Number": "1002"})
    context = well_formed(reply.text).find("./section[@name='dialplan']/context[@name='kamailio']")
    assert context is not None
    limit = context.find("./extension[@name='gopbx-tenant-limit']/condition/action[@application='limit']")
    assert limit.get("data") == f"hash gopbx {T} ${{sip_h_X-GoPBX-MaxCalls}} !USER_BUSY"
    assert_freeswitch_would_call_the_extension_through_kamailio(context)


def assert_freeswitch_would_call_the_extension_through_kamailio(context):
    """Read as FreeSWITCH reads it (tests/doubles/freeswitch_rules: from its source)."""
    assert freeswitch_rules.inline_refusals(context) == []
    local = context.find("./extension[@name='gopbx-local-extension']/condition")
    bridge = local.find("action[@application='bridge']")
    # The callee, sent by way of Kamailio's SIP socket (not Kamailio itself as the callee),
    # sees the tenant's domain as the caller's (a b-leg variable), so it can call back.
    assert freeswitch_rules.sofia_destination(bridge.get("data")) == \
        (f"sip:$1@{T}", "sip:${sip_network_ip}:${sip_network_port}", {"sip_invite_domain": T})
    sets = [action.get("data") for action in local.findall("action[@application='set']")]
    assert "sip_copy_custom_headers=false" in sets
    # limit runs when the call executes (it cannot run inline), before the bridge.
    limit = context.find(".//action[@application='limit']")
    assert limit.get("inline") is None
    actions = [action.get("application") for action in context.iter("action")]
    assert actions.index("limit") < actions.index("bridge")


def test_the_rules_of_the_freeswitch_double_catch_last_rounds_defects():
    # What the API once sent, and a real FreeSWITCH 1.10.12 refused.
    assert freeswitch_rules.sofia_destination(f"sofia/internal/sip:$1@{T};fs_path=<sip:127.0.0.1:5060>") == \
        ("sip:127.0.0.1:5060", None, {})
    old = ET.fromstring('<extension><condition><action application="limit" data="hash a b 1" inline="true"/>'
                        '<action application="set" data="x=1" inline="true"/></condition></extension>')
    assert freeswitch_rules.inline_refusals(old) == ["limit"]


@pytest.mark.parametrize("fields", [
    {"Hunt-Context": "kamailio"},                                                   # no tenant header
    {"Hunt-Context": "kamailio", "variable_sip_h_X-GoPBX-Tenant": "nobody" + SUFFIX},
    {"Hunt-Context": "kamailio", "variable_sip_h_X-GoPBX-Tenant": "bad domain'--"},
])
def test_a_call_from_kamailio_without_a_known_tenant_is_not_found(node, fields):
    reply = post(node, "dialplan", {"section": "dialplan", **fields})
    assert well_formed(reply.text).find("./section/result").get("status") == "not found"


def test_the_header_counts_only_in_the_kamailio_context(node):
    # A user's own tenant context is never swapped for another by a header.
    reply = post(node, "dialplan", {"section": "dialplan", "Hunt-Context": "nobody" + SUFFIX,
                                    "variable_sip_h_X-GoPBX-Tenant": T})
    assert well_formed(reply.text).find("./section/result").get("status") == "not found"


def test_an_unknown_context_is_not_found(node):
    reply = post(node, "dialplan", {"section": "dialplan", "Hunt-Context": "nobody" + SUFFIX})
    assert well_formed(reply.text).find("./section/result").get("status") == "not found"


def test_only_registered_nodes_from_their_own_address_may_ask(app, node):
    assert post(node, "directory", DIRECTORY, auth=None).status_code == 401
    assert post(node, "directory", DIRECTORY, auth=(NODE, "wrong-password")).status_code == 401
    assert post(node, "directory", DIRECTORY, auth=("fs-apitest-9", NODE_PASSWORD)).status_code == 401
    elsewhere = TestClient(app, client=("127.0.0.99", 50000))
    reply = post(elsewhere, "directory", DIRECTORY)
    assert reply.status_code == 403 and "a1-hash" not in reply.text
