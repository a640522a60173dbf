"""Pure cores of the state-at-scale work: ownership plan, history index maths,
the shared token bucket, reduce-only fills, P&L through a third rate, guard rules."""

from __future__ import annotations

import dataclasses
from collections import Counter
from decimal import Decimal as D

import pytest

from rbot.actors.guard.rules import GuardContext, check_reducing, check_ttl, take_token
from rbot.actors.paper.engine import REDUCE_ONLY, Engine
from rbot.actors.paper.ownership import Holder, plan, targets
from rbot.bus import userindex
from rbot.bus.messages import Order, OrderRequest, OrderStatus, TradingState
from rbot.bus.pnl import Money, convert, rate_from_ticks
from tests.helpers import tick


# -- ownership ---------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7])
@pytest.mark.parametrize("parts", [1, 4, 6, 16])
def test_targets_are_a_fair_share(n: int, parts: int) -> None:
    members = [f"i{k}" for k in range(n)]
    got = Counter(targets(members, parts).values())
    assert sum(got.values()) == parts
    assert max(got.values()) - min(got.values(), default=0) <= 1 or len(got) < n


def test_live_holders_keep_their_partitions() -> None:
    holders = {0: Holder("a", 1), 1: Holder("b", 2), 2: Holder("c", 3), 3: Holder("a", 4),
               4: Holder("b", 5), 5: Holder("c", 6)}  # fmt: skip
    # c died: only its two partitions move
    t = targets(["a", "b"], 6, holders)
    assert [t[p] for p in (0, 1, 3, 4)] == ["a", "b", "a", "b"]
    assert Counter(t.values()) == {"a": 3, "b": 3}


def test_plan_claims_takes_over_and_releases() -> None:
    holders = {0: Holder("a", 10), 1: Holder("dead", 11)}
    p = plan("a", {"a"}, holders, 3, observed=True)
    assert p.claim == [2] and p.take_over == [(1, 11)] and p.release == []
    # not watched long enough: a silent holder is not yet dead
    assert plan("a", {"a"}, holders, 3, observed=False).take_over == []
    # a newcomer gets its share: a gives back what is now b's
    p = plan("a", {"a", "b"}, {0: Holder("a", 1), 1: Holder("a", 2)}, 2, observed=True)
    assert p.release == [1] and p.claim == []
    # a free partition nobody claims is taken after the grace period
    assert plan("a", {"a", "b"}, {0: Holder("a", 1)}, 2, observed=True,
                free_for={1: 5.0}, grace=2.0).claim == [1]  # fmt: skip


# -- history index -------------------------------------------------------------------
def test_history_windows() -> None:
    assert userindex.total(1, 0) == 0 and userindex.total(3, 5) == 2 * userindex.CHUNK + 5
    assert list(userindex.window(10, 10, 3)) == [9, 8, 7]
    assert list(userindex.window(10, 2, 5)) == [1, 0]
    assert list(userindex.window(10, 50, 2)) == [9, 8]
    idx = userindex.window(200, 130, 10)
    assert userindex.chunks_for(idx) == [2, 1]


# -- shared token bucket ---------------------------------------------------------------
def test_take_token() -> None:
    tokens, wait = take_token(None, None, 100.0, 1.0, 2.0)
    assert (tokens, wait) == (1.0, 0.0)
    tokens, wait = take_token(tokens, 100.0, 100.0, 1.0, 2.0)
    assert (tokens, wait) == (0.0, 0.0)
    tokens, wait = take_token(tokens, 100.0, 100.5, 1.0, 2.0)
    assert wait == pytest.approx(0.5) and tokens == pytest.approx(0.5)
    assert take_token(0.0, 100.0, 200.0, 1.0, 2.0) == (1.0, 0.0)  # refilled up to the burst


# -- reduce-only at fill time -------------------------------------------------------------
def _order(oid: str, side: str, qty: int, **kw: object) -> Order:
    return Order(id=oid, user="u", venue="oanda", symbol="EUR_USD", side=side,  # type: ignore[arg-type]
                 order_type="MARKET", qty=D(qty), stop_loss=D("1.0") if side == "BUY" else D("2.0"),
                 take_profit=D("2.0") if side == "BUY" else D("1.0"), **kw)  # type: ignore[arg-type]  # fmt: skip


def test_reduce_only_never_grows_or_flips() -> None:
    e = Engine(D(0), "USD")
    e.place(_order("long", "BUY", 100))
    e.on_tick(tick("1.5", "1.5001"))
    for n in range(3):
        e.place(_order(f"s{n}", "SELL", 100, reduce_only=True))
    changes = e.on_tick(tick("1.5", "1.5001"))
    kinds = [(c.order.id, c.event, c.reason) for c in changes]
    assert ("s0", "order_filled", None) in kinds
    assert ("s1", "order_cancelled", REDUCE_ONLY) in kinds
    assert ("s2", "order_cancelled", REDUCE_ONLY) in kinds
    assert e.net_position("u", "oanda", "EUR_USD") == 0


# -- P&L through a third rate ---------------------------------------------------------------
def test_convert_through_a_third_rate() -> None:
    ticks = {("oanda", "GBP_USD"): tick("1.25", "1.25", "GBP_USD")}
    assert rate_from_ticks(ticks, "GBP", "USD") == D("1.25")
    assert rate_from_ticks(ticks, "USD", "GBP") == D(1) / D("1.25")
    assert rate_from_ticks(ticks, "JPY", "USD") is None
    got = convert(Money(D(10), "GBP"), "USD", lambda a, b: rate_from_ticks(ticks, a, b))
    assert got == Money(D("12.50"), "USD")
    assert convert(Money(D(10), "JPY"), "USD", lambda a, b: None) == Money(D(10), "JPY")


def test_ended_engine_order_is_final() -> None:
    e = Engine(D(0), "USD")
    e.place(_order("x", "BUY", 1))
    change = e.cancel("x")
    assert change is not None and change.order.status is OrderStatus.CANCELLED


# -- guard rules ------------------------------------------------------------------------------
def _req(**kw: object) -> OrderRequest:
    base: dict[str, object] = dict(user="u", venue="oanda", symbol="EUR_USD", side="SELL",
                                   order_type="MARKET", qty=D(100))  # fmt: skip
    base.update(kw)
    return OrderRequest(**base)  # type: ignore[arg-type]


def test_reducing_counts_pending_reductions() -> None:
    ctx = GuardContext(known_symbols={}, trading_state=TradingState.REDUCING, net_position=D(100))
    assert check_reducing(_req(), ctx) is None
    assert check_reducing(_req(), dataclasses.replace(ctx, pending_reductions=D(100))) is not None
    assert (
        check_reducing(_req(qty=D(50)), dataclasses.replace(ctx, pending_reductions=D(50))) is None
    )


def test_ttl_bounds() -> None:
    ctx = GuardContext(known_symbols={}, max_hold_min=360)
    assert check_ttl(_req(ttl_minutes=360), ctx) is None
    assert check_ttl(_req(ttl_minutes=None), ctx) is None
    for bad in (0, 361):
        rej = check_ttl(_req(ttl_minutes=bad), ctx)
        assert rej is not None and rej.code == "ttl_too_long"
