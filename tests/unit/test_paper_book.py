"""The trigger book: each ladder's edge, empty sides, OCO, ordering, and a 10k-order book
checked against the fill model as the oracle."""

from __future__ import annotations

import random
from decimal import Decimal as D

import pytest

from rbot.actors.paper import fills
from rbot.actors.paper.book import Book, Trigger, TriggerKind
from rbot.actors.paper.errors import BadInput, DuplicateOrder, InvalidOrder
from rbot.bus.messages import Order, OrderStatus, Side, Tick
from tests.helpers import tick

ENTRY, STOP, TAKE = TriggerKind.ENTRY, TriggerKind.STOP_LOSS, TriggerKind.TAKE_PROFIT
ZERO = D(0)


def pending(
    oid: str, side: Side, limit: str | None = None, *, sl: str = "1.0", tp: str = "2.0"
) -> Order:
    return Order(
        id=oid,
        user="u",
        venue="oanda",
        symbol="EUR_USD",
        side=side,
        order_type="MARKET" if limit is None else "LIMIT",
        qty=D(1),
        stop_loss=D(sl),
        take_profit=D(tp),
        limit_price=None if limit is None else D(limit),
        status=OrderStatus.PENDING,
    )


def opened(oid: str, side: Side, sl: str, tp: str) -> Order:
    o = pending(oid, side, sl=sl, tp=tp)
    o.status = OrderStatus.OPEN
    return o


def fired(triggers: list[Trigger]) -> list[tuple[str, TriggerKind]]:
    return [(t.order_id, t.kind) for t in triggers]


# -- each ladder at its edge -------------------------------------------------------

LONG: tuple[Side, str, str] = ("BUY", "1.1600", "1.1700")  # side, SL, TP
SHORT: tuple[Side, str, str] = ("SELL", "1.1700", "1.1600")

EDGES: list[tuple[str, Order, str | None, str | None, TriggerKind | None]] = [
    # name, order, bid, ask, kind triggered (None: nothing)
    ("long SL above", opened("o", *LONG), "1.1601", "1.1603", None),
    ("long SL at", opened("o", *LONG), "1.1600", "1.1602", STOP),
    ("long SL gap", opened("o", *LONG), "1.1500", "1.1502", STOP),
    ("long SL ask only", opened("o", *LONG), None, "1.1500", None),
    ("long TP below", opened("o", *LONG), "1.1699", "1.1701", None),
    ("long TP at", opened("o", *LONG), "1.1700", "1.1702", TAKE),
    ("long TP ask only", opened("o", *LONG), None, "1.1800", None),
    ("short SL below", opened("o", *SHORT), "1.1697", "1.1699", None),
    ("short SL at", opened("o", *SHORT), "1.1698", "1.1700", STOP),
    ("short SL gap", opened("o", *SHORT), "1.1798", "1.1800", STOP),
    ("short SL bid only", opened("o", *SHORT), "1.1800", None, None),
    ("short TP above", opened("o", *SHORT), "1.1599", "1.1601", None),
    ("short TP at", opened("o", *SHORT), "1.1598", "1.1600", TAKE),
    ("short TP bid only", opened("o", *SHORT), "1.1500", None, None),
    ("buy limit above", pending("o", "BUY", "1.1640"), "1.1639", "1.1641", None),
    ("buy limit at", pending("o", "BUY", "1.1640"), "1.1638", "1.1640", ENTRY),
    ("buy limit through", pending("o", "BUY", "1.1640"), "1.1600", "1.1602", ENTRY),
    ("buy limit bid only", pending("o", "BUY", "1.1640"), "1.1500", None, None),
    ("sell limit below", pending("o", "SELL", "1.1660"), "1.1659", "1.1661", None),
    ("sell limit at", pending("o", "SELL", "1.1660"), "1.1660", "1.1662", ENTRY),
    ("sell limit ask only", pending("o", "SELL", "1.1660"), None, "1.1800", None),
    ("market buy", pending("o", "BUY"), "1.1650", "1.1652", ENTRY),
    ("market buy bid only", pending("o", "BUY"), "1.1650", None, None),
    ("market sell", pending("o", "SELL"), "1.1650", "1.1652", ENTRY),
    ("market sell ask only", pending("o", "SELL"), None, "1.1652", None),
    ("market empty tick", pending("o", "SELL"), None, None, None),
    ("zero bid is empty", opened("o", *LONG), "0", "1.1", None),
]


def add(book: Book, order: Order) -> None:
    if order.status == OrderStatus.OPEN:
        book.add_open(order)
    else:
        book.add_pending(order)


@pytest.mark.parametrize(
    ("order", "bid", "ask", "kind"), [e[1:] for e in EDGES], ids=[e[0] for e in EDGES]
)
def test_ladder_edges(
    order: Order, bid: str | None, ask: str | None, kind: TriggerKind | None
) -> None:
    book = Book("oanda", "EUR_USD")
    add(book, order)
    got = book.on_tick(tick(bid, ask))
    if kind is None:
        assert got == [] and len(book) == 1
        return
    assert got == [Trigger("o", kind, order)]
    assert len(book) == 0
    assert set(book.depth().values()) == {0}


@pytest.mark.parametrize(("order", "bid", "ask"), [(e[1], e[2], e[3]) for e in EDGES])
def test_an_untradeable_tick_triggers_nothing(
    order: Order, bid: str | None, ask: str | None
) -> None:
    book = Book("oanda", "EUR_USD")
    add(book, order)
    assert book.on_tick(tick(bid, ask, tradeable=False)) == []
    assert len(book) == 1


# -- OCO ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("side", "sl", "tp", "first", "kind", "then"),
    [
        ("BUY", "1.1600", "1.1700", ("1.1590", "1.1592"), STOP, ("1.1710", "1.1712")),
        ("BUY", "1.1600", "1.1700", ("1.1710", "1.1712"), TAKE, ("1.1590", "1.1592")),
        ("SELL", "1.1700", "1.1600", ("1.1708", "1.1710"), STOP, ("1.1588", "1.1590")),
        ("SELL", "1.1700", "1.1600", ("1.1588", "1.1590"), TAKE, ("1.1708", "1.1710")),
    ],
)
def test_a_triggered_bracket_removes_both_legs(
    side: Side,
    sl: str,
    tp: str,
    first: tuple[str, str],
    kind: TriggerKind,
    then: tuple[str, str],
) -> None:
    book = Book("oanda", "EUR_USD")
    book.add_open(opened("o", side, sl, tp))
    assert fired(book.on_tick(tick(*first))) == [("o", kind)]
    assert set(book.depth().values()) == {0}
    assert book.on_tick(tick(*then)) == []  # the other leg is gone with it


@pytest.mark.parametrize(
    ("side", "sl", "tp", "bid", "ask"),
    [
        ("BUY", "1.1700", "1.1600", "1.1650", "1.1652"),
        ("SELL", "1.1600", "1.1700", "1.1648", "1.1650"),
    ],
)
def test_inverted_bracket_reached_both_ways_stops_once(
    side: Side, sl: str, tp: str, bid: str, ask: str
) -> None:
    book = Book("oanda", "EUR_USD")
    book.add_open(opened("o", side, sl, tp))
    assert fired(book.on_tick(tick(bid, ask))) == [("o", STOP)]
    assert len(book) == 0 and set(book.depth().values()) == {0}


# -- ordering ----------------------------------------------------------------------


def test_kinds_come_stops_then_take_profits_then_entries() -> None:
    book = Book("oanda", "EUR_USD")
    book.add_pending(pending("entry", "BUY"))
    book.add_open(opened("take", "SELL", "1.2000", "1.1700"))  # short TP: ask <= 1.1700
    book.add_open(opened("stop", "BUY", "1.1660", "1.2000"))  # long SL: bid <= 1.1660
    assert fired(book.on_tick(tick("1.1650", "1.1652"))) == [
        ("stop", STOP),
        ("take", TAKE),
        ("entry", ENTRY),
    ]


@pytest.mark.parametrize(
    ("orders", "bid", "ask", "expected"),
    [
        # a falling bid reaches the highest long stop first; ties keep insertion order
        (
            [
                ("a", "BUY", "1.1600", "2"),
                ("b", "BUY", "1.1620", "2"),
                ("c", "BUY", "1.1610", "2"),
                ("d", "BUY", "1.1620", "2"),
            ],
            "1.1500",
            "1.1502",
            ["b", "d", "c", "a"],
        ),
        # a rising ask reaches the lowest short stop first
        (
            [
                ("a", "SELL", "1.1720", "1"),
                ("b", "SELL", "1.1700", "1"),
                ("c", "SELL", "1.1720", "1"),
            ],
            "1.1800",
            "1.1802",
            ["b", "a", "c"],
        ),
        # a rising bid reaches the lowest long take-profit first
        (
            [("a", "BUY", "1", "1.1720"), ("b", "BUY", "1", "1.1700"), ("c", "BUY", "1", "1.1700")],
            "1.1800",
            "1.1802",
            ["b", "c", "a"],
        ),
        # same level, many orders: pure insertion order
        (
            [(f"o{i}", "BUY", "1.1600", "2") for i in range(20)],
            "1.1600",
            "1.1602",
            [f"o{i}" for i in range(20)],
        ),
    ],
)
def test_order_within_a_ladder(
    orders: list[tuple[str, Side, str, str]], bid: str, ask: str, expected: list[str]
) -> None:
    book = Book("oanda", "EUR_USD")
    for oid, side, sl, tp in orders:
        book.add_open(opened(oid, side, sl, tp))
    assert [t.order_id for t in book.on_tick(tick(bid, ask))] == expected


def test_market_entries_fill_in_arrival_order_across_sides() -> None:
    book = Book("oanda", "EUR_USD")
    first: list[tuple[str, Side]] = [("s1", "SELL"), ("b1", "BUY"), ("s2", "SELL"), ("b2", "BUY")]
    for oid, side in first:
        book.add_pending(pending(oid, side))
    assert [t.order_id for t in book.on_tick(tick("1.1650", None))] == ["s1", "s2"]
    assert [t.order_id for t in book.on_tick(tick(None, "1.1652"))] == ["b1", "b2"]
    then: list[tuple[str, Side]] = [("s3", "SELL"), ("b3", "BUY"), ("s4", "SELL")]
    for oid, side in then:
        book.add_pending(pending(oid, side))
    assert [t.order_id for t in book.on_tick(tick("1.1650", "1.1652"))] == ["s3", "b3", "s4"]


def test_limits_come_in_the_order_the_market_reaches_them() -> None:
    book = Book("oanda", "EUR_USD")
    book.add_pending(pending("low", "BUY", "1.1600"))
    book.add_pending(pending("high", "BUY", "1.1640"))
    book.add_pending(pending("mid", "BUY", "1.1620"))
    assert [t.order_id for t in book.on_tick(tick("1.1608", "1.1610"))] == ["high", "mid"]
    assert book.orders() == [book.get("low")]


# -- lifecycle through the book ------------------------------------------------------


def test_entry_then_bracket_with_the_caller_in_between() -> None:
    book = Book("oanda", "EUR_USD")
    order = pending("o", "BUY", sl="1.1600", tp="1.1700")
    book.add_pending(order)
    first = tick("1.1650", "1.1652")
    (trigger,) = book.on_tick(first)
    assert trigger.kind is ENTRY and trigger.order is order
    assert fills.entry_fill(order, first, ZERO) is not None
    order.status = OrderStatus.OPEN
    book.add_open(order)
    assert book.on_tick(first) == []  # the same tick again: only the new bracket is looked at
    (exit_,) = book.on_tick(tick("1.1705", "1.1707"))
    assert (exit_.order_id, exit_.kind) == ("o", TAKE)


def test_a_wide_spread_can_stop_a_position_on_its_entry_tick() -> None:
    book = Book("oanda", "EUR_USD")
    order = pending("o", "BUY", sl="1.1600", tp="1.1800")
    book.add_pending(order)
    wide = tick("1.1590", "1.1652")
    assert fired(book.on_tick(wide)) == [("o", ENTRY)]
    order.status = OrderStatus.OPEN
    book.add_open(order)
    assert fired(book.on_tick(wide)) == [("o", STOP)]


def test_remove_takes_every_leg() -> None:
    book = Book("oanda", "EUR_USD")
    a, b, c = opened("a", "BUY", "1.16", "1.17"), pending("b", "SELL", "1.17"), pending("c", "BUY")
    for o in (a, b, c):
        add(book, o)
    assert len(book) == 3 and "a" in book and list(book) == ["a", "b", "c"]
    assert book.remove("a") is a and book.remove("b") is b and book.remove("c") is c
    assert book.remove("a") is None and book.remove("nope") is None
    assert len(book) == 0 and set(book.depth().values()) == {0}
    assert book.on_tick(tick("1.0", "1.0001")) == []


def test_inspection() -> None:
    book = Book("oanda", "EUR_USD")
    a, b = opened("a", "SELL", "1.17", "1.16"), pending("b", "BUY", "1.15")
    book.add_open(a)
    book.add_pending(b)
    assert book.orders() == [a, b] and book.get("b") is b and book.get("x") is None
    assert dict(book.depth()) == {
        "long_sl": 0,
        "long_tp": 0,
        "short_sl": 1,
        "short_tp": 1,
        "buy_limit": 1,
        "sell_limit": 0,
        "market_buy": 0,
        "market_sell": 0,
    }


# -- refused input -----------------------------------------------------------------


def _limit_without_price() -> Order:
    o = pending("o", "BUY")
    o.order_type = "LIMIT"
    return o


def _other_symbol() -> Order:
    o = pending("o", "BUY")
    o.symbol = "GBP_USD"
    return o


@pytest.mark.parametrize(
    ("method", "order", "error"),
    [
        ("add_pending", opened("o", *LONG), InvalidOrder),  # wrong status
        ("add_open", pending("o", "BUY"), InvalidOrder),
        ("add_pending", _other_symbol(), InvalidOrder),
        ("add_pending", _limit_without_price(), InvalidOrder),
        ("add_pending", pending("o", "BUY", "0"), InvalidOrder),
        ("add_pending", pending("o", "BUY", "NaN"), InvalidOrder),
        ("add_open", opened("o", "BUY", "0", "1.17"), InvalidOrder),
        ("add_open", opened("o", "BUY", "1.16", "-1"), InvalidOrder),
        ("add_open", opened("o", "BUY", "sNaN", "1.17"), InvalidOrder),
    ],
)
def test_bad_orders_are_refused(method: str, order: Order, error: type[Exception]) -> None:
    book = Book("oanda", "EUR_USD")
    with pytest.raises(error):
        getattr(book, method)(order)
    assert len(book) == 0 and set(book.depth().values()) == {0}


def test_duplicate_ids_are_refused() -> None:
    book = Book("oanda", "EUR_USD")
    book.add_pending(pending("o", "BUY"))
    dup = opened("o", *LONG)
    with pytest.raises(DuplicateOrder):
        book.add_open(dup)


def test_a_tick_for_another_symbol_is_refused() -> None:
    book = Book("oanda", "EUR_USD")
    other = Tick(venue="oanda", symbol="GBP_USD", bid=D(1), ask=D(2), time="t")
    with pytest.raises(BadInput):
        book.on_tick(other)


# -- 10k orders: only the crossed few trigger ------------------------------------------


def _pips(n: int) -> D:
    return D(n).scaleb(-4)  # exact: 11650 -> 1.1650


def _big_book(n: int, rng: random.Random) -> Book:
    """Orders around 1.1650: stops and limits below/above, as a sane book has them."""
    book = Book("oanda", "EUR_USD")
    for i in range(n):
        side: Side = "BUY" if rng.random() < 0.5 else "SELL"
        below, above = _pips(11650 - rng.randint(1, 5000)), _pips(11652 + rng.randint(1, 5000))
        kind = rng.random()
        if kind < 0.6:
            sl, tp = (below, above) if side == "BUY" else (above, below)
            order = opened(f"o{i}", side, str(sl), str(tp))
            book.add_open(order)
        else:
            limit = below if side == "BUY" else above
            book.add_pending(pending(f"o{i}", side, str(limit)))
    return book


def _oracle(book: Book, t: Tick) -> dict[str, TriggerKind]:
    """What the fill model would fill on this tick, order by order: a full scan."""
    want: dict[str, TriggerKind] = {}
    for order in book.orders():
        if order.status == OrderStatus.PENDING:
            if fills.entry_fill(order, t, ZERO) is not None:
                want[order.id] = ENTRY
        elif (f := fills.exit_fill(order, t, ZERO)) is not None:
            want[order.id] = STOP if f.trigger == "STOP_LOSS" else TAKE
    return want


def test_ten_thousand_orders_a_tick_triggers_only_the_crossed_ones() -> None:
    rng = random.Random(20250102)
    book = _big_book(10_000, rng)
    assert len(book) == 10_000
    total = 0
    for bid, ask in [
        ("1.1645", "1.1647"),
        ("1.1658", "1.1660"),
        ("1.1651", "1.1653"),
        ("1.1600", "1.1602"),
        ("1.1700", "1.1702"),
    ]:
        t = tick(bid, ask)
        want = _oracle(book, t)
        before = len(book)
        got = book.on_tick(t)
        assert {t_.order_id: t_.kind for t_ in got} == want
        assert len(got) == len(want) == before - len(book)
        assert len(got) < before // 10  # a small move crosses a small part of the book
        total += len(got)
        assert book.on_tick(t) == []  # everything it could reach is gone
    assert 0 < total < 5_000
    legs = sum(book.depth().values())
    opened_left = sum(1 for o in book.orders() if o.status == OrderStatus.OPEN)
    assert legs == len(book) + opened_left  # an open order has two legs, a pending one


def test_random_books_agree_with_the_fill_model() -> None:
    """Every trigger gets a fill from ``fills``, and nothing the fill model would
    fill stays in the book (random books, random ticks including bad ones)."""
    rng = random.Random(7)
    for _ in range(30):
        book = _big_book(300, rng)
        for _ in range(20):
            mid = 11650 + rng.randint(-600, 600)
            bid = None if rng.random() < 0.1 else str(_pips(mid))
            ask = None if rng.random() < 0.1 else str(_pips(mid + rng.randint(-2, 40)))
            t = tick(bid, ask, tradeable=rng.random() > 0.05)
            want = _oracle(book, t)
            got = book.on_tick(t)
            assert {x.order_id: x.kind for x in got} == want
