"""
FreeSWITCH's configuration over mod_xml_curl: the directory (a tenant's user, for
SIP digest auth) and the dialplan (a context per tenant).

mod_xml_curl POSTs form fields; a "not found" answer makes FreeSWITCH fall through
to its (empty) static XML. Only registered FreeSWITCH nodes may ask: HTTP Basic
credentials per node (its minion id and password) from the node's own address.
"""

import re
from xml.etree import ElementTree as ET

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import Response
from fastapi.security import HTTPBasic, HTTPBasicCredentials

from .models import is_domain
from .passwords import DUMMY_HASH, verify_password_cached

router = APIRouter(prefix="/v1")
basic = HTTPBasic(auto_error=False)
NODE_ID = re.compile(r"fs-[a-z]+-[0-9]+")
EXTENSION = re.compile(r"[0-9]{2,15}")
XML = "text/xml"
NOT_FOUND = ('<?xml version="1.0" encoding="UTF-8" standalone="no"?>\n<document type="freeswitch/xml">'
             '<section name="result"><result status="not found"/></section></document>')


def media_node(request: Request, credentials: HTTPBasicCredentials | None = Depends(basic)):
    """The calling FreeSWITCH node: known, active, from its own address, with its password."""
    refused = HTTPException(401, detail="FreeSWITCH node credentials required",
                            headers={"WWW-Authenticate": "Basic"})
    if credentials is None or not NODE_ID.fullmatch(credentials.username):
        raise refused
    with request.app.state.db.transaction() as cursor:
        cursor.execute("SELECT minion_id, host(address) AS address, xml_curl_password_hash FROM gopbx.nodes "
                       "WHERE minion_id = %s AND state = 'active'", (credentials.username,))
        node = cursor.fetchone()
    # Verify a hash even for an unknown node, so timing does not tell which nodes exist.
    stored = node["xml_curl_password_hash"] if node and node["xml_curl_password_hash"] else DUMMY_HASH
    if not verify_password_cached(credentials.password, stored) or node is None:
        raise refused
    # Nodes talk to the API directly, never through Nginx: a forwarded request is
    # not a node's, whatever address its headers claim.
    # (uvicorn trusts forwarded headers from Nginx's address only, so request.client
    # is the TCP peer here.)
    if "x-forwarded-for" in request.headers or request.client is None or request.client.host != node["address"]:
        raise HTTPException(403, detail="not from that node's address")
    return node["minion_id"]


def _document(section):
    document = ET.Element("document", type="freeswitch/xml")
    return document, ET.SubElement(document, "section", name=section)


def _reply(document):
    body = ET.tostring(document, encoding="unicode")
    return Response('<?xml version="1.0" encoding="UTF-8" standalone="no"?>\n' + body, media_type=XML)


def _param(parent, tag, name, value):
    ET.SubElement(parent, tag, name=name, value=str(value))


@router.post("/freeswitch/directory")
async def directory(request: Request, node: str = Depends(media_node)):
    form = await request.form()
    domain, user = form.get("domain", ""), form.get("user", "")
    if form.get("section") != "directory" or not is_domain(domain) or not EXTENSION.fullmatch(user):
        return Response(NOT_FOUND, media_type=XML)
    with request.app.state.db.transaction() as cursor:
        cursor.execute("SELECT e.number, e.caller_id_name, s.ha1 FROM gopbx.extensions e "
                       "JOIN gopbx.tenants t ON t.id = e.tenant_id "
                       "JOIN subscriber s ON s.username = e.number AND s.domain = t.domain "
                       "WHERE t.domain = %s AND e.number = %s AND e.enabled AND t.enabled", (domain, user))
        row = cursor.fetchone()
    if row is None:
        return Response(NOT_FOUND, media_type=XML)
    document, section = _document("directory")
    domain_element = ET.SubElement(section, "domain", name=domain)
    user_element = ET.SubElement(domain_element, "user", id=row["number"])
    params = ET.SubElement(user_element, "params")
    _param(params, "param", "a1-hash", row["ha1"])
    variables = ET.SubElement(user_element, "variables")
    # The dialplan context is the tenant (FreeSWITCH hands it back as Hunt-Context).
    _param(variables, "variable", "user_context", domain)
    _param(variables, "variable", "effective_caller_id_name", row["caller_id_name"] or row["number"])
    _param(variables, "variable", "effective_caller_id_number", row["number"])
    _param(variables, "variable", "gopbx_tenant", domain)
    return _reply(document)


@router.post("/freeswitch/dialplan")
async def dialplan(request: Request, node: str = Depends(media_node)):
    form = await request.form()
    settings = request.app.state.settings
    context = form.get("Hunt-Context", "")
    # A call from Kamailio lands in the SIP profile's context and names its tenant in
    # X-GoPBX-Tenant (Kamailio stamps it, and only Kamailio's addresses reach the
    # profile); a call from a user the directory served hunts in its tenant's context.
    if context == settings.freeswitch_inbound_context:
        tenant = form.get("variable_sip_h_X-GoPBX-Tenant", "")
    else:
        tenant = context
    if form.get("section") != "dialplan" or not is_domain(tenant):
        return Response(NOT_FOUND, media_type=XML)
    with request.app.state.db.transaction() as cursor:
        cursor.execute("SELECT 1 FROM gopbx.tenants WHERE domain = %s AND enabled", (tenant,))
        if cursor.fetchone() is None:
            return Response(NOT_FOUND, media_type=XML)
    document, section = _document("dialplan")
    context_element = ET.SubElement(section, "context", name=context)
    # 1. The tenant's concurrent-call limit, from Kamailio's X-GoPBX-MaxCalls. An empty
    #    or odd value would make 'limit' read its next argument as the maximum, so the
    #    value must be digits; without it the call is refused.
    limit = ET.SubElement(context_element, "extension", {"name": "gopbx-tenant-limit", "continue": "true"})
    condition = ET.SubElement(limit, "condition", field="${sip_h_X-GoPBX-MaxCalls}", expression="^[0-9]+$")
    #    'limit' runs when the call executes (FreeSWITCH cannot run it inline while
    #    hunting: "This application cannot be executed inline").
    ET.SubElement(condition, "action", application="limit",
                  data=f"hash gopbx {tenant} ${{sip_h_X-GoPBX-MaxCalls}} !USER_BUSY")
    ET.SubElement(condition, "action", application="set", data="continue_on_fail=false", inline="true")
    ET.SubElement(condition, "anti-action", application="respond", data="403 Missing tenant call limit")
    # 2. Extension to extension inside the tenant: back through the Kamailio the call
    #    came from (fs_path: the a-leg's source, sofia's sip_network_ip and _port,
    #    expanded when bridge runs; the node's ACL admits Kamailio hosts only, and
    #    with an HA pair it is the active one), which delivers to the device's
    #    registration; the b-leg's From carries the tenant's domain (sofia reads
    #    sip_invite_domain on the b-leg, so it goes in the dial string), so the
    #    callee can call back. Nothing routes to another tenant. No <...> in the
    #    dial string: sofia takes the first one as the destination.
    local = ET.SubElement(context_element, "extension", name="gopbx-local-extension")
    condition = ET.SubElement(local, "condition", field="destination_number", expression="^([0-9]{2,15})$")
    ET.SubElement(condition, "action", application="set", data="sip_copy_custom_headers=false")
    ET.SubElement(condition, "action", application="bridge",
                  data=f"{{sip_invite_domain={tenant}}}sofia/{settings.freeswitch_profile}/sip:$1@{tenant}"
                       ";fs_path=sip:${sip_network_ip}:${sip_network_port}")
    # 3. Anything else is refused.
    refuse = ET.SubElement(context_element, "extension", name="gopbx-no-route")
    condition = ET.SubElement(refuse, "condition", field="destination_number", expression="^.*$")
    ET.SubElement(condition, "action", application="respond", data="404 No Route")
    return _reply(document)

