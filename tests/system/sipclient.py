"""
A minimal SIP client for what SIPp cannot do here: Debian's SIPp is built without
TLS, and malformed requests are easier to make byte by byte.
"""

import base64
import hashlib
import os
import re
import socket
import ssl
import uuid


def _md5(text):
    return hashlib.md5(text.encode()).hexdigest()


def _read_message(sock):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = re.search(rb"(?im)^(?:content-length|l)\s*:\s*(\d+)", head)
    missing = (int(length.group(1)) if length else 0) - len(body)
    while missing > 0:
        chunk = sock.recv(missing)
        if not chunk:
            break
        body += chunk
        missing -= len(chunk)
    return (head + b"\r\n\r\n" + body).decode(errors="replace")


def _digest(challenge, method, uri, user, password):
    fields = dict(re.findall(r'(\w+)="?([^",]+)"?', challenge))
    ha1 = _md5(f"{user}:{fields['realm']}:{password}")
    ha2 = _md5(f"{method}:{uri}")
    if "qop" in fields:
        cnonce, nc = uuid.uuid4().hex[:8], "00000001"
        response = _md5(f"{ha1}:{fields['nonce']}:{nc}:{cnonce}:auth:{ha2}")
        extra = f', qop=auth, nc={nc}, cnonce="{cnonce}"'
    else:
        response = _md5(f"{ha1}:{fields['nonce']}:{ha2}")
        extra = ""
    return (f'Digest username="{user}", realm="{fields["realm"]}", nonce="{fields["nonce"]}", uri="{uri}", '
            f'response="{response}", algorithm=MD5{extra}')


def register_tls(target, domain, user, password, local_ip):
    """REGISTER over TLS, answering one digest challenge; returns the final response."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    raw = socket.create_connection(target, timeout=10, source_address=(local_ip, 0))
    with context.wrap_socket(raw) as sock:
        port = sock.getsockname()[1]
        call_id, uri = uuid.uuid4().hex, f"sip:{domain}"
        authorization = ""
        for cseq in (1, 2):
            request = (f"REGISTER {uri} SIP/2.0\r\n"
                       f"Via: SIP/2.0/TLS {local_ip}:{port};branch=z9hG4bK{uuid.uuid4().hex};rport\r\n"
                       f"From: <sip:{user}@{domain}>;tag={call_id[:8]}\r\nTo: <sip:{user}@{domain}>\r\n"
                       f"Call-ID: {call_id}\r\nCSeq: {cseq} REGISTER\r\n"
                       f"Contact: <sip:{user}@{local_ip}:{port};transport=tls>\r\nMax-Forwards: 70\r\n"
                       f"Expires: 600\r\n{authorization}Content-Length: 0\r\n\r\n")
            sock.sendall(request.encode())
            response = _read_message(sock)
            challenge = re.search(r"(?im)^WWW-Authenticate:\s*(.+)$", response)
            if not response.startswith("SIP/2.0 401") or not challenge:
                return response
            authorization = f"Authorization: {_digest(challenge.group(1), 'REGISTER', uri, user, password)}\r\n"
        return response


def options(target, local_ip, timeout=5):
    """An OPTIONS keepalive to Kamailio itself over UDP; returns the response, or None if none came."""
    call_id = uuid.uuid4().hex
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((local_ip, 0))
        sock.settimeout(timeout)
        port = sock.getsockname()[1]
        request = (f"OPTIONS sip:{target[0]}:{target[1]} SIP/2.0\r\n"
                   f"Via: SIP/2.0/UDP {local_ip}:{port};branch=z9hG4bK{call_id}\r\n"
                   f"From: <sip:probe@{local_ip}>;tag=1\r\nTo: <sip:{target[0]}>\r\nCall-ID: {call_id}\r\n"
                   f"CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
        sock.sendto(request.encode(), target)
        try:
            return sock.recv(65535).decode(errors="replace")
        except (socket.timeout, TimeoutError):
            return None


def malformed_requests():
    """SIP requests broken in the ways scanners and bad stacks break them."""
    good = ("INVITE sip:1001@a.systest.invalid SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.80:5060;branch=z9hG4bKx\r\n"
            "From: <sip:x@a.systest.invalid>;tag=1\r\nTo: <sip:1001@a.systest.invalid>\r\nCall-ID: m1\r\n"
            "CSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
    cases = [
        b"", b"\r\n\r\n", b"\x00" * 64, os.urandom(512), os.urandom(1400), b"GET / HTTP/1.1\r\n\r\n",
        b"INVITE\r\n\r\n", b"INVITE sip: SIP/2.0\r\n\r\n", b"SIP/2.0 200 OK\r\n\r\n",
        good.replace("CSeq: 1 INVITE", "CSeq: x INVITE").encode(),
        good.replace("CSeq: 1 INVITE", "CSeq: 99999999999999999999 INVITE").encode(),
        good.replace("Content-Length: 0", "Content-Length: 99999").encode(),
        good.replace("Content-Length: 0", "Content-Length: -1").encode(),
        good.replace("Via: SIP/2.0/UDP 127.0.0.80:5060;branch=z9hG4bKx\r\n", "").encode(),
        good.replace("From: <sip:x@a.systest.invalid>;tag=1", "From: <<<>>>").encode(),
        good.replace("To: <sip:1001@a.systest.invalid>", "To: sip:" + "A" * 4000).encode(),
        good.replace("Max-Forwards: 70", "Max-Forwards: -5").encode(),
        good.replace("SIP/2.0\r\n", "SIP/9.9\r\n", 1).encode(),
        good.replace("\r\n", "\n").encode(),
        good.encode()[: len(good) // 2],
        (good[:-2] + "X-Long: " + "B" * 60000 + "\r\n\r\n").encode()[:65000],
        good.replace("Call-ID: m1", "Call-ID: \x00\x01\x02").encode(),
    ]
    return [case for case in cases] * 5


def send_malformed(target, local_ips):
    """Send the batch over UDP, spread over several sources; returns how many were sent."""
    sent = 0
    for index, payload in enumerate(malformed_requests()):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((local_ips[index % len(local_ips)], 0))
            try:
                sock.sendto(payload, target)
                sent += 1
            except OSError:
                pass  # e.g. a payload too large for one datagram
    return sent


class UdpPeer:
    """
    One UDP SIP socket, byte by byte: for attacks SIPp cannot express (forged
    routes, stray replies, smuggled line ends) and for a third party that only
    listens. Bound to a loopback address the test chose; closed by close().
    """

    def __init__(self, local_ip, port=0):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((local_ip, port))
        self.ip, self.port = self.sock.getsockname()

    def send(self, message, target):
        self.sock.sendto(message.encode() if isinstance(message, str) else message, target)

    def receive(self, timeout=2.0):
        """Everything that arrives within ``timeout`` seconds, as text."""
        self.sock.settimeout(timeout)
        messages = []
        try:
            while True:
                messages.append(self.sock.recv(65535).decode(errors="replace"))
                self.sock.settimeout(0.3)
        except (socket.timeout, TimeoutError):
            return messages

    def final_response(self, timeout=5.0):
        """The first final (>= 200) response that arrives, or None."""
        self.sock.settimeout(timeout)
        try:
            while True:
                text = self.sock.recv(65535).decode(errors="replace")
                if re.match(r"SIP/2.0 [2-6]\d\d ", text):
                    return text
        except (socket.timeout, TimeoutError):
            return None

    def close(self):
        self.sock.close()


def header(message, name):
    found = re.search(rf"(?im)^{name}\s*:\s*(.*?)\r?$", message)
    return found.group(1) if found else None


def request(method, uri, peer, call_id, from_uri, from_tag, to_uri, to_tag="", cseq=1, routes=(),
            extra="", body="", content_type="application/sdp"):
    """A SIP request as text (routes: Route header values, in order)."""
    lines = [f"{method} {uri} SIP/2.0",
             f"Via: SIP/2.0/UDP {peer.ip}:{peer.port};branch=z9hG4bK{uuid.uuid4().hex};rport",
             f"From: <{from_uri}>;tag={from_tag}",
             f"To: <{to_uri}>" + (f";tag={to_tag}" if to_tag else ""),
             f"Call-ID: {call_id}", f"CSeq: {cseq} {method}",
             f"Contact: <sip:device@{peer.ip}:{peer.port}>", "Max-Forwards: 70"]
    lines += [f"Route: {route}" for route in routes]
    if extra:
        lines += extra.rstrip("\r\n").split("\r\n")
    if body:
        lines.append(f"Content-Type: {content_type}")
    lines.append(f"Content-Length: {len(body.encode())}")
    return "\r\n".join(lines) + "\r\n\r\n" + body


def sdp(ip, port=40000, srtp=False):
    """An audio offer; with ``srtp``, RTP/SAVP with one SDES key (AES_CM_128_HMAC_SHA1_80)."""
    crypto = "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" + base64.b64encode(os.urandom(30)).decode() + "\r\n"
    return (f"v=0\r\no=device 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n"
            f"m=audio {port} RTP/{'SAVP' if srtp else 'AVP'} 8\r\na=rtpmap:8 PCMA/8000\r\n" + (crypto if srtp else ""))


def call(peer, target, domain, user, password, callee, srtp=False):
    """
    An authenticated call from ``peer`` through Kamailio, answered and ACKed.
    Returns the dialog: call_id, from/to URIs and tags, the route set (the 200's
    Record-Route, reversed), the remote target (its Contact) and the next CSeq.
    """
    call_id, from_tag = uuid.uuid4().hex, uuid.uuid4().hex[:10]
    from_uri, to_uri = f"sip:{user}@{domain}", f"sip:{callee}@{domain}"
    invite = request("INVITE", to_uri, peer, call_id, from_uri, from_tag, to_uri, body=sdp(peer.ip, srtp=srtp))
    peer.send(invite, target)
    challenge = peer.final_response()
    assert challenge and challenge.startswith("SIP/2.0 407"), challenge
    peer.send(request("ACK", to_uri, peer, call_id, from_uri, from_tag, to_uri,
                      to_tag=_tag(header(challenge, "To"))), target)
    authorization = _digest(header(challenge, "Proxy-Authenticate"), "INVITE", to_uri, user, password)
    peer.send(request("INVITE", to_uri, peer, call_id, from_uri, from_tag, to_uri, cseq=2,
                      extra=f"Proxy-Authorization: {authorization}", body=sdp(peer.ip, srtp=srtp)), target)
    answer = peer.final_response()
    assert answer and answer.startswith("SIP/2.0 200"), answer
    routes = list(reversed(re.findall(r"(?im)^Record-Route\s*:\s*(.*?)\r?$", answer)))
    routes = [route.strip() for value in routes for route in reversed(value.split(","))]
    dialog = {"call_id": call_id, "from_uri": from_uri, "from_tag": from_tag, "to_uri": to_uri,
              "to_tag": _tag(header(answer, "To")), "routes": routes,
              "target": re.search(r"<([^>]+)>", header(answer, "Contact")).group(1), "cseq": 3, "answer": answer}
    peer.send(in_dialog("ACK", peer, dialog, cseq=2), target)
    return dialog


def in_dialog(method, peer, dialog, uri=None, routes=None, extra="", cseq=None):
    """A request inside ``dialog`` (by default along its own route to its remote target)."""
    if cseq is None:
        cseq = dialog["cseq"]
        dialog["cseq"] += 1
    return request(method, uri or dialog["target"], peer, dialog["call_id"], dialog["from_uri"],
                   dialog["from_tag"], dialog["to_uri"], dialog["to_tag"], cseq=cseq,
                   routes=dialog["routes"] if routes is None else routes, extra=extra)


def _tag(value):
    found = re.search(r";\s*tag=([^;>\s]+)", value or "")
    return found.group(1) if found else ""


def register(peer, target, domain, user, password, contacts, expires=600):
    """A REGISTER from ``peer`` binding ``contacts`` (URIs), answering the challenge; the final response."""
    call_id, uri, aor = uuid.uuid4().hex, f"sip:{domain}", f"sip:{user}@{domain}"
    contact_header = "Contact: " + ", ".join(f"<{contact}>" for contact in contacts) + f"\r\nExpires: {expires}"
    authorization = ""
    for cseq in (1, 2):
        message = request("REGISTER", uri, peer, call_id, aor, call_id[:8], aor, cseq=cseq,
                          extra=contact_header + authorization)
        # request() adds the peer's own Contact first: this REGISTER names only ``contacts``.
        message = re.sub(r"(?m)^Contact: <sip:device@[^>]+>\r\n", "", message, count=1)
        peer.send(message, target)
        response = peer.final_response()
        challenge = header(response or "", "WWW-Authenticate")
        if not (response or "").startswith("SIP/2.0 401") or not challenge:
            return response
        authorization = f"\r\nAuthorization: {_digest(challenge, 'REGISTER', uri, user, password)}"
    return response
