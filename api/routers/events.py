"""``GET /events`` (and ``/arena/events``, the seed's alias): bus -> Server-Sent Events."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query
from fastapi.responses import StreamingResponse

from rbot.bus.subjects import SubjectError

from ..context import Ctx
from ..errors import ApiError
from ..relay import Relay
from ..security import Authenticated

router = APIRouter(tags=["events"])

# stream sequences are uint64: a larger id resumes nothing (and JetStream refuses it)
MAX_EVENT_ID = 2**63 - 1


def _last_id(header: str | None, query: int | None) -> int | None:
    if header:
        try:
            value = int(header)
        except ValueError:
            raise ApiError(
                422, "invalid_last_event_id", "Last-Event-ID must be an integer"
            ) from None
        if value > MAX_EVENT_ID:
            raise ApiError(422, "invalid_last_event_id", "Last-Event-ID is out of range")
        return max(value, 0)
    return query


@router.get("/events", response_class=StreamingResponse)
@router.get("/arena/events", response_class=StreamingResponse, include_in_schema=False)
async def events(
    ctx: Ctx,
    principal: Authenticated,
    subjects: Annotated[
        str | None,
        Query(description="comma-separated subject patterns, e.g. evt.order.>,evt.heartbeat"),
    ] = None,
    since: Annotated[
        int | None,
        Query(ge=0, le=MAX_EVENT_ID, description="replay order events after this id"),
    ] = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> StreamingResponse:
    patterns = [p.strip() for p in (subjects or "").split(",") if p.strip()]
    try:
        relay = Relay(
            ctx.bus,
            principal,  # non-admins see only their own order events
            patterns,
            _last_id(last_event_id, since),
            keepalive_s=ctx.settings.rbot_sse_keepalive_s,
        )
    except SubjectError as exc:
        raise ApiError(422, "invalid_subject", str(exc)) from None
    return StreamingResponse(
        relay.events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
