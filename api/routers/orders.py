"""Orders: the seed's placement routes, and reading / cancelling / closing.

Placement is a request to the order guard (``rbot.cmd.order.place``); the answer
comes back only after the accepted command is in JetStream.  Cancels are
commands to the owning executor; the caller learns the outcome from the events.
A user sees only their own orders (another user's id answers 404).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from rbot.bus import codec, pnl
from rbot.bus.messages import CancelReply, CancelRequest, OrderRequest, OrderStatus, PlaceReply
from rbot.bus.subjects import TOKEN_PATTERN, is_token

from .. import orderbook
from ..context import ApiContext, Ctx
from ..errors import ApiError, guard_status
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


async def _ask(ctx: ApiContext, subject: str, data: bytes) -> bytes:
    """A request to the order guard; 503 with a stable code if none answers."""
    try:
        msg = await ctx.bus.nc.request(subject, data, timeout=8.0)
    except NoRespondersError:
        raise ApiError(503, "guard_unavailable", "no order guard is running; retry shortly",
                       headers={"Retry-After": "1"}) from None  # fmt: skip
    except NatsTimeout:
        raise ApiError(
            503, "guard_timeout",
            "the order guard did not answer; retry with the same client_order_id or Idempotency-Key",
            headers={"Retry-After": "1"},
        ) from None  # fmt: skip
    return bytes(msg.data)


async def _place(ctx: ApiContext, req: OrderRequest) -> OrderAccepted:
    reply = codec.decode(await _ask(ctx, ctx.bus.subjects.order_place, codec.encode(req)),
                         PlaceReply)  # fmt: skip
    if not reply.ok:
        headers = None
        if reply.detail and "retry_after" in reply.detail:
            headers = {"Retry-After": reply.detail["retry_after"]}
        raise ApiError(
            guard_status(reply.code), reply.code or "rejected", reply.message or "order refused",
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
    symbol: Annotated[str | None, Query(pattern=TOKEN_PATTERN)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=100_000)] = 0,
    cursor: Annotated[
        int | None,
        Query(ge=0, le=2**53, description="`next_cursor` of the previous page: older orders"),
    ] = None,
) -> dict[str, Any]:
    """The caller's orders, newest first; O(page) whatever the history's length.

    Unfiltered pages know ``total``; a filtered page looks at up to a few thousand
    orders and returns ``next_cursor`` to go on from (``total`` is null)."""
    page = await orderbook.user_orders(
        ctx.bus, user.sub, limit=limit, offset=offset, cursor=cursor,
        status=status, venue=venue, symbol=symbol,
    )  # fmt: skip
    return {"orders": [orderbook.order_json(o) for o in page.orders], "total": page.total,
            "limit": limit, "offset": offset, "next_cursor": page.next_cursor}  # fmt: skip


@router.get("/orders/{order_id}", responses={404: {"description": "no such order"}})
async def get_order(order_id: str, ctx: Ctx, user: Viewer) -> dict[str, Any]:
    order = await orderbook.get_order(ctx.bus, order_id)
    if order is None or not _visible(user, order.user):
        raise ApiError(404, "order_not_found", f"no order {order_id!r}")
    return orderbook.order_json(order)


@router.delete("/orders/{order_id}", responses={404: {"description": "no such order"}, **_ERRORS})
async def cancel_order(order_id: str, ctx: Ctx, user: Trader) -> dict[str, Any]:
    """Cancel a pending order, or close an open position (reason ``CLIENT_REQUEST``).

    Accepted at any time after the order's 200, even before the executor booked it:
    the cancel follows the place command through the order's partition."""
    if not is_token(order_id):
        raise ApiError(404, "order_not_found", f"no order {order_id!r}")
    req = CancelRequest(user=user.sub, order_id=order_id)
    reply = codec.decode(await _ask(ctx, ctx.bus.subjects.order_cancel, codec.encode(req)),
                         CancelReply)  # fmt: skip
    if not reply.ok:
        code = reply.code or "cancel_failed"
        raise ApiError(guard_status(code), code, reply.message or "cancel refused")
    return {"ok": True, "order_id": reply.order_id, "status": reply.status,
            "requested": reply.requested}  # fmt: skip


async def _positions(ctx: ApiContext, user: Principal) -> list[dict[str, Any]]:
    ticks = await orderbook.last_ticks(ctx.bus)
    currency = ctx.settings.rbot_account_currency
    out = []
    for o in await orderbook.active_orders(ctx.bus, user.sub):
        if o.status is not OrderStatus.OPEN or o.entry_fill is None:
            continue
        tick = ticks.get((o.venue, o.symbol))
        mark = None if tick is None else pnl.mark_price(o, tick)
        upnl = None if tick is None else pnl.unrealized_pnl(o, tick, split_quote(o.symbol))
        in_acct = None if upnl is None else pnl.convert(
            upnl, currency, lambda a, b: pnl.rate_from_ticks(ticks, a, b)
        )  # fmt: skip
        out.append({
            "order_id": o.id, "venue": o.venue, "symbol": o.symbol, "side": o.side,
            "qty": str(o.qty), "entry_price": str(o.entry_fill.price),
            "mark": None if mark is None else str(mark),
            "unrealized_pnl": None if upnl is None else str(upnl.amount),
            "currency": split_quote(o.symbol),
            "unrealized_pnl_account": (
                None if in_acct is None or in_acct.currency != currency else str(in_acct.amount)
            ),
            "stop_loss": str(o.stop_loss), "take_profit": str(o.take_profit),
            "opened_at": o.opened_at, "closing": o.closing,
        })  # fmt: skip
    return out


def split_quote(symbol: str) -> str:
    return pnl.split_symbol(symbol)[1]


@router.get("/positions")
async def positions(ctx: Ctx, user: Viewer) -> dict[str, Any]:
    """Open positions, marked to market (a long at the bid, a short at the ask)."""
    return {"positions": await _positions(ctx, user)}


@router.get("/account")
async def account(ctx: Ctx, user: Viewer) -> dict[str, Any]:
    """Balance and equity: equity counts every open position's unrealized P&L,
    converted to the account currency (a third rate where needed)."""
    s = ctx.settings
    acct = await orderbook.account(
        ctx.bus, user.sub, s.rbot_account_currency, s.rbot_starting_balance
    )
    pos = await _positions(ctx, user)
    unrealized = sum(
        (Decimal(p["unrealized_pnl_account"]) for p in pos if p["unrealized_pnl_account"]),
        Decimal(0),
    )
    return {
        "currency": acct.currency,
        "balance": str(acct.balance),
        "equity": str(acct.balance + unrealized),
        "realized_pnl": str(acct.realized_pnl),
        "unrealized_pnl": str(unrealized),
        "open_positions": len(pos),
        "unpriced_positions": sum(1 for p in pos if p["unrealized_pnl_account"] is None),
        "closed_trades": acct.trades,
        "unconverted_pnl": {k: str(v) for k, v in acct.unconverted.items()},
    }
