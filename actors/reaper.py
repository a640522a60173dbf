"""ttl_reaper: expires pending orders past their TTL and closes positions held too long.

One leader (KV lease ``ttl_reaper``).  It never writes order state: it sends an
``expire`` command to the executor that owns the order's partition, which
checks the deadline itself and applies it once (a CLOSED order cannot close
again).  Deadlines come from a watch of the **active set** (``a.>`` in KV
``orders``: one marker per PENDING / OPEN order, carrying its deadline), so its
cost follows the active orders, never the history.  The watch is re-created
after a reconnect, with a full re-read, since a watch is a hint.  Every
``RBOT_REAPER_INTERVAL_S`` the due orders get their command; one still due on
the next round gets it again with the same ``Nats-Msg-Id``, so a lost command
is replaced and a duplicate is dropped (R11).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable

from nats.js.kv import KeyValue

from rbot.bus import codec, keys, msgids
from rbot.bus.config import Settings
from rbot.bus.connection import Bus
from rbot.bus.messages import ActiveMark, ExpireCmd
from rbot.bus.subjects import is_live_partition
from rbot.bus.timing import every, raise_if_cancelled

from .base import Actor, Ready


class Deadlines:
    """The reaper's pure core: the active orders' deadlines, from their markers, and
    the expire commands due at a given time."""

    def __init__(self) -> None:
        # order id -> (deadline, the owning executor's subject, status)
        self.by_order: dict[str, tuple[dt.datetime, str, str]] = {}

    def clear(self) -> None:
        self.by_order.clear()

    def on_mark(self, order_id: str, mark: ActiveMark | None, subject: str) -> None:
        """An active-set marker changed (None: deleted); ``subject`` is the owner's."""
        if mark is None or mark.deadline is None:
            self.by_order.pop(order_id, None)
        else:
            self.by_order[order_id] = (codec.parse_iso(mark.deadline), subject, mark.status)

    def due(self, now: dt.datetime) -> list[tuple[str, str, str]]:
        """``(order id, subject, Nats-Msg-Id)`` of every order whose deadline passed;
        the id is the same until the order's status moves (a repeat is dropped)."""
        return [
            (oid, subject, msgids.expire(oid, status))
            for oid, (when, subject, status) in self.by_order.items()
            if when <= now
        ]


class TtlReaper(Actor):
    name = "ttl_reaper"

    def __init__(
        self, settings: Settings, url: str | Callable[[], str], instance: str | None = None
    ) -> None:
        super().__init__(settings, url, instance)
        self.deadlines = Deadlines()

    async def run(self, bus: Bus, ready: Ready) -> None:
        self.bus = bus
        ready()
        await self.lead(bus, "ttl_reaper", self._lead)

    async def _lead(self) -> None:
        self.deadlines.clear()  # a new leadership starts from a full read of the markers
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._watch())
            tg.create_task(self._reap())

    async def _watch(self) -> None:
        kv = await self.bus.kv("orders")
        while True:
            self.bus.reconnected.clear()
            watcher = await kv.watch(keys.active_all())
            try:
                raise_if_cancelled()  # the watch's request may have swallowed a cancel
                async with asyncio.TaskGroup() as tg:
                    consumer = tg.create_task(self._consume(watcher))
                    await self.bus.reconnected.wait()  # a watch is a hint: re-create it
                    consumer.cancel()
            finally:
                await watcher.stop()  # type: ignore[no-untyped-call]
            self.log.info("re-reading order deadlines after a reconnect")

    async def _consume(self, watcher: KeyValue.KeyWatcher) -> None:
        async for entry in watcher:
            if entry is None:
                continue
            part, _, oid = keys.parse_active(entry.key)
            mark = codec.decode(entry.value, ActiveMark) if entry.value else None
            subject = ""
            if mark is not None:
                subject = (
                    self.bus.subjects.live_exec(mark.venue, mark.symbol)
                    if is_live_partition(part)
                    else self.bus.subjects.exec(mark.venue, mark.symbol)
                )
            self.deadlines.on_mark(oid, mark, subject)

    async def _reap(self) -> None:
        async for _ in every(self.settings.rbot_reaper_interval_s):
            for oid, subject, msg_id in self.deadlines.due(dt.datetime.now(dt.UTC)):
                await self.bus.js.publish(
                    subject, codec.encode(ExpireCmd(order_id=oid)), headers=msgids.headers(msg_id)
                )
