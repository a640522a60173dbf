"""One bus subscription per subject filter per API process, shared by every SSE client.

``Hub`` (one per app, ``ctx.extras``) holds a *feed* per distinct filter:

- an order-event filter (under ``<p>.evt.order.>``) is one ordered JetStream
  consumer on ``ORDERS``, started at the stream's next sequence when its first
  client joins; every message keeps its stream sequence (the SSE ``id:``);
- any other pattern is one core subscription.

A feed decodes each message's owner once and shares one ``SseEvent`` (its
SSE frame encoded once) with the members that may see it: members are grouped
by whose events they may see (their user, or all for an admin), so an event
costs its recipients, not every client.  Each recipient checks the rest for
itself (its patterns, ids already sent) and queues without waiting: the feed never waits on a
client, so a slow one cannot slow the others (it is dropped, see ``relay``).
A feed ends with its last member.  Subscriptions are callbacks owned by the
NATS client (as in ``marketcache``): no task per feed.

Resume: ``join_stream`` returns the feed's *high-water mark* ``H``: every
matching message after ``H`` reaches the new member through the feed, so a
client resuming from ``n < H`` replays ``(n, H]`` with a short-lived consumer
of its own (``relay``) and then goes on from the feed, skipping ids it sent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final, Protocol

import msgspec
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import ConnectionClosedError
from nats.js import JetStreamContext, api

from rbot.bus.connection import Bus
from rbot.bus.subjects import matches

log = logging.getLogger("rbot.api.relay")

EXTRAS_KEY = "sse_hub"
UNREADABLE: Final = "\x00unreadable"  # an owner that nobody but an admin may see


class _Owner(msgspec.Struct):
    user: str | None = None


class _EnvOwner(msgspec.Struct):
    payload: _Owner = msgspec.field(default_factory=_Owner)


_owner_decoder = msgspec.json.Decoder(_EnvOwner)


def owner_of(data: bytes) -> str | None:
    """The envelope's ``payload.user`` (``None``: nobody's, e.g. a pulse), or ``UNREADABLE``."""
    try:
        return _owner_decoder.decode(data).payload.user
    except msgspec.DecodeError:
        return UNREADABLE


@dataclass(slots=True)
class SseEvent:
    """One bus message as every client of a feed sees it (shared, read-only)."""

    data: bytes
    id: int | None = None
    subject: str = ""
    owner: str | None = UNREADABLE
    order_event: bool = False  # an order event that came by core pub/sub
    _frame: bytes | None = field(default=None, repr=False)

    def frame(self) -> bytes:
        """The SSE frame, encoded once for all clients."""
        if self._frame is None:
            head = b"id: %d\n" % self.id if self.id is not None else b""
            # an envelope is one JSON line; guard against embedded newlines anyway
            data = b"\ndata: ".join(self.data.splitlines())
            self._frame = head + b"data: " + data + b"\n\n"
        return self._frame


class Member(Protocol):
    @property
    def viewer(self) -> str | None:
        """Whose events it may see: a user id, or ``None`` for every one (an admin)."""
        ...

    def on_core(self, ev: SseEvent) -> None: ...
    def on_stream(self, ev: SseEvent) -> None: ...


@dataclass(eq=False)
class _Feed:
    """One subscription's members, grouped by whose events they may see, so an event
    costs only its recipients (its owner's clients and the admins), not every client."""

    key: str
    groups: dict[str | None, set[Member]] = field(default_factory=dict)
    where: dict[Member, str | None] = field(default_factory=dict)  # member -> its group
    sub: Subscription | JetStreamContext.PushSubscription | None = None
    high: int = 0  # stream feeds: the last sequence fanned out (or the start - 1)
    messages: int = 0

    def add(self, member: Member) -> None:
        viewer = member.viewer
        self.where[member] = viewer
        self.groups.setdefault(viewer, set()).add(member)

    def discard(self, member: Member) -> None:
        if member in self.where:
            viewer = self.where.pop(member)
            group = self.groups[viewer]
            group.discard(member)
            if not group:
                del self.groups[viewer]

    def recipients(self, owner: str | None) -> list[Member]:
        """Who may see an event of ``owner`` (``None``: nobody's, so everyone)."""
        if owner is None:
            return list(self.where)
        every = self.groups.get(None)
        mine = self.groups.get(owner) if owner != UNREADABLE else None
        if every and mine:
            return [*every, *mine]
        return list(every or mine or ())


class Hub:
    """The process's shared subscriptions (see the module doc)."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self._core: dict[str, _Feed] = {}
        self._stream: dict[str, _Feed] = {}
        self._lock = asyncio.Lock()
        self._changed = asyncio.Event()  # set on every join and leave (``until``)

    def subscriptions(self) -> int:
        """Bus subscriptions held now (tests and the bench check it is one per filter)."""
        return len(self._core) + len(self._stream)

    def members(self) -> int:
        return sum(len(f.where) for f in (*self._core.values(), *self._stream.values()))

    def rekey(self, member: Member) -> None:
        """The member's ``viewer`` changed (a role change): regroup it in every feed."""
        for feed in (*self._core.values(), *self._stream.values()):
            if member in feed.where:
                feed.discard(member)
                feed.add(member)

    async def until(self, members: int) -> None:
        """Wait until exactly ``members`` memberships are held (tests, the bench)."""
        while self.members() != members:
            self._changed.clear()
            await self._changed.wait()

    # -- core pub/sub -------------------------------------------------------------------
    async def join_core(self, pattern: str, member: Member) -> Callable[[], Awaitable[None]]:
        async with self._lock:
            feed = self._core.get(pattern)
            if feed is None:
                feed = _Feed(pattern)
                order_events = self.bus.subjects.order_events

                async def on_msg(msg: Msg, feed: _Feed = feed) -> None:
                    ev = SseEvent(
                        msg.data,
                        subject=msg.subject,
                        owner=owner_of(msg.data),
                        order_event=matches(order_events, msg.subject),
                    )
                    feed.messages += 1
                    for m in feed.recipients(ev.owner):
                        m.on_core(ev)

                feed.sub = await self.bus.nc.subscribe(pattern, cb=on_msg)
                self._core[pattern] = feed
            feed.add(member)
            self._changed.set()
        return lambda: self._leave(self._core, feed, member)

    # -- order events from the stream ---------------------------------------------------
    async def join_stream(
        self, filt: str, member: Member
    ) -> tuple[int, Callable[[], Awaitable[None]]]:
        """Join the feed of ``filt``; (its high-water mark, a leave function)."""
        async with self._lock:
            feed = self._stream.get(filt)
            if feed is None:
                feed = await self._start_stream(filt)
                self._stream[filt] = feed
            feed.add(member)
            self._changed.set()
            high = feed.high
        return high, lambda: self._leave(self._stream, feed, member)

    async def _start_stream(self, filt: str) -> _Feed:
        js = self.bus.js
        stream = self.bus.subjects.stream("ORDERS")
        feed = _Feed(filt)
        feed.high = (await js.stream_info(stream)).state.last_seq

        async def on_msg(msg: Msg) -> None:
            seq = msg.metadata.sequence.stream
            feed.high = seq
            feed.messages += 1
            ev = SseEvent(msg.data, id=seq, subject=msg.subject, owner=owner_of(msg.data))
            for m in feed.recipients(ev.owner):
                m.on_stream(ev)

        cfg = api.ConsumerConfig(
            deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=feed.high + 1
        )
        feed.sub = await js.subscribe(
            filt, stream=stream, cb=on_msg, ordered_consumer=True, config=cfg, idle_heartbeat=5.0
        )
        return feed

    # -- leaving --------------------------------------------------------------------------
    async def _leave(self, feeds: dict[str, _Feed], feed: _Feed, member: Member) -> None:
        """Drop a member; the last one out ends the feed's subscription."""
        feed.discard(member)
        self._changed.set()
        if feed.where or feeds.get(feed.key) is not feed:
            return
        del feeds[feed.key]  # a join from now on starts a new feed
        if feed.sub is not None:
            try:
                await feed.sub.unsubscribe()
            except ConnectionClosedError:
                log.info("sse feed %s: the connection closed first (nothing to end)", feed.key)


def hub_of(extras: dict[str, object], bus: Bus) -> Hub:
    hub = extras.get(EXTRAS_KEY)
    if not isinstance(hub, Hub):
        hub = extras[EXTRAS_KEY] = Hub(bus)
    return hub
