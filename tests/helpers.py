"""Small builders every test shares (no I/O): import them, do not copy them.

The running system's helpers (``running_stack``, ``publish_tick``, ``EventTap``,
``tick_until``) are in ``tests/stack.py``; stopping a child process is
``rbot.actors.process.stop_process``."""

from __future__ import annotations

from decimal import Decimal

from rbot.bus.messages import Tick


def dec(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


def tick(
    bid: str | None = "1.1650",
    ask: str | None = "1.1652",
    symbol: str = "EUR_USD",
    *,
    venue: str | None = None,
    time: str = "t",
    seq: int = 0,
    tradeable: bool = True,
) -> Tick:
    """A tick (prices as strings, None for a missing side); the venue follows the
    symbol's shape (``BTC-USD``: coinbase, ``EUR_USD``: oanda) unless given."""
    return Tick(
        venue=venue or ("coinbase" if "-" in symbol else "oanda"),
        symbol=symbol,
        bid=dec(bid),
        ask=dec(ask),
        time=time,
        seq=seq,
        tradeable=tradeable,
    )
