"""The simulated price source: seeded random-walk ticks, so ``rbot up`` trades offline.

Pure core: ``SimMarket`` steps a mid price per symbol with a seeded RNG and
quotes bid/ask around it with the symbol's spread; every value is an exact
``Decimal`` on the symbol's tick size.  Starting prices follow the seed
(EUR_USD 1.1650, BTC-USD 42,500.50) so the seed's example orders are valid.

With ``books=True`` (the Coinbase venue) each tick also gets a level-2
``Book`` consistent with it (``book_for``): the best bid and ask are the
tick's, ``depth`` levels a side step away from them by half a spread, and
sizes are plausible for the symbol (about ``level_notional`` of quote
currency a level, growing with distance, on the venue's 1e-8 size grid).
Books draw from their own RNG, so the price walk of a seed does not depend
on whether books are made.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal

from rbot.bus import codec
from rbot.bus.messages import Book, BookLevel, Tick

BOOK_DEPTH = 25
SIZE_STEP = Decimal("0.00000001")  # Coinbase's base_increment for the majors


@dataclass(frozen=True)
class SimSpec:
    start: Decimal
    spread: Decimal  # ask - bid
    tick: Decimal  # price increment
    vol: float  # per-step relative standard deviation
    level_notional: Decimal = Decimal(25000)  # typical quote-currency size of a book level


SPECS: dict[str, SimSpec] = {
    "EUR_USD": SimSpec(Decimal("1.16500"), Decimal("0.00014"), Decimal("0.00001"), 0.00004),
    "GBP_USD": SimSpec(Decimal("1.33500"), Decimal("0.00018"), Decimal("0.00001"), 0.00005),
    "USD_JPY": SimSpec(Decimal("149.500"), Decimal("0.014"), Decimal("0.001"), 0.00004),
    "AUD_USD": SimSpec(Decimal("0.65500"), Decimal("0.00014"), Decimal("0.00001"), 0.00005),
    "USD_CHF": SimSpec(Decimal("0.88500"), Decimal("0.00016"), Decimal("0.00001"), 0.00004),
    "BTC-USD": SimSpec(Decimal("42500.50"), Decimal("1.00"), Decimal("0.01"), 0.0002),
    "ETH-USD": SimSpec(Decimal("2250.00"), Decimal("0.10"), Decimal("0.01"), 0.00025),
    "SOL-USD": SimSpec(Decimal("95.000"), Decimal("0.010"), Decimal("0.001"), 0.0003),
}


def spec_for(symbol: str) -> SimSpec:
    spec = SPECS.get(symbol)
    if spec is not None:
        return spec
    crypto = "-" in symbol
    return SimSpec(
        Decimal("100.00") if crypto else Decimal("1.00000"),
        Decimal("0.02") if crypto else Decimal("0.00020"),
        Decimal("0.01") if crypto else Decimal("0.00001"),
        0.0002 if crypto else 0.00005,
    )


class SimMarket:
    def __init__(
        self,
        venue: str,
        symbols: list[str],
        seed: int,
        *,
        books: bool = False,
        depth: int = BOOK_DEPTH,
    ) -> None:
        self.venue = venue
        self.rng = random.Random(f"{seed}:{venue}")
        self.book_rng = random.Random(f"{seed}:{venue}:books")
        self.books = books
        self.depth = depth
        self.specs = {s: spec_for(s) for s in symbols}
        self.mids = {s: sp.start for s, sp in self.specs.items()}
        self.seq = 0

    def step(self) -> list[Tick]:
        ticks: list[Tick] = []
        now = codec.now_iso()
        for symbol, spec in self.specs.items():
            mid = self.mids[symbol]
            move = Decimal(repr(self.rng.gauss(0.0, spec.vol))) * mid
            # mean-revert gently towards the start so a long run stays plausible
            pull = (spec.start - mid) * Decimal("0.001")
            mid = (mid + move + pull).quantize(spec.tick, rounding=ROUND_HALF_EVEN)
            mid = max(mid, spec.tick * 10)
            self.mids[symbol] = mid
            half = (spec.spread / 2).quantize(spec.tick, rounding=ROUND_HALF_EVEN)
            self.seq += 1
            ticks.append(
                Tick(
                    venue=self.venue,
                    symbol=symbol,
                    bid=mid - half,
                    ask=mid - half + spec.spread,
                    time=now,
                    seq=self.seq,
                    source="sim",
                )
            )
        return ticks

    def book(self, tick: Tick) -> Book | None:
        """The level-2 book behind ``tick`` (None without books or without a price)."""
        if not self.books or tick.bid is None or tick.ask is None:
            return None
        return book_for(tick, spec_for(tick.symbol), self.book_rng, self.depth)


def book_for(tick: Tick, spec: SimSpec, rng: random.Random, depth: int = BOOK_DEPTH) -> Book:
    """``depth`` levels a side whose best bid and ask are the tick's.

    Levels are half a spread apart (at least one price tick); a level holds about
    ``spec.level_notional`` of quote currency, more further from the touch, drawn
    from ``rng`` and rounded to ``SIZE_STEP`` (never zero)."""
    assert tick.bid is not None and tick.ask is not None
    step = max((spec.spread / 2).quantize(spec.tick, rounding=ROUND_HALF_EVEN), spec.tick)
    mid = (tick.bid + tick.ask) / 2

    def size(i: int) -> Decimal:
        scale = Decimal(repr(rng.lognormvariate(0.0, 0.5))) * (1 + Decimal(i) / 8)
        raw = spec.level_notional * scale / mid
        return max(raw.quantize(SIZE_STEP, rounding=ROUND_HALF_EVEN), SIZE_STEP)

    bids = [BookLevel(tick.bid - step * i, size(i)) for i in range(depth)]
    asks = [BookLevel(tick.ask + step * i, size(i)) for i in range(depth)]
    bids = [lv for lv in bids if lv.price > 0]
    return Book(
        venue=tick.venue, symbol=tick.symbol, bids=bids, asks=asks, time=tick.time, seq=tick.seq
    )
