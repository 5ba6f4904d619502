"""
Support for the SIP system tests: provisioning tenants the way the API and Salt
will, Kamailio's RPC, RTPEngine's ng statistics, SIPp scenarios and processes.

Addresses (all loopback): Kamailio listens on 127.0.0.1:5060/5061; test devices
use 127.0.0.x; media-node stand-ins (SIPp UAS doubles of FreeSWITCH) 127.28.2.x.
"""

import hashlib
import os
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import psycopg2
import requests

from tests.support import REPO, wait_for  # noqa: F401  (sip.wait_for, for the SIP tests)

KAMAILIO = ("127.0.0.1", 5060)
KAMAILIO_TLS = ("127.0.0.1", 5061)
RPC_URL = "http://127.28.0.15:8080/jsonrpc"
RTPENGINE_NG = ("127.28.0.1", 2223)
PGBOUNCER = "127.28.0.12"
STANDIN_SCENARIO = REPO / "lab" / "salt" / "media_standin" / "files" / "uas.xml"
PCAP = "/usr/share/sip-tester/g711a.pcap"
TEST_DOMAIN_SUFFIX = ".systest.invalid"


def rpc(method, *params):
    """A Kamailio JSONRPC call on the management port; returns 'result' or raises."""
    reply = requests.post(RPC_URL, json={"jsonrpc": "2.0", "method": method, "params": list(params), "id": 1},
                          timeout=10).json()
    if "error" in reply:
        raise RuntimeError(f"{method}: {reply['error']}")
    return reply.get("result")


def registered(aor):
    """AOR's bindings as Kamailio holds them (usrloc): [{'Address': ..., 'Received': ...}, ...]."""
    try:
        found = rpc("ul.lookup", "location", aor)
    except RuntimeError as error:
        if "AOR not found" in str(error):
            return []
        raise
    return [entry["Contact"] for entry in found["Contacts"]]


def unregister_test_users():
    """Remove every binding of the SIP tests' domains from Kamailio."""
    for domain in rpc("ul.dump", "brief")["Domains"]:
        for aor in domain["Domain"]["AoRs"]:
            name = aor["AoR"]
            if name.endswith(TEST_DOMAIN_SUFFIX):
                rpc("ul.rm", "location", name)


def md5(text):
    return hashlib.md5(text.encode()).hexdigest()


# --- provisioning: what the API (tenants, extensions) and Salt (dispatcher) write ---


def db(secrets, role):
    key = {"gopbx_api": "api", "gopbx_salt": "salt", "kamailio": "kamailio"}[role]
    conn = psycopg2.connect(host=PGBOUNCER, port=5432, dbname="gopbx", user=role,
                            password=secrets["postgres"][key], connect_timeout=5)
    conn.autocommit = False
    return conn


def remove_test_tenants(secrets):
    """Delete every tenant, extension and dispatcher row the SIP tests made."""
    pattern = f"%{TEST_DOMAIN_SUFFIX}"
    with db(secrets, "gopbx_api") as api, api.cursor() as cur:
        cur.execute("DELETE FROM subscriber WHERE domain LIKE %s", (pattern,))
        cur.execute("DELETE FROM domain_attrs WHERE did LIKE %s", (pattern,))
        cur.execute("DELETE FROM domain WHERE domain LIKE %s", (pattern,))
        cur.execute("DELETE FROM gopbx.tenants WHERE domain LIKE %s", (pattern,))
    unregister_test_users()
    with db(secrets, "gopbx_salt") as salt, salt.cursor() as cur:
        cur.execute("DELETE FROM dispatcher WHERE description LIKE 'systest%%'")
        cur.execute("DELETE FROM gopbx.dispatcher_sets WHERE description LIKE 'systest%%'")


def add_dispatcher_set(secrets, setid, destinations):
    """Salt's part: a dispatcher set and its media nodes."""
    with db(secrets, "gopbx_salt") as salt, salt.cursor() as cur:
        cur.execute("INSERT INTO gopbx.dispatcher_sets (setid, region, description) VALUES (%s, 'lab', %s)",
                    (setid, f"systest set {setid}"))
        for destination in destinations:
            cur.execute("INSERT INTO dispatcher (setid, destination, flags, priority, description) "
                        "VALUES (%s, %s, 0, 0, %s)", (setid, f"sip:{destination}", f"systest stand-in {destination}"))


def dispatcher_flags():
    """{destination URI: Kamailio's flags for it} ('AP': active and probed, 'I': inactive)."""
    listing = rpc("dispatcher.list") or {}
    return {dest["DEST"]["URI"]: dest["DEST"]["FLAGS"] for dset in listing.get("RECORDS", [])
            for dest in dset["SET"]["TARGETS"]}


def wait_until_active(destinations, timeout=20):
    """Until Kamailio's probes have found every destination answering (as it routes only to those)."""
    active = lambda: all(dispatcher_flags().get(f"sip:{item}", "").startswith("A")  # noqa: E731
                         for item in destinations)
    assert wait_for(active, timeout=timeout), dispatcher_flags()


def add_tenant(secrets, domain, setid, max_calls, calls_per_second, enabled=True):
    """The API's part: a tenant, its SIP domain and the attributes Kamailio routes by."""
    attrs = {"dispatcher_set": setid, "max_calls": max_calls, "calls_per_second": calls_per_second,
             "enabled": int(enabled)}
    with db(secrets, "gopbx_api") as api, api.cursor() as cur:
        cur.execute("INSERT INTO gopbx.tenants (domain, name, max_calls, calls_per_second, enabled) "
                    "VALUES (%s, %s, %s, %s, %s) RETURNING id", (domain, domain, max_calls, calls_per_second, enabled))
        tenant_id = cur.fetchone()[0]
        cur.execute("INSERT INTO gopbx.shard_assignments (tenant_id, setid, assigned_by) VALUES (%s, %s, 'systest')",
                    (tenant_id, setid))
        cur.execute("INSERT INTO domain (domain, did) VALUES (%s, %s)", (domain, domain))
        for name, value in attrs.items():
            cur.execute("INSERT INTO domain_attrs (did, name, type, value) VALUES (%s, %s, 0, %s)",
                        (domain, name, str(value)))
    return tenant_id


def add_extension(secrets, domain, number, password):
    """The API's part: an extension, stored as ha1/ha1b only."""
    with db(secrets, "gopbx_api") as api, api.cursor() as cur:
        cur.execute("INSERT INTO gopbx.extensions (tenant_id, number) "
                    "SELECT id, %s FROM gopbx.tenants WHERE domain = %s", (number, domain))
        cur.execute("INSERT INTO subscriber (username, domain, ha1, ha1b) VALUES (%s, %s, %s, %s)",
                    (number, domain, md5(f"{number}:{domain}:{password}"),
                     md5(f"{number}@{domain}:{domain}:{password}")))


def end_test_dialogs():
    """End calls the SIP tests left up (a failed test may leave its dialogs behind)."""
    for dialog in rpc("dlg.list") or []:
        if dialog["from_uri"].endswith(TEST_DOMAIN_SUFFIX):
            rpc("dlg.end_dlg", dialog["h_entry"], dialog["h_id"])


def reload_kamailio():
    """Reload tenants' domains and the dispatcher (which refuses reloads closer than 5 s apart)."""
    rpc("domain.reload")
    for _ in range(30):
        try:
            rpc("dispatcher.reload")
            return
        except RuntimeError as error:
            if "Ongoing reload" not in str(error):
                raise
            time.sleep(0.5)
    raise RuntimeError("dispatcher.reload kept answering 'Ongoing reload'")


# --- RTPEngine ---


def _bdecode(data, index=0):
    kind = data[index:index + 1]
    if kind == b"i":
        end = data.index(b"e", index)
        return int(data[index + 1:end]), end + 1
    if kind in (b"d", b"l"):
        index += 1
        items = []
        while data[index:index + 1] != b"e":
            item, index = _bdecode(data, index)
            items.append(item)
        if kind == b"l":
            return items, index + 1
        return {items[i].decode(): items[i + 1] for i in range(0, len(items), 2)}, index + 1
    colon = data.index(b":", index)
    length = int(data[index:colon])
    return data[colon + 1:colon + 1 + length], colon + 1 + length


def rtpengine_statistics(ng=RTPENGINE_NG):
    """RTPEngine's own statistics (ng 'statistics')."""
    cookie = os.urandom(4).hex().encode()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(3)
        sock.sendto(cookie + b" d7:command10:statisticse", ng)
        reply = sock.recv(65535)
    stats, _ = _bdecode(reply[len(cookie) + 1:])
    return stats["statistics"]


def rtpengine_relayed_packets(ng=RTPENGINE_NG):
    """RTPEngine's own count of packets relayed since it started."""
    return rtpengine_statistics(ng)["totalstatistics"]["relayedpackets"]


def rtpengine_sessions(ng=RTPENGINE_NG):
    """Calls RTPEngine holds now, finished ones in their delete delay included."""
    return rtpengine_statistics(ng)["currentstatistics"]["sessionsown"]


# --- SIPp ---

# A line of its own only when there are credentials: a blank line would end the headers.
AUTH_LINE = "\n      [authentication]"

REGISTER = """
  <send retrans="500"><![CDATA[
      REGISTER sip:[tenant] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:[user]@[tenant]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[user]@[tenant]>
      Call-ID: [call_id]
      CSeq: {cseq} REGISTER
      Contact: <sip:[user]@[contact_host]>
      Max-Forwards: 70
      Expires: 600{auth}
      Content-Length: 0

    ]]></send>
"""


def register_scenario(final):
    """REGISTER, answer the challenge with -au/-ap, expect ``final`` ('200', '401' again, or '403' at once)."""
    steps = [REGISTER.format(cseq=1, auth="")]
    authenticated = REGISTER.format(cseq=2, auth=AUTH_LINE)
    if final == "403":
        steps.append('<recv response="403"/>')
    else:
        steps += ['<recv response="401" auth="true"/>', authenticated,
                  f'<recv response="{final}"/>']
    return _scenario("register", steps)


INVITE = """
  <send retrans="500"><![CDATA[
      INVITE sip:[service]@[tenant] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:[user]@[tenant]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[tenant]>
      Call-ID: [call_id]
      CSeq: {cseq} INVITE
      Contact: <sip:[user]@[local_ip]:[local_port]>
      Max-Forwards: 70
      X-GoPBX-MaxCalls: 999
      x-gopbx-tenant: spoofed.invalid{auth}
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=device 1 1 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 8 101
      a=rtpmap:8 PCMA/8000
      a=rtpmap:101 telephone-event/8000

    ]]></send>
"""

ACK_NEGATIVE = """
  <send><![CDATA[
      ACK sip:[service]@[tenant] SIP/2.0
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      CSeq: {cseq} ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]></send>
"""

ANSWERED = """
  <send><![CDATA[
      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      [last_From:]
      [last_To:]
      [routes]
      [last_Call-ID:]
      CSeq: {cseq} ACK
      Contact: <sip:[user]@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Length: 0

    ]]></send>
  {media}
  <pause milliseconds="{hold_ms}"/>
  <send retrans="500"><![CDATA[
      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      [last_From:]
      [last_To:]
      [routes]
      [last_Call-ID:]
      CSeq: {bye_cseq} BYE
      Contact: <sip:[user]@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Length: 0

    ]]></send>
  <recv response="200" next="end"/>
"""


def call_scenario(answered=True, rejected=(), authenticate=True, hold_ms=1000, rtp=False):
    """
    An INVITE (carrying spoofed X-GoPBX-* headers) to [service]@[tenant]:
    answer the digest challenge, then either get 200 (ACK, optional RTP from the
    pcap, hold, BYE) or one of the ``rejected`` codes (ACK and stop).
    """
    steps = [INVITE.format(cseq=1, auth="")]
    cseq = 1
    if authenticate:
        steps += ['<recv response="100" optional="true"/>', '<recv response="407" auth="true"/>',
                  ACK_NEGATIVE.format(cseq=1), INVITE.format(cseq=2, auth=AUTH_LINE)]
        cseq = 2
    steps += ['<recv response="100" optional="true"/>', '<recv response="180" optional="true"/>',
              '<recv response="183" optional="true"/>']
    for code in rejected:
        steps.append(f'<recv response="{code}" optional="{"true" if answered else "false"}" next="rejected"/>')
    if answered:
        media = f'<nop><action><exec play_pcap_audio="{PCAP}"/></action></nop>' if rtp else ""
        steps += ['<recv response="200" rrs="true"/>',
                  ANSWERED.format(cseq=cseq, media=media, hold_ms=hold_ms, bye_cseq=cseq + 1)]
    steps += ['<label id="rejected"/>', ACK_NEGATIVE.format(cseq=cseq), '<label id="end"/>']
    return _scenario("call", steps)


def _scenario(name, steps):
    return (f'<?xml version="1.0" encoding="ISO-8859-1" ?>\n<scenario name="{name}">\n'
            + "\n".join(steps) + "\n</scenario>\n")


def _write(text, directory, name):
    path = Path(directory) / name
    path.write_text(text)
    return path


def sipp(scenario, local_ip, keys, calls=1, rate=None, limit=None, auth=None, port=0, timeout=30,
         target=KAMAILIO, extra=()):
    """Run a SIPp UAC to completion; returns (exit code, its message log, its error log)."""
    with tempfile.TemporaryDirectory(prefix="gopbx-sipp-") as tmp:
        path = _write(scenario, tmp, "scenario.xml")
        # -ci: SIPp's control socket on the test's own address, not 0.0.0.0.
        command = ["sipp", f"{target[0]}:{target[1]}", "-sf", str(path), "-i", local_ip, "-ci", local_ip,
                   "-p", str(port),
                   "-m", str(calls), "-nostdin", "-timeout", f"{timeout}s", "-timeout_error",
                   "-recv_timeout", "8000", "-trace_msg", "-message_file", f"{tmp}/messages.log",
                   "-trace_err", "-error_file", f"{tmp}/errors.log"]
        if rate:
            command += ["-r", str(rate)]
        if limit:
            command += ["-l", str(limit)]
        if auth:
            command += ["-au", auth[0], "-ap", auth[1]]
        for key, value in keys.items():
            command += ["-key", key, str(value)] if key != "service" else ["-s", str(value)]
        result = subprocess.run(command + list(extra), capture_output=True, text=True, check=False,
                                timeout=timeout + 30, cwd=tmp)
        return (result.returncode, _read(Path(tmp) / "messages.log"), _read(Path(tmp) / "errors.log"))


def _read(path):
    return path.read_text(errors="replace") if path.exists() else ""


class SippProcess:
    """A SIPp process in the background (a stand-in or a callee), stopped by its PID."""

    def __init__(self, scenario_path, local_ip, port, extra=()):
        self.dir = tempfile.mkdtemp(prefix="gopbx-sipp-")
        self.log = Path(self.dir) / "messages.log"
        command = ["sipp", "-sf", str(scenario_path), "-i", local_ip, "-p", str(port), "-mi", local_ip,
                   "-ci", local_ip, "-nostdin", "-trace_msg", "-message_file", str(self.log), *extra]
        self.process = subprocess.Popen(command, cwd=self.dir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.address = f"{local_ip}:{port}"
        time.sleep(0.3)
        assert self.process.poll() is None, f"sipp at {self.address} failed: {self.process.stderr.read()}"

    def messages(self):
        return _read(self.log)

    def received(self, method):
        """The requests of a method it received, as text."""
        return [block for block in self.messages().split("----------------------------------------------")
                if "message received" in block and f"\n{method} " in block]

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def standin(address):
    """A media-node stand-in (a SIPp UAS double of FreeSWITCH, echoing RTP) on address:port."""
    ip, port = address.split(":")
    return SippProcess(STANDIN_SCENARIO, ip, int(port), extra=["-rtp_echo"])


@contextmanager
def standins(*addresses):
    """Stand-ins by address; whatever the dict holds at the end (a test may replace one) is stopped."""
    running = {}
    try:
        for address in addresses:
            running[address] = standin(address)
        yield running
    finally:
        for process in running.values():
            process.stop()
