#!/usr/bin/python3
"""
A DOUBLE of FreeSWITCH 1.10 for the multi-host lab's media nodes (lab only).

FreeSWITCH has no Debian 12 package, so on the lab's fs-* machines the freeswitch
formula runs for real (its configuration, its reloads, its ready event) and this
program stands where the FreeSWITCH binary would, reading that configuration as
FreeSWITCH does and doing the little a GoPBX media node does:

- SIP on the `internal` profile's sip-ip:sip-port, for the profile's inbound ACL
  only (anyone else: 403); OPTIONS answered;
- for an INVITE, the dialplan from the API over HTTP as mod_xml_curl fetches it
  (the binding's URL and Basic credentials, from bind-local), then the actions:
  `set`, `limit` (hash backend, per realm and resource; over the maximum the call
  is refused with 486, USER_BUSY), `respond`, and `bridge` to a sofia dial string
  read as sofia reads it (the first <...> is the destination, ';fs_path=' the
  route, a leading {...} sets b-leg variables such as sip_invite_domain, without
  which From carries the node's address);
- the bridge as a back-to-back call through the route, with RTP relayed between
  the legs on the node's own address, and BYE passed across;
- the event socket on its listen-ip/port, for its inbound ACL and password only:
  `api` (status, show channels as json, uuid_getvar, uuid_kill, reloadxml,
  reloadacl, reload mod_xml_curl: the last re-reads the xml_curl bindings, as the
  real module does only when it loads) and `event plain` with CHANNEL_CREATE,
  CHANNEL_ANSWER and CHANNEL_HANGUP_COMPLETE for the a-legs.

It is not FreeSWITCH: no codecs, no media processing, no registrations.
"""

import http.client
import ipaddress
import json
import logging
import os
import random
import re
import socket
import socketserver
import threading
import time
import uuid
from base64 import b64encode
from pathlib import Path
from urllib.parse import quote, urlencode, urlsplit
from xml.etree import ElementTree as ET

CONFIG = Path(os.environ.get("FREESWITCH_CONF_DIR", "/etc/freeswitch")) / "autoload_configs"
log = logging.getLogger("freeswitch-double")
# mod_dptools' applications with SAF_ROUTING_EXEC: the only ones FreeSWITCH runs
# inline ("This application cannot be executed inline" for the rest, 'limit' among them).
INLINE = {"set", "export", "unset", "log", "info", "eval", "event", "multiset", "push", "unshift", "set_global",
          "set_profile_var", "set_user", "check_acl", "verbose_events", "presence", "novideo", "cng_plc",
          "early_hangup", "set_media_stats", "stop", "bridge_export", "set_zombie_exec", "multiunset"}


def params(element):
    return {param.get("name"): param.get("value") for param in element.iter("param")}


def load_config():
    """The parts of the rendered configuration this double acts on."""
    acls = {}
    for network_list in ET.parse(CONFIG / "acl.conf.xml").getroot().iter("list"):
        acls[network_list.get("name")] = network_list
    profile = params(next(ET.parse(CONFIG / "sofia.conf.xml").getroot().iter("profile")))
    esl = params(ET.parse(CONFIG / "event_socket.conf.xml").getroot())
    switch = params(ET.parse(CONFIG / "switch.conf.xml").getroot())
    rtp_ports = (int(switch.get("rtp-start-port", 16384)), int(switch.get("rtp-end-port", 32768)))
    return {"acls": acls, "profile": profile, "esl": esl, "xml_curl": load_bindings(), "rtp_ports": rtp_ports}


def load_bindings():
    bindings = {}
    for binding in ET.parse(CONFIG / "xml_curl.conf.xml").getroot().iter("binding"):
        bindings[binding.get("name")] = params(binding)
    return bindings


def acl_allows(network_list, address):
    """FreeSWITCH's ACL check: the first <node> whose cidr holds the address, else the list's default."""
    for node in network_list:
        if ipaddress.ip_address(address) in ipaddress.ip_network(node.get("cidr"), strict=False):
            return node.get("type") == "allow"
    return network_list.get("default") == "allow"


def sofia_destination(dial_string):
    """
    (request URI, route, b-leg variables) of a sofia dial string, as mod_sofia reads
    it (sofia_glue_get_destination): if the destination holds a '<', only what lies
    between the first '<' and '>' counts (so 'sip:1@t;fs_path=<sip:proxy>' calls the
    proxy itself); ';fs_path=' splits off the route (up to the next ';' or '>'); a
    leading {...} sets b-leg variables (the only place sip_invite_domain takes effect).
    """
    match = re.fullmatch(r"(?:\{([^}]*)\})?sofia/([^/]+)/(.+)", dial_string)
    variables = dict(item.split("=", 1) for item in match.group(1).split(",")) if match.group(1) else {}
    contact = match.group(3)
    if "<" in contact:
        contact = contact[contact.index("<") + 1:].split(">", 1)[0]
    route = None
    if ";fs_path=" in contact:
        contact, route = contact.split(";fs_path=", 1)
        route = re.split(r"[;>]", route, maxsplit=1)[0]
    return contact, route, variables


# --- SIP ---

def parse(data):
    head, _, body = data.partition("\r\n\r\n")
    lines = head.split("\r\n")
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.append((name.strip(), value.strip()))
    return lines[0], headers, body


def get(headers, name, default=""):
    for key, value in headers:
        if key.lower() == name.lower():
            return value
    return default


def get_all(headers, name):
    return [value for key, value in headers if key.lower() == name.lower()]


def tag(value):
    found = re.search(r";\s*tag=([^;>\s]+)", value)
    return found.group(1) if found else ""


def uri_address(uri):
    found = re.search(r"sips?:(?:[^@;>]*@)?([^:;>]+)(?::(\d+))?", uri)
    return found.group(1), int(found.group(2) or 5060)


def sdp_media(body):
    address = re.search(r"(?m)^c=IN IP4 (\S+)", body)
    port = re.search(r"(?m)^m=audio (\d+)", body)
    return (address.group(1), int(port.group(1))) if address and port else None


def sdp_for(address, port):
    return (f"v=0\r\no=FreeSWITCH-double 1 1 IN IP4 {address}\r\ns=FreeSWITCH double\r\nc=IN IP4 {address}\r\n"
            f"t=0 0\r\nm=audio {port} RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
            "a=fmtp:101 0-15\r\na=ptime:20\r\n")


def bind_rtp(address, ports):
    """A UDP socket on an even port of switch.conf's rtp-start-port..rtp-end-port, as FreeSWITCH allocates them."""
    candidates = list(range(ports[0] + ports[0] % 2, ports[1], 2))
    random.shuffle(candidates)
    for port in candidates:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind((address, port))
            return sock
        except OSError:
            sock.close()
    raise OSError(f"no free RTP port in {ports[0]}-{ports[1]}")


class Relay:
    """RTP between the two legs, on two sockets of the node's own address, in its RTP port range."""

    def __init__(self, address, ports):
        self.sockets = [bind_rtp(address, ports) for _ in range(2)]
        for sock in self.sockets:
            sock.settimeout(0.5)
        self.remote = [None, None]
        self.running = True
        for side in (0, 1):
            threading.Thread(target=self._pump, args=(side,), daemon=True).start()

    def port(self, side):
        return self.sockets[side].getsockname()[1]

    def _pump(self, side):
        while self.running:
            try:
                packet, source = self.sockets[side].recvfrom(4096)
            except (socket.timeout, OSError):
                continue
            self.remote[side] = self.remote[side] or source
            other = 1 - side
            if self.remote[other]:
                self.sockets[other].sendto(packet, self.remote[other])

    def close(self):
        self.running = False
        for sock in self.sockets:
            sock.close()


class Call:
    def __init__(self, a_request, a_headers, a_source):
        self.uuid = str(uuid.uuid4())
        self.a_headers, self.a_source, self.a_request = a_headers, a_source, a_request
        self.a_tag = uuid.uuid4().hex[:12]
        self.b = None
        self.relay = None
        self.limit_key = None
        self.variables = {}


class SipDouble:
    def __init__(self, node):
        self.node = node
        config = node.config
        self.address, self.port = config["profile"]["sip-ip"], int(config["profile"]["sip-port"])
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((self.address, self.port))
        self.calls_by_a, self.calls_by_b = {}, {}
        self.limits = {}
        self.lock = threading.Lock()

    def serve(self):
        while True:
            data, source = self.sock.recvfrom(65535)
            try:
                self.handle(data.decode("utf-8", "replace"), source)
            except Exception:  # noqa: BLE001  (a double logs and goes on, as a server would)
                log.exception("failed on a message from %s", source)

    def send(self, text, target):
        self.sock.sendto(text.encode(), target)

    def reply(self, headers, source, code, reason, extra=(), body="", to_tag=""):
        lines = [f"SIP/2.0 {code} {reason}"]
        lines += [f"Via: {via}" for via in get_all(headers, "Via")]
        lines += [f"Record-Route: {rr}" for rr in get_all(headers, "Record-Route")]
        to = get(headers, "To")
        if to_tag and "tag=" not in to:
            to += f";tag={to_tag}"
        lines += [f"From: {get(headers, 'From')}", f"To: {to}", f"Call-ID: {get(headers, 'Call-ID')}",
                  f"CSeq: {get(headers, 'CSeq')}", f"Contact: <sip:mod_sofia@{self.address}:{self.port}>",
                  "User-Agent: FreeSWITCH-double", *extra]
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body.encode())}")
        self.send("\r\n".join(lines) + "\r\n\r\n" + body, source)

    def handle(self, data, source):
        first, headers, body = parse(data)
        if first.startswith("SIP/2.0 "):
            return self.on_response(first, headers, body)
        method = first.split()[0]
        inbound = self.node.config["acls"][self.node.config["profile"]["apply-inbound-acl"]]
        if not acl_allows(inbound, source[0]):
            if method != "ACK":
                self.reply(headers, source, 403, "Forbidden")
            return
        call_id = get(headers, "Call-ID")
        if method == "OPTIONS":
            self.reply(headers, source, 200, "OK")
        elif method == "INVITE" and call_id not in self.calls_by_a:
            self.reply(headers, source, 100, "Trying")
            threading.Thread(target=self.on_invite, args=(first, headers, body, source), daemon=True).start()
        elif method == "BYE":
            self.on_bye(headers, source)
        elif method in ("ACK", "INVITE"):
            pass
        else:
            self.reply(headers, source, 200, "OK")

    def on_invite(self, first, headers, body, source):
        call = Call(first, headers, source)
        with self.lock:
            self.calls_by_a[get(headers, "Call-ID")] = call
        destination = re.search(r"sip:([^@;>]+)@", first).group(1)
        caller = re.search(r"sip:([^@;>]+)@", get(headers, "From"))
        fields = {"section": "dialplan", "Hunt-Context": self.node.config["profile"].get("context", "public"),
                  "Caller-Destination-Number": destination, "Caller-Caller-ID-Number": caller.group(1) if caller else ""}
        for name, value in headers:
            if name.lower().startswith("x-"):
                fields[f"variable_sip_h_{name}"] = value
        call.variables = {f"sip_h_{name}": value for name, value in headers if name.lower().startswith("x-")}
        # sofia's own: where the INVITE came from (sofia_handle_sip_i_invite).
        call.variables.update(destination_number=destination, caller=fields["Caller-Caller-ID-Number"],
                              sip_network_ip=source[0], sip_network_port=str(source[1]))
        document = self.node.fetch("dialplan", fields)
        actions = self.hunt(document, fields["Hunt-Context"], call.variables)
        if actions is None:
            return self.end_a(call, 404, "Not Found")
        self.node.channel_event("CHANNEL_CREATE", call, fields)
        for application, data, inline in actions:
            if inline and application not in INLINE:
                log.error("%s: This application cannot be executed inline", application)
                continue
            data = re.sub(r"\$\{([^}]+)\}", lambda m: call.variables.get(m.group(1), ""), data or "")
            if application == "set":
                name, _, value = data.partition("=")
                call.variables[name] = value
            elif application == "limit":
                if not self.take_limit(call, data):
                    return self.end_a(call, 486, "Busy Here", "USER_BUSY")
            elif application == "respond":
                code, _, reason = data.partition(" ")
                return self.end_a(call, int(code), reason or "Refused")
            elif application == "bridge":
                return self.bridge(call, data, body)
        self.end_a(call, 480, "Temporarily Unavailable")

    def hunt(self, document, context_name, variables):
        """The actions of the matching extensions, as mod_dialplan_xml collects them."""
        root = ET.fromstring(document)
        result = root.find("./section/result")
        if result is not None and result.get("status") == "not found":
            return None
        context = root.find(f"./section[@name='dialplan']/context[@name='{context_name}']")
        if context is None:
            return None
        actions = []
        for extension in context.findall("extension"):
            matched = True
            for condition in extension.findall("condition"):
                field = condition.get("field", "")
                value = (re.sub(r"\$\{([^}]+)\}", lambda m: variables.get(m.group(1), ""), field)
                         if field.startswith("${") else variables.get(field, ""))
                found = re.search(condition.get("expression", ""), value)
                if found:
                    for action in condition.findall("action"):
                        data = re.sub(r"\$(\d)", lambda m: found.group(int(m.group(1))) or "", action.get("data", ""))
                        actions.append((action.get("application"), data, action.get("inline") == "true"))
                else:
                    matched = False
                    for action in condition.findall("anti-action"):
                        actions.append((action.get("application"), action.get("data", ""), False))
            if matched and extension.get("continue") != "true":
                break
        return actions

    def take_limit(self, call, data):
        backend, realm, resource, maximum = data.split()[:4]
        key = (backend, realm, resource)
        with self.lock:
            if self.limits.get(key, 0) >= int(maximum):
                return False
            self.limits[key] = self.limits.get(key, 0) + 1
        call.limit_key = key
        return True

    def release(self, call):
        if call.limit_key:
            with self.lock:
                self.limits[call.limit_key] -= 1
            call.limit_key = None
        if call.relay:
            call.relay.close()

    def end_a(self, call, code, reason, cause="CALL_REJECTED"):
        self.reply(call.a_headers, call.a_source, code, reason, to_tag=call.a_tag)
        self.release(call)
        self.node.channel_event("CHANNEL_HANGUP_COMPLETE", call, {"Hangup-Cause": cause})
        with self.lock:
            self.calls_by_a.pop(get(call.a_headers, "Call-ID"), None)

    def bridge(self, call, dial_string, a_body):
        destination, route, variables = sofia_destination(dial_string)
        call.relay = Relay(self.address, self.node.config["rtp_ports"])
        a_media = sdp_media(a_body)
        if a_media:
            call.relay.remote[0] = a_media
        domain = variables.get("sip_invite_domain", self.address)
        caller = call.variables.get("caller", "anonymous")
        b_call_id = uuid.uuid4().hex
        call.b = {"call_id": b_call_id, "from": f'"{caller}" <sip:{caller}@{domain}>;tag={uuid.uuid4().hex[:12]}',
                  "to": f"<{destination}>", "uri": destination, "cseq": 1,
                  "target": uri_address(route or destination)}
        with self.lock:
            self.calls_by_b[b_call_id] = call
        self.send_b(call, "INVITE", destination, body=sdp_for(self.address, call.relay.port(1)))

    def send_b(self, call, method, uri, routes=(), body="", cseq=None):
        b = call.b
        lines = [f"{method} {uri} SIP/2.0",
                 f"Via: SIP/2.0/UDP {self.address}:{self.port};branch=z9hG4bK{uuid.uuid4().hex};rport",
                 f"From: {b['from']}", f"To: {b['to']}", f"Call-ID: {b['call_id']}",
                 f"CSeq: {cseq or b['cseq']} {method}", f"Contact: <sip:mod_sofia@{self.address}:{self.port}>",
                 "Max-Forwards: 70", "User-Agent: FreeSWITCH-double"]
        lines += [f"Route: {route}" for route in routes]
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body.encode())}")
        self.send("\r\n".join(lines) + "\r\n\r\n" + body, b["target"])

    def on_response(self, first, headers, body):
        code = int(first.split()[1])
        call = self.calls_by_b.get(get(headers, "Call-ID"))
        if call is None or "INVITE" not in get(headers, "CSeq"):
            return
        if code == 180 or code == 183:
            self.reply(call.a_headers, call.a_source, 180, "Ringing", to_tag=call.a_tag)
        elif 200 <= code < 300:
            if "to_tag" in call.b:
                return  # a retransmitted 200
            call.b["to"] = get(headers, "To")
            call.b["to_tag"] = tag(call.b["to"])
            call.b["routes"] = list(reversed([route.strip() for value in get_all(headers, "Record-Route")
                                               for route in value.split(",")]))
            call.b["remote"] = re.search(r"<([^>]+)>", get(headers, "Contact")).group(1)
            b_media = sdp_media(body)
            if b_media:
                call.relay.remote[1] = b_media
            call.b["target"] = uri_address(call.b["routes"][0]) if call.b["routes"] else uri_address(call.b["remote"])
            self.send_b(call, "ACK", call.b["remote"], call.b["routes"], cseq=call.b["cseq"])
            self.reply(call.a_headers, call.a_source, 200, "OK", to_tag=call.a_tag,
                       body=sdp_for(self.address, call.relay.port(0)))
            self.node.channel_event("CHANNEL_ANSWER", call, {})
        elif code >= 300:
            self.send_b(call, "ACK", call.b["uri"], cseq=call.b["cseq"])
            self.end_a(call, code, first.split(" ", 2)[2])

    def on_bye(self, headers, source):
        self.reply(headers, source, 200, "OK")
        call_id = get(headers, "Call-ID")
        call = self.calls_by_a.pop(call_id, None)
        if call is not None and call.b and "remote" in call.b:
            call.b["cseq"] += 1
            self.send_b(call, "BYE", call.b["remote"], call.b["routes"])
        elif call is None and call_id in self.calls_by_b:
            call = self.calls_by_b[call_id]
            self.calls_by_a.pop(get(call.a_headers, "Call-ID"), None)
            self.send_a_bye(call)
        if call is not None:
            self.calls_by_b.pop(call.b["call_id"] if call.b else None, None)
            self.release(call)
            self.node.channel_event("CHANNEL_HANGUP_COMPLETE", call, {"Hangup-Cause": "NORMAL_CLEARING"})

    def send_a_bye(self, call):
        headers = call.a_headers
        contact = re.search(r"<([^>]+)>", get(headers, "Contact")).group(1)
        routes = [route.strip() for value in get_all(headers, "Record-Route") for route in value.split(",")]
        target = uri_address(routes[0]) if routes else uri_address(contact)
        to = get(headers, "To") + f";tag={call.a_tag}"
        lines = [f"BYE {contact} SIP/2.0",
                 f"Via: SIP/2.0/UDP {self.address}:{self.port};branch=z9hG4bK{uuid.uuid4().hex};rport",
                 f"From: {to}", f"To: {get(headers, 'From')}", f"Call-ID: {get(headers, 'Call-ID')}",
                 "CSeq: 1 BYE", "Max-Forwards: 70", *[f"Route: {route}" for route in routes], "Content-Length: 0"]
        self.send("\r\n".join(lines) + "\r\n\r\n", target)


# --- the event socket ---

def read_esl_command(rfile):
    """One client command (its lines up to a blank line, joined), or None when the client is gone."""
    lines = []
    while True:
        line = rfile.readline()
        if not line:
            return None
        line = line.decode("utf-8", "replace").strip()
        if not line and lines:
            return " ".join(lines)
        if line:
            lines.append(line)


class EslSession(socketserver.StreamRequestHandler):
    def handle(self):
        node = self.server.node
        esl = node.config["esl"]
        if not acl_allows(node.config["acls"][esl["apply-inbound-acl"]], self.client_address[0]):
            self.write({"Content-Type": "text/rude-rejection"}, "Access Denied, go away.\n")
            return
        self.subscribed = False
        self.write({"Content-Type": "auth/request"})
        authenticated = False
        while True:
            command = read_esl_command(self.rfile)
            if command is None or command == "exit":
                break
            verb, _, rest = command.partition(" ")
            if verb == "auth":
                authenticated = rest == esl["password"]
                self.write({"Content-Type": "command/reply", "Reply-Text": "+OK accepted" if authenticated
                            else "-ERR invalid"})
                if not authenticated:
                    break
            elif not authenticated:
                self.write({"Content-Type": "command/reply", "Reply-Text": "-ERR command not found"})
            elif verb == "event":
                self.subscribed = True
                node.sessions.add(self)
                self.write({"Content-Type": "command/reply", "Reply-Text": "+OK event listener enabled plain"})
            elif verb == "api":
                self.write({"Content-Type": "api/response"}, node.api(rest))
        node.sessions.discard(self)

    def write(self, headers, body=""):
        data = body.encode()
        head = "".join(f"{name}: {value}\n" for name, value in headers.items())
        if data:
            head += f"Content-Length: {len(data)}\n"
        try:
            self.wfile.write(head.encode() + b"\n" + data)
            self.wfile.flush()
        except OSError:
            pass


class Node:
    def __init__(self):
        self.config = load_config()
        self.sessions = set()
        self.channels = {}
        self.sip = SipDouble(self)

    def fetch(self, section, fields):
        """A mod_xml_curl fetch: POST the form, Basic credentials, from bind-local."""
        binding = self.config["xml_curl"][section]
        url = urlsplit(binding["gateway-url"])
        connection = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=int(binding.get("timeout", 5)),
                                                source_address=(binding["bind-local"], 0)
                                                if binding.get("bind-local") else None)
        credentials = b64encode(binding["gateway-credentials"].encode()).decode()
        connection.request("POST", url.path, body=urlencode(fields),
                           headers={"Authorization": f"Basic {credentials}",
                                    "Content-Type": "application/x-www-form-urlencoded"})
        reply = connection.getresponse()
        text = reply.read().decode()
        if reply.status != 200:
            log.error("Received HTTP error %s trying to fetch %s", reply.status, binding["gateway-url"])
            return '<document type="freeswitch/xml"><section name="result"><result status="not found"/></section>' \
                   '</document>'
        return text

    def channel_event(self, name, call, extra):
        tenant = call.variables.get("sip_h_X-GoPBX-Tenant", "")
        channel = self.channels.setdefault(call.uuid, {
            "Unique-ID": call.uuid, "Call-Direction": "inbound", "Caller-Caller-ID-Number": call.variables.get("caller"),
            "Caller-Destination-Number": call.variables.get("destination_number"), "Caller-Context": "kamailio",
            "variable_sip_h_X-GoPBX-Tenant": tenant, "Event-Date-Timestamp": str(int(time.time() * 1e6))})
        if name == "CHANNEL_ANSWER":
            channel["Answer-State"] = "answered"
        headers = {"Event-Name": name, "Core-UUID": "freeswitch-double", **channel, **extra}
        if name == "CHANNEL_HANGUP_COMPLETE":
            self.channels.pop(call.uuid, None)
        body = "".join(f"{key}: {quote(str(value), safe='')}\n" for key, value in headers.items())
        for session in list(self.sessions):
            session.write({"Content-Type": "text/event-plain"}, body)

    def api(self, line):
        words = line.split()
        if words[:1] == ["status"]:
            return "UP 0 years, 0 days (FreeSWITCH double)\n"
        if words[:4] == ["show", "channels", "as", "json"]:
            rows = [{"uuid": key, "direction": "inbound", "cid_num": value["Caller-Caller-ID-Number"],
                     "dest": value["Caller-Destination-Number"], "context": "kamailio",
                     "callstate": "ACTIVE" if value.get("Answer-State") else "RINGING"}
                    for key, value in self.channels.items()]
            return json.dumps({"row_count": len(rows), "rows": rows} if rows else {"row_count": 0}) + "\n"
        if words[:1] == ["uuid_getvar"] and len(words) == 3:
            channel = self.channels.get(words[1])
            return channel.get(f"variable_{words[2]}", "_undef_") if channel else "-ERR No such channel!\n"
        if words[:1] == ["limit_usage"] and len(words) == 4:
            return str(self.sip.limits.get(tuple(words[1:4]), 0))
        if words == ["reloadxml"]:
            return "+OK [Success]\n"
        if words == ["reloadacl"]:
            self.config["acls"] = load_config()["acls"]
            return "+OK acl reloaded\n"
        if words == ["reload", "mod_xml_curl"]:
            self.config["xml_curl"] = load_bindings()
            return "+OK module loaded\n"
        return f"-ERR {words[0] if words else ''} Command not found!\n"

    def run(self):
        esl = self.config["esl"]
        server = socketserver.ThreadingTCPServer((esl["listen-ip"], int(esl["listen-port"])), EslSession,
                                                 bind_and_activate=False)
        server.allow_reuse_address, server.daemon_threads = True, True
        server.server_bind()
        server.server_activate()
        server.node = self
        threading.Thread(target=server.serve_forever, daemon=True).start()
        log.info("FreeSWITCH double: SIP %s:%s, event socket %s:%s", self.sip.address, self.sip.port,
                 esl["listen-ip"], esl["listen-port"])
        self.sip.serve()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(name)s %(levelname)s %(message)s")
    Node().run()
