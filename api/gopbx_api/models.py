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

DOMAIN = re.compile(r"^(?=.{4,64}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    @field_validator("*")
    @classmethod
    def no_nul_bytes(cls, value):
        # PostgreSQL text can't hold NUL: refuse it here rather than fail in psycopg2.
        if isinstance(value, str) and "\x00" in value:
            raise ValueError("must not contain NUL characters")
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
        if not DOMAIN.match(value):
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
