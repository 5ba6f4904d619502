"""The GoPBX control-plane API (FastAPI)."""

import time

import psycopg2
import redis
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

from . import auth, calls, nodes, passwords, provisioning, tenants, xmlcurl
from .db import Busy, Database
from .kamailio import Kamailio
from .models import TokenRequest

MAX_BODY_BYTES = 64 * 1024


def create_app(settings, database=None, kamailio=None):
    # No slash redirects: they build an absolute Location from the request's Host.
    app = FastAPI(title="GoPBX API", version="0.1.0", redirect_slashes=False)
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

    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        # Where and why, never the input itself: it may not be encodable as JSON
        # (a lone surrogate, NaN, 1e309), and echoing it back helps no one.
        errors = [{"loc": list(error.get("loc", ())), "msg": str(error.get("msg", "")), "type": error.get("type")}
                  for error in exc.errors()]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.exception_handler(Busy)
    async def busy(request: Request, exc: Busy):
        return JSONResponse({"detail": f"busy, try again: {exc}"}, status_code=503, headers={"Retry-After": "1"})

    # The database went away mid-request (a failover, pgBouncer repointing): the
    # write is not acknowledged (its transaction is rolled back, or its commit's
    # outcome unknown to the client), and the client may try again in a moment.
    @app.exception_handler(psycopg2.OperationalError)
    @app.exception_handler(psycopg2.InterfaceError)
    async def database_unavailable(request: Request, exc: Exception):
        return JSONResponse({"detail": "the database is unavailable for a moment, try again"}, status_code=503,
                            headers={"Retry-After": "1"})

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
    """The principal for these credentials, or None. Every path runs one PBKDF2 check
    and one query, so the time taken does not tell whether a username exists."""
    with state.db.transaction() as cursor:
        cursor.execute("SELECT a.password_hash, t.domain FROM gopbx.tenant_admins a "
                       "JOIN gopbx.tenants t ON t.id = a.tenant_id WHERE a.username = %s", (username,))
        row = cursor.fetchone()
    admin_hash = state.settings.platform_admins.get(username)
    if admin_hash is not None:
        who, stored = auth.Principal(username, auth.PLATFORM), admin_hash
    elif row is not None:
        who, stored = auth.Principal(username, auth.TENANT, row["domain"]), row["password_hash"]
    else:
        who, stored = None, passwords.DUMMY_HASH
    return who if passwords.verify_password(password, stored) and who is not None else None


class BodyLimit:
    """
    Refuse bodies over max_bytes with 413, whether or not they declare a
    Content-Length: the body (small by then) is read first and counted as it
    arrives, chunked or not, then handed on to the app.
    """

    def __init__(self, app, max_bytes):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            return await self._too_large(scope, send)
        parts, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            parts.append(message.get("body", b""))
            size += len(parts[-1])
            if size > self.max_bytes:
                return await self._too_large(scope, send)
            more = message.get("more_body", False)
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()  # later calls wait for the disconnect, as before
            replayed = True
            return {"type": "http.request", "body": b"".join(parts), "more_body": False}

        await self.app(scope, replay, send)

    async def _too_large(self, scope, send):
        response = JSONResponse({"detail": f"request body over {self.max_bytes} bytes"}, status_code=413)
        await response(scope, None, send)
