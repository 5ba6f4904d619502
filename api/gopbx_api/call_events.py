"""
Live calls from the FreeSWITCH nodes' event sockets, kept in Redis for every API worker.

One follower thread per registered node (address from gopbx.nodes, password from
settings): it subscribes to channel events, resyncs the node's live channels on
every (re)connect, and for each inbound leg (one per call: the leg that came from
Kamailio, stamped with X-GoPBX-Tenant) keeps
  gopbx:calls:<tenant>      hash  uuid -> call (JSON)
  gopbx:node-calls:<node>   hash  uuid -> tenant   (what to drop when the node resyncs)
and publishes each change on gopbx:call-events:<tenant> for the SSE streams.
Run as its own service (`python -m gopbx_api.call_events`) so there is one
follower per node however many API workers serve requests.
"""

import json
import logging
import socket
import threading
import time

from . import esl
from .models import is_domain

log = logging.getLogger("gopbx_api.call_events")
EVENTS = ("CHANNEL_CREATE", "CHANNEL_ANSWER", "CHANNEL_HANGUP_COMPLETE")
KINDS = {"CHANNEL_CREATE": "created", "CHANNEL_ANSWER": "answered", "CHANNEL_HANGUP_COMPLETE": "hung_up"}


def calls_key(tenant):
    return f"gopbx:calls:{tenant}"


def events_channel(tenant):
    return f"gopbx:call-events:{tenant}"


def node_key(node):
    return f"gopbx:node-calls:{node}"


def active_nodes(db):
    with db.transaction() as cursor:
        cursor.execute("SELECT minion_id, host(address) AS address FROM gopbx.nodes "
                       "WHERE state IN ('active', 'draining') ORDER BY minion_id")
        return {row["minion_id"]: row["address"] for row in cursor.fetchall()}


class CallStore:
    """The Redis side: what the followers write and the API reads."""

    def __init__(self, redis_client):
        self.redis = redis_client

    def live(self, tenant):
        return sorted((json.loads(value) for value in self.redis.hvals(calls_key(tenant))),
                      key=lambda call: call["created_at"])

    def get(self, tenant, call_uuid):
        value = self.redis.hget(calls_key(tenant), call_uuid)
        return json.loads(value) if value else None

    def put(self, call, kind):
        pipe = self.redis.pipeline()
        pipe.hset(calls_key(call["tenant"]), call["uuid"], json.dumps(call))
        pipe.hset(node_key(call["node"]), call["uuid"], call["tenant"])
        pipe.publish(events_channel(call["tenant"]), json.dumps({"event": kind, "call": call}))
        pipe.execute()

    def drop(self, node, tenant, call_uuid, kind="hung_up", detail=None):
        pipe = self.redis.pipeline()
        pipe.hdel(calls_key(tenant), call_uuid)
        pipe.hdel(node_key(node), call_uuid)
        payload = {"uuid": call_uuid, "node": node, "tenant": tenant, **(detail or {})}
        pipe.publish(events_channel(tenant), json.dumps({"event": kind, "call": payload}))
        pipe.execute()

    def forget_node(self, node):
        """Drop every call last seen on NODE (before a resync, or when it is gone)."""
        for call_uuid, tenant in self.redis.hgetall(node_key(node)).items():
            self.redis.hdel(calls_key(tenant.decode()), call_uuid.decode())
        self.redis.delete(node_key(node))


def _call_from_event(node, event):
    tenant = event.get("variable_sip_h_X-GoPBX-Tenant", "")
    if event.get("Call-Direction") != "inbound" or not is_domain(tenant):
        return None  # b-legs, and anything not stamped by Kamailio with a tenant
    return {"uuid": event["Unique-ID"], "node": node, "tenant": tenant,
            "caller": event.get("Caller-Caller-ID-Number", ""),
            "callee": event.get("Caller-Destination-Number", ""),
            "state": "ringing", "created_at": time.time(), "answered_at": None}


class NodeFollower(threading.Thread):
    def __init__(self, node, address, settings, store, stopping):
        super().__init__(name=f"esl-{node}", daemon=True)
        self.node, self.address, self.settings = node, address, settings
        self.store, self.stopping = store, stopping
        self.calls = {}  # uuid -> call, this node's inbound legs
        self.connected = threading.Event()

    def run(self):
        backoff = 1
        while not self.stopping.is_set():
            try:
                with esl.Connection(self.address, self.settings.esl_port, self.settings.esl_password,
                                    source_address=self.settings.esl_source_address or None) as conn:
                    self._follow(conn)
                backoff = 1
            except (esl.EventSocketError, OSError) as exc:
                self.connected.clear()
                if self.stopping.is_set():
                    break
                log.warning("event socket of %s (%s): %s", self.node, self.address, exc)
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, 30)

    def _follow(self, conn):
        conn.subscribe(*EVENTS)
        self._resync(conn)
        self.connected.set()
        conn.settimeout(1.0)
        while not self.stopping.is_set():
            try:
                event = conn.next_event()
            except (socket.timeout, TimeoutError):
                continue
            self.handle(event)

    def _resync(self, conn):
        """Replace what Redis holds for this node with the channels the node has now."""
        self.store.forget_node(self.node)
        self.calls = {}
        listing = json.loads(conn.api("show channels as json") or "{}")
        for row in listing.get("rows", []):
            tenant = conn.api(f"uuid_getvar {row['uuid']} sip_h_X-GoPBX-Tenant").strip()
            call = _call_from_event(self.node, {
                "Unique-ID": row["uuid"], "Call-Direction": row.get("direction"),
                "variable_sip_h_X-GoPBX-Tenant": tenant, "Caller-Caller-ID-Number": row.get("cid_num", ""),
                "Caller-Destination-Number": row.get("dest", "")})
            if call:
                call["state"] = "answered" if row.get("callstate") == "ACTIVE" else "ringing"
                self.calls[call["uuid"]] = call
                self.store.put(call, "created")

    def handle(self, event):
        kind = KINDS.get(event.get("Event-Name"))
        call_uuid = event.get("Unique-ID")
        if kind == "created":
            call = _call_from_event(self.node, event)
            if call:
                self.calls[call_uuid] = call
                self.store.put(call, kind)
        elif kind == "answered" and call_uuid in self.calls:
            call = self.calls[call_uuid]
            call.update(state="answered", answered_at=time.time())
            self.store.put(call, kind)
        elif kind == "hung_up" and call_uuid in self.calls:
            call = self.calls.pop(call_uuid)
            self.store.drop(self.node, call["tenant"], call_uuid,
                            detail={"cause": event.get("Hangup-Cause", ""), "caller": call["caller"],
                                    "callee": call["callee"]})


class CallEvents:
    """Follows every registered node; picks up new ones and lets removed ones go."""

    def __init__(self, settings, db, redis_client):
        self.settings, self.db = settings, db
        self.store = CallStore(redis_client)
        self.followers = {}
        self.stopping = threading.Event()

    def refresh(self):
        nodes = active_nodes(self.db)
        for node, follower in list(self.followers.items()):
            if nodes.get(node) != follower.address or not follower.is_alive():
                follower.stopping.set()
                del self.followers[node]
                self.store.forget_node(node)
        for node, address in nodes.items():
            if node not in self.followers:
                follower = NodeFollower(node, address, self.settings, self.store, threading.Event())
                self.followers[node] = follower
                follower.start()

    def run(self):
        while not self.stopping.is_set():
            try:
                self.refresh()
            except Exception:  # noqa: BLE001  (a database hiccup must not end the service)
                log.exception("reading the node list failed")
            self.stopping.wait(self.settings.node_refresh_seconds)

    def stop(self):
        self.stopping.set()
        for follower in self.followers.values():
            follower.stopping.set()
        for follower in self.followers.values():
            follower.join(3)


def main():
    import redis

    from . import settings as settings_module
    from .db import Database

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = settings_module.load()
    if not settings.esl_password:
        raise SystemExit("esl_password is not set: no node can be followed")
    CallEvents(settings, Database(settings.database_dsn, maxconn=2), redis.Redis.from_url(settings.redis_url)).run()


if __name__ == "__main__":
    main()
