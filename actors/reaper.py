"""ttl_reaper: expires pending orders past their TTL and closes positions held too long.

One leader (KV lease ``ttl_reaper``).  It never writes order state: it sends an
``expire`` command to the executor that owns the order's partition, which
checks the deadline itself and applies it once (a CLOSED order cannot close
again).  Deadlines come from a watch of KV ``orders`` (``o.*``); the watch is
re-created after a reconnect, with a full re-read, since a watch is a hint.
Every ``RBOT_REAPER_INTERVAL_S`` the due orders get their command; one still
due on the next round gets it again with the same ``Nats-Msg-Id``, so a lost
command is replaced and a duplicate is dropped (R11).
"""

from __future__ import annotations

import asyncio
import datetime as dt

from nats.js.kv import KeyValue

from rbot.bus import codec, keys
from rbot.bus.connection import Bus
from rbot.bus.messages import ExpireCmd, Order, OrderStatus
from rbot.bus.timing import every

from .base import Actor, Ready


def deadline(order: Order) -> dt.datetime | None:
    """When an active order must be expired (PENDING) or closed (OPEN)."""
    if order.status is OrderStatus.PENDING and order.expires_at:
        return codec.parse_iso(order.expires_at)
    if order.status is OrderStatus.OPEN and order.opened_at:
        return codec.parse_iso(order.opened_at) + dt.timedelta(minutes=order.max_hold_min)
    return None


class TtlReaper(Actor):
    name = "ttl_reaper"

    async def run(self, bus: Bus, ready: Ready) -> None:
        self.bus = bus
        ready()
        await self.lead(bus, "ttl_reaper", self._lead)

    async def _lead(self) -> None:
        self.deadlines: dict[str, tuple[dt.datetime, Order]] = {}
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._watch())
            tg.create_task(self._reap())

    async def _watch(self) -> None:
        kv = await self.bus.kv("orders")
        while True:
            self.bus.reconnected.clear()
            watcher = await kv.watch(keys.orders_all())
            try:
                async with asyncio.TaskGroup() as tg:
                    consumer = tg.create_task(self._consume(watcher))
                    await self.bus.reconnected.wait()  # a watch is a hint: re-create it
                    consumer.cancel()
            finally:
                await watcher.stop()  # type: ignore[no-untyped-call]
            self.log.info("re-reading order deadlines after a reconnect")

    async def _consume(self, watcher: KeyValue.KeyWatcher) -> None:
        async for entry in watcher:
            if entry is None or not entry.value:
                continue
            order = codec.decode(entry.value, Order)
            when = deadline(order)
            if when is None:
                self.deadlines.pop(order.id, None)
            else:
                self.deadlines[order.id] = (when, order)

    async def _reap(self) -> None:
        async for _ in every(self.settings.rbot_reaper_interval_s):
            now = dt.datetime.now(dt.UTC)
            for oid, (when, order) in list(self.deadlines.items()):
                if when > now:
                    continue
                subject = self.bus.subjects.exec(order.venue, order.symbol)
                cmd = ExpireCmd(order_id=oid)
                msg_id = f"expire.{oid}.{order.status}"
                await self.bus.js.publish(
                    subject, codec.encode(cmd), headers={"Nats-Msg-Id": msg_id}
                )
