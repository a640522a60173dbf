"""The paper fill model, table by table: entries, stops (with gaps), take-profits, closes."""

from __future__ import annotations

import decimal
import functools
from decimal import Decimal as D

import pytest

from rbot.actors.paper.errors import BadInput, InvalidOrder
from rbot.actors.paper.fills import (
    close_fill,
    entry_fill,
    entry_level,
    exit_fill,
    limit_entry_fill,
    market_entry_fill,
    slippage_amount,
    stop_loss_fill,
    take_profit_fill,
    usable_ask,
    usable_bid,
)
from rbot.bus.messages import Fill, Order, OrderStatus, Side
from tests import helpers
from tests.helpers import dec

ZERO = D(0)


def order(
    side: Side = "BUY",
    order_type: str = "MARKET",
    *,
    sl: str = "1.1600",
    tp: str = "1.1700",
    limit: str | None = None,
    entry: str | None = None,
    symbol: str = "EUR_USD",
) -> Order:
    return Order(
        id="o1",
        user="u1",
        venue="oanda",
        symbol=symbol,
        side=side,
        order_type="LIMIT" if order_type == "LIMIT" else "MARKET",
        qty=D(100),
        stop_loss=D(sl),
        take_profit=D(tp),
        limit_price=None if limit is None else D(limit),
        entry_price=None if entry is None else D(entry),
        status=OrderStatus.PENDING,
    )


# every tick here has the same time and sequence number unless a test says otherwise
tick = functools.partial(helpers.tick, time="2025-01-02T03:04:05.000000Z", seq=7)


def assert_exact(fill: Fill, price: str, slippage: str = "0", gap: str = "0") -> None:
    """Equal values and no float anywhere (str() of a Decimal shows its exact digits)."""
    assert (fill.price, fill.slippage, fill.gap) == (D(price), D(slippage), D(gap))
    for value in (fill.price, fill.slippage, fill.gap):
        assert type(value) is D
    assert fill.gap >= 0 and fill.slippage >= 0


# -- the sides of a tick ---------------------------------------------------------


@pytest.mark.parametrize(
    ("bid", "ask", "tradeable", "want_bid", "want_ask"),
    [
        ("1.1650", "1.1652", True, "1.1650", "1.1652"),
        (None, "1.1652", True, None, "1.1652"),
        ("1.1650", None, True, "1.1650", None),
        (None, None, True, None, None),
        ("1.1650", "1.1652", False, None, None),
        ("0", "1.1652", True, None, "1.1652"),
        ("-1", "NaN", True, None, None),
        ("Infinity", "1", True, None, "1"),
    ],
)
def test_usable_sides(
    bid: str | None, ask: str | None, tradeable: bool, want_bid: str | None, want_ask: str | None
) -> None:
    t = tick(bid, ask, tradeable=tradeable)
    assert (usable_bid(t), usable_ask(t)) == (dec(want_bid), dec(want_ask))


# -- market entries --------------------------------------------------------------

MARKET = [
    # side, bid, ask, bps, price, slippage
    ("BUY", "1.1650", "1.1652", "0", "1.1652", "0"),
    ("SELL", "1.1650", "1.1652", "0", "1.1650", "0"),
    ("BUY", "1.1650", "1.1652", "1", "1.16531652", "0.00011652"),
    ("SELL", "1.1650", "1.1652", "1", "1.1648835", "0.0001165"),
    ("BUY", "42500.00", "42500.50", "2.5", "42511.125125", "10.625125"),
    ("SELL", "42500.00", "42500.50", "2.5", "42489.375", "10.625"),
    ("SELL", "1.1650", None, "1", "1.1648835", "0.0001165"),  # a sell needs only the bid
    ("BUY", None, "1.1652", "0", "1.1652", "0"),  # a buy needs only the ask
]


@pytest.mark.parametrize(("side", "bid", "ask", "bps", "price", "slip"), MARKET)
def test_market_entry_takes_the_far_side_plus_slippage(
    side: Side, bid: str | None, ask: str | None, bps: str, price: str, slip: str
) -> None:
    fill = entry_fill(order(side), tick(bid, ask), D(bps))
    assert fill is not None
    assert fill.trigger == "MARKET" and fill.level is None
    assert_exact(fill, price, slip)


@pytest.mark.parametrize(
    ("side", "bid", "ask", "tradeable"),
    [
        ("BUY", "1.1650", None, True),
        ("SELL", None, "1.1652", True),
        ("BUY", None, None, True),
        ("SELL", None, None, True),
        ("BUY", "1.1650", "1.1652", False),
        ("SELL", "1.1650", "1.1652", False),
    ],
)
def test_market_entry_waits_for_its_side(
    side: Side, bid: str | None, ask: str | None, tradeable: bool
) -> None:
    assert market_entry_fill(order(side), tick(bid, ask, tradeable=tradeable), D(1)) is None


# -- limit entries ---------------------------------------------------------------

LIMIT = [
    # side, limit, bid, ask, price (None: no fill), gap
    ("BUY", "1.1640", "1.1639", "1.1641", None, None),
    ("BUY", "1.1640", "1.1638", "1.1640", "1.1640", "0"),
    ("BUY", "1.1640", "1.1628", "1.1630", "1.1630", "0.0010"),  # better than the limit
    ("BUY", "1.1640", "1.1500", None, None, None),  # the bid alone never fills a buy
    ("SELL", "1.1660", "1.1659", "1.1661", None, None),
    ("SELL", "1.1660", "1.1660", "1.1662", "1.1660", "0"),
    ("SELL", "1.1660", "1.1675", "1.1677", "1.1675", "0.0015"),
    ("SELL", "1.1660", None, "1.1800", None, None),  # the ask alone never fills a sell
]


@pytest.mark.parametrize(("side", "limit", "bid", "ask", "price", "gap"), LIMIT)
def test_limit_entry_fills_only_when_crossed_at_the_touch(
    side: Side, limit: str, bid: str | None, ask: str | None, price: str | None, gap: str | None
) -> None:
    fill = entry_fill(order(side, "LIMIT", limit=limit), tick(bid, ask), D(5))
    if price is None:
        assert fill is None
        return
    assert fill is not None and gap is not None
    assert fill.trigger == "LIMIT" and fill.level == D(limit)
    assert_exact(fill, price, "0", gap)  # no slippage on a limit, whatever the bps


@pytest.mark.parametrize(
    ("limit", "entry", "level"),
    [("1.1640", None, "1.1640"), (None, "1.1630", "1.1630"), ("1.1640", "1.1630", "1.1640")],
)
def test_limit_level_is_limit_price_else_entry_price(
    limit: str | None, entry: str | None, level: str
) -> None:
    assert entry_level(order("BUY", "LIMIT", limit=limit, entry=entry)) == D(level)


def test_market_order_has_no_entry_level_even_with_an_entry_price() -> None:
    assert entry_level(order("BUY", "MARKET", entry="1.1655")) is None


def test_limit_without_a_price_is_an_invalid_order() -> None:
    o = order("BUY", "LIMIT")
    with pytest.raises(InvalidOrder):
        entry_fill(o, tick("1.1", "1.2"), ZERO)


def test_limit_entry_fill_refuses_a_market_order() -> None:
    o = order("BUY", "MARKET")
    with pytest.raises(InvalidOrder):
        limit_entry_fill(o, tick("1.1", "1.2"))


# -- stop-loss -------------------------------------------------------------------

STOPS = [
    # side, SL, bid, ask, bps, price (None: no fill), slippage, gap
    ("BUY", "1.1600", "1.1601", "1.1603", "0", None, None, None),
    ("BUY", "1.1600", "1.1600", "1.1602", "0", "1.1600", "0", "0"),
    ("BUY", "1.1600", "1.1580", "1.1582", "0", "1.1580", "0", "0.0020"),  # gap down
    ("BUY", "1.1600", "1.1580", "1.1582", "1", "1.1578842", "0.0001158", "0.0020"),
    ("BUY", "1.1600", "1.1450", "1.1500", "0", "1.1450", "0", "0.0150"),  # weekend gap
    ("BUY", "1.1600", None, "1.1500", "0", None, None, None),  # the ask never stops a long
    ("SELL", "1.1700", "1.1697", "1.1699", "0", None, None, None),
    ("SELL", "1.1700", "1.1698", "1.1700", "0", "1.1700", "0", "0"),
    ("SELL", "1.1700", "1.1723", "1.1725", "2", "1.1727345", "0.0002345", "0.0025"),  # gap up
    ("SELL", "1.1700", "1.1800", None, "0", None, None, None),  # the bid never stops a short
    ("BUY", "40000", "39000.00", "39001.00", "3", "38988.3", "11.7", "1000.00"),
]


@pytest.mark.parametrize(("side", "sl", "bid", "ask", "bps", "price", "slip", "gap"), STOPS)
def test_stop_fills_at_the_first_price_through_the_level(
    side: Side,
    sl: str,
    bid: str | None,
    ask: str | None,
    bps: str,
    price: str | None,
    slip: str | None,
    gap: str | None,
) -> None:
    tp = "1.2000" if side == "BUY" else "1.1000"
    fill = stop_loss_fill(order(side, sl=sl, tp=tp), tick(bid, ask), D(bps))
    if price is None:
        assert fill is None
        return
    assert fill is not None and slip is not None and gap is not None
    assert fill.trigger == "STOP_LOSS" and fill.level == D(sl)
    assert_exact(fill, price, slip, gap)


@pytest.mark.parametrize("side", ["BUY", "SELL"])
def test_stop_does_not_trigger_on_an_untradeable_tick(side: Side) -> None:
    assert stop_loss_fill(order(side), tick("1.0", "1.9", tradeable=False), ZERO) is None


# -- take-profit -----------------------------------------------------------------

TAKES = [
    # side, TP, bid, ask, price (None: no fill), gap
    ("BUY", "1.1700", "1.1699", "1.1701", None, None),
    ("BUY", "1.1700", "1.1700", "1.1702", "1.1700", "0"),
    ("BUY", "1.1700", "1.1710", "1.1712", "1.1710", "0.0010"),  # better than the level
    ("BUY", "1.1700", None, "1.1800", None, None),  # the ask never takes a long's profit
    ("SELL", "1.1600", "1.1599", "1.1601", None, None),
    ("SELL", "1.1600", "1.1598", "1.1600", "1.1600", "0"),
    ("SELL", "1.1600", "1.1588", "1.1590", "1.1590", "0.0010"),
    ("SELL", "1.1600", "1.1500", None, None, None),  # the bid never takes a short's profit
]


@pytest.mark.parametrize(("side", "tp", "bid", "ask", "price", "gap"), TAKES)
def test_take_profit_fills_at_the_touch_without_slippage(
    side: Side, tp: str, bid: str | None, ask: str | None, price: str | None, gap: str | None
) -> None:
    sl = "1.1000" if side == "BUY" else "1.2000"
    o = order(side, sl=sl, tp=tp)
    fill = take_profit_fill(o, tick(bid, ask))
    assert exit_fill(o, tick(bid, ask), D(50)) == fill  # no stop here; slippage never applies
    if price is None:
        assert fill is None
        return
    assert fill is not None and gap is not None
    assert fill.trigger == "TAKE_PROFIT" and fill.level == D(tp)
    assert_exact(fill, price, "0", gap)


@pytest.mark.parametrize(
    ("side", "sl", "tp", "bid", "ask"),
    [
        # inverted brackets (the guard refuses them): both legs reached on one tick
        ("BUY", "1.1700", "1.1600", "1.1650", "1.1652"),
        ("SELL", "1.1600", "1.1700", "1.1648", "1.1650"),
    ],
)
def test_stop_wins_when_both_legs_trigger(side: Side, sl: str, tp: str, bid: str, ask: str) -> None:
    o = order(side, sl=sl, tp=tp)
    t = tick(bid, ask)
    assert stop_loss_fill(o, t, ZERO) is not None
    assert take_profit_fill(o, t) is not None
    fill = exit_fill(o, t, ZERO)
    assert fill is not None and fill.trigger == "STOP_LOSS"


@pytest.mark.parametrize(("side", "bid", "ask"), [("BUY", "1.1650", "1.1652")])
def test_exit_fill_is_none_inside_the_bracket(side: Side, bid: str, ask: str) -> None:
    assert exit_fill(order(side), tick(bid, ask), D(1)) is None


# -- closes ----------------------------------------------------------------------

CLOSES = [
    # side, bid, ask, bps, price (None: no fill), slippage
    ("BUY", "1.1650", "1.1652", "0", "1.1650", "0"),
    ("BUY", "1.1650", "1.1652", "1", "1.1648835", "0.0001165"),
    ("SELL", "1.1650", "1.1652", "0", "1.1652", "0"),
    ("SELL", "1.1650", "1.1652", "1", "1.16531652", "0.00011652"),
    ("BUY", None, "1.1652", "0", None, None),
    ("SELL", "1.1650", None, "0", None, None),
]


@pytest.mark.parametrize(("side", "bid", "ask", "bps", "price", "slip"), CLOSES)
def test_close_long_at_bid_short_at_ask(
    side: Side, bid: str | None, ask: str | None, bps: str, price: str | None, slip: str | None
) -> None:
    fill = close_fill(order(side), tick(bid, ask), D(bps))
    if price is None:
        assert fill is None
        return
    assert fill is not None and slip is not None
    assert fill.trigger == "CLOSE" and fill.level is None
    assert_exact(fill, price, slip)


def test_close_needs_a_tradeable_tick() -> None:
    assert close_fill(order("BUY"), tick("1.1", "1.2", tradeable=False), ZERO) is None


# -- the fields of a fill ----------------------------------------------------------


def test_a_fill_records_the_tick_it_came_from() -> None:
    t = tick("1.1580", "1.1583", seq=42)
    fill = stop_loss_fill(order("BUY"), t, D(1))
    assert fill == Fill(
        price=D("1.1578842"),
        trigger="STOP_LOSS",
        level=D("1.1600"),
        tick_bid=D("1.1580"),
        tick_ask=D("1.1583"),
        tick_time="2025-01-02T03:04:05.000000Z",
        tick_seq=42,
        spread=D("0.0003"),
        slippage=D("0.0001158"),
        gap=D("0.0020"),
        time="2025-01-02T03:04:05.000000Z",
    )


def test_spread_is_none_on_a_one_sided_tick() -> None:
    fill = market_entry_fill(order("SELL"), tick("1.1650", None), ZERO)
    assert fill is not None
    assert fill.spread is None and fill.tick_ask is None and fill.tick_bid == D("1.1650")


# -- exactness and bad input ---------------------------------------------------------


def test_arithmetic_beyond_the_default_28_digits_stays_exact() -> None:
    ask = "12345678901234567890.1234567891"  # 30 significant digits
    fill = market_entry_fill(order("BUY"), tick("1", ask), D("1.5"))
    assert fill is not None
    with decimal.localcontext(decimal.Context(prec=100)):
        slip = D(ask) * D("1.5") / 10000
        assert fill.slippage == slip and fill.price == D(ask) + slip


def test_a_result_that_would_need_rounding_raises_instead() -> None:
    ask = "1." + "1" * 58  # 59 digits; times 1.23 bps needs 62
    t = tick("1", ask)
    with pytest.raises(decimal.Inexact):
        market_entry_fill(order("BUY"), t, D("1.23"))


@pytest.mark.parametrize("bps", ["-1", "10000", "NaN", "Infinity", "-0.0001"])
def test_bad_slippage_is_refused_even_without_a_fill(bps: str) -> None:
    quiet = tick(None, None)
    for call in (entry_fill, market_entry_fill, stop_loss_fill, exit_fill, close_fill):
        with pytest.raises(BadInput):
            call(order("BUY"), quiet, D(bps))


@pytest.mark.parametrize(
    ("price", "bps", "amount"),
    [("1.1652", "1", "0.00011652"), ("100", "0", "0"), ("42500.50", "9999", "42496.249950")],
)
def test_slippage_amount(price: str, bps: str, amount: str) -> None:
    assert slippage_amount(D(price), D(bps)) == D(amount)
