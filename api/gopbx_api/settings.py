"""The API's settings, from a JSON file the api formula renders from pillar."""

import json
import os
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Settings:
    # psycopg2 DSN through pgBouncer, as the gopbx_api role.
    database_dsn: str
    # Kamailio's JSONRPC on the internal address (domain.reload after tenant changes).
    kamailio_rpc_url: str
    # Redis (with its password), for health and, later, call events.
    redis_url: str
    # Signing keys: the first signs, all verify, so a key can be rotated without
    # downtime (add the new one first, drop the old one after the token lifetime).
    jwt_keys: list = field(default_factory=list)
    jwt_ttl_seconds: int = 900
    # Platform admins: username -> PBKDF2 password hash (see passwords.hash_password).
    platform_admins: dict = field(default_factory=dict)
    # FreeSWITCH's event socket on each node (addresses from gopbx.nodes): the
    # call-events service follows them, hang-up sends uuid_kill.
    esl_password: str = ""
    esl_port: int = 8021
    # The source address of those connections: what the nodes' ACLs allow (the API's
    # plan address). Empty: the routing table's choice.
    esl_source_address: str = ""
    node_refresh_seconds: float = 10.0
    # The media nodes' SIP profile (b-legs go out through it) and the context calls
    # from Kamailio land in; there the tenant is Kamailio's X-GoPBX-Tenant header.
    freeswitch_profile: str = "internal"
    freeswitch_inbound_context: str = "kamailio"
    # The salt-master's webhook engine (etc/salt/master.d/gopbx.conf), poked with the
    # id of each provisioning request; empty where no master runs (the lab).
    salt_webhook_url: str = ""
    # A comment line on idle SSE streams, so proxies and clients see it is alive.
    sse_heartbeat_seconds: float = 15.0

    def __post_init__(self):
        if not self.jwt_keys or any(len(key) < 32 for key in self.jwt_keys):
            raise ValueError("jwt_keys: at least one key, each of 32 characters or more")
        for name in ("jwt_ttl_seconds", "node_refresh_seconds", "sse_heartbeat_seconds"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")


def load(path=None):
    path = path or os.environ.get("GOPBX_API_SETTINGS", "/etc/gopbx/api.json")
    with open(path, encoding="utf-8") as handle:
        return Settings(**json.load(handle))
