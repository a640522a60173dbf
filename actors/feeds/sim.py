"""The simulated price source: seeded random-walk ticks, so ``rbot up`` trades offline.

Pure core: ``SimMarket`` steps a mid price per symbol with a seeded RNG and
quotes bid/ask around it with the symbol's spread; every value is an exact
``Decimal`` on the symbol's tick size.  Starting prices follow the seed
(EUR_USD 1.1650, BTC-USD 42,500.50) so the seed's example orders are valid.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal

from rbot.bus import codec
from rbot.bus.messages import Tick


@dataclass(frozen=True)
class SimSpec:
    start: Decimal
    spread: Decimal  # ask - bid
    tick: Decimal  # price increment
    vol: float  # per-step relative standard deviation


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
    def __init__(self, venue: str, symbols: list[str], seed: int) -> None:
        self.venue = venue
        self.rng = random.Random(f"{seed}:{venue}")
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
