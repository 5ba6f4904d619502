"""Tenants and their extensions. Every write is one transaction with its audit row."""

import psycopg2
from fastapi import APIRouter, Depends, HTTPException, Query, Request

from . import auth
from .db import audit
from .models import DomainPath, ExtensionIn, Limit, NumberPath, Offset, TenantIn, TenantPatch
from .passwords import sip_ha1

router = APIRouter(prefix="/v1")

TENANT_COLUMNS = ("name", "max_calls", "calls_per_second", "enabled")
# Kamailio reads a tenant's routing from domain_attrs (integers).
ATTRS = {"max_calls": "max_calls", "calls_per_second": "calls_per_second", "enabled": "enabled"}


def own(who, domain):
    # Checked before any lookup, so a foreign tenant's existence does not leak.
    if not who.may_act_on(domain):
        raise HTTPException(403, detail="this token may not act on that tenant")


def tenant_row(cursor, domain):
    cursor.execute("SELECT t.id, t.domain, t.name, t.max_calls, t.calls_per_second, t.enabled, s.setid "
                   "AS dispatcher_set FROM gopbx.tenants t LEFT JOIN gopbx.shard_assignments s "
                   "ON s.tenant_id = t.id WHERE t.domain = %s", (domain,))
    row = cursor.fetchone()
    if row is None:
        raise HTTPException(404, detail="no such tenant")
    return row


def _public(row):
    return {key: value for key, value in row.items() if key != "id"}


@router.get("/tenants")
def list_tenants(request: Request, who: auth.Principal = Depends(auth.platform_admin),
                 limit: Limit = 50, offset: Offset = 0,
                 enabled: bool | None = None, domain_prefix: str = Query("", max_length=64, pattern=r"^[a-z0-9.-]*$")):
    with request.app.state.db.transaction() as cursor:
        cursor.execute("SELECT t.domain, t.name, t.max_calls, t.calls_per_second, t.enabled, s.setid AS "
                       "dispatcher_set, count(*) OVER () AS total FROM gopbx.tenants t LEFT JOIN "
                       "gopbx.shard_assignments s ON s.tenant_id = t.id WHERE (%s::boolean IS NULL OR t.enabled "
                       "= %s) AND t.domain LIKE %s ORDER BY t.domain LIMIT %s OFFSET %s",
                       (enabled, enabled, domain_prefix.replace("%", "").replace("_", r"\_") + "%", limit, offset))
        rows = cursor.fetchall()
    total = rows[0]["total"] if rows else 0
    return {"items": [{k: v for k, v in row.items() if k != "total"} for row in rows], "total": total,
            "limit": limit, "offset": offset}


@router.post("/tenants", status_code=201)
def create_tenant(body: TenantIn, request: Request, who: auth.Principal = Depends(auth.platform_admin)):
    try:
        with request.app.state.db.transaction() as cursor:
            cursor.execute("SELECT 1 FROM gopbx.dispatcher_sets WHERE setid = %s", (body.dispatcher_set,))
            if cursor.fetchone() is None:
                raise HTTPException(422, detail=f"dispatcher set {body.dispatcher_set} does not exist")
            cursor.execute("INSERT INTO gopbx.tenants (domain, name, max_calls, calls_per_second, enabled) "
                           "VALUES (%s, %s, %s, %s, %s) RETURNING id",
                           (body.domain, body.name, body.max_calls, body.calls_per_second, body.enabled))
            tenant_id = cursor.fetchone()["id"]
            cursor.execute("INSERT INTO gopbx.shard_assignments (tenant_id, setid, assigned_by) VALUES (%s, %s, %s)",
                           (tenant_id, body.dispatcher_set, who.subject))
            cursor.execute("INSERT INTO domain (domain, did) VALUES (%s, %s)", (body.domain, body.domain))
            attrs = {"dispatcher_set": body.dispatcher_set, "max_calls": body.max_calls,
                     "calls_per_second": body.calls_per_second, "enabled": int(body.enabled)}
            for name, value in attrs.items():
                cursor.execute("INSERT INTO domain_attrs (did, name, type, value) VALUES (%s, %s, 0, %s)",
                               (body.domain, name, str(value)))
            audit(cursor, who.subject, "create", "tenant", body.domain, body.model_dump())
    except psycopg2.errors.UniqueViolation:
        raise HTTPException(409, detail="a tenant with that domain exists") from None
    request.app.state.kamailio.reload_domains()
    return {**body.model_dump()}


@router.get("/tenants/{domain}")
def get_tenant(domain: DomainPath, request: Request, who: auth.Principal = Depends(auth.principal)):
    own(who, domain)
    with request.app.state.db.transaction() as cursor:
        return _public(tenant_row(cursor, domain))


@router.patch("/tenants/{domain}")
def update_tenant(domain: DomainPath, body: TenantPatch, request: Request,
                  who: auth.Principal = Depends(auth.platform_admin)):
    changes = body.model_dump(exclude_none=True)
    if not changes:
        raise HTTPException(422, detail="nothing to change")
    with request.app.state.db.transaction() as cursor:
        tenant_row(cursor, domain)
        assignments = ", ".join(f"{column} = %s" for column in changes)
        cursor.execute(f"UPDATE gopbx.tenants SET {assignments}, updated_at = now() WHERE domain = %s",
                       (*changes.values(), domain))
        for column, value in changes.items():
            if column in ATTRS:
                cursor.execute("UPDATE domain_attrs SET value = %s WHERE did = %s AND name = %s",
                               (str(int(value)), domain, ATTRS[column]))
        audit(cursor, who.subject, "update", "tenant", domain, changes)
        row = tenant_row(cursor, domain)
    request.app.state.kamailio.reload_domains()
    return _public(row)


@router.delete("/tenants/{domain}", status_code=204)
def delete_tenant(domain: DomainPath, request: Request, who: auth.Principal = Depends(auth.platform_admin)):
    with request.app.state.db.transaction() as cursor:
        tenant_row(cursor, domain)
        cursor.execute("DELETE FROM subscriber WHERE domain = %s", (domain,))
        cursor.execute("DELETE FROM domain_attrs WHERE did = %s", (domain,))
        cursor.execute("DELETE FROM domain WHERE domain = %s", (domain,))
        cursor.execute("DELETE FROM gopbx.tenants WHERE domain = %s", (domain,))
        audit(cursor, who.subject, "delete", "tenant", domain)
    request.app.state.kamailio.reload_domains()


@router.get("/tenants/{domain}/extensions")
def list_extensions(domain: DomainPath, request: Request, who: auth.Principal = Depends(auth.principal),
                    limit: Limit = 50, offset: Offset = 0):
    own(who, domain)
    with request.app.state.db.transaction() as cursor:
        tenant = tenant_row(cursor, domain)
        cursor.execute("SELECT number, caller_id_name, enabled, count(*) OVER () AS total FROM gopbx.extensions "
                       "WHERE tenant_id = %s ORDER BY number LIMIT %s OFFSET %s", (tenant["id"], limit, offset))
        rows = cursor.fetchall()
    return {"items": [{k: v for k, v in row.items() if k != "total"} for row in rows],
            "total": rows[0]["total"] if rows else 0, "limit": limit, "offset": offset}


@router.post("/tenants/{domain}/extensions", status_code=201)
def create_extension(domain: DomainPath, body: ExtensionIn, request: Request,
                     who: auth.Principal = Depends(auth.principal)):
    own(who, domain)
    ha1, ha1b = sip_ha1(body.number, domain, body.password)
    try:
        with request.app.state.db.transaction() as cursor:
            tenant = tenant_row(cursor, domain)
            cursor.execute("INSERT INTO gopbx.extensions (tenant_id, number, caller_id_name, enabled) "
                           "VALUES (%s, %s, %s, %s)", (tenant["id"], body.number, body.caller_id_name, body.enabled))
            if body.enabled:
                # Only a hash reaches the database; the password itself is never stored.
                cursor.execute("INSERT INTO subscriber (username, domain, ha1, ha1b) VALUES (%s, %s, %s, %s)",
                               (body.number, domain, ha1, ha1b))
            audit(cursor, who.subject, "create", "extension", f"{body.number}@{domain}",
                  body.model_dump(exclude={"password"}))
    except psycopg2.errors.UniqueViolation:
        raise HTTPException(409, detail="that extension exists") from None
    return body.model_dump(exclude={"password"})


@router.delete("/tenants/{domain}/extensions/{number}", status_code=204)
def delete_extension(domain: DomainPath, number: NumberPath, request: Request, who: auth.Principal = Depends(auth.principal)):
    own(who, domain)
    with request.app.state.db.transaction() as cursor:
        tenant = tenant_row(cursor, domain)
        cursor.execute("DELETE FROM gopbx.extensions WHERE tenant_id = %s AND number = %s", (tenant["id"], number))
        if cursor.rowcount == 0:
            raise HTTPException(404, detail="no such extension")
        cursor.execute("DELETE FROM subscriber WHERE username = %s AND domain = %s", (number, domain))
        audit(cursor, who.subject, "delete", "extension", f"{number}@{domain}")
