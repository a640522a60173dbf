"""Candles built from the tick stream (mid prices), for the dashboard's chart.

Pure core ``CandleBook`` (no I/O) plus ``watch_ticks`` that feeds it from
``rbot.md.tick.>``.  Each API process keeps its own recent history in memory
(the last ``keep`` candles per symbol and granularity); a broker feed's own
candles, when a live feed publishes them, are the better source.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import deque
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from nats.aio.msg import Msg

from rbot.bus import codec, granularity
from rbot.bus.connection import Bus
from rbot.bus.messages import Tick

log = logging.getLogger("rbot.api.candles")

GRANULARITY_S: dict[str, int] = granularity.from_ticks_seconds()  # bus/granularity.py


@dataclass
class _Candle:
    start: int
    o: Decimal
    h: Decimal
    l: Decimal  # noqa: E741 - OANDA's own name
    c: Decimal
    volume: int = 1

    def as_json(self, complete: bool) -> dict[str, Any]:
        t = dt.datetime.fromtimestamp(self.start, dt.UTC)
        return {
            "time": codec.utc_iso(t), "o": str(self.o), "h": str(self.h), "l": str(self.l),
            "c": str(self.c), "volume": self.volume, "complete": complete,
        }  # fmt: skip


class CandleBook:
    def __init__(self, keep: int = 500) -> None:
        self.keep = keep
        self.series: dict[tuple[str, str, str], deque[_Candle]] = {}

    def add(self, tick: Tick) -> None:
        mid = tick.mid
        if mid is None:
            return
        ts = int(codec.parse_iso(tick.time).timestamp())
        for gran, secs in GRANULARITY_S.items():
            key = (tick.venue, tick.symbol, gran)
            series = self.series.get(key)
            if series is None:
                series = self.series[key] = deque(maxlen=self.keep)
            start = ts - ts % secs
            last = series[-1] if series else None
            if last is not None and last.start == start:
                last.h, last.l, last.c = max(last.h, mid), min(last.l, mid), mid
                last.volume += 1
            elif last is None or start > last.start:
                series.append(_Candle(start, mid, mid, mid, mid))

    def get(self, venue: str, symbol: str, gran: str, count: int) -> list[dict[str, Any]]:
        series = self.series.get((venue, symbol, gran))
        if not series:
            return []
        items = list(series)[-count:]
        return [c.as_json(complete=i < len(items) - 1) for i, c in enumerate(items)]


async def watch_ticks(bus: Bus, book: CandleBook) -> None:
    async def on_tick(msg: Msg) -> None:
        try:
            book.add(codec.payload(codec.decode_envelope(msg.data), Tick))
        except (codec.DecodeError, ValueError) as exc:
            log.debug("tick skipped: %s", exc)

    sub = await bus.nc.subscribe(bus.subjects.ticks(), cb=on_tick)
    try:
        await bus.closed.wait()
    finally:
        await sub.unsubscribe()
