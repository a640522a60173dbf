"""The pure OANDA live routing: request bodies, answers and transactions to facts."""

from __future__ import annotations

from decimal import Decimal

from rbot.actors.live import core
from rbot.actors.live.oanda_proto import create_outcome, facts, order_body
from rbot.bus.messages import Order, OrderStatus


def _order(**over: object) -> Order:
    base: dict[str, object] = dict(
        id="paper-oanda-7", user="u1", venue="oanda", symbol="EUR_USD", side="SELL",
        order_type="MARKET", qty=Decimal(100), stop_loss=Decimal("1.1"),
        take_profit=Decimal("1.05"), mode="live", expires_at="2030-01-01T00:00:00Z",
    )  # fmt: skip
    base.update(over)
    return Order(**base)  # type: ignore[arg-type]


def test_market_body_signed_units_bracket_and_client_id() -> None:
    body = order_body(_order(client_order_id="mine"))["order"]
    assert body["type"] == "MARKET" and body["timeInForce"] == "FOK"
    assert body["units"] == "-100"
    assert body["stopLossOnFill"] == {"price": "1.1", "timeInForce": "GTC"}
    assert body["takeProfitOnFill"]["price"] == "1.05"
    assert body["clientExtensions"]["id"] == "paper-oanda-7"
    assert body["clientExtensions"]["comment"] == "mine"


def test_limit_body_is_gtd_at_the_ttl() -> None:
    body = order_body(_order(order_type="LIMIT", limit_price=Decimal("1.0800")))["order"]
    assert body["price"] == "1.08" and body["timeInForce"] == "GTD"
    assert body["gtdTime"].startswith("2030-01-01T00:00:00.000000")


def test_outcomes_fill_cancel_reject() -> None:
    fill = {
        "orderCreateTransaction": {"id": "5"},
        "orderFillTransaction": {
            "id": "6", "type": "ORDER_FILL", "orderID": "5", "clientOrderID": "paper-oanda-7",
            "tradeOpened": {"tradeID": "6", "price": "1.09148"}, "reason": "MARKET_ORDER",
        },
        "lastTransactionID": "8",
    }  # fmt: skip
    out = create_outcome(201, fill)
    assert out.kind == "filled" and out.last_txn == 8
    assert out.facts[0].trade_id == "6" and out.facts[0].price == Decimal("1.09148")
    cancel = {
        "orderCreateTransaction": {"id": "5"},
        "orderCancelTransaction": {"id": "6", "type": "ORDER_CANCEL", "orderID": "5",
                                   "reason": "STOP_LOSS_ON_FILL_LOSS"},
    }  # fmt: skip
    out = create_outcome(201, cancel)
    assert out.kind == "cancelled" and out.reason == "STOP_LOSS_ON_FILL_LOSS"
    out = create_outcome(400, {"errorCode": "INSUFFICIENT_MARGIN", "errorMessage": "no"})
    assert out.kind == "rejected" and out.reason == "INSUFFICIENT_MARGIN"


def test_facts_apply_once_along_the_transition_table() -> None:
    order = core.placed(_order()).order
    fill = facts({"id": "6", "type": "ORDER_FILL", "orderID": "5", "clientOrderID": order.id,
                  "tradeOpened": {"tradeID": "6", "price": "1.09"}})[0]  # fmt: skip
    opened = core.apply(order, fill, "USD", lambda a, b: None)
    assert opened is not None and opened.order.status is OrderStatus.OPEN
    assert core.apply(opened.order, fill, "USD", lambda a, b: None) is None  # a replay
    close = facts({"id": "9", "type": "ORDER_FILL", "orderID": "7", "reason": "TAKE_PROFIT_ORDER",
                   "tradesClosed": [{"tradeID": "6", "price": "1.05"}]})[0]  # fmt: skip
    assert core.match({order.id: opened.order}, close) is opened.order
    closed = core.apply(opened.order, close, "USD", lambda a, b: None)
    assert closed is not None and closed.reason == "TAKE_PROFIT_ORDER"
    assert closed.order.realized_pnl == Decimal("4.00")  # short 100 from 1.09 to 1.05


def test_gtd_cancel_is_an_expiry() -> None:
    order = core.placed(_order()).order
    fact = facts({"id": "3", "type": "ORDER_CANCEL", "orderID": "2",
                  "reason": "TIME_IN_FORCE_EXPIRED"})[0]  # fmt: skip
    change = core.apply(order, fact, "USD", lambda a, b: None)
    assert change is not None and change.event == "order_expired"
    assert change.order.status is OrderStatus.EXPIRED
