"""
A DOUBLE of FreeSWITCH's event socket (mod_event_socket), for tests only.

FreeSWITCH has no Debian 12 package, so this small server speaks the real wire
protocol in its place: the `auth/request` greeting, `auth`, `event plain ...`,
`api ...` (show channels as json, uuid_getvar, uuid_kill, status), `exit`, and
events in the plain format with URL-encoded values. Tests drive calls through it
(`create_call`, `answer`, `hangup`), and `uuid_kill` hangs a call up as
FreeSWITCH would, with a CHANNEL_HANGUP_COMPLETE to every subscriber.
"""

import json
import socket
import socketserver
import threading
import time
import uuid as uuidlib
from urllib.parse import quote

from tests.doubles import ServedDouble, freeswitch_rules


def _message(headers, body=""):
    data = body.encode()
    head = "".join(f"{name}: {value}\n" for name, value in headers.items())
    if data:
        head += f"Content-Length: {len(data)}\n"
    return head.encode() + b"\n" + data


class _Session(socketserver.StreamRequestHandler):
    def handle(self):
        double = self.server.double
        self.authenticated, self.subscribed = False, set()
        self.lock = threading.Lock()
        self.send({"Content-Type": "auth/request"})
        while True:
            command = self._read_command()
            if command is None or command == "exit":
                break
            self._dispatch(double, command)
        double.sessions.discard(self)

    def _read_command(self):
        return freeswitch_rules.read_esl_command(self.rfile)

    def _dispatch(self, double, command):
        verb, _, rest = command.partition(" ")
        if verb == "auth":
            self.authenticated = rest == double.password
            self.reply("+OK accepted" if self.authenticated else "-ERR invalid")
            if not self.authenticated:
                self.send({"Content-Type": "text/disconnect-notice"}, "Disconnected, goodbye.\n")
                self.request.shutdown(socket.SHUT_RDWR)
        elif not self.authenticated:
            self.reply("-ERR command not found")
        elif verb == "event":
            kind, _, names = rest.partition(" ")
            if kind != "plain":
                self.reply("-ERR this double speaks plain only")
                return
            self.subscribed |= set(names.split())
            double.sessions.add(self)
            self.reply("+OK event listener enabled plain")
        elif verb == "api":
            self.send({"Content-Type": "api/response"}, double.api(rest))
        else:
            self.reply("-ERR command not found")

    def reply(self, text):
        self.send({"Content-Type": "command/reply", "Reply-Text": text})

    def send(self, headers, body=""):
        with self.lock:
            try:
                self.wfile.write(_message(headers, body))
                self.wfile.flush()
            except OSError:
                pass

    def wants(self, name):
        return "ALL" in self.subscribed or name in self.subscribed


class EventSocketDouble(ServedDouble):
    def __init__(self, host="127.0.0.1", port=0, password="ClueCon-double"):
        self.password = password
        self.channels = {}
        self.sessions = set()
        self.commands = []
        self._server = socketserver.ThreadingTCPServer((host, port), _Session, bind_and_activate=False)
        self._server.allow_reuse_address = True
        self._server.daemon_threads = True
        self._server.server_bind()
        self._server.server_activate()
        self._server.double = self
        self.host, self.port = self._server.server_address

    def stop(self):
        super().stop()
        self.drop_connections()

    # What tests do to it -------------------------------------------------

    def create_call(self, tenant, caller, callee, direction="inbound", call_uuid=None):
        call_uuid = call_uuid or str(uuidlib.uuid4())
        self.channels[call_uuid] = {
            "Unique-ID": call_uuid, "Call-Direction": direction, "Channel-State": "CS_EXECUTE",
            "Caller-Caller-ID-Number": caller, "Caller-Destination-Number": callee, "Caller-Context": tenant,
            "Channel-Name": f"sofia/gopbx/{caller}@{tenant}", "variable_sip_h_X-GoPBX-Tenant": tenant,
            "Event-Date-Timestamp": str(int(time.time() * 1e6)),
        }
        self._emit("CHANNEL_CREATE", self.channels[call_uuid])
        return call_uuid

    def answer(self, call_uuid):
        self.channels[call_uuid]["Answer-State"] = "answered"
        self._emit("CHANNEL_ANSWER", self.channels[call_uuid])

    def hangup(self, call_uuid, cause="NORMAL_CLEARING"):
        channel = self.channels.pop(call_uuid)
        self._emit("CHANNEL_HANGUP_COMPLETE", {**channel, "Hangup-Cause": cause})

    def drop_connections(self, forget=()):
        """Close every client connection (a FreeSWITCH restart, or the network); the
        calls in FORGET end meanwhile, with nobody listening."""
        for session in list(self.sessions):
            self.sessions.discard(session)
            try:
                session.request.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for call_uuid in forget:
            self.channels.pop(call_uuid)

    def _emit(self, name, channel):
        headers = {"Event-Name": name, "Core-UUID": "double-core", **channel}
        body = "".join(f"{key}: {quote(str(value), safe='')}\n" for key, value in headers.items())
        for session in list(self.sessions):
            if session.wants(name):
                session.send({"Content-Type": "text/event-plain"}, body)

    # The api commands the platform uses ---------------------------------

    def api(self, line):
        self.commands.append(line)
        words = line.split()
        if words[:4] == ["show", "channels", "as", "json"]:
            rows = [{"uuid": u, "direction": c["Call-Direction"], "cid_num": c["Caller-Caller-ID-Number"],
                     "dest": c["Caller-Destination-Number"], "context": c["Caller-Context"],
                     "callstate": "ACTIVE" if c.get("Answer-State") == "answered" else "RINGING"}
                    for u, c in self.channels.items()]
            return json.dumps({"row_count": len(rows), "rows": rows} if rows else {"row_count": 0}) + "\n"
        if words[:1] == ["uuid_getvar"] and len(words) == 3:
            channel = self.channels.get(words[1])
            if channel is None:
                return "-ERR No such channel!\n"
            return channel.get(f"variable_{words[2]}", "_undef_")
        if words[:1] == ["uuid_kill"] and len(words) >= 2:
            if words[1] not in self.channels:
                return "-ERR No such channel!\n"
            self.hangup(words[1], "MANAGER_REQUEST")
            return "+OK\n"
        if words[:1] == ["status"]:
            return "UP 0 years, 0 days (event socket double)\n"
        return f"-ERR {words[0] if words else ''} Command not found!\n"
