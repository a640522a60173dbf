"""Realized and unrealized P&L: exact decimals, both sides, currency conversion."""

from __future__ import annotations

import decimal
from decimal import Decimal as D

import pytest

from rbot.bus.messages import Fill, Order, OrderStatus, Side
from rbot.bus.pnl import (
    BadInput,
    InvalidOrder,
    Money,
    mark_price,
    quote_pnl,
    realized_pnl,
    split_symbol,
    to_account,
    unrealized_pnl,
)
from tests.helpers import tick


def fill(price: str) -> Fill:
    return Fill(
        price=D(price),
        trigger="MARKET",
        level=None,
        tick_bid=None,
        tick_ask=None,
        tick_time="t",
        tick_seq=0,
        spread=None,
        slippage=D(0),
        gap=D(0),
        time="t",
    )


def order(
    side: Side,
    symbol: str,
    qty: str,
    entry: str | None,
    exit_: str | None = None,
    *,
    status: OrderStatus = OrderStatus.OPEN,
    currency: str = "USD",
) -> Order:
    return Order(
        id="o1",
        user="u1",
        venue="oanda",
        symbol=symbol,
        side=side,
        order_type="MARKET",
        qty=D(qty),
        stop_loss=D(1),
        take_profit=D(2),
        status=status,
        entry_fill=None if entry is None else fill(entry),
        exit_fill=None if exit_ is None else fill(exit_),
        currency=currency,
    )


QUOTE_PNL = [
    # side, entry, exit, qty, pnl (quote currency)
    ("BUY", "1.1652", "1.1700", "100", "0.4800"),
    ("BUY", "1.1652", "1.1578842", "10000", "-73.1580000"),
    ("SELL", "1.1650", "1.1600", "100", "0.5000"),
    ("SELL", "1.1650", "1.1727345", "10000", "-77.3450000"),
    ("BUY", "42500.50", "45000", "0.001", "2.49950"),
    ("SELL", "42500.00", "40000", "0.25", "625.0000"),
    ("BUY", "0.1", "0.3", "3", "0.6"),  # 0.6000000000000001 in float
    ("SELL", "150.000", "149.850", "1000", "150.000"),  # USD_JPY: JPY
    ("BUY", "1.1650", "1.1650", "100", "0.0000"),
]


@pytest.mark.parametrize(("side", "entry", "exit_", "qty", "pnl"), QUOTE_PNL)
def test_quote_pnl_is_exact(side: Side, entry: str, exit_: str, qty: str, pnl: str) -> None:
    got = quote_pnl(side, D(entry), D(exit_), D(qty))
    assert got == D(pnl) and type(got) is D
    assert str(got) == pnl  # every digit kept: nothing rounded, nothing quantized


def test_quote_pnl_beyond_28_digits_stays_exact() -> None:
    entry, exit_ = D("1.000000000000000000000000000001"), D("2")
    got = quote_pnl("BUY", entry, exit_, D("3"))
    assert got == D("2.999999999999999999999999999997")


@pytest.mark.parametrize(
    ("symbol", "base", "quote"),
    [("EUR_USD", "EUR", "USD"), ("BTC-USD", "BTC", "USD"), ("usd_jpy", "USD", "JPY")],
)
def test_split_symbol(symbol: str, base: str, quote: str) -> None:
    assert split_symbol(symbol) == (base, quote)


@pytest.mark.parametrize("symbol", ["EURUSD", "EUR_USD_X", "", "EUR__USD", "EUR.USD", "_USD"])
def test_split_symbol_refuses_what_it_cannot_read(symbol: str) -> None:
    with pytest.raises(BadInput):
        split_symbol(symbol)


CONVERSIONS = [
    # amount, symbol, price, account, result, currency
    ("0.48", "EUR_USD", "1.17", "USD", "0.48", "USD"),  # quote == account: as is
    ("2.4995", "BTC-USD", "45000", "USD", "2.4995", "USD"),
    ("1500", "USD_JPY", "150", "USD", "10", "USD"),  # base == account: / exit price
    ("-300", "USD_JPY", "150", "usd", "-2", "USD"),
    ("10", "EUR_USD", "1.25", "EUR", "8", "EUR"),
    ("12.5", "EUR_GBP", "0.85", "USD", "12.5", "GBP"),  # neither: stays in quote ccy
]


@pytest.mark.parametrize(("amount", "symbol", "price", "account", "result", "ccy"), CONVERSIONS)
def test_to_account(
    amount: str, symbol: str, price: str, account: str, result: str, ccy: str
) -> None:
    assert to_account(D(amount), symbol, D(price), account) == Money(D(result), ccy)


def test_conversion_by_division_rounds_to_34_digits_only() -> None:
    got = to_account(D("1000"), "USD_JPY", D("151.37"), "USD")
    with decimal.localcontext(decimal.Context(prec=34)):
        assert got == Money(D(1000) / D("151.37"), "USD")
    assert len(got.amount.as_tuple().digits) == 34


@pytest.mark.parametrize("price", ["0", "-1", "NaN"])
def test_conversion_refuses_a_bad_rate(price: str) -> None:
    with pytest.raises(BadInput):
        to_account(D(10), "USD_JPY", D(price), "USD")


REALIZED = [
    # side, symbol, qty, entry, exit, account, money
    ("BUY", "EUR_USD", "100", "1.1652", "1.1700", "USD", ("0.4800", "USD")),
    ("SELL", "EUR_USD", "100", "1.1650", "1.1727345", "USD", ("-0.77345000", "USD")),
    ("BUY", "BTC-USD", "0.001", "42500.50", "40000", "USD", ("-2.50050", "USD")),
    (
        "SELL",
        "USD_JPY",
        "1000",
        "150.000",
        "148.500",
        "USD",
        ("10.10101010101010101010101010101010", "USD"),
    ),
    ("BUY", "EUR_GBP", "1000", "0.8500", "0.8600", "USD", ("10.0000", "GBP")),
]


@pytest.mark.parametrize(("side", "symbol", "qty", "entry", "exit_", "account", "money"), REALIZED)
def test_realized_pnl_of_a_closed_order(
    side: Side,
    symbol: str,
    qty: str,
    entry: str,
    exit_: str,
    account: str,
    money: tuple[str, str],
) -> None:
    o = order(side, symbol, qty, entry, exit_, status=OrderStatus.CLOSED, currency=account)
    assert realized_pnl(o) == Money(D(money[0]), money[1])


def test_realized_pnl_account_currency_can_be_given() -> None:
    o = order("BUY", "EUR_USD", "10", "1.20", "1.25", currency="USD")
    assert realized_pnl(o, "EUR") == Money(D("0.4"), "EUR")  # 0.50 USD / 1.25


@pytest.mark.parametrize(("entry", "exit_"), [(None, "1.2"), ("1.2", None), (None, None)])
def test_realized_pnl_needs_both_fills(entry: str | None, exit_: str | None) -> None:
    o = order("BUY", "EUR_USD", "1", entry, exit_)
    with pytest.raises(InvalidOrder):
        realized_pnl(o)


UNREALIZED = [
    # side, symbol, entry, bid, ask, money (None: cannot mark)
    ("BUY", "EUR_USD", "1.1652", "1.1660", "1.1662", ("0.0080", "USD")),  # long at the bid
    ("SELL", "EUR_USD", "1.1650", "1.1640", "1.1642", ("0.0080", "USD")),  # short at the ask
    ("BUY", "EUR_USD", "1.1652", "1.1650", "1.1652", ("-0.0020", "USD")),  # the spread costs
    ("BUY", "EUR_USD", "1.1652", None, "1.1700", None),
    ("SELL", "EUR_USD", "1.1650", "1.1600", None, None),
    ("SELL", "USD_JPY", "150.00", "149.50", "149.98", ("0.02/149.98", "USD")),
]


@pytest.mark.parametrize(("side", "symbol", "entry", "bid", "ask", "money"), UNREALIZED)
def test_unrealized_pnl_marks_long_at_bid_short_at_ask(
    side: Side,
    symbol: str,
    entry: str,
    bid: str | None,
    ask: str | None,
    money: tuple[str, str] | None,
) -> None:
    o = order(side, symbol, "10", entry)
    got = unrealized_pnl(o, tick(bid, ask, symbol))
    if money is None:
        assert got is None
        return
    amount, ccy = money
    if "/" in amount:
        num, den = amount.split("/")
        with decimal.localcontext(decimal.Context(prec=34)):
            want = D(num) * 10 / D(den)
    else:
        want = D(amount)
    assert got == Money(want, ccy)


@pytest.mark.parametrize(
    ("status", "entry"),
    [(OrderStatus.PENDING, None), (OrderStatus.CLOSED, "1.1652"), (OrderStatus.OPEN, None)],
)
def test_unrealized_pnl_only_for_open_positions(status: OrderStatus, entry: str | None) -> None:
    o = order("BUY", "EUR_USD", "10", entry, status=status)
    assert unrealized_pnl(o, tick("1.2", "1.3")) is None


@pytest.mark.parametrize(("side", "mark"), [("BUY", "1.1650"), ("SELL", "1.1652")])
def test_mark_price(side: Side, mark: str) -> None:
    assert mark_price(order(side, "EUR_USD", "1", "1"), tick("1.1650", "1.1652")) == D(mark)
