"""A tenant's live calls (from the call-events service, via Redis), hang-up, and the SSE stream."""

import asyncio
import json
import re

import redis.asyncio
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import StreamingResponse

from . import auth, esl
from .call_events import CallStore, events_channel
from .db import audit
from .models import DomainPath
from .tenants import own, tenant_row

router = APIRouter(prefix="/v1")
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def _existing_tenant(request, who, domain):
    own(who, domain)
    with request.app.state.db.transaction() as cursor:
        tenant_row(cursor, domain)


@router.get("/tenants/{domain}/calls")
def live_calls(domain: DomainPath, request: Request, who: auth.Principal = Depends(auth.principal)):
    _existing_tenant(request, who, domain)
    calls = CallStore(request.app.state.redis).live(domain)
    return {"items": calls, "total": len(calls)}


@router.delete("/tenants/{domain}/calls/{call_uuid}", status_code=204)
def hang_up(domain: DomainPath, call_uuid: str, request: Request, who: auth.Principal = Depends(auth.principal)):
    _existing_tenant(request, who, domain)
    if not UUID.fullmatch(call_uuid):
        raise HTTPException(422, detail="a call is named by its lower-case UUID")
    # Only a call recorded under this tenant can be reached: the tenant scope holds.
    call = CallStore(request.app.state.redis).get(domain, call_uuid)
    if call is None:
        raise HTTPException(404, detail="no such live call")
    with request.app.state.db.transaction() as cursor:
        cursor.execute("SELECT host(address) AS address FROM gopbx.nodes WHERE minion_id = %s", (call["node"],))
        node = cursor.fetchone()
    settings = request.app.state.settings
    if node is None or not settings.esl_password:
        raise HTTPException(502, detail="the call's media node is not reachable")
    try:
        with esl.Connection(node["address"], settings.esl_port, settings.esl_password,
                            source_address=settings.esl_source_address or None) as conn:
            answer = conn.api(f"uuid_kill {call_uuid}")
    except esl.EventSocketError as exc:
        raise HTTPException(502, detail=f"the call's media node did not answer: {exc}") from None
    if not answer.startswith("+OK"):
        raise HTTPException(404, detail="no such live call")
    with request.app.state.db.transaction() as cursor:
        audit(cursor, who.subject, "hangup", "call", call_uuid, {"tenant": domain, "node": call["node"]})


@router.get("/tenants/{domain}/events", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}}})
async def call_events(domain: DomainPath, request: Request, who: auth.Principal = Depends(auth.principal)):
    """Server-sent events: created, answered, hung_up; a comment line as heartbeat."""
    await asyncio.to_thread(_existing_tenant, request, who, domain)
    heartbeat = request.app.state.settings.sse_heartbeat_seconds
    client = redis.asyncio.Redis.from_url(request.app.state.settings.redis_url)
    pubsub = client.pubsub()
    await pubsub.subscribe(events_channel(domain))

    async def stream():
        try:
            yield ": connected\n\n"
            while not await request.is_disconnected():
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=heartbeat)
                if message is None:
                    yield ": heartbeat\n\n"
                    continue
                data = json.loads(message["data"])
                yield f"event: {data['event']}\ndata: {json.dumps(data['call'])}\n\n"
        finally:
            await pubsub.aclose()
            await client.aclose()

    # Nginx's events location turns buffering off; the header says so to any other proxy too.
    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
