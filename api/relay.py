"""Relay bus subjects to one SSE client.

Order events come from the JetStream stream ``ORDERS`` through an ordered
consumer of the client's own, so every SSE ``id:`` is the stream sequence and a
reconnect with ``Last-Event-ID: n`` resumes at ``n+1``: no loss, no duplicates.
Everything else (heartbeat pulse, actor events, ticks) is core pub/sub, relayed
without an id (ephemeral: a missed pulse is replaced by the next).

Each client has its own bounded queue: a slow client fills only its own queue.
Core messages are dropped (and counted) when it is full; the stream pump waits
instead, and the server-side consumer simply lags for that one client.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import msgspec
from nats.aio.msg import Msg
from nats.js import api

from rbot.bus.connection import Bus
from rbot.bus.subjects import SubjectError, Subjects, matches

from .principal import Principal

log = logging.getLogger("rbot.api.relay")

DEFAULT_PATTERNS = ("evt.>",)
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


def plan(subjects: Subjects, patterns: list[str]) -> Plan:
    stream: list[str] = []
    core: list[str] = []
    for raw in patterns or list(DEFAULT_PATTERNS):
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


class Relay:
    def __init__(
        self,
        bus: Bus,
        principal: Principal | None,
        patterns: list[str],
        last_event_id: int | None,
        *,
        queue_size: int = 1000,
        keepalive_s: float = 15.0,
    ) -> None:
        self.bus = bus
        self.principal = principal
        self.plan = plan(bus.subjects, patterns)
        self.last_event_id = last_event_id
        self.queue: asyncio.Queue[SseEvent] = asyncio.Queue(maxsize=queue_size)
        self.keepalive_s = keepalive_s
        self.dropped = 0

    def _visible(self, data: bytes) -> bool:
        if self.principal is None or self.principal.is_admin:
            return True
        try:
            owner = _owner_decoder.decode(data).payload.user
        except msgspec.DecodeError:
            return False
        return owner is None or owner == self.principal.sub

    async def _core(self, pattern: str) -> None:
        order_events = self.bus.subjects.order_events

        async def on_msg(msg: Msg) -> None:
            if self.plan.stream_patterns and matches(order_events, msg.subject):
                return  # order events come from the stream, with ids
            if not self._visible(msg.data):
                return
            try:
                self.queue.put_nowait(SseEvent(msg.data))
            except asyncio.QueueFull:
                self.dropped += 1

        sub = await self.bus.nc.subscribe(pattern, cb=on_msg)
        try:
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
            async for msg in sub.messages:
                if not any(matches(p, msg.subject) for p in pats):
                    continue
                if not self._visible(msg.data):
                    continue
                await self.queue.put(SseEvent(msg.data, id=msg.metadata.sequence.stream))
        finally:
            await sub.unsubscribe()

    async def events(self) -> AsyncIterator[bytes]:
        """SSE frames; ends when the bus connection closes (the browser reconnects)."""
        yield b"retry: 1000\n: connected\n\n"
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(self._core(p)) for p in self.plan.core_patterns]
            if self.plan.stream_patterns:
                tasks.append(tg.create_task(self._stream()))
            try:
                while True:
                    try:
                        async with asyncio.timeout(self.keepalive_s):
                            ev = await self.queue.get()
                    except TimeoutError:
                        yield b": keep-alive\n\n"
                        continue
                    yield _frame(ev)
            finally:
                for t in tasks:
                    t.cancel()


def _frame(ev: SseEvent) -> bytes:
    head = b"id: %d\n" % ev.id if ev.id is not None else b""
    # an envelope is one JSON line; guard against embedded newlines anyway
    data = b"\ndata: ".join(ev.data.splitlines())
    return head + b"data: " + data + b"\n\n"
