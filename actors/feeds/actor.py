"""The feed actors: ``oanda_feed`` and ``coinbase_feed``.

One leader per venue (KV lease ``feed.<venue>``), so several ``rbot actors``
processes never double-publish: a standby waits on the lease and takes over
when the leader's lease is released or expires (``LEASE_TTL_S``).  The leader
runs one source (``live.py``): the seeded sim without broker credentials (or
with ``RBOT_SIM=on``), else the venue's stream.  It publishes ticks, books and
candles (``output.py``) and writes its link status to KV ``actors``
(``feed.<venue>``) every few seconds.  See ``live.py`` for what goes where.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import ClassVar

from rbot.bus import codec, keys
from rbot.bus.config import Settings
from rbot.bus.connection import Bus
from rbot.bus.lease import lead
from rbot.bus.messages import ActorStatus
from rbot.bus.provision import LEASE_TTL_S
from rbot.bus.timing import every, raise_if_cancelled

from ..base import Actor, Ready
from .live import Source, make_source, status_info
from .output import FeedOutput, FeedTuning


class FeedActor(Actor):
    venue: ClassVar[str] = ""

    def __init__(
        self,
        settings: Settings,
        url: str | Callable[[], str],
        instance: str | None = None,
        *,
        tuning: FeedTuning | None = None,
    ) -> None:
        super().__init__(settings, url, instance)
        self.tuning = tuning or FeedTuning()
        self.output: FeedOutput | None = None  # while leading (tests read its counts)
        self.source: Source | None = None
        self.standby_polls = 0  # lease polls lost to another leader
        self.standby_of: str | None = None

    @property
    def status_key(self) -> str:
        return keys.feed(self.venue)

    async def run(self, bus: Bus, ready: Ready) -> None:
        self.bus = bus
        ready()
        while True:
            await lead(bus, self.status_key, self.instance, self._lead, on_standby=self._standby)
            # the source gave up on a fatal answer: let another process try to lead
            await asyncio.sleep(LEASE_TTL_S)

    def _standby(self, holder: str | None) -> None:
        if self.standby_polls == 0:
            self.log.info("%s stands by for %s (led by %s)", self.instance, self.venue, holder)
        self.standby_polls += 1
        self.standby_of = holder

    async def _lead(self) -> None:
        source = make_source(self.venue, self.settings, self.tuning)
        out = FeedOutput(self.bus, self.venue, await self.bus.kv("prices"), self.tuning)
        self.source, self.output = source, out
        self.log.info("%s leads %s with the %s source", self.instance, self.venue, source.name)
        async with asyncio.TaskGroup() as tg:
            status = tg.create_task(self._report(source, out))
            await source.run(out)
            status.cancel()
        await self._write_status(source, out)  # the last word: stopped

    async def _report(self, source: Source, out: FeedOutput) -> None:
        async for _ in every(self.tuning.status_interval):
            await self._write_status(source, out)

    async def _write_status(self, source: Source, out: FeedOutput) -> None:
        status = ActorStatus(
            actor=self.name,
            instance=self.instance,
            state=source.stats.state.value,
            last_beat=codec.now_iso(),
            info=status_info(source, out),
        )
        kv = await self.bus.kv("actors")
        await kv.put(self.status_key, codec.encode(status))
        raise_if_cancelled()


class OandaFeed(FeedActor):
    name = "oanda_feed"
    venue = "oanda"


class CoinbaseFeed(FeedActor):
    name = "coinbase_feed"
    venue = "coinbase"
