"""The API's copy of what the feeds publish besides ticks: the latest order book
per product (``rbot.md.book.>``) and recent broker candles (``rbot.md.candle.>``).

Routes read this cache; nothing is fetched from a broker per request.  Pure
core ``MarketCache`` plus ``start(ctx)``, which subscribes once per app (core
subscriptions with callbacks: the NATS client owns them and the lifespan's
``bus.close()`` ends them).  Call it from the lifespan to listen from the
first moment; otherwise the first request that needs the cache starts it
(``Market`` dependency), and the feeds' periodic repeat of each product's last
book fills it within seconds.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends
from nats.aio.msg import Msg
from nats.js.errors import KeyNotFoundError

from rbot.bus import codec, keys
from rbot.bus.connection import Bus
from rbot.bus.messages import ActorStatus, Book, Candle

from .context import ApiContext, Ctx

log = logging.getLogger("rbot.api.market")

EXTRAS_KEY = "market"


class MarketCache:
    """The latest book per (venue, symbol); up to ``keep`` candles per series, by time."""

    def __init__(self, keep: int = 5000) -> None:
        self.keep = keep
        self.books: dict[tuple[str, str], Book] = {}
        self.series: dict[tuple[str, str, str], dict[str, Candle]] = {}

    def add_book(self, book: Book) -> None:
        self.books[(book.venue, book.symbol)] = book

    def add_candle(self, candle: Candle) -> None:
        """A candle replaces the one with the same start (an open candle grows)."""
        key = (candle.venue, candle.symbol, candle.granularity)
        series = self.series.setdefault(key, {})
        series[candle.time] = candle
        if len(series) > self.keep:
            for t in sorted(series)[: len(series) - self.keep]:
                del series[t]

    def book(self, venue: str, symbol: str) -> Book | None:
        return self.books.get((venue, symbol))

    def candles(self, venue: str, symbol: str, granularity: str) -> list[Candle]:
        """Every candle held for the series, oldest first."""
        series = self.series.get((venue, symbol, granularity), {})
        return [series[t] for t in sorted(series)]

    def symbols(self, venue: str) -> set[str]:
        return {s for v, s in self.books if v == venue} | {
            s for v, s, _ in self.series if v == venue
        }


@dataclass
class _Holder:
    cache: MarketCache = field(default_factory=MarketCache)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    started: bool = False


async def start(ctx: ApiContext) -> MarketCache:
    """Subscribe the app's cache to books and candles (once); returns the cache."""
    holder: _Holder = ctx.extras.setdefault(EXTRAS_KEY, _Holder())
    async with holder.lock:
        if not holder.started:
            await _subscribe(ctx, holder.cache)
            holder.started = True
    return holder.cache


async def _subscribe(ctx: ApiContext, cache: MarketCache) -> None:
    bus = ctx.bus

    async def on_book(msg: Msg) -> None:
        try:
            cache.add_book(codec.payload(codec.decode_envelope(msg.data), Book))
        except codec.DecodeError as exc:
            log.debug("book skipped: %s", exc)

    async def on_candle(msg: Msg) -> None:
        try:
            cache.add_candle(codec.payload(codec.decode_envelope(msg.data), Candle))
        except codec.DecodeError as exc:
            log.debug("candle skipped: %s", exc)

    await bus.nc.subscribe(bus.subjects.pattern("md.book.>"), cb=on_book)
    await bus.nc.subscribe(bus.subjects.pattern("md.candle.>"), cb=on_candle)
    await bus.nc.flush()  # listening before the first request is answered


async def get_market(ctx: Ctx) -> MarketCache:
    return await start(ctx)


Market = Annotated[MarketCache, Depends(get_market)]


async def feed_status(bus: Bus, venue: str) -> ActorStatus | None:
    """The feed leader's last status (KV ``actors``, key ``feed.<venue>``), if any."""
    kv = await bus.kv("actors")
    try:
        entry = await kv.get(keys.feed(venue))
    except KeyNotFoundError:
        return None
    if not entry.value:
        return None
    try:
        return codec.decode(entry.value, ActorStatus)
    except codec.DecodeError:
        return None
