"""The GoPBX control-plane API (FastAPI)."""

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse

from . import auth, passwords, tenants, xmlcurl
from .db import Database
from .kamailio import Kamailio
from .models import TokenRequest

MAX_BODY_BYTES = 64 * 1024


def create_app(settings, database=None, kamailio=None):
    app = FastAPI(title="GoPBX API", version="0.1.0")
    app.state.settings = settings
    app.state.db = database or Database(settings.database_dsn)
    app.state.kamailio = kamailio or Kamailio(settings.kamailio_rpc_url)

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
        with request.app.state.db.transaction() as cursor:
            cursor.execute("SELECT 1 AS ok")
            return {"postgresql": cursor.fetchone()["ok"] == 1}

    app.include_router(tenants.router, prefix="/v1", dependencies=[Depends(auth.principal)])
    # FreeSWITCH nodes authenticate with their own credentials, not tokens.
    app.include_router(xmlcurl.router, prefix="/v1")
    return app


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
