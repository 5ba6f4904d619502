"""
A client for FreeSWITCH's event socket (mod_event_socket, inbound mode).

The protocol: the server greets with `Content-Type: auth/request`; the client sends
commands ending in a blank line (`auth PASSWORD`, `event plain NAMES`, `api CMD`);
each message is a block of `Name: value` headers, a blank line, and a body of
Content-Length bytes when that header is present. Events in 'plain' format carry
their own headers (URL-encoded values) inside that body. Replies to `api` and the
events a subscription asked for share the connection, so events that arrive while
waiting for a reply are queued, not lost.
"""

import collections
import socket
from urllib.parse import unquote


class EventSocketError(Exception):
    """The node refused us, went away, or answered something we can't read."""


def _parse_headers(text, decode=False):
    headers = {}
    for line in text.splitlines():
        name, sep, value = line.partition(": ")
        if sep:
            headers[name] = unquote(value) if decode else value
    return headers


class Connection:
    def __init__(self, host, port, password, timeout=5.0, source_address=None):
        try:
            # From the address the node's event-socket ACL lists (the API's plan
            # address), not whichever one the routing table would pick.
            self._sock = socket.create_connection((host, port), timeout=timeout,
                                                  source_address=(source_address, 0) if source_address else None)
        except OSError as exc:
            raise EventSocketError(f"cannot reach {host}:{port}: {exc}") from None
        # Our own buffer, not makefile(): a file object is unusable after one timeout.
        self._buffer = b""
        self._events = collections.deque()
        greeting, _ = self._read_message()
        if greeting.get("Content-Type") != "auth/request":
            self.close()
            raise EventSocketError(f"{host}:{port} is not an event socket")
        reply = self.command(f"auth {password}")
        if not reply.startswith("+OK"):
            self.close()
            raise EventSocketError(f"{host}:{port} refused our password")

    def close(self):
        try:
            self._sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def settimeout(self, seconds):
        self._sock.settimeout(seconds)

    def _fill(self):
        data = self._sock.recv(65536)
        if not data:
            raise EventSocketError("the event socket closed")
        self._buffer += data

    def _read_message(self):
        """One message; on a timeout the partial message stays buffered for the next call."""
        while True:
            self._buffer = self._buffer.lstrip(b"\n")  # blank lines between messages
            end = self._buffer.find(b"\n\n")
            if end >= 0:
                headers = _parse_headers(self._buffer[:end].decode("utf-8", "replace"))
                length = int(headers.get("Content-Length", 0))
                if len(self._buffer) >= end + 2 + length:
                    body = self._buffer[end + 2:end + 2 + length].decode("utf-8", "replace")
                    self._buffer = self._buffer[end + 2 + length:]
                    return headers, body
            self._fill()

    def _send(self, line):
        try:
            self._sock.sendall(line.encode() + b"\n\n")
        except OSError as exc:
            raise EventSocketError(f"send failed: {exc}") from None

    def _reply(self, content_type):
        while True:
            headers, body = self._read_message()
            kind = headers.get("Content-Type")
            if kind == "text/event-plain":
                self._events.append(_event(body))
            elif kind == "text/disconnect-notice":
                raise EventSocketError("the node is closing the event socket")
            elif kind == content_type:
                return headers, body

    def command(self, line):
        """A command answered by `command/reply`; returns its Reply-Text."""
        self._send(line)
        headers, _ = self._reply("command/reply")
        return headers.get("Reply-Text", "")

    def api(self, line):
        """`api LINE`: the command's output."""
        self._send(f"api {line}")
        _, body = self._reply("api/response")
        return body

    def subscribe(self, *names):
        reply = self.command("event plain " + " ".join(names))
        if not reply.startswith("+OK"):
            raise EventSocketError(f"subscription refused: {reply}")

    def next_event(self):
        """The next event (a dict of its headers); raises socket.timeout when none comes in time."""
        if self._events:
            return self._events.popleft()
        while True:
            headers, body = self._read_message()
            kind = headers.get("Content-Type")
            if kind == "text/event-plain":
                return _event(body)
            if kind == "text/disconnect-notice":
                raise EventSocketError("the node is closing the event socket")


def _event(body):
    # An event's own headers end at a blank line; a body of its own may follow.
    head, _, _ = body.partition("\n\n")
    return _parse_headers(head, decode=True)
