"""The engine's active-order map keeps each user's net open quantity per symbol current
(issue 12: a reduce-only check on a tick is a lookup, not a walk over every order)."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rbot.actors.paper.engine import ActiveOrders
from rbot.bus.messages import Order, OrderStatus

IDS = [f"o{i}" for i in range(6)]


def _order(oid: str, user: str, symbol: str, side: str, qty: int, status: OrderStatus) -> Order:
    return Order(
        id=oid, user=user, venue="oanda", symbol=symbol, side=side,  # type: ignore[arg-type]
        order_type="MARKET", qty=Decimal(qty), stop_loss=Decimal(1), take_profit=Decimal(2),
        status=status,
    )  # fmt: skip


orders = st.builds(
    _order,
    st.sampled_from(IDS),
    st.sampled_from(["u1", "u2"]),
    st.sampled_from(["EUR_USD", "GBP_USD"]),
    st.sampled_from(["BUY", "SELL"]),
    st.integers(1, 500),
    st.sampled_from([OrderStatus.PENDING, OrderStatus.OPEN, OrderStatus.CLOSED]),
)
ops = st.lists(
    st.one_of(
        st.tuples(st.just("set"), orders),
        st.tuples(st.just("pop"), st.sampled_from(IDS)),
        st.tuples(st.just("del"), st.sampled_from(IDS)),
    ),
    max_size=60,
)


def _scan(active: ActiveOrders) -> dict[tuple[str, str, str], Decimal]:
    net: dict[tuple[str, str, str], Decimal] = defaultdict(Decimal)
    for o in active.values():
        if o.status is OrderStatus.OPEN:
            net[(o.user, o.venue, o.symbol)] += o.qty if o.side == "BUY" else -o.qty
    return {k: v for k, v in net.items() if v}


@given(ops)
def test_net_matches_a_scan_after_any_changes(steps: list[tuple[str, object]]) -> None:
    active = ActiveOrders()
    for op, arg in steps:
        if op == "set":
            assert isinstance(arg, Order)
            active[arg.id] = arg
        elif op == "pop":
            active.pop(str(arg), None)
        elif str(arg) in active:
            del active[str(arg)]
        assert active.net == _scan(active)


def test_other_mutators_are_refused() -> None:
    active = ActiveOrders()
    with pytest.raises(TypeError):
        active.update({})
    with pytest.raises(TypeError):
        active.clear()


def test_resting_orders_are_not_walked_by_every_full_collection() -> None:
    """A full GC pass walks every tracked container: with 100k resting orders that was
    ~100 ms of CPU in the executor (bench/tickfill p99).  Orders and fills are untracked
    structs and a book keeps each order's legs as tuples of atoms, which the collector
    stops tracking, so what it walks no longer grows with the orders."""
    import gc

    from rbot.actors.paper.book import Book

    book = Book("oanda", "EUR_USD")
    pending = _order("p", "u1", "EUR_USD", "BUY", 1, OrderStatus.PENDING)
    pending = msgspec.structs.replace(pending, order_type="LIMIT", limit_price=Decimal("1.5"))
    book.add_pending(pending)
    book.add_open(_order("o", "u1", "EUR_USD", "SELL", 1, OrderStatus.OPEN))
    for _ in range(3):  # nested tuples are untracked from the inside out, a pass each
        gc.collect()
    assert not gc.is_tracked(pending)
    assert not any(gc.is_tracked(legs) for legs in book._legs.values())
