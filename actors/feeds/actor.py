"""The feed actors: ``oanda_feed`` and ``coinbase_feed``.

Each publishes normalised ticks on ``rbot.md.tick.<venue>.<symbol>`` and the
last tick per symbol in KV ``prices``.  One leader per venue (KV lease
``feed.<venue>``), so several ``rbot actors`` processes never double-publish.
Without broker credentials (or with ``RBOT_SIM=on``) the source is the seeded
random walk of ``sim.py``, so ``rbot up`` is alive offline.
"""

from __future__ import annotations

from typing import ClassVar

from rbot.bus import codec, keys
from rbot.bus.connection import Bus
from rbot.bus.lease import lead
from rbot.bus.messages import Tick
from rbot.bus.timing import every

from ..base import Actor, Ready
from .sim import SimMarket


class FeedActor(Actor):
    venue: ClassVar[str] = ""

    async def run(self, bus: Bus, ready: Ready) -> None:
        self.bus = bus
        ready()
        await lead(bus, f"feed.{self.venue}", self.instance, self._lead)

    async def _lead(self) -> None:
        if self.settings.use_sim(self.venue):
            await self._sim()
        else:
            await self._live_source()

    async def _live_source(self) -> None:
        raise NotImplementedError(f"no {self.venue} market-data client is wired in yet")

    async def publish(self, tick: Tick) -> None:
        data = codec.encode_envelope("tick", self.venue, tick)
        await self.bus.nc.publish(self.bus.subjects.tick(tick.venue, tick.symbol), data)
        await self.prices.put(keys.price(tick.venue, tick.symbol), codec.encode(tick))

    async def _sim(self) -> None:
        self.prices = await self.bus.kv("prices")
        market = SimMarket(
            self.venue, self.settings.symbols(self.venue), self.settings.rbot_sim_seed
        )
        self.log.info("sim source for %s: %s", self.venue, ", ".join(market.specs))
        async for _ in every(self.settings.rbot_sim_interval_s):
            for tick in market.step():
                await self.publish(tick)


class OandaFeed(FeedActor):
    name = "oanda_feed"
    venue = "oanda"


class CoinbaseFeed(FeedActor):
    name = "coinbase_feed"
    venue = "coinbase"
