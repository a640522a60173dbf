"""The paper ``Engine`` (actors/paper/engine.py): the pure core of an order's life,
from placement through fills, brackets, cancels and expiries, with no I/O."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal as D

import msgspec

from rbot.actors.paper.engine import Engine
from rbot.bus.messages import Order, OrderStatus, Side
from tests.helpers import tick

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def order(
    oid: str = "o1", side: Side = "BUY", *, limit: str | None = None, qty: str = "100",
    sl: str = "1.1600", tp: str = "1.1700", ttl_min: int = 60, hold_min: int = 360,
) -> Order:  # fmt: skip
    return Order(
        id=oid, user="u1", venue="oanda", symbol="EUR_USD", side=side,
        order_type="MARKET" if limit is None else "LIMIT", qty=D(qty),
        stop_loss=D(sl), take_profit=D(tp), limit_price=None if limit is None else D(limit),
        created_at="2026-01-01T00:00:00Z",
        expires_at=(T0 + dt.timedelta(minutes=ttl_min)).isoformat().replace("+00:00", "Z"),
        max_hold_min=hold_min, currency="USD",
    )  # fmt: skip


def engine() -> Engine:
    return Engine(D(0), "USD")


def events(changes: list[object]) -> list[tuple[str, str, str | None]]:
    return [(c.order.id, c.event, c.reason) for c in changes]  # type: ignore[attr-defined]


def test_place_makes_a_pending_order_and_counts_the_event() -> None:
    e = engine()
    ch = e.place(order())
    assert (ch.event, ch.order.status, ch.order.last_event, ch.order.events) == (
        "oco_placed", OrderStatus.PENDING, "oco_placed", 1,
    )  # fmt: skip
    assert e.orders["o1"] is ch.order and len(e.book("oanda", "EUR_USD")) == 1


def test_a_market_order_fills_on_the_next_tick_at_the_ask() -> None:
    e = engine()
    e.place(order())
    [ch] = e.on_tick(tick("1.1650", "1.1652"))
    assert (ch.event, ch.order.status) == ("order_filled", OrderStatus.OPEN)
    assert ch.fill is not None and ch.fill.price == D("1.1652")
    assert ch.order.opened_at == ch.fill.time and ch.order.entry_fill == ch.fill


def test_a_tick_of_another_symbol_or_without_orders_changes_nothing() -> None:
    e = engine()
    assert e.on_tick(tick("1.1650", "1.1652")) == []
    e.place(order())
    assert e.on_tick(tick("150", "150.02", "USD_JPY")) == []
    assert e.orders["o1"].status is OrderStatus.PENDING


def test_a_limit_waits_for_its_price() -> None:
    e = engine()
    e.place(order(limit="1.1640", sl="1.1600", tp="1.1700"))
    assert e.on_tick(tick("1.1650", "1.1652")) == []
    [ch] = e.on_tick(tick("1.1638", "1.1640"))
    assert ch.event == "order_filled" and ch.fill is not None and ch.fill.price == D("1.1640")


def test_take_profit_closes_with_the_realized_pnl() -> None:
    e = engine()
    e.place(order())
    e.on_tick(tick("1.1650", "1.1652"))
    assert e.on_tick(tick("1.1690", "1.1692")) == []  # between the brackets
    [ch] = e.on_tick(tick("1.1700", "1.1702"))
    assert (ch.event, ch.reason, ch.order.status) == (
        "position_closed", "TAKE_PROFIT_ORDER", OrderStatus.CLOSED,
    )  # fmt: skip
    assert ch.order.realized_pnl == D("0.4800") and ch.order.currency == "USD"
    assert "o1" not in e.orders and len(e.book("oanda", "EUR_USD")) == 0


def test_stop_loss_closes_a_short_on_the_ask() -> None:
    e = engine()
    e.place(order(side="SELL", sl="1.1700", tp="1.1600"))
    e.on_tick(tick("1.1650", "1.1652"))  # sold at the bid
    [ch] = e.on_tick(tick("1.1703", "1.1705"))
    assert (ch.event, ch.reason) == ("position_closed", "STOP_LOSS_ORDER")
    assert ch.fill is not None and ch.fill.price == D("1.1705")
    assert ch.order.realized_pnl == D("-0.5500")


def test_a_bracket_may_close_on_the_tick_that_opened_it() -> None:
    e = engine()
    e.place(order(tp="1.1651"))
    got = events(e.on_tick(tick("1.1652", "1.1652")))
    assert got == [("o1", "order_filled", None), ("o1", "position_closed", "TAKE_PROFIT_ORDER")]


def test_cancel_a_pending_order() -> None:
    e = engine()
    e.place(order())
    ch = e.cancel("o1")
    assert ch is not None and (ch.event, ch.reason) == ("order_cancelled", "CLIENT_REQUEST")
    assert ch.order.status is OrderStatus.CANCELLED and ch.order.closed_at
    assert e.cancel("o1") is None and e.cancel("nope") is None
    assert e.on_tick(tick("1.1650", "1.1652")) == []  # gone from the book too


def test_cancel_an_open_position_closes_it_at_the_last_tick() -> None:
    e = engine()
    e.place(order())
    e.on_tick(tick("1.1650", "1.1652"))
    ch = e.cancel("o1")
    assert ch is not None and (ch.event, ch.reason) == ("position_closed", "CLIENT_REQUEST")
    assert ch.fill is not None and ch.fill.price == D("1.1650")  # a long sells at the bid


def test_an_open_position_without_a_usable_price_is_not_closed_yet() -> None:
    e = engine()
    e.place(order())
    e.on_tick(tick("1.1650", "1.1652"))
    e.on_tick(tick(None, None))
    assert e.cancel("o1") is None
    assert e.orders["o1"].status is OrderStatus.OPEN


def test_expire_a_pending_order_at_its_ttl_not_before() -> None:
    e = engine()
    e.place(order(ttl_min=60))
    assert e.expire("o1", T0 + dt.timedelta(minutes=59)) is None
    ch = e.expire("o1", T0 + dt.timedelta(minutes=60))
    assert ch is not None and (ch.event, ch.reason) == ("order_expired", "TIME_IN_FORCE_EXPIRED")
    assert ch.order.status is OrderStatus.EXPIRED and e.expire("o1", T0) is None


def test_expire_closes_a_position_held_too_long() -> None:
    e = engine()
    e.place(order(hold_min=30))
    [filled] = e.on_tick(tick("1.1650", "1.1652", time="2026-01-01T00:00:00Z"))
    assert filled.order.opened_at == "2026-01-01T00:00:00Z"
    assert e.expire("o1", T0 + dt.timedelta(minutes=29)) is None
    ch = e.expire("o1", T0 + dt.timedelta(minutes=30))
    assert ch is not None and (ch.event, ch.reason) == ("position_closed", "TIME_IN_FORCE_EXPIRED")


def test_load_rebuilds_the_books_and_skips_ended_orders() -> None:
    e = engine()
    pending = order("p")
    other = engine()  # an open order as KV holds it: opened elsewhere, with its fill
    other.place(order("q"))
    [filled] = other.on_tick(tick("1.1650", "1.1652"))
    opened = filled.order
    ended = msgspec.structs.replace(order("r"), status=OrderStatus.CANCELLED)
    for o in (pending, opened, ended, pending):  # a second load of one order is a no-op
        e.load(o)
    assert set(e.orders) == {"p", "q"} and len(e.book("oanda", "EUR_USD")) == 2
    got = events(e.on_tick(tick("1.1700", "1.1702")))
    assert ("p", "order_filled", None) in got and (
        "q",
        "position_closed",
        "TAKE_PROFIT_ORDER",
    ) in got


def test_update_keeps_active_orders_and_drops_ended_ones() -> None:
    e = engine()
    ch = e.place(order())
    e.update(msgspec.structs.replace(ch.order, executor="x"))
    assert e.orders["o1"].executor == "x"
    e.update(msgspec.structs.replace(ch.order, status=OrderStatus.CANCELLED))
    assert "o1" not in e.orders


def test_net_position_sums_open_orders_signed() -> None:
    e = engine()
    e.place(order("a", qty="100"))
    e.place(order("b", side="SELL", sl="1.1700", tp="1.1600", qty="30"))
    assert e.net_position("u1", "oanda", "EUR_USD") == 0  # pending orders do not count
    e.on_tick(tick("1.1650", "1.1652"))
    assert e.net_position("u1", "oanda", "EUR_USD") == D(70)
    assert e.net_position("u2", "oanda", "EUR_USD") == 0
