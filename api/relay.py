"""Relay bus subjects to one SSE client.

Order events come from the JetStream stream ``ORDERS`` through an ordered
consumer of the client's own, so every SSE ``id:`` is the stream sequence and a
reconnect with ``Last-Event-ID: n`` resumes at ``n+1``: no loss, no duplicates.
Everything else (heartbeat pulse, actor events, ticks) is core pub/sub, relayed
without an id (ephemeral: a missed pulse is replaced by the next).

Limits, so one client cannot multiply the API's load:

- at most ``MAX_PATTERNS`` distinct patterns per stream (``too_many_patterns``);
- at most ``MAX_STREAMS_PER_USER`` open streams per user in one API process
  (``StreamSlots``; ``too_many_streams``);
- each client has its own queue of ``queue_size`` frames.  The order-event pump
  waits while it is half full (a replay goes at the client's pace); a client
  that lets it fill (core messages) or stalls the pump for ``slow_after_s`` is
  dropped with a logged reason and a last ``event: end`` frame.  It reconnects
  with ``Last-Event-ID`` and loses no order event.

While it streams, the session is watched (``sessionwatch.py``, KV watches):
logout, session revocation, disable or a password change end the stream
(``event: end``, ``data: {"code": ...}``) within milliseconds; a role change
takes effect at once (a demoted admin stops seeing other users' orders, even
those already queued).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import msgspec
from nats.aio.msg import Msg
from nats.js import api

from rbot.bus.connection import Bus
from rbot.bus.subjects import SubjectError, Subjects, matches
from rbot.bus.timing import raise_if_cancelled

from .principal import Principal, Role
from .sessionwatch import SessionRef, session_end

log = logging.getLogger("rbot.api.relay")

DEFAULT_PATTERNS = ("evt.>",)
MAX_PATTERNS = 16
MAX_STREAMS_PER_USER = 8
SLOW_AFTER_S = 10.0
RELAYED_ROOTS = ("evt", "md")  # never commands, exec queues or raw beats
ORDER_HEAD = ("evt", "order")


class _Owner(msgspec.Struct):
    user: str | None = None


class _EnvOwner(msgspec.Struct):
    payload: _Owner = msgspec.field(default_factory=_Owner)


_owner_decoder = msgspec.json.Decoder(_EnvOwner)


@dataclass(frozen=True)
class Plan:
    """Which subjects a client asked for, split into stream and core parts."""

    stream_patterns: list[str]  # full subjects under <p>.evt.order.>
    core_patterns: list[str]  # full subjects for core subscriptions


def _overlaps_orders(tokens: list[str]) -> bool:
    for i, want in enumerate(ORDER_HEAD):
        if i >= len(tokens):
            return False
        tok = tokens[i]
        if tok == ">":
            return True
        if tok not in ("*", want):
            return False
    return True


class TooManyPatterns(ValueError):
    """More distinct patterns than ``MAX_PATTERNS``."""


def distinct(patterns: list[str]) -> list[str]:
    """Stripped, empty ones dropped, duplicates removed (first order kept)."""
    return list(dict.fromkeys(p.strip() for p in patterns if p.strip()))


def plan(subjects: Subjects, patterns: list[str]) -> Plan:
    stream: list[str] = []
    core: list[str] = []
    wanted = distinct(patterns)
    if len(wanted) > MAX_PATTERNS:
        raise TooManyPatterns(
            f"at most {MAX_PATTERNS} distinct subject patterns per stream ({len(wanted)} sent)"
        )
    for raw in wanted or list(DEFAULT_PATTERNS):
        full = subjects.pattern(raw)  # validates every token (R10)
        rel = subjects.relative(full).split(".")
        if rel[0] not in RELAYED_ROOTS:
            raise SubjectError(f"only evt.… and md.… subjects are relayed, not {raw!r}")
        if _overlaps_orders(rel):
            if len(rel) >= 3 and ">" not in rel[:2] and "*" not in rel[:2]:
                stream.append(full)
            else:
                stream.append(subjects.order_events)
        core.append(full)
    return Plan(stream_patterns=stream, core_patterns=core)


@dataclass
class SseEvent:
    data: bytes
    id: int | None = None


@dataclass
class StreamSlots:
    """Open SSE streams per user in this process (``ctx.extras``)."""

    limit: int = MAX_STREAMS_PER_USER
    open: Counter[str] = field(default_factory=Counter)
    freed: asyncio.Event = field(default_factory=asyncio.Event)  # set on every release

    def acquire(self, user: str) -> bool:
        if self.open[user] >= self.limit:
            return False
        self.open[user] += 1
        return True

    def release(self, user: str) -> None:
        self.open[user] -= 1
        if self.open[user] <= 0:
            del self.open[user]
        self.freed.set()


class Relay:
    def __init__(
        self,
        bus: Bus,
        principal: Principal | None,
        patterns: list[str],
        last_event_id: int | None,
        *,
        session: SessionRef | None = None,
        queue_size: int = 1000,
        keepalive_s: float = 15.0,
        slow_after_s: float = SLOW_AFTER_S,
    ) -> None:
        self.bus = bus
        self.principal = principal
        self.session = session
        self.plan = plan(bus.subjects, patterns)
        self.last_event_id = last_event_id
        self.queue: asyncio.Queue[SseEvent | None] = asyncio.Queue()  # bounded by _offer
        self.queue_size = queue_size
        self.keepalive_s = keepalive_s
        self.slow_after_s = slow_after_s
        self.end_reason: str | None = None
        self.ended = asyncio.Event()  # set once the stream must end (tests wait on it)
        self.narrowed = False  # the role went down: re-check what is already queued
        self._room = asyncio.Event()

    def _visible(self, data: bytes) -> bool:
        if self.principal is None or self.principal.is_admin:
            return True
        try:
            owner = _owner_decoder.decode(data).payload.user
        except msgspec.DecodeError:
            return False
        return owner is None or owner == self.principal.sub

    def _on_role(self, role: Role) -> None:
        p = self.principal
        if p is None or p.role is role:
            return
        if p.is_admin and role is not Role.ADMIN:
            self.narrowed = True
        log.info("sse role change sub=%s %s -> %s", p.sub, p.role.value, role.value)
        self.principal = Principal(sub=p.sub, email=p.email, role=role)

    def end(self, reason: str) -> None:
        """Stop the stream (once); wakes the writer."""
        if self.end_reason is None:
            self.end_reason = reason
            self.queue.put_nowait(None)
            self._room.set()
            self.ended.set()

    def _offer(self, ev: SseEvent) -> None:
        """Queue a core message; a full queue means a slow client: drop it."""
        if self.end_reason is not None:
            return
        if self.queue.qsize() >= self.queue_size:
            self._drop_slow()
            return
        self.queue.put_nowait(ev)

    async def _offer_paced(self, ev: SseEvent) -> None:
        """Queue an order event, waiting while half the queue is taken (replays)."""
        try:
            async with asyncio.timeout(self.slow_after_s):
                while self.end_reason is None and self.queue.qsize() >= self.queue_size // 2:
                    self._room.clear()
                    await self._room.wait()
        except TimeoutError:
            self._drop_slow()
        if self.end_reason is None:
            self.queue.put_nowait(ev)

    def _drop_slow(self) -> None:
        who = self.principal.sub if self.principal else "-"
        log.warning(
            "sse client dropped sub=%s reason=slow_client queued=%d (it may resume with "
            "Last-Event-ID)",
            who,
            self.queue.qsize(),
        )
        self.end("slow_client")

    async def _core(self, pattern: str) -> None:
        order_events = self.bus.subjects.order_events

        async def on_msg(msg: Msg) -> None:
            if self.plan.stream_patterns and matches(order_events, msg.subject):
                return  # order events come from the stream, with ids
            if not self._visible(msg.data):
                return
            self._offer(SseEvent(msg.data))

        sub = await self.bus.nc.subscribe(pattern, cb=on_msg)
        try:
            raise_if_cancelled()
            await asyncio.Event().wait()  # until cancelled; the callback does the work
        finally:
            await sub.unsubscribe()

    async def _stream(self) -> None:
        pats = self.plan.stream_patterns
        filt = pats[0] if len(set(pats)) == 1 else self.bus.subjects.order_events
        if self.last_event_id is not None:
            cfg = api.ConsumerConfig(
                deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
                opt_start_seq=self.last_event_id + 1,
            )
        else:
            cfg = api.ConsumerConfig(deliver_policy=api.DeliverPolicy.NEW)
        sub = await self.bus.js.subscribe(
            filt,
            stream=self.bus.subjects.stream("ORDERS"),
            ordered_consumer=True,
            config=cfg,
            idle_heartbeat=5.0,
        )
        try:
            raise_if_cancelled()
            async for msg in sub.messages:
                if not any(matches(p, msg.subject) for p in pats):
                    continue
                if not self._visible(msg.data):
                    continue
                await self._offer_paced(SseEvent(msg.data, id=msg.metadata.sequence.stream))
                if self.end_reason is not None:
                    return
        finally:
            await sub.unsubscribe()

    async def _watch_session(self, ref: SessionRef) -> None:
        reason = await session_end(self.bus, ref, self._on_role)
        log.info("sse stream ended sub=%s reason=%s", ref.user, reason)
        self.end(reason)

    async def events(self) -> AsyncIterator[bytes]:
        """SSE frames; ends when the session ends, the client is too slow or the bus closes."""
        yield b"retry: 1000\n: connected\n\n"
        closed = False
        try:
            async with asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(self._core(p)) for p in self.plan.core_patterns]
                if self.plan.stream_patterns:
                    tasks.append(tg.create_task(self._stream()))
                if self.session is not None:
                    tasks.append(tg.create_task(self._watch_session(self.session)))
                try:
                    while True:
                        try:
                            async with asyncio.timeout(self.keepalive_s):
                                ev = await self.queue.get()
                        except TimeoutError:
                            yield b": keep-alive\n\n"
                            continue
                        self._room.set()
                        if ev is None or self.end_reason is not None:
                            break
                        if self.narrowed and not self._visible(ev.data):
                            continue
                        yield _frame(ev)
                finally:
                    for t in tasks:
                        t.cancel()
        except* GeneratorExit:
            closed = True  # aclose() at a yield: the TaskGroup wrapped it; just finish
        if self.end_reason is not None and not closed:
            yield _end_frame(self.end_reason)


def _frame(ev: SseEvent) -> bytes:
    head = b"id: %d\n" % ev.id if ev.id is not None else b""
    # an envelope is one JSON line; guard against embedded newlines anyway
    data = b"\ndata: ".join(ev.data.splitlines())
    return head + b"data: " + data + b"\n\n"


def _end_frame(reason: str) -> bytes:
    """The last frame: why the server closed the stream (``event: end``)."""
    return b"event: end\ndata: " + json.dumps({"code": reason}).encode() + b"\n\n"
