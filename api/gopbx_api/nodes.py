"""Read-only views for platform admins: media nodes and which set serves which tenant (Salt writes both)."""

from fastapi import APIRouter, Depends, Query, Request

from . import auth
from .db import page
from .models import Limit, Offset, SetIdFilter

router = APIRouter(prefix="/v1", dependencies=[Depends(auth.platform_admin)])


@router.get("/nodes")
def list_nodes(request: Request, limit: Limit = 50, offset: Offset = 0,
               setid: SetIdFilter = None, state: str | None = Query(None, pattern="^(active|draining|removed)$")):
    return page(request, "SELECT minion_id, host(address) AS address, sip_port, setid, capacity, state, "
                          "registered_at, updated_at, count(*) OVER () AS total FROM gopbx.nodes "
                          "WHERE (%s::int IS NULL OR setid = %s) AND (%s::text IS NULL OR state = %s) "
                          "ORDER BY minion_id", (setid, setid, state, state), limit, offset)


@router.get("/shard-assignments")
def list_shard_assignments(request: Request, limit: Limit = 50, offset: Offset = 0,
                           setid: SetIdFilter = None):
    return page(request, "SELECT t.domain AS tenant, s.setid, s.assigned_at, s.assigned_by, "
                          "count(*) OVER () AS total FROM gopbx.shard_assignments s "
                          "JOIN gopbx.tenants t ON t.id = s.tenant_id WHERE (%s::int IS NULL OR s.setid = %s) "
                          "ORDER BY t.domain", (setid, setid), limit, offset)
