"""Orders: the seed's placement routes, and reading / cancelling / closing.

Placement is a request to the order guard (``rbot.cmd.order.place``); the answer
comes back only after the accepted command is in JetStream.  Cancels are
commands to the owning executor; the caller learns the outcome from the events.
A user sees only their own orders (another user's id answers 404).
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from rbot.bus import codec
from rbot.bus.messages import CancelCmd, Order, OrderRequest, OrderStatus, PlaceReply, Tick
from rbot.bus.subjects import is_token

from .. import orderbook
from ..context import ApiContext, Ctx
from ..errors import ApiError
from ..lockouts import LockoutStore
from ..models import CoinbaseOrderIn, OandaOrderIn, OrderAccepted
from ..pin import pin_verdict
from ..principal import Principal
from ..security import Trader, Viewer, auth_of

router = APIRouter(tags=["orders"])

IdemHeader = Annotated[
    str | None,
    Header(alias="Idempotency-Key", description="makes a retry return the original order"),
]
PinHeader = Annotated[str | None, Header(alias="X-PIN", description="live orders only")]

_ERRORS: dict[int | str, dict[str, Any]] = {
    403: {"description": "forbidden (role, live gate)"},
    409: {"description": "trading halted / reducing, stale price, idempotency conflict"},
    422: {"description": "invalid order (guard rule or schema)"},
    429: {"description": "rate limited"},
    503: {"description": "bus or guard unavailable"},
}


def _idem(value: str | None) -> str | None:
    if value is None:
        return None
    if not is_token(value):
        raise ApiError(
            422, "invalid_idempotency_key", "Idempotency-Key must be 1-64 of A-Z a-z 0-9 _ -"
        )
    return value


async def _place(ctx: ApiContext, req: OrderRequest) -> OrderAccepted:
    try:
        msg = await ctx.bus.nc.request(ctx.bus.subjects.order_place, codec.encode(req), timeout=8.0)
    except NoRespondersError:
        raise ApiError(503, "guard_unavailable", "no order guard is running; retry shortly",
                       headers={"Retry-After": "1"}) from None  # fmt: skip
    except NatsTimeout:
        raise ApiError(
            503, "guard_timeout",
            "the order guard did not answer; retry with the same client_order_id or Idempotency-Key",
            headers={"Retry-After": "1"},
        ) from None  # fmt: skip
    reply = codec.decode(msg.data, PlaceReply)
    if not reply.ok:
        headers = None
        if reply.detail and "retry_after" in reply.detail:
            headers = {"Retry-After": reply.detail["retry_after"]}
        raise ApiError(
            reply.http_status, reply.code or "rejected", reply.message or "order refused",
            reply.detail, headers,
        )  # fmt: skip
    return OrderAccepted(order_id=reply.order_id or "", status=reply.status or "PENDING",
                         mode=reply.mode)  # fmt: skip


async def _order_request(
    ctx: ApiContext, request: Request, user: Principal, body: OandaOrderIn | CoinbaseOrderIn,
    idempotency_key: str | None, pin: str | None,
) -> OrderRequest:  # fmt: skip
    """One venue-neutral request from either seed body (their field names differ)."""
    if isinstance(body, OandaOrderIn):
        venue, symbol, qty, entry = "oanda", body.instrument, body.units, body.entry_price
        limit = entry if body.order_type == "LIMIT" else None
    else:
        venue, symbol, qty = "coinbase", body.product_id, body.size
        entry = limit = body.limit_price
    return OrderRequest(
        user=user.sub,
        venue=venue,
        symbol=symbol,
        side=body.side,
        order_type=body.order_type,
        qty=qty,
        stop_loss=body.stop_loss_price,
        take_profit=body.take_profit_price,
        entry_price=entry,
        limit_price=limit,
        quality_score=body.quality_score,
        client_order_id=body.client_order_id,
        idempotency_key=_idem(idempotency_key),
        ttl_minutes=body.ttl_minutes,
        live=not ctx.settings.paper_mode,
        pin_ok=await pin_verdict(
            ctx.settings, LockoutStore(ctx.bus, auth_of(ctx).clock), user, pin
        ),
        request_id=_rid(request),
    )


@router.post("/brokers/oanda/orders", response_model=OrderAccepted, responses=_ERRORS)
async def place_oanda(
    request: Request, body: OandaOrderIn, ctx: Ctx, user: Trader,
    idempotency_key: IdemHeader = None, x_pin: PinHeader = None,
) -> OrderAccepted:  # fmt: skip
    return await _place(ctx, await _order_request(ctx, request, user, body, idempotency_key, x_pin))


@router.post("/brokers/coinbase-adv/orders", response_model=OrderAccepted, responses=_ERRORS)
async def place_coinbase(
    request: Request, body: CoinbaseOrderIn, ctx: Ctx, user: Trader,
    idempotency_key: IdemHeader = None, x_pin: PinHeader = None,
) -> OrderAccepted:  # fmt: skip
    return await _place(ctx, await _order_request(ctx, request, user, body, idempotency_key, x_pin))


def _rid(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id", ""))


def _visible(user: Principal, owner: str) -> bool:
    return user.is_admin or user.sub == owner


@router.get("/orders", responses=_ERRORS)
async def list_orders(
    ctx: Ctx,
    user: Viewer,
    status: Annotated[OrderStatus | None, Query()] = None,
    venue: Annotated[str | None, Query(pattern=r"^(oanda|coinbase)$")] = None,
    symbol: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9_-]{1,64}$")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> dict[str, Any]:
    rows = [
        o
        for o in await orderbook.all_orders(ctx.bus)
        if o.user == user.sub
        and (status is None or o.status is status)
        and (venue is None or o.venue == venue)
        and (symbol is None or o.symbol == symbol)
    ]
    rows.sort(key=lambda o: (o.created_at, o.id), reverse=True)
    page = rows[offset : offset + limit]
    return {"orders": [orderbook.order_json(o) for o in page], "total": len(rows),
            "limit": limit, "offset": offset}  # fmt: skip


@router.get("/orders/{order_id}", responses={404: {"description": "no such order"}})
async def get_order(order_id: str, ctx: Ctx, user: Viewer) -> dict[str, Any]:
    order = await orderbook.get_order(ctx.bus, order_id)
    if order is None or not _visible(user, order.user):
        raise ApiError(404, "order_not_found", f"no order {order_id!r}")
    return orderbook.order_json(order)


@router.delete("/orders/{order_id}", responses={404: {"description": "no such order"}, **_ERRORS})
async def cancel_order(order_id: str, ctx: Ctx, user: Trader) -> dict[str, Any]:
    """Cancel a pending order, or close an open position (reason ``CLIENT_REQUEST``)."""
    order = await orderbook.get_order(ctx.bus, order_id)
    if order is None or order.user != user.sub:
        raise ApiError(404, "order_not_found", f"no order {order_id!r}")
    if order.status not in (OrderStatus.PENDING, OrderStatus.OPEN):
        raise ApiError(409, "order_final", f"order {order_id} is already {order.status}")
    cmd = CancelCmd(order_id=order.id, user=user.sub)
    await ctx.bus.js.publish(
        ctx.bus.subjects.exec(order.venue, order.symbol),
        codec.encode(cmd),
        headers={"Nats-Msg-Id": f"cancel.{order.id}.{uuid.uuid4().hex[:8]}"},
    )
    action = "cancel" if order.status is OrderStatus.PENDING else "close"
    return {"ok": True, "order_id": order.id, "status": str(order.status), "requested": action}


@router.get("/positions")
async def positions(ctx: Ctx, user: Viewer) -> dict[str, Any]:
    ticks = await orderbook.last_ticks(ctx.bus)
    out = []
    for o in await orderbook.all_orders(ctx.bus):
        if o.user != user.sub or o.status is not OrderStatus.OPEN or o.entry_fill is None:
            continue
        tick = ticks.get((o.venue, o.symbol))
        mark, upnl = _mark(o, tick)
        out.append({
            "order_id": o.id, "venue": o.venue, "symbol": o.symbol, "side": o.side,
            "qty": str(o.qty), "entry_price": str(o.entry_fill.price),
            "mark": None if mark is None else str(mark),
            "unrealized_pnl": None if upnl is None else str(upnl),
            "currency": _quote(o.symbol), "stop_loss": str(o.stop_loss),
            "take_profit": str(o.take_profit), "opened_at": o.opened_at,
        })  # fmt: skip
    return {"positions": out}


def _quote(symbol: str) -> str:
    for sep in ("_", "-"):
        if sep in symbol:
            return symbol.split(sep, 1)[1]
    return symbol


def _mark(order: Order, tick: Tick | None) -> tuple[Decimal | None, Decimal | None]:
    """Mark-to-market: a long marks at the bid, a short at the ask (quote currency)."""
    if tick is None or order.entry_fill is None:
        return None, None
    price = tick.bid if order.side == "BUY" else tick.ask
    if price is None:
        return None, None
    entry = order.entry_fill.price
    move = price - entry if order.side == "BUY" else entry - price
    return price, move * order.qty


@router.get("/account")
async def account(ctx: Ctx, user: Viewer) -> dict[str, Any]:
    s = ctx.settings
    acct = await orderbook.account(
        ctx.bus, user.sub, s.rbot_account_currency, s.rbot_starting_balance
    )
    pos = (await positions(ctx, user))["positions"]
    unrealized = sum(
        (Decimal(p["unrealized_pnl"]) for p in pos
         if p["unrealized_pnl"] is not None and p["currency"] == acct.currency),
        Decimal(0),
    )  # fmt: skip
    return {
        "currency": acct.currency,
        "balance": str(acct.balance),
        "equity": str(acct.balance + unrealized),
        "realized_pnl": str(acct.realized_pnl),
        "unrealized_pnl": str(unrealized),
        "open_positions": len(pos),
        "closed_trades": acct.trades,
    }
