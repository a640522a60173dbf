"""Market data served from the bus and KV (never a proxy per request to a broker).

Sources: KV ``prices`` (the last tick per symbol), KV ``actors`` ``feed.<venue>``
(the feed leader's link status), the app's ``CandleBook`` (candles built from
ticks) and ``MarketCache`` (the latest book per product and the candles the
feeds fetch from the brokers).  Viewer role for everything here.
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Query

from rbot.bus import codec
from rbot.bus.granularity import DEFAULT_CHART, DEFAULT_OANDA, FROM_TICKS, OANDA
from rbot.bus.messages import ActorStatus, Book, Candle, Tick
from rbot.bus.subjects import TOKEN_PATTERN

from .. import metrics, orderbook
from ..candles import GRANULARITY_S
from ..context import ApiContext, Ctx
from ..errors import ApiError
from ..marketcache import Market, MarketCache, feed_status
from ..security import Viewer

router = APIRouter(tags=["market data"])
# /metrics is mounted through this router until app.py includes metrics.router itself
router.include_router(metrics.router)

SymbolQ = Annotated[str, Query(pattern=TOKEN_PATTERN)]

OANDA_GRANULARITIES = OANDA  # the one list: bus/granularity.py
OANDA_CANDLE_COUNT_MAX = 5000


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
    """The seed's Test 1: OANDA's own price shape, from the last tick on the bus.
    A bucket's ``liquidity`` is there only where the feed sent one (OANDA does;
    the sim does not)."""
    tick = await orderbook.last_tick(ctx.bus, "oanda", instrument)
    if tick is None:
        raise ApiError(404, "unknown_instrument", f"no price for {instrument}")
    return {
        "instrument": tick.symbol,
        "time": tick.time,
        "bids": _bucket(tick.bid, tick.bid_liquidity),
        "asks": _bucket(tick.ask, tick.ask_liquidity),
        "tradeable": tick.tradeable and tick.bid is not None and tick.ask is not None,
        "status": "tradeable" if tick.tradeable else "non-tradeable",
        "source": tick.source,
        "env": env,
    }


@router.get(
    "/brokers/oanda/candles",
    responses={
        404: {"description": "unknown instrument (`unknown_instrument`)"},
        422: {"description": "a granularity OANDA does not have (`invalid_granularity`)"},
    },
)
async def oanda_candles(
    ctx: Ctx,
    user: Viewer,
    market: Market,
    instrument: SymbolQ,
    granularity: Annotated[str, Query(max_length=8)] = DEFAULT_OANDA,
    count: Annotated[int, Query(ge=1, le=OANDA_CANDLE_COUNT_MAX)] = 500,
) -> dict[str, Any]:
    """OANDA's candles shape (mid prices), oldest first, from what this API holds:
    the feed's broker candles (M1 from a live feed) and candles built from
    ticks (``FROM_TICKS``); a granularity neither provides is an empty list."""
    if granularity not in OANDA_GRANULARITIES:
        raise ApiError(
            422,
            "invalid_granularity",
            f"granularity must be one of {' '.join(OANDA_GRANULARITIES)}",
        )
    if not await _known(ctx, market, "oanda", instrument):
        raise ApiError(404, "unknown_instrument", f"unknown instrument {instrument}")
    rows = _merged(ctx, market, "oanda", instrument, granularity, count)
    return {
        "instrument": instrument,
        "granularity": granularity,
        "candles": [
            {
                "complete": r["complete"],
                "volume": r["volume"],
                "time": _oanda_time(r["time"]),
                "mid": {k: r[k] for k in ("o", "h", "l", "c")},
            }
            for r in rows
        ],
    }


@router.get("/brokers/coinbase/status")
async def coinbase_status(ctx: Ctx, user: Viewer, market: Market) -> dict[str, Any]:
    """The known products (configured, or seen on the bus) with their last price
    and status, and the feed leader's link status."""
    feed = await feed_status(ctx.bus, "coinbase")
    info = (feed.info or {}) if feed is not None else {}
    venue_status = {
        k.removeprefix("product."): v for k, v in info.items() if k.startswith("product.")
    }
    ticks = {s: t for (v, s), t in (await orderbook.last_ticks(ctx.bus)).items() if v == "coinbase"}
    known = set(ctx.settings.symbols("coinbase")) | set(ticks) | market.symbols("coinbase")
    products = [
        _product(ctx, pid, ticks.get(pid), venue_status.get(pid), market.book("coinbase", pid))
        for pid in sorted(known)
    ]
    return {
        "venue": "coinbase",
        "source": info.get("source") or ("sim" if ctx.settings.use_sim("coinbase") else "coinbase"),
        "feed": _feed_json(feed),
        "products": products,
    }


@router.get(
    "/brokers/coinbase/books",
    responses={404: {"description": "no book seen for the product (`no_book`)"}},
)
async def coinbase_books(
    user: Viewer,
    market: Market,
    product_id: SymbolQ,
    limit: Annotated[int | None, Query(ge=1, le=1000)] = None,
) -> dict[str, Any]:
    """The last order book the feed published, in Coinbase's ``product_book`` shape
    (best first; ``limit`` levels a side): the live feed's, or the sim's."""
    book = market.book("coinbase", product_id)
    if book is None:
        raise ApiError(404, "no_book", f"no order book for {product_id} yet")
    return _book_json(book, limit)


@router.get("/candles")
async def candles(
    ctx: Ctx,
    user: Viewer,
    market: Market,
    venue: Annotated[str, Query(pattern=r"^(oanda|coinbase)$")],
    symbol: SymbolQ,
    granularity: Annotated[str, Query(pattern=f"^({'|'.join(FROM_TICKS)})$")] = DEFAULT_CHART,
    count: Annotated[int, Query(ge=1, le=500)] = 100,
) -> dict[str, Any]:
    """Recent candles of mid prices (oldest first): built from the tick stream,
    with the broker's own candles in their place where a live feed sent them.
    ``granularity`` is one of ``GET /meta``'s ``granularities.chart``."""
    return {
        "venue": venue,
        "symbol": symbol,
        "granularity": granularity,
        "candles": _merged(ctx, market, venue, symbol, granularity, count),
    }


# ---------------------------------------------------------------------- helpers


async def _known(ctx: ApiContext, market: MarketCache, venue: str, symbol: str) -> bool:
    if symbol in ctx.settings.symbols(venue) or symbol in market.symbols(venue):
        return True
    return await orderbook.last_tick(ctx.bus, venue, symbol) is not None


def _merged(
    ctx: ApiContext, market: MarketCache, venue: str, symbol: str, gran: str, count: int
) -> list[dict[str, Any]]:
    """Candles from ticks, overlaid by the broker's candles of the same start."""
    rows: dict[str, dict[str, Any]] = {}
    if gran in GRANULARITY_S:
        rows = {c["time"]: c for c in ctx.candles.get(venue, symbol, gran, count)}
    for c in market.candles(venue, symbol, gran):
        rows[c.time] = _candle_json(c)
    return [rows[t] for t in sorted(rows)][-count:]


def _candle_json(c: Candle) -> dict[str, Any]:
    return {
        "time": c.time, "o": str(c.o), "h": str(c.h), "l": str(c.l), "c": str(c.c),
        "volume": c.volume, "complete": c.complete,
    }  # fmt: skip


def _oanda_time(t: str) -> str:
    """``...00.000000Z`` (the bus: microseconds) as OANDA writes it (nanoseconds)."""
    return t[:-1] + "000Z" if t.endswith("Z") and len(t.rsplit(".", 1)[-1]) == 7 else t


def _product(
    ctx: ApiContext, pid: str, tick: Tick | None, venue_status: str | None, book: Book | None
) -> dict[str, Any]:
    age = None if tick is None else time.time() - codec.parse_iso(tick.time).timestamp()
    fresh = age is not None and age <= ctx.settings.rbot_price_max_age_s
    status = venue_status or ("online" if fresh else "stale" if tick is not None else "no_data")
    return {
        "product_id": pid,
        "status": status,
        "price": _s(tick.mid) if tick is not None else None,
        "bid": _s(tick.bid) if tick is not None else None,
        "ask": _s(tick.ask) if tick is not None else None,
        "time": tick.time if tick is not None else None,
        "tradeable": bool(tick and tick.tradeable),
        "fresh": fresh,
        "source": tick.source if tick is not None else None,
        "book": book is not None,
    }


def _feed_json(feed: ActorStatus | None) -> dict[str, Any] | None:
    if feed is None:
        return None
    info = {k: v for k, v in (feed.info or {}).items() if not k.startswith("product.")}
    return {"leader": feed.instance, "state": feed.state, "updated": feed.last_beat, **info}


def _book_json(book: Book, limit: int | None) -> dict[str, Any]:
    bids, asks = book.bids[:limit], book.asks[:limit]
    out: dict[str, Any] = {
        "pricebook": {
            "product_id": book.symbol,
            "bids": [{"price": str(lv.price), "size": str(lv.size)} for lv in bids],
            "asks": [{"price": str(lv.price), "size": str(lv.size)} for lv in asks],
            "time": book.time,
        },
        "seq": book.seq,
    }
    if bids and asks and bids[0].price + asks[0].price > 0:
        bid, ask = bids[0].price, asks[0].price
        mid, spread = (bid + ask) / 2, ask - bid
        out["mid_market"] = str(mid)
        out["spread_absolute"] = str(spread)
        out["spread_bps"] = str((spread / mid * 10000).quantize(Decimal("0.0001")))
    return out


def _bucket(price: Decimal | None, liquidity: int | None) -> list[dict[str, Any]]:
    if price is None:
        return []
    bucket: dict[str, Any] = {"price": str(price)}
    if liquidity is not None:
        bucket["liquidity"] = liquidity
    return [bucket]


def _s(v: object) -> str | None:
    return None if v is None else str(v)
