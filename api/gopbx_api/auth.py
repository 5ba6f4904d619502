"""
JWT access tokens with two scopes: 'platform' (every tenant) and 'tenant'
(one tenant, named in the token). Short-lived, HS256, signed with the first key
and accepted under any configured key (rotation without downtime).
"""

import time
from dataclasses import dataclass

import jwt
from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

ISSUER = "gopbx"
PLATFORM, TENANT = "platform", "tenant"

bearer = HTTPBearer(auto_error=False)


@dataclass(frozen=True)
class Principal:
    subject: str
    scope: str
    tenant: str | None = None

    def may_act_on(self, domain):
        return self.scope == PLATFORM or (self.scope == TENANT and self.tenant == domain)


def issue(settings, principal):
    now = int(time.time())
    claims = {"iss": ISSUER, "sub": principal.subject, "scope": principal.scope, "iat": now,
              "exp": now + settings.jwt_ttl_seconds}
    if principal.tenant:
        claims["tenant"] = principal.tenant
    return jwt.encode(claims, settings.jwt_keys[0], algorithm="HS256")


def verify(settings, token):
    for key in settings.jwt_keys:
        try:
            claims = jwt.decode(token, key, algorithms=["HS256"], issuer=ISSUER,
                                options={"require": ["exp", "iat", "sub", "scope"]})
        except jwt.InvalidSignatureError:
            continue
        except jwt.PyJWTError as exc:
            raise HTTPException(401, detail=f"invalid token: {exc}") from None
        if claims["scope"] not in (PLATFORM, TENANT) or (claims["scope"] == TENANT and not claims.get("tenant")):
            raise HTTPException(401, detail="invalid token: bad scope")
        return Principal(claims["sub"], claims["scope"], claims.get("tenant"))
    raise HTTPException(401, detail="invalid token: signature")


def principal(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)):
    if credentials is None:
        raise HTTPException(401, detail="a bearer token is required")
    return verify(request.app.state.settings, credentials.credentials)


def platform_admin(who: Principal = Depends(principal)):
    if who.scope != PLATFORM:
        raise HTTPException(403, detail="platform scope required")
    return who
