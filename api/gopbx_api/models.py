"""Request and response bodies. Unknown fields, wrong types and bad values are refused (422)."""

import re
from typing import Annotated

from fastapi import Path, Query
from pydantic import BaseModel, ConfigDict, Field, field_validator

# PostgreSQL's integer: a larger number must be refused here, not fail in the database.
PG_INT_MAX = 2**31 - 1

# Pagination and filters shared by the list endpoints.
Limit = Annotated[int, Query(ge=1, le=500)]
Offset = Annotated[int, Query(ge=0, le=PG_INT_MAX)]
SetIdFilter = Annotated[int | None, Query(ge=1, le=PG_INT_MAX)]

# Path parameters are checked before any lookup (a NUL byte once reached psycopg2: a 500).
DomainPath = Annotated[str, Path(min_length=4, max_length=64,
                                 pattern=r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")]
NumberPath = Annotated[str, Path(pattern=r"^[0-9]{2,15}$")]

# Always used with fullmatch: re.match with "$" also accepts a trailing newline,
# which once let "name.example\n" in beside "name.example".
DOMAIN = re.compile(r"(?=.{4,64}\Z)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}")
# C0 and C1 controls (CR and LF among them): text may end up in SIP headers and XML.
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# Lone UTF-16 surrogates parse from JSON ("\ud800") but cannot be encoded as UTF-8.
SURROGATE = re.compile(r"[\ud800-\udfff]")


def is_domain(value):
    return isinstance(value, str) and DOMAIN.fullmatch(value) is not None


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    @field_validator("*")
    @classmethod
    def plain_text(cls, value):
        # PostgreSQL can't store NUL or lone surrogates, and CR/LF in a name would
        # end up in SIP and XML: refuse them here rather than fail later.
        if isinstance(value, str):
            if SURROGATE.search(value):
                raise ValueError("must be valid Unicode (no lone surrogates)")
            if CONTROL.search(value):
                raise ValueError("must not contain control characters (CR, LF, NUL, ...)")
        return value


class TokenRequest(Strict):
    username: str = Field(min_length=1, max_length=128)
    password: str = Field(min_length=1, max_length=256)


class TenantIn(Strict):
    domain: str
    name: str = Field(min_length=1, max_length=200)
    max_calls: int = Field(ge=1, le=10000)
    calls_per_second: int = Field(ge=1, le=1000)
    dispatcher_set: int = Field(ge=1, le=PG_INT_MAX)
    enabled: bool = True

    @field_validator("domain")
    @classmethod
    def domain_is_a_hostname(cls, value):
        if not is_domain(value):
            raise ValueError("must be a lower-case DNS name of 4 to 64 characters, such as acme.gopbx.au")
        return value


class TenantPatch(Strict):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    max_calls: int | None = Field(default=None, ge=1, le=10000)
    calls_per_second: int | None = Field(default=None, ge=1, le=1000)
    enabled: bool | None = None


class ExtensionIn(Strict):
    number: str = Field(pattern=r"^[0-9]{2,15}$")
    password: str = Field(min_length=12, max_length=128)
    caller_id_name: str = Field(default="", max_length=100)
    enabled: bool = True

    @field_validator("password")
    @classmethod
    def password_is_strong(cls, value):
        classes = sum(bool(re.search(pattern, value)) for pattern in (r"[a-z]", r"[A-Z]", r"[0-9]", r"[^A-Za-z0-9]"))
        if classes < 3:
            raise ValueError("must mix at least three of lower case, upper case, digits and symbols")
        return value
