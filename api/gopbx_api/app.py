"""The GoPBX control-plane API (FastAPI)."""

import time

import redis
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

from . import auth, calls, nodes, passwords, provisioning, tenants, xmlcurl
from .db import Database
from .kamailio import Kamailio
from .models import TokenRequest

MAX_BODY_BYTES = 64 * 1024


def create_app(settings, database=None, kamailio=None):
    app = FastAPI(title="GoPBX API", version="0.1.0")
    app.state.settings = settings
    app.state.db = database or Database(settings.database_dsn)
    app.state.kamailio = kamailio or Kamailio(settings.kamailio_rpc_url)
    app.state.redis = redis.Redis.from_url(settings.redis_url, socket_timeout=2, socket_connect_timeout=2)
    registry = CollectorRegistry()
    requests_total = Counter("gopbx_api_requests_total", "API requests", ["method", "route", "status"],
                             registry=registry)
    latency = Histogram("gopbx_api_request_seconds", "API request latency", ["route"], registry=registry)

    @app.middleware("http")
    async def measure(request: Request, call_next):
        started = time.perf_counter()
        response = await call_next(request)
        # The route's template, not the path: tenant names must not become label values.
        route = getattr(request.scope.get("route"), "path", "unmatched")
        requests_total.labels(request.method, route, str(response.status_code)).inc()
        latency.labels(route).observe(time.perf_counter() - started)
        return response

    @app.middleware("http")
    async def limit_body(request: Request, call_next):
        length = request.headers.get("content-length")
        if length and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
            return JSONResponse({"detail": f"request body over {MAX_BODY_BYTES} bytes"}, status_code=413)
        return await call_next(request)

    @app.post("/v1/token")
    def token(body: TokenRequest, request: Request):
        who = _login(request.app.state, body.username, body.password)
        if who is None:
            raise HTTPException(401, detail="wrong username or password")
        return {"access_token": auth.issue(settings, who), "token_type": "bearer",
                "expires_in": settings.jwt_ttl_seconds}

    @app.get("/healthz")
    def healthz(request: Request):
        checks = {"postgresql": _healthy(_postgresql_ok, request.app.state),
                  "redis": _healthy(lambda state: state.redis.ping(), request.app.state)}
        return JSONResponse(checks, status_code=200 if all(checks.values()) else 503)

    @app.get("/metrics")
    def metrics():
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    app.include_router(tenants.router, dependencies=[Depends(auth.principal)])
    app.include_router(calls.router)
    app.include_router(nodes.router)
    app.include_router(provisioning.router)
    # FreeSWITCH nodes authenticate with their own credentials, not tokens.
    app.include_router(xmlcurl.router)
    return app


def _postgresql_ok(state):
    with state.db.transaction() as cursor:
        cursor.execute("SELECT 1 AS ok")
        return cursor.fetchone()["ok"] == 1


def _healthy(check, state):
    try:
        return bool(check(state))
    except Exception:  # noqa: BLE001  (any failure of the dependency is "unhealthy")
        return False


def _login(state, username, password):
    stored = state.settings.platform_admins.get(username)
    if stored is not None:
        return auth.Principal(username, auth.PLATFORM) if passwords.verify_password(password, stored) else None
    with state.db.transaction() as cursor:
        cursor.execute("SELECT a.password_hash, t.domain FROM gopbx.tenant_admins a "
                       "JOIN gopbx.tenants t ON t.id = a.tenant_id WHERE a.username = %s", (username,))
        row = cursor.fetchone()
    if row and passwords.verify_password(password, row["password_hash"]):
        return auth.Principal(username, auth.TENANT, row["domain"])
    return None
