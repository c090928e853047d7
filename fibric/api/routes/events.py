"""/v1/events: ingest events (the reference), and read them back (additive, scope events:read).

An event is stored once per (tenant, idempotency_key): the first ingest is
202 with `"dedup": false`; every later one, concurrent ones included, is 200
with `"dedup": true` and the original envelope, whatever it carries this time.
reseller_id and tenant_id come from the API key; a body naming either is 400.

Storing is all ingest does: routing to subscribed operators happens in the
controller's event router. After storing a new event the route wakes that
router through `app.state.event_router` (anything with a thread-safe,
non-blocking `wake()`), so routing starts at once instead of at its next
poll; with no router attached the event simply waits, stored.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints

from fibric import store, timefmt, tracing
from fibric.api import auth, context, error_responses, objects, pagination, routing, schemas
from fibric.store import event_store

router = APIRouter(prefix="/v1/events", tags=["events"], responses=error_responses.RESPONSES,
                   route_class=routing.Route)

Writer = Annotated[store.Principal, Depends(auth.require("events:write"))]
Reader = Annotated[store.Principal, Depends(auth.require("events:read"))]

TYPE_PATTERN = r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$"
KEY_PATTERN = r"^[^\x00-\x1f\x7f]+$"  # printable: keys travel in logs, headers and receipts
_RFC3339 = re.compile(
    r"(\d{4}-\d\d-\d\d)[Tt](\d\d:\d\d:\d\d)(?:\.(\d+))?([Zz]|[+-]\d\d:\d\d)"
)

EventType = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=TYPE_PATTERN)]
Key = Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=KEY_PATTERN)]


def parse_rfc3339(value: Any) -> Any:
    """An RFC 3339 date-time with an offset, as an aware UTC datetime."""
    if not isinstance(value, str):
        raise ValueError("must be an RFC 3339 timestamp string, e.g. 2026-06-14T08:58:00Z")
    match = _RFC3339.fullmatch(value)
    if match is None:
        raise ValueError("must be an RFC 3339 timestamp with an offset, e.g. 2026-06-14T08:58:00Z")
    day, clock, fraction, offset = match.groups()
    offset = "+00:00" if offset in ("Z", "z") else offset
    try:
        parsed = datetime.fromisoformat(f"{day}T{clock}.{(fraction or '0')[:6]:0<6}{offset}")
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        raise ValueError("is not a valid date and time") from None


class EventIngest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: EventType = Field(description="Dotted event type, e.g. order.updated.")
    entity_key: Key = Field(description="Stable key of the thing the event is about, e.g. order:SO-10884.")
    idempotency_key: Key = Field(description="Caller-supplied dedupe key; a repeat returns the original.")
    occurred_at: Annotated[datetime | None, BeforeValidator(parse_rfc3339)] = Field(
        default=None, description="RFC 3339; defaults to the time the server received the event."
    )
    data: dict[str, Any] = Field(description="The event payload.")


def represent(event: event_store.Event, *, dedup: bool | None = None, data: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": event.id,
        "object": "event",
        "reseller_id": event.reseller_id,
        "tenant_id": event.tenant_id,
        "type": event.type,
        "entity_key": event.entity_key,
        "idempotency_key": event.idempotency_key,
        "occurred_at": timefmt.rfc3339(event.occurred_at),
        "received_at": timefmt.rfc3339(event.received_at),
    }
    if dedup is not None:
        body["dedup"] = dedup
    if data:
        body["data"] = event.data
    return body


@router.post("", summary="Ingest an event",
             **schemas.returns(schemas.Event, 202, 413, also=(200,)))
def ingest_event(request: Request, ctx: context.Ctx, principal: Writer, body: EventIngest) -> JSONResponse:
    ingested = event_store.ingest(
        ctx.state,
        reseller_id=principal.reseller_id,
        tenant_id=principal.tenant_id,
        type=body.type,
        entity_key=body.entity_key,
        idempotency_key=body.idempotency_key,
        occurred_at=body.occurred_at,
        data=body.data,
        trace_context=tracing.traceparent(),
    )
    ctx.metrics.event_ingested(principal.tenant_id, dedup=ingested.dedup)
    tracing.annotate(event_id=ingested.event.id, event_type=body.type, dedup=ingested.dedup)
    if not ingested.dedup:
        wake_router(request)
    return JSONResponse(represent(ingested.event, dedup=ingested.dedup),
                        status_code=200 if ingested.dedup else 202)


def wake_router(request: Request) -> None:
    """Tell the event router (if this app has one) that a new event is stored."""
    event_router = context.event_router_of(request)
    if event_router is not None:
        event_router.wake()


@router.get("", summary="List events (additive)", **schemas.returns(schemas.EventList))
def list_events(
    ctx: context.Ctx,
    principal: Reader,
    page_params: pagination.Params,
    type: Annotated[EventType | None, Query(description="Only events of this type.")] = None,
    entity_key: Annotated[Key | None, Query(description="Only events about this entity.")] = None,
) -> JSONResponse:
    def fetch(before_seq: int | None, limit: int) -> list[event_store.Event]:
        return event_store.list_events(ctx.state, principal.tenant_id, type=type, entity_key=entity_key,
                                       limit=limit, before_seq=before_seq)

    page = pagination.paginate(fetch, page_params)
    return JSONResponse(pagination.envelope(page, [represent(e, data=True) for e in page.items]))


@router.get("/{event_id}", summary="Retrieve an event (additive)", **schemas.returns(schemas.Event, 200, 404))
def retrieve_event(ctx: context.Ctx, principal: Reader, event_id: str) -> JSONResponse:
    objects.check_ref("event", event_id)
    return JSONResponse(represent(event_store.get(ctx.state, principal.tenant_id, event_id), data=True))
