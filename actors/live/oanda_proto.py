"""OANDA v20 order routing, pure: request bodies out, broker facts in.  No I/O.

``order_body`` builds ``POST /v3/accounts/{id}/orders`` from our ``Order``:
MARKET (``FOK``) or LIMIT (``GTD`` at the order's TTL), units signed (negative
sells), ``stopLossOnFill`` and ``takeProfitOnFill`` (``GTC``: the position's
own life is bounded by ``max_hold_min``, closed by us), and
``clientExtensions.id`` = our order id (unique at the broker, so a resend after
a lost answer is refused with ``CLIENT_ORDER_ID_ALREADY_EXISTS`` instead of
opening a second position).

``create_outcome`` maps the answer to a create (201 fill, 201 with an
``orderCancelTransaction`` such as ``STOP_LOSS_ON_FILL_LOSS``, 201 pending for
a resting LIMIT, 400/404 rejects with their ``errorCode``); ``facts`` maps
transactions (from the answer, the transaction stream or ``/changes``) to
``Fact`` values the live core applies to our orders.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal, InvalidOperation
from typing import Any

from rbot.bus import codec
from rbot.bus.messages import Order

from .facts import Fact, FactKind, Outcome

__all__ = ["CLOSE_REASONS", "Fact", "FactKind", "Outcome", "create_outcome", "facts", "order_body"]

# OANDA close reasons -> ours (PROTOCOLS.md: reuse theirs where they exist)
CLOSE_REASONS = {
    "TAKE_PROFIT_ORDER": "TAKE_PROFIT_ORDER",
    "STOP_LOSS_ORDER": "STOP_LOSS_ORDER",
    "TRAILING_STOP_LOSS_ORDER": "STOP_LOSS_ORDER",
    "MARKET_ORDER_TRADE_CLOSE": "CLIENT_REQUEST",
    "MARKET_ORDER_POSITION_CLOSEOUT": "CLIENT_REQUEST",
    "MARKET_ORDER_MARGIN_CLOSEOUT": "MARGIN_CLOSEOUT",
}


def _num(value: Decimal) -> str:
    return format(value.normalize(), "f")


def _oanda_time(iso: str) -> str:
    t = codec.parse_iso(iso).astimezone(dt.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"


def order_body(order: Order) -> dict[str, Any]:
    """The JSON body of ``POST /v3/accounts/{id}/orders`` for ``order``."""
    units = order.qty if order.side == "BUY" else -order.qty
    spec: dict[str, Any] = {
        "type": order.order_type,
        "instrument": order.symbol,
        "units": _num(units),
        "positionFill": "DEFAULT",
        "clientExtensions": {"id": order.id, "tag": "rbot"},
        "stopLossOnFill": {"price": _num(order.stop_loss), "timeInForce": "GTC"},
        "takeProfitOnFill": {"price": _num(order.take_profit), "timeInForce": "GTC"},
    }
    if order.client_order_id:
        spec["clientExtensions"]["comment"] = order.client_order_id
    if order.order_type == "MARKET":
        spec["timeInForce"] = "FOK"
    else:
        price = order.limit_price or order.entry_price
        if price is None:
            raise ValueError(f"LIMIT order {order.id} has no price")
        spec["price"] = _num(price)
        spec["timeInForce"] = "GTD"
        spec["gtdTime"] = _oanda_time(order.expires_at)
    return {"order": spec}


def _txn_id(txn: dict[str, Any]) -> int:
    try:
        return int(txn.get("id", 0))
    except (TypeError, ValueError):
        return 0


def _dec(value: Any) -> Decimal | None:
    try:
        return None if value is None else Decimal(str(value))
    except InvalidOperation:
        return None


def facts(txn: dict[str, Any]) -> list[Fact]:
    """The facts one transaction carries for orders placed by us (others: none)."""
    kind = txn.get("type")
    tid, time = _txn_id(txn), str(txn.get("time", ""))
    out: list[Fact] = []
    if kind == "ORDER_FILL":
        opened = txn.get("tradeOpened")
        if isinstance(opened, dict):
            out.append(
                Fact(
                    "filled",
                    tid,
                    time,
                    client_id=txn.get("clientOrderID"),
                    broker_order_id=str(txn.get("orderID", "")) or None,
                    trade_id=str(opened.get("tradeID", "")) or None,
                    price=_dec(opened.get("price", txn.get("price"))),
                    reason=txn.get("reason"),
                )  # fmt: skip
            )
        closed = list(txn.get("tradesClosed") or [])
        for trade in closed:
            if isinstance(trade, dict):
                out.append(
                    Fact(
                        "closed",
                        tid,
                        time,
                        trade_id=str(trade.get("tradeID", "")) or None,
                        price=_dec(trade.get("price", txn.get("price"))),
                        reason=txn.get("reason"),
                    )  # fmt: skip
                )
    elif kind == "ORDER_CANCEL":
        out.append(
            Fact(
                "cancelled",
                tid,
                time,
                client_id=txn.get("clientOrderID"),
                broker_order_id=str(txn.get("orderID", "")) or None,
                reason=txn.get("reason"),
            )  # fmt: skip
        )
    return out


def create_outcome(status: int, body: dict[str, Any]) -> Outcome:
    """The answer to a create: 201 (filled, pending, cancelled) or 400/404 (rejected).

    429 and 5xx are the shell's to retry; they never reach here."""
    last = _txn_id({"id": body.get("lastTransactionID", 0)})
    if status == 201:
        create = body.get("orderCreateTransaction") or {}
        boid = str(create.get("id", "")) or None
        fs: list[Fact] = []
        for key in ("orderFillTransaction", "orderCancelTransaction"):
            txn = body.get(key)
            if isinstance(txn, dict):
                fs.extend(facts(txn))
        cancel = body.get("orderCancelTransaction")
        if isinstance(cancel, dict):
            return Outcome(
                "cancelled", boid, str(cancel.get("reason", "CANCELLED")),
                f"cancelled by the broker: {cancel.get('reason')}", tuple(fs), last,
            )  # fmt: skip
        if isinstance(body.get("orderFillTransaction"), dict):
            return Outcome("filled", boid, facts=tuple(fs), last_txn=last)
        return Outcome("pending", boid, last_txn=last)
    reject = body.get("orderRejectTransaction") or {}
    code = body.get("errorCode") or reject.get("rejectReason") or f"HTTP_{status}"
    return Outcome(
        "rejected", None, str(code), str(body.get("errorMessage") or code), last_txn=last
    )


def order_state_facts(order: dict[str, Any], trade: dict[str, Any] | None) -> list[Fact]:
    """Facts from a lookup (``GET orders/@id`` and its trade): reconciliation's view."""
    facts_: list[Fact] = []
    state = order.get("state")
    boid = str(order.get("id", "")) or None
    if state == "FILLED" and trade is not None:
        tid = _txn_id({"id": order.get("fillingTransactionID", 0)})
        facts_.append(
            Fact(
                "filled",
                tid,
                str(order.get("filledTime", "")),
                broker_order_id=boid,
                trade_id=str(trade.get("id", "")) or None,
                price=_dec(trade.get("price")),
                reason="RECONCILED",
            )  # fmt: skip
        )
        if trade.get("state") == "CLOSED":
            facts_.append(
                Fact(
                    "closed",
                    tid,
                    str(trade.get("closeTime", "")),
                    trade_id=str(trade.get("id", "")) or None,
                    price=_dec(trade.get("averageClosePrice")),
                    reason="RECONCILED",
                )  # fmt: skip
            )
    elif state == "CANCELLED":
        facts_.append(
            Fact(
                "cancelled",
                _txn_id({"id": order.get("cancellingTransactionID", 0)}),
                str(order.get("cancelledTime", "")),
                broker_order_id=boid,
                reason=str(order.get("cancelReason") or "CANCELLED"),
            )  # fmt: skip
        )
    return facts_
