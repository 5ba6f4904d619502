"""
A minimal SIP client for what SIPp cannot do here: Debian's SIPp is built without
TLS, and malformed requests are easier to make byte by byte.
"""

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


def options(target, local_ip):
    """An OPTIONS keepalive to Kamailio itself over UDP; returns the response."""
    call_id = uuid.uuid4().hex
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((local_ip, 0))
        sock.settimeout(5)
        port = sock.getsockname()[1]
        request = (f"OPTIONS sip:{target[0]}:{target[1]} SIP/2.0\r\n"
                   f"Via: SIP/2.0/UDP {local_ip}:{port};branch=z9hG4bK{call_id}\r\n"
                   f"From: <sip:probe@{local_ip}>;tag=1\r\nTo: <sip:{target[0]}>\r\nCall-ID: {call_id}\r\n"
                   f"CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
        sock.sendto(request.encode(), target)
        return sock.recv(65535).decode(errors="replace")


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
