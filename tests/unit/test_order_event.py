"""``OrderEvent`` is built in one place (bus/messages.py) for every publisher: the
guard's rejections, the paper and the live executors' changes."""

from __future__ import annotations

from decimal import Decimal as D

from rbot.bus.messages import Fill, Order, OrderEvent, OrderRequest, OrderStatus, ReplyCode


def _fill(price: str, trigger: str = "LIMIT") -> Fill:
    return Fill(
        price=D(price), trigger=trigger, level=D(price), tick_bid=D(price), tick_ask=D(price),  # type: ignore[arg-type]
        tick_time="t", tick_seq=1, spread=D(0), slippage=D(0), gap=D(0), time="t",
    )  # fmt: skip


def _order() -> Order:
    return Order(
        id="paper-oanda-7", user="u1", venue="oanda", symbol="EUR_USD", side="SELL",
        order_type="LIMIT", qty=D(100), stop_loss=D("1.17"), take_profit=D("1.16"),
        entry_price=D("1.165"), limit_price=D("1.165"), client_order_id="c-1",
        status=OrderStatus.CLOSED, mode="live", created_at="2026-01-01T00:00:00Z",
        expires_at="2026-01-01T06:00:00Z", opened_at="2026-01-01T00:01:00Z",
        closed_at="2026-01-01T00:02:00Z", realized_pnl=D("0.5"), currency="USD",
        entry_fill=_fill("1.165"),
        closing="TAKE_PROFIT_ORDER", executor="ex-1", epoch=4,
    )  # fmt: skip


def test_an_order_event_carries_every_field_it_shares_with_the_order() -> None:
    o = _order()
    fill = _fill("1.16", "TAKE_PROFIT")
    ev = OrderEvent.of_order(o, fill=fill, reason="TAKE_PROFIT_ORDER", partition=3)
    renamed = {"order_id": o.id, "status": "CLOSED", "fill": fill,
               "reason": "TAKE_PROFIT_ORDER", "partition": 3, "message": None,
               "balance": None}  # fmt: skip
    for name in OrderEvent.__struct_fields__:
        want = renamed[name] if name in renamed else getattr(o, name)
        assert getattr(ev, name) == want, name


def test_no_currency_without_a_pnl_and_no_empty_created_at() -> None:
    o = _order()
    o.realized_pnl, o.created_at = None, ""
    ev = OrderEvent.of_order(o)
    assert (ev.currency, ev.created_at, ev.partition, ev.fill) == (None, None, None, None)


def test_a_rejection_event_carries_the_request() -> None:
    req = OrderRequest(
        user="u2", venue="coinbase", symbol="BTC-USD", side="BUY", order_type="MARKET",
        qty=D("0.5"), stop_loss=D(1), take_profit=D(2), client_order_id="c-9", live=True,
    )  # fmt: skip
    ev = OrderEvent.rejected(req, ReplyCode.NO_PRICE, "no price")
    assert ev.order_id is None and ev.status == "REJECTED" and ev.mode == "live"
    assert (ev.reason, ev.message) == ("no_price", "no price")
    for name in ("user", "venue", "symbol", "side", "qty", "order_type", "stop_loss",
                 "take_profit", "entry_price", "limit_price", "client_order_id"):  # fmt: skip
        assert getattr(ev, name) == getattr(req, name), name
