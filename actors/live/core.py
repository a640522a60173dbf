"""The live core, pure: a broker ``Fact`` applied to one of our orders gives a ``Change``.

The same changes and events as the paper engine (``actors.paper.engine.Change``),
along the same transition table (``actors.paper.state``): a fill moves PENDING
to OPEN, a close OPEN to CLOSED, a broker cancel PENDING to CANCELLED (or
EXPIRED for ``TIME_IN_FORCE_EXPIRED``).  A fact that would not be a legal
transition (a replay from the stream of something the answer already told, a
cancel of a dependent order) gives None: facts are idempotent.
"""

from __future__ import annotations

from decimal import Decimal

import msgspec

from rbot.bus import codec
from rbot.bus.messages import Fill, Order, OrderStatus
from rbot.bus.pnl import Rate, convert, realized_pnl

from ..paper.engine import Change
from ..paper.state import can_transition
from .facts import Fact
from .oanda_proto import CLOSE_REASONS

UNKNOWN = "UNKNOWN"  # broker_state while a send's outcome is not known (resolved by lookup)
SENT = "SENT"  # accepted by the broker, resting (LIMIT) or open


def _evolve(order: Order, event: str, **changes: object) -> Order:
    return msgspec.structs.replace(order, last_event=event, events=order.events + 1, **changes)


def _fill(fact: Fact, trigger: str, level: Decimal | None) -> Fill:
    assert fact.price is not None
    return Fill(
        price=fact.price, trigger=trigger, level=level,  # type: ignore[arg-type]
        tick_bid=None, tick_ask=None, tick_time=fact.time, tick_seq=fact.txn_id,
        spread=None, slippage=Decimal(0), gap=Decimal(0), time=codec.now_iso(),
    )  # fmt: skip


def placed(order: Order) -> Change:
    """The order accepted for live routing, before it is sent (write-ahead)."""
    return Change(_evolve(order, "oco_placed", status=OrderStatus.PENDING, broker_state=UNKNOWN),
                  "oco_placed")  # fmt: skip


def rejected(order: Order, code: str, message: str) -> Change:
    done = _evolve(
        order, "order_rejected", status=OrderStatus.REJECTED, reject_code=code,
        reject_message=message, closed_at=codec.now_iso(), broker_state=None,
    )  # fmt: skip
    return Change(done, "order_rejected", None, code)


def accepted(order: Order, broker_order_id: str | None) -> Order:
    """The broker has it (resting): the outcome is known now."""
    return msgspec.structs.replace(order, broker_order_id=broker_order_id, broker_state=SENT)


def apply(order: Order, fact: Fact, account_currency: str, rate: Rate) -> Change | None:
    if fact.kind == "filled":
        if not can_transition(order.status, OrderStatus.OPEN) or fact.price is None:
            return None
        level = order.limit_price or order.entry_price if order.order_type == "LIMIT" else None
        fill = _fill(fact, order.order_type, level)
        opened = _evolve(
            order, "order_filled", status=OrderStatus.OPEN, entry_fill=fill, opened_at=fill.time,
            broker_order_id=fact.broker_order_id or order.broker_order_id,
            broker_trade_id=fact.trade_id, broker_state=SENT,
        )  # fmt: skip
        return Change(opened, "order_filled", fill)
    if fact.kind == "closed":
        if order.status is not OrderStatus.OPEN or fact.trade_id != order.broker_trade_id:
            return None
        if fact.price is None:
            return None
        reason = CLOSE_REASONS.get(fact.reason or "", fact.reason or "CLIENT_REQUEST")
        if reason == "CLIENT_REQUEST" and order.closing:
            reason = order.closing  # our own close: say why we asked (e.g. TTL)
        trigger = {"TAKE_PROFIT_ORDER": "TAKE_PROFIT", "STOP_LOSS_ORDER": "STOP_LOSS"}.get(
            reason, "CLOSE"
        )
        level = {"TAKE_PROFIT": order.take_profit, "STOP_LOSS": order.stop_loss}.get(trigger)
        fill = _fill(fact, trigger, level)
        closing = msgspec.structs.replace(order, exit_fill=fill, closing=None)
        pnl = convert(realized_pnl(closing, account_currency), account_currency, rate)
        closed = _evolve(
            closing, "position_closed", status=OrderStatus.CLOSED, closed_at=fill.time,
            close_reason=reason, realized_pnl=pnl.amount, currency=pnl.currency,
        )  # fmt: skip
        return Change(closed, "position_closed", fill, reason)
    # cancelled
    if order.status is not OrderStatus.PENDING:
        return None
    if (
        fact.broker_order_id
        and order.broker_order_id
        and fact.broker_order_id != (order.broker_order_id)
    ):
        return None
    reason = fact.reason or "CANCELLED"
    to, event = (
        (OrderStatus.EXPIRED, "order_expired")
        if reason == "TIME_IN_FORCE_EXPIRED"
        else (OrderStatus.CANCELLED, "order_cancelled")
    )
    done = _evolve(
        order, event, status=to, closed_at=codec.now_iso(), close_reason=reason,
        broker_order_id=fact.broker_order_id or order.broker_order_id, broker_state=None,
    )  # fmt: skip
    return Change(done, event, None, reason)


def match(orders: dict[str, Order], fact: Fact) -> Order | None:
    """Which of our active orders a fact is about (client id, broker order id, trade id)."""
    if fact.client_id and fact.client_id in orders:
        return orders[fact.client_id]
    for o in orders.values():
        if fact.kind == "closed" and fact.trade_id and o.broker_trade_id == fact.trade_id:
            return o
        if (
            fact.kind != "closed"
            and fact.broker_order_id
            and o.broker_order_id == (fact.broker_order_id)
        ):
            return o
    return None
