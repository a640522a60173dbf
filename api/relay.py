"""Relay bus subjects to one SSE client.

The bus side is shared: every client of a subject filter in this API process is
a member of one ``hub`` feed (one subscription per filter, not per client).
Order events come from the JetStream stream ``ORDERS`` (the feed's ordered
consumer), so every SSE ``id:`` is the stream sequence and a reconnect with
``Last-Event-ID: n`` resumes at ``n+1``: no loss, no duplicates.  A resuming
client first replays ``(n, H]`` (``H``: the feed's high-water mark when it
joined) through a short-lived ordered consumer of its own, at its own pace,
holding what the feed delivers meanwhile (up to ``HELD_FACTOR`` queues), then
goes on from the feed, skipping ids it already sent.
Everything else (heartbeat pulse, actor events, ticks) is core pub/sub, relayed
without an id (ephemeral: a missed pulse is replaced by the next).

Limits, so one client cannot multiply the API's load:

- at most ``MAX_PATTERNS`` distinct patterns per stream (``too_many_patterns``);
- at most ``MAX_STREAMS_PER_USER`` open streams per user in one API process
  (``StreamSlots``; ``too_many_streams``);
- each client has its own queue of ``queue_size`` frames.  The replay waits
  while it is half full (it goes at the client's pace); a client that lets the
  queue fill from the shared feed (which never waits on one client), lets the
  replay wait ``slow_after_s``, or lets ``HELD_FACTOR * queue_size`` live
  events pile up behind its replay is dropped with a logged reason and a last ``event: end``
  frame.  It reconnects with ``Last-Event-ID`` and loses no order event.

While it streams, the session is watched (``sessionwatch.py``, KV watches):
logout, session revocation, disable or a password change end the stream
(``event: end``, ``data: {"code": ...}``) within milliseconds; a role change
takes effect at once (a demoted admin stops seeing other users' orders, even
those already queued).
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from nats.js import api
from nats.js.errors import NotFoundError

from rbot.bus.connection import Bus
from rbot.bus.subjects import SubjectError, Subjects, matches
from rbot.bus.timing import raise_if_cancelled

from .hub import Hub, SseEvent, owner_of
from .principal import Principal, Role
from .sessionwatch import SessionRef, session_end

log = logging.getLogger("rbot.api.relay")

DEFAULT_PATTERNS = ("evt.>",)
MAX_PATTERNS = 16
MAX_STREAMS_PER_USER = 8
SLOW_AFTER_S = 10.0
SSE_BATCH = 64  # frames already queued that go out in one write (``events``)
HELD_FACTOR = 4  # feed events held behind a replay: up to this many queues' worth
RELAYED_ROOTS = ("evt", "md")  # never commands, exec queues or raw beats
ORDER_HEAD = ("evt", "order")


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
                continue  # only order events: the stream has them all, no core feed
            stream.append(subjects.order_events)
        core.append(full)
    return Plan(stream_patterns=stream, core_patterns=core)


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
        hub: Hub | None = None,
        session: SessionRef | None = None,
        queue_size: int = 1000,
        keepalive_s: float = 15.0,
        slow_after_s: float = SLOW_AFTER_S,
    ) -> None:
        self.bus = bus
        self.hub = hub or Hub(bus)  # the app passes its shared one (``hub_of``)
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
        self.sent_id = last_event_id or 0  # the last order-event id queued (no duplicates)
        self.replaying = False
        self.held: collections.deque[SseEvent] = collections.deque()  # feed events behind a replay

    @property
    def viewer(self) -> str | None:
        """Whose events this client may see (``hub``): its user, ``None`` for all."""
        p = self.principal
        return None if p is None or p.is_admin else p.sub

    def _visible(self, owner: str | None) -> bool:
        p = self.principal
        if p is None or p.is_admin:
            return True
        return owner is None or owner == p.sub

    def _on_role(self, role: Role) -> None:
        p = self.principal
        if p is None or p.role is role:
            return
        if p.is_admin and role is not Role.ADMIN:
            self.narrowed = True
        log.info("sse role change sub=%s %s -> %s", p.sub, p.role.value, role.value)
        self.principal = Principal(sub=p.sub, email=p.email, role=role)
        self.hub.rekey(self)  # the shared feeds hand it what the new role may see

    def end(self, reason: str) -> None:
        """Stop the stream (once); wakes the writer."""
        if self.end_reason is None:
            self.end_reason = reason
            self.queue.put_nowait(None)
            self._room.set()
            self.ended.set()

    def _offer(self, ev: SseEvent) -> None:
        """Queue a message from a shared feed; a full queue means a slow client: drop it."""
        if self.end_reason is not None:
            return
        if self.queue.qsize() >= self.queue_size:
            self._drop_slow()
            return
        self.queue.put_nowait(ev)

    async def _offer_paced(self, ev: SseEvent) -> None:
        """Queue a replayed order event, waiting while half the queue is taken."""
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
            self.queue.qsize() + len(self.held),
        )
        self.end("slow_client")

    # -- what the shared feeds hand over (never waits) -------------------------------
    def on_core(self, ev: SseEvent) -> None:
        if self.plan.stream_patterns and ev.order_event:
            return  # order events come from the stream, with ids
        if self._visible(ev.owner):
            self._offer(ev)

    def on_stream(self, ev: SseEvent) -> None:
        if self.end_reason is not None:
            return
        if self.replaying:
            if len(self.held) >= HELD_FACTOR * self.queue_size:
                self._drop_slow()
            else:
                self.held.append(ev)
            return
        self._take(ev)

    def _wanted(self, ev: SseEvent) -> bool:
        pats = self.plan.stream_patterns
        return (len(pats) == 1 or any(matches(p, ev.subject) for p in pats)) and self._visible(
            ev.owner
        )

    def _take(self, ev: SseEvent) -> None:
        assert ev.id is not None
        if ev.id <= self.sent_id:
            return  # replayed already
        self.sent_id = ev.id
        if self._wanted(ev):
            self._offer(ev)

    # -- the bus side --------------------------------------------------------------------
    async def _join(self) -> tuple[list[Callable[[], Awaitable[None]]], int]:
        """Join the shared feeds (before ``: connected``): their leave functions and the
        stream feed's high-water mark."""
        leaves = []
        high = 0
        try:
            for pattern in self.plan.core_patterns:
                leaves.append(await self.hub.join_core(pattern, self))
            if self.plan.stream_patterns:
                self.replaying = self.last_event_id is not None  # hold the feed until caught up
                high, leave = await self.hub.join_stream(self._filter(), self)
                leaves.append(leave)
        except BaseException:
            for leave in leaves:
                await leave()
            raise
        return leaves, high

    def _filter(self) -> str:
        pats = self.plan.stream_patterns
        return pats[0] if len(set(pats)) == 1 else self.bus.subjects.order_events

    async def _catch_up(self, high: int) -> None:
        """Replay ``(Last-Event-ID, high]``, then what the feed delivered meanwhile; from
        then on the feed hands events straight to ``on_stream``."""
        start = self.last_event_id
        if start is not None and start < high:
            await self._replay(self._filter(), start, high)
        while self.held and self.end_reason is None:
            ev = self.held.popleft()
            if ev.id is not None and ev.id > self.sent_id:
                self.sent_id = ev.id
                if self._wanted(ev):
                    await self._offer_paced(ev)
        self.replaying = False

    async def _replay(self, filt: str, start: int, high: int) -> None:
        """Order events in ``(start, high]`` through an ordered consumer of this client's."""
        cfg = api.ConsumerConfig(
            deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start + 1
        )
        sub = await self.bus.js.subscribe(
            filt,
            stream=self.bus.subjects.stream("ORDERS"),
            ordered_consumer=True,
            config=cfg,
            idle_heartbeat=5.0,
        )
        try:
            raise_if_cancelled()
            try:
                info = await sub.consumer_info()
            except NotFoundError:  # the ordered consumer was re-created already: read on
                pass
            else:
                delivered = info.delivered.consumer_seq if info.delivered else 0
                if info.num_pending == 0 and not delivered:
                    return  # nothing in (start, head] matches: nothing to replay
            async for msg in sub.messages:
                meta = msg.metadata
                seq = meta.sequence.stream
                if seq > self.sent_id:
                    self.sent_id = seq
                    ev = SseEvent(msg.data, id=seq, subject=msg.subject, owner=owner_of(msg.data))
                    if self._wanted(ev):
                        await self._offer_paced(ev)
                # caught up with the feed, or nothing more matched when this was sent
                if self.end_reason is not None or seq >= high or meta.num_pending == 0:
                    return
        finally:
            await sub.unsubscribe()

    async def _watch_session(self, ref: SessionRef) -> None:
        reason = await session_end(self.bus, ref, self._on_role)
        log.info("sse stream ended sub=%s reason=%s", ref.user, reason)
        self.end(reason)

    async def events(self, max_batch: int = 1) -> AsyncIterator[bytes]:
        """SSE frames; ends when the session ends, the client is too slow or the bus closes.

        The first frame (``: connected``) comes once the client is in the shared feeds:
        from then on it misses nothing, even without a ``Last-Event-ID``.
        ``max_batch``: up to this many frames already queued go out as one chunk (one
        write through the ASGI stack for a burst; the app passes ``SSE_BATCH``)."""
        leaves, high = await self._join()
        closed = False
        queue = self.queue
        try:
            yield b"retry: 1000\n: connected\n\n"
            async with asyncio.TaskGroup() as tg:
                tasks = []
                if self.plan.stream_patterns:
                    tasks.append(tg.create_task(self._catch_up(high)))
                if self.session is not None:
                    tasks.append(tg.create_task(self._watch_session(self.session)))
                try:
                    while True:
                        if queue.empty():
                            try:
                                async with asyncio.timeout(self.keepalive_s):
                                    first = await queue.get()
                            except TimeoutError:
                                yield b": keep-alive\n\n"
                                continue
                        else:
                            first = queue.get_nowait()
                        batch = [first]
                        while len(batch) < max_batch and not queue.empty():
                            batch.append(queue.get_nowait())
                        self._room.set()
                        if self.end_reason is not None:
                            break  # (``end`` queued a None to wake this)
                        frames = [
                            ev.frame()
                            for ev in batch
                            if ev is not None
                            and not (self.narrowed and not self._visible(ev.owner))
                        ]
                        if frames:
                            yield frames[0] if len(frames) == 1 else b"".join(frames)
                finally:
                    for t in tasks:
                        t.cancel()
        except* GeneratorExit:
            closed = True  # aclose() at a yield: the TaskGroup wrapped it; just finish
        finally:
            for leave in leaves:
                await leave()
        if self.end_reason is not None and not closed:
            yield _end_frame(self.end_reason)


def _end_frame(reason: str) -> bytes:
    """The last frame: why the server closed the stream (``event: end``)."""
    return b"event: end\ndata: " + json.dumps({"code": reason}).encode() + b"\n\n"
