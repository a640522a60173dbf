"""Market data served from the bus and KV (never a proxy per request to a broker)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from rbot.bus import codec

from .. import orderbook
from ..context import Ctx
from ..errors import ApiError
from ..security import Viewer

router = APIRouter(tags=["market data"])

SymbolQ = Annotated[str, Query(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


@router.get("/prices")
async def prices(ctx: Ctx, user: Viewer) -> dict[str, Any]:
    ticks = await orderbook.last_ticks(ctx.bus)
    rows = [
        {"venue": t.venue, "symbol": t.symbol, "bid": _s(t.bid), "ask": _s(t.ask),
         "time": t.time, "source": t.source}
        for t in sorted(ticks.values(), key=lambda t: (t.venue, t.symbol))
    ]  # fmt: skip
    return {"prices": rows}


@router.get("/brokers/oanda/prices", responses={404: {"description": "unknown instrument"}})
async def oanda_prices(
    ctx: Ctx,
    user: Viewer,
    instrument: SymbolQ,
    env: Annotated[str, Query(pattern=r"^(practice|live)$")] = "practice",
) -> dict[str, Any]:
    """The seed's Test 1: OANDA's own price shape, from the last tick on the bus."""
    tick = await orderbook.last_tick(ctx.bus, "oanda", instrument)
    if tick is None:
        raise ApiError(404, "unknown_instrument", f"no price for {instrument}")
    price = codec.to_builtins(tick)
    return {
        "instrument": tick.symbol,
        "time": tick.time,
        "bids": [{"price": price["bid"], "liquidity": 10000000}] if tick.bid is not None else [],
        "asks": [{"price": price["ask"], "liquidity": 10000000}] if tick.ask is not None else [],
        "tradeable": tick.tradeable and tick.bid is not None and tick.ask is not None,
        "status": "tradeable" if tick.tradeable else "non-tradeable",
        "source": tick.source,
        "env": env,
    }


@router.get("/candles")
async def candles(
    ctx: Ctx,
    user: Viewer,
    venue: Annotated[str, Query(pattern=r"^(oanda|coinbase)$")],
    symbol: SymbolQ,
    granularity: Annotated[str, Query(pattern=r"^(S5|S15|M1|M5|M15|H1)$")] = "M1",
    count: Annotated[int, Query(ge=1, le=500)] = 100,
) -> dict[str, Any]:
    """Recent candles of mid prices built from the tick stream (oldest first)."""
    return {
        "venue": venue,
        "symbol": symbol,
        "granularity": granularity,
        "candles": ctx.candles.get(venue, symbol, granularity, count),
    }


def _s(v: object) -> str | None:
    return None if v is None else str(v)
