"""
VMs on request (platform admins): POST /v1/provisioning {"profile": "freeswitch"}.

The API records the request and pokes the salt-master's webhook engine with its id
only; the master's reactor hands that to the gopbx.provision runner, which claims the
pending row, runs the salt-cloud profile and records the outcome here. Nothing in
the poke is trusted: an id that is not a pending request does nothing.
"""

from typing import Annotated, Literal

import requests
from fastapi import APIRouter, Depends, HTTPException, Path, Request

from . import auth
from .db import audit, page
from .models import PG_INT_MAX, Limit, Offset, Strict

router = APIRouter(prefix="/v1", dependencies=[Depends(auth.platform_admin)])
COLUMNS = "id, profile, state, name, detail, requested_by, created_at, updated_at"
RequestId = Annotated[int, Path(ge=1, le=PG_INT_MAX)]


class ProvisioningIn(Strict):
    # The salt-cloud profiles in cloud.profiles.d/gopbx.conf.
    profile: Literal["freeswitch", "kamailio-standby", "pg-replica"]


@router.post("/provisioning", status_code=202)
def request_vm(body: ProvisioningIn, request: Request, who=Depends(auth.platform_admin)):
    webhook = request.app.state.settings.salt_webhook_url
    if not webhook:
        raise HTTPException(503, detail="provisioning is not configured here (no salt_webhook_url)")
    database = request.app.state.db
    with database.transaction() as cursor:
        cursor.execute(f"INSERT INTO gopbx.provisioning_requests (profile, requested_by) VALUES (%s, %s) "
                       f"RETURNING {COLUMNS}", (body.profile, who.subject))
        row = cursor.fetchone()
        audit(cursor, who.subject, "request", "vm", str(row["id"]), {"profile": body.profile})
    try:
        requests.post(webhook, json={"request_id": row["id"]}, timeout=5).raise_for_status()
    except requests.RequestException as exc:
        with database.transaction() as cursor:
            cursor.execute("UPDATE gopbx.provisioning_requests SET state = 'failed', updated_at = now(), "
                           "detail = jsonb_build_object('error', %s::text) WHERE id = %s",
                           (f"the salt-master was not reached: {exc}", row["id"]))
        raise HTTPException(502, detail="the salt-master did not take the request") from None
    return row


@router.get("/provisioning/{request_id}")
def show_request(request_id: RequestId, request: Request):
    with request.app.state.db.transaction() as cursor:
        cursor.execute(f"SELECT {COLUMNS} FROM gopbx.provisioning_requests WHERE id = %s", (request_id,))
        row = cursor.fetchone()
    if row is None:
        raise HTTPException(404, detail="no such provisioning request")
    return row


@router.get("/provisioning")
def list_requests(request: Request, limit: Limit = 50, offset: Offset = 0):
    return page(request, f"SELECT {COLUMNS}, count(*) OVER () AS total FROM gopbx.provisioning_requests "
                         "ORDER BY id DESC", (), limit, offset)
