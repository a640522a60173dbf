"""Candle granularities, in one place: OANDA's names (the bus uses them for both
venues), seconds per candle, which ones the API builds from ticks, and
Coinbase's names.

Everything that names a granularity imports it from here: the OANDA client and
parser, the API's candle book and routes, ``GET /meta`` (the dashboard's list),
the tests' fake brokers.

* ``OANDA``: every granularity OANDA knows, in its order (``/brokers/oanda/candles``
  accepts these; one the API cannot provide is an empty list).
* ``SECONDS``: seconds per candle; ``W`` and ``M`` are calendar aligned (Monday,
  the 1st of the month, UTC), so ``M`` has no fixed length (0).
* ``FROM_TICKS``: what the API builds from the tick stream, and so what
  ``GET /candles`` (the dashboard's chart) accepts, shortest first.
* ``COINBASE``: Coinbase's names and seconds; ``COINBASE_AS_OANDA`` maps them
  to the bus names.
"""

from __future__ import annotations

from typing import Final

SECONDS: Final[dict[str, int]] = {
    "S5": 5, "S10": 10, "S15": 15, "S30": 30,
    "M1": 60, "M2": 120, "M4": 240, "M5": 300, "M10": 600, "M15": 900, "M30": 1800,
    "H1": 3600, "H2": 7200, "H3": 10800, "H4": 14400, "H6": 21600, "H8": 28800, "H12": 43200,
    "D": 86400, "W": 7 * 86400, "M": 0,
}  # fmt: skip
OANDA: Final[tuple[str, ...]] = tuple(SECONDS)
DEFAULT_OANDA: Final = "S5"

FROM_TICKS: Final[tuple[str, ...]] = ("S5", "S15", "M1", "M5", "M15", "H1", "H4")
DEFAULT_CHART: Final = "M1"
BROKER_CANDLES: Final = "M1"  # what the live feeds fetch over REST and publish

COINBASE: Final[dict[str, int]] = {
    "ONE_MINUTE": 60,
    "FIVE_MINUTE": 300,
    "FIFTEEN_MINUTE": 900,
    "THIRTY_MINUTE": 1800,
    "ONE_HOUR": 3600,
    "TWO_HOUR": 7200,
    "FOUR_HOUR": 14400,
    "SIX_HOUR": 21600,
    "ONE_DAY": 86400,
}
COINBASE_AS_OANDA: Final[dict[str, str]] = {
    name: next(g for g in OANDA if SECONDS[g] == secs) for name, secs in COINBASE.items()
}


def from_ticks_seconds() -> dict[str, int]:
    """Seconds per candle of every granularity built from ticks."""
    return {g: SECONDS[g] for g in FROM_TICKS}
