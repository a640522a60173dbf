"""``GET /events`` (and ``/arena/events``, the seed's alias): bus -> Server-Sent Events.

Refusals: ``invalid_subject`` (422), ``too_many_patterns`` (422, more than
``relay.MAX_PATTERNS`` distinct patterns), ``too_many_streams`` (429, the user
already has ``relay.MAX_STREAMS_PER_USER`` streams open on this API process).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Header, Query
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from rbot.bus.subjects import SubjectError

from ..context import ApiContext, Ctx
from ..errors import ApiError
from ..hub import hub_of
from ..relay import MAX_PATTERNS, SSE_BATCH, Relay, StreamSlots, TooManyPatterns
from ..security import CurrentSession
from ..sessionwatch import SessionRef

router = APIRouter(tags=["events"])

# stream sequences are uint64: a larger id resumes nothing (and JetStream refuses it)
MAX_EVENT_ID = 2**63 - 1
SLOTS_KEY = "sse_slots"


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


def slots_of(ctx: ApiContext) -> StreamSlots:
    slots = ctx.extras.get(SLOTS_KEY)
    if not isinstance(slots, StreamSlots):
        slots = ctx.extras[SLOTS_KEY] = StreamSlots()
    return slots


class HeldStream(StreamingResponse):
    """A streaming response that gives its slot back however it ends.

    Released after the response, whether the stream ended, the client went away
    or the body was never iterated (a generator's ``finally`` would not run then).
    """

    def __init__(self, *args: object, release: Callable[[], None], **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


@router.get("/events", response_class=StreamingResponse)
@router.get("/arena/events", response_class=StreamingResponse, include_in_schema=False)
async def events(
    ctx: Ctx,
    session: CurrentSession,
    subjects: Annotated[
        str | None,
        Query(
            description="comma-separated subject patterns, e.g. evt.order.>,evt.heartbeat "
            f"(at most {MAX_PATTERNS} distinct)",
        ),
    ] = None,
    since: Annotated[
        int | None,
        Query(ge=0, le=MAX_EVENT_ID, description="replay order events after this id"),
    ] = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> StreamingResponse:
    principal = session.principal
    patterns = (subjects or "").split(",")
    try:
        relay = Relay(
            ctx.bus,
            principal,  # non-admins see only their own order events
            patterns,
            _last_id(last_event_id, since),
            hub=hub_of(ctx.extras, ctx.bus),  # one bus subscription per filter, all clients
            session=SessionRef(user=principal.sub, gen=session.claims.gen, sid=session.claims.sid),
            keepalive_s=ctx.settings.rbot_sse_keepalive_s,
        )
    except TooManyPatterns as exc:
        raise ApiError(422, "too_many_patterns", str(exc)) from None
    except SubjectError as exc:
        raise ApiError(422, "invalid_subject", str(exc)) from None
    slots = slots_of(ctx)
    if not slots.acquire(principal.sub):
        raise ApiError(
            429,
            "too_many_streams",
            f"at most {slots.limit} event streams per user; close one first",
            headers={"Retry-After": "5"},
        )
    released = False

    def release() -> None:
        nonlocal released
        if not released:
            released = True
            slots.release(principal.sub)

    return HeldStream(
        relay.events(SSE_BATCH),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        release=release,
    )
