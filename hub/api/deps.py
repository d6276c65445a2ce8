"""Request dependencies: the hub's wired components and the calling client."""

from __future__ import annotations

from contextvars import ContextVar, Token
import re
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, Header, Path, Query, Request
from pydantic import BeforeValidator
from pydantic_core import core_schema
from sqlalchemy import Column, Row, Table, select

from hub.bootstrap import Hub
from hub.crypto import hash_api_key
from hub.ingest.contract import IsoDate, Written
from hub.ingest.service import Client
from hub.api.limits import Refusal, Scope
from hub.api.problems import ProblemError
from hub.observability.logging import get_logger
from hub.store.db import read_only

log = get_logger("hub.api.deps")


async def get_hub(request: Request) -> Hub:
    # async: FastAPI would run a plain function in its thread pool (a thread hop per request)
    return request.app.state.hub


HubDep = Annotated[Hub, Depends(get_hub)]


# The client the front found for this request's key (`ApiKeyCheck`, before
# the body was read), as (key, client): the route's own check takes it from
# here rather than looking the key up again.
_AUTHENTICATED: ContextVar[tuple[str, Client] | None] = ContextVar("hub_authenticated", default=None)
_NO_KEY = (401, "unauthenticated", "Authentication required", "send the source's API key in X-API-Key")
_UNKNOWN_KEY = (401, "unauthenticated", "Authentication failed", "the API key is not recognised or is revoked")


async def get_client(hub: HubDep, x_api_key: Annotated[str | None, Header()] = None) -> Client:
    held = _AUTHENTICATED.get()
    if held is not None and held[0] == x_api_key:
        return held[1]
    if not x_api_key:
        raise ProblemError(*_NO_KEY)
    client = await hub.clients.client_for(hub.engine, hash_api_key(x_api_key))
    if client is None:
        raise ProblemError(*_UNKNOWN_KEY)
    return client


class ApiKeyCheck:
    """The key of every request under /v1/, checked by the front
    (hub/api/limits.py `LimitsMiddleware`) before a byte of the body is read
    or waited for: without a key, or with one not recognised, the answer is
    the routes' own 401 (`get_client`), at once. FastAPI solves a route's
    body parameters before its `ClientDep`: a body that never came was
    waited for, and one that was not JSON answered 422, before the key was
    looked at. The client found is handed to `get_client` for the request.
    `hub`: set by the app's lifespan (else the app's state is asked)."""

    prefix = "/v1/"

    def __init__(self) -> None:
        self.hub: Hub | None = None

    async def check(self, scope: Scope, api_key: bytes | None) -> Token[tuple[str, Client] | None]:
        if not api_key:
            raise Refusal(*_NO_KEY)
        key = api_key.decode("latin-1")  # as Starlette reads a header
        hub = self.hub or scope["app"].state.hub
        client = await hub.clients.client_for(hub.engine, hash_api_key(key))
        if client is None:
            raise Refusal(*_UNKNOWN_KEY)
        return _AUTHENTICATED.set((key, client))

    def done(self, token: Any) -> None:
        _AUTHENTICATED.reset(token)


ClientDep = Annotated[Client, Depends(get_client)]


def require(client: Client, scope: str) -> None:
    if scope not in client.scopes and "hub:admin" not in client.scopes:
        # A key used beyond its scopes (a council's key on /v1/ops, a trust's on subscriptions): on
        # record for the operator beside the request line, which gives the path and status only.
        log.warning("request refused: scope not held", source=client.client_id, org_code=client.org_code,
                    reason_codes=[scope])
        raise ProblemError(403, "forbidden", "Not permitted", f"this client lacks the '{scope}' scope")


# Bounded query parameters: an out-of-range number is a 422 naming the field,
# never an overflow inside the database or the date arithmetic.
MAX_ID = 2**62
_DIGITS = re.compile(r"[0-9]{1,19}")


def _digits_only(value: Any) -> Any:
    """A number in a query or a path is written in the digits 0-9 and nothing else: pydantic's lax
    int also read "5_0" (50), "+5", " 5 " and "5.0", so a typo became another page or another
    cursor. Anything else is a 422 naming the parameter."""
    if isinstance(value, str) and _DIGITS.fullmatch(value) is None:
        raise ValueError("must be a whole number written in the digits 0-9")
    return value


WholeNumber = BeforeValidator(_digits_only)


def whole_number(text: str) -> int | None:
    """A header's number read as a query's is (`_digits_only`): the digits 0-9 only, else None."""
    return int(text) if _DIGITS.fullmatch(text) else None


Limit = Annotated[int, Query(ge=1, le=1000, description="page size"), WholeNumber]
Cursor = Annotated[int, Query(ge=0, le=MAX_ID, description="last cursor handled"), WholeNumber]
Hours = Annotated[int, Query(ge=1, le=24 * 366, description="look-back window in hours"), WholeNumber]
Days = Annotated[int, Query(ge=1, le=3660, description="look-back window in days"), WholeNumber]
RowId = Annotated[int, Path(ge=1, le=MAX_ID), WholeNumber]
EventNumber = Annotated[int, Query(ge=1, le=MAX_ID), WholeNumber]
# A date in a query: YYYY-MM-DD only (hub.ingest.contract `IsoDate`), where pydantic's lax date
# also read a Unix time (?as_of=1735689600) or a datetime ("2026-01-01T00:00:00Z") as a date.
QueryDate = IsoDate
_INSTANT = (r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(:[0-9]{2}([.][0-9]{1,9})?)?"
            r"(Z|[+-][0-9]{2}:?[0-9]{2})?$")
# An instant in a query: an ISO 8601 date and time (seconds, fraction and offset optional; the handler
# reads one without an offset as UTC), where pydantic's lax datetime also read a Unix time
# (?since=1735689600) and a bare date.
QueryInstant = Annotated[datetime, Written(_INSTANT, core_schema.datetime_schema, "date-time")]


async def own_row(hub: Hub, client: Client, table: Table, key: Column, value: str, what: str) -> Row:
    """One row of `table` that the calling source owns (its `source` column is
    the client), or any row for the hub operator; otherwise 404, the same
    answer as for an id that does not exist."""
    async with hub.engine.connect() as conn:
        row = (await conn.execute(select(table).where(key == value))).first()
        await conn.rollback()
    if row is None or (row.source != client.client_id and "hub:admin" not in client.scopes):
        raise ProblemError(404, "not-found", "Not found", f"no {what} with that id for this client")
    return row


async def person_id_for_nhs_number(hub: Hub, nhs_number: str) -> str | None:
    """The hub's person id for an NHS number sent in a body (never a URL),
    found by its keyed hash; a 422 naming `nhs_number` if it is not a valid
    one; None if no one on the register has it."""
    from hub.ingest.nhs_number import nhs_number_problem, normalise  # noqa: PLC0415
    from hub.store.db import read_only  # noqa: PLC0415
    from hub.store.merged import person_id_by_index  # noqa: PLC0415

    reason = nhs_number_problem(nhs_number)
    if reason:
        raise ProblemError(422, "invalid-request", "Request rejected", "nhs_number " + reason,
                           errors=[{"field": "nhs_number", "reason": reason}])
    index = hub.protector.index(normalise(nhs_number))
    async with read_only(hub.engine) as conn:
        # A number superseded by a merge: the retained number's person (hub/store/merged.py).
        return await person_id_by_index(conn, index)
