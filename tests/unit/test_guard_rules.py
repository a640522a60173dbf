"""Order guard rules: one table of requests x contexts -> codes, the documented order of
checks, statuses, PIN hygiene, and the per-user rate limiter."""

from __future__ import annotations

import dataclasses
from decimal import Decimal as D
from typing import Any

import msgspec
import pytest

from rbot.actors.guard.rules import (
    RULES,
    Code,
    GuardContext,
    Limits,
    RateLimiter,
    Rejection,
    check,
    rate_limited,
)
from rbot.api.errors import GUARD_STATUS, guard_status
from rbot.bus.messages import OrderRequest, TradingState
from tests.helpers import tick

SECRET_PIN = "841921"


BASE_REQ = OrderRequest(
    user="alice",
    venue="oanda",
    symbol="EUR_USD",
    side="BUY",
    order_type="MARKET",
    qty=D(100),
    stop_loss=D("1.1600"),
    take_profit=D("1.1700"),
    quality_score=D(75),
)
SHORT = {"side": "SELL", "stop_loss": D("1.1700"), "take_profit": D("1.1600")}
LIMIT_BUY = {"order_type": "LIMIT", "limit_price": D("1.1640")}
LIVE = {"live": True, "pin_ok": True}  # the API checked X-PIN; only the verdict travels
LIVE_OK = {"execution_enabled": True, "pin_configured": True, "pin_ok": True}
BTC = {  # the seed's coinbase Test 3: no quality_score
    "venue": "coinbase",
    "symbol": "BTC-USD",
    "qty": D("0.001"),
    "stop_loss": D(40000),
    "take_profit": D(45000),
    "quality_score": None,
}

BASE_CTX = GuardContext(
    known_symbols={"oanda": frozenset({"EUR_USD", "USD_JPY"}), "coinbase": frozenset({"BTC-USD"})},
    limits={"EUR_USD": Limits(max_qty=D(1_000_000), max_notional=D(2_000_000))},
    default_limits=Limits(max_qty=D(10), max_notional=D(500_000)),
    tick=tick(),
    tick_age_s=1.0,
    price_max_age_s=10.0,
)


def req(**over: Any) -> OrderRequest:
    return msgspec.structs.replace(BASE_REQ, **over)


def ctx(**over: Any) -> GuardContext:
    return dataclasses.replace(BASE_CTX, **over)


def btc_ctx(**over: Any) -> GuardContext:
    return ctx(tick=tick("42500.00", "42500.50", "BTC-USD"), **over)


C = Code
HALTED = {"trading_state": TradingState.HALTED}
REDUCING = {"trading_state": TradingState.REDUCING}

CASES: list[tuple[str, dict[str, Any], GuardContext, Code | None]] = [
    # name, request overrides, context, expected code (None: accepted)
    ("market buy", {}, ctx(), None),
    ("market sell", SHORT, ctx(), None),
    ("limit buy", LIMIT_BUY, ctx(), None),
    ("limit via entry_price", {"order_type": "LIMIT", "entry_price": D("1.1640")}, ctx(), None),
    ("limit sell", {**SHORT, "order_type": "LIMIT", "limit_price": D("1.1660")}, ctx(), None),
    ("seed oanda test 2", {"entry_price": D("1.1655")}, ctx(), None),
    ("seed coinbase test 3", BTC, btc_ctx(), None),
    # 1 halted: refuses everything, even garbage
    ("halted", {}, ctx(**HALTED), C.TRADING_HALTED),
    (
        "halted garbage",
        {"qty": D(-1), "symbol": "NOPE"},
        ctx(**HALTED, tick=None),
        C.TRADING_HALTED,
    ),
    ("halted live", LIVE, ctx(**HALTED), C.TRADING_HALTED),
    # 2 live gate
    ("live, execution off", LIVE, ctx(), C.LIVE_DISABLED),
    ("live, no pin configured", LIVE, ctx(execution_enabled=True), C.LIVE_DISABLED),
    ("live, no X-PIN", {"live": True}, ctx(**LIVE_OK), C.PIN_REQUIRED),
    ("live, X-PIN not checked", {"live": True, "pin_ok": None}, ctx(**LIVE_OK), C.PIN_REQUIRED),
    ("live, wrong pin", LIVE, ctx(**{**LIVE_OK, "pin_ok": False}), C.PIN_INVALID),
    ("live, pin unchecked", LIVE, ctx(**{**LIVE_OK, "pin_ok": None}), C.PIN_INVALID),
    ("live, all good", LIVE, ctx(**LIVE_OK), None),
    ("live gate before symbol", {**LIVE, "symbol": "NOPE"}, ctx(), C.LIVE_DISABLED),
    ("paper ignores a wrong pin", {"pin_ok": False}, ctx(pin_ok=False), None),
    # 3 symbol
    ("unknown venue", {"venue": "kraken"}, ctx(), C.UNKNOWN_SYMBOL),
    ("unknown symbol", {"symbol": "XAU_USD"}, ctx(), C.UNKNOWN_SYMBOL),
    ("symbol of another venue", {"symbol": "BTC-USD"}, ctx(), C.UNKNOWN_SYMBOL),
    # 4 qty
    ("qty zero", {"qty": D(0)}, ctx(), C.QTY_INVALID),
    ("qty negative", {"qty": D(-5)}, ctx(), C.QTY_INVALID),
    ("qty NaN", {"qty": D("NaN")}, ctx(), C.QTY_INVALID),
    ("qty infinite", {"qty": D("Infinity")}, ctx(), C.QTY_INVALID),
    # 5 reducing
    ("reducing, flat", SHORT, ctx(**REDUCING), C.TRADING_REDUCING),
    (
        "reducing, long, sell part",
        {**SHORT, "qty": D(50)},
        ctx(**REDUCING, net_position=D(100)),
        None,
    ),
    ("reducing, long, sell all", SHORT, ctx(**REDUCING, net_position=D(100)), None),
    (
        "reducing, long, sell more",
        {**SHORT, "qty": D(101)},
        ctx(**REDUCING, net_position=D(100)),
        C.TRADING_REDUCING,
    ),
    (
        "reducing, long, buy more",
        {"qty": D(1)},
        ctx(**REDUCING, net_position=D(100)),
        C.TRADING_REDUCING,
    ),
    ("reducing, short, buy back", {}, ctx(**REDUCING, net_position=D(-100)), None),
    (
        "reducing, short, sell more",
        SHORT,
        ctx(**REDUCING, net_position=D(-100)),
        C.TRADING_REDUCING,
    ),
    (
        "reducing still checks the rest",
        {"quality_score": D(10)},
        ctx(**REDUCING, net_position=D(-100)),
        C.QUALITY_TOO_LOW,
    ),
    # 6 OCO present
    ("no stop", {"stop_loss": D(0)}, ctx(), C.OCO_MISSING),
    ("no take-profit", {"take_profit": D(0)}, ctx(), C.OCO_MISSING),
    ("negative stop", {"stop_loss": D(-1)}, ctx(), C.OCO_MISSING),
    ("NaN take-profit", {"take_profit": D("NaN")}, ctx(), C.OCO_MISSING),
    # 7 prices
    ("limit without a price", {"order_type": "LIMIT"}, ctx(), C.PRICE_INVALID),
    ("limit price zero", {"order_type": "LIMIT", "limit_price": D(0)}, ctx(), C.PRICE_INVALID),
    ("limit price NaN", {"order_type": "LIMIT", "limit_price": D("NaN")}, ctx(), C.PRICE_INVALID),
    ("negative entry price", {"entry_price": D(-1)}, ctx(), C.PRICE_INVALID),
    # 8 quality
    ("oanda without quality", {"quality_score": None}, ctx(), C.QUALITY_MISSING),
    ("quality below", {"quality_score": D("69.99")}, ctx(), C.QUALITY_TOO_LOW),
    ("quality at threshold", {"quality_score": D(70)}, ctx(), None),
    ("quality NaN", {"quality_score": D("NaN")}, ctx(), C.QUALITY_MISSING),
    (
        "threshold from context",
        {"quality_score": D(75)},
        ctx(quality_threshold=D(80)),
        C.QUALITY_TOO_LOW,
    ),
    ("coinbase low quality given", {**BTC, "quality_score": D(50)}, btc_ctx(), C.QUALITY_TOO_LOW),
    (
        "coinbase quality configured required",
        BTC,
        btc_ctx(quality_required={"coinbase": True}),
        C.QUALITY_MISSING,
    ),
    ("venue missing from quality map", BTC, btc_ctx(quality_required={}), C.QUALITY_MISSING),
    # 9 size
    ("qty at limit", {"qty": D(1_000_000)}, ctx(), None),
    ("qty above limit", {"qty": D(1_000_001)}, ctx(), C.QTY_TOO_LARGE),
    ("default limits", {**BTC, "qty": D(11)}, btc_ctx(), C.QTY_TOO_LARGE),
    ("no limits at all", {"qty": D(10**9)}, ctx(limits={}, default_limits=Limits()), None),
    # 10 price feed
    ("no tick", {}, ctx(tick=None, tick_age_s=None), C.NO_PRICE),
    ("tick of another symbol", {}, ctx(tick=tick("150", "150.02", "USD_JPY")), C.NO_PRICE),
    ("empty tick", {}, ctx(tick=tick(bid=None, ask=None)), C.NO_PRICE),
    ("market buy, no ask", {}, ctx(tick=tick(ask=None)), C.NO_PRICE),
    ("market sell, no bid", SHORT, ctx(tick=tick(bid=None)), C.NO_PRICE),
    ("market sell, ask only", {**SHORT}, ctx(tick=tick(bid="0")), C.NO_PRICE),
    ("limit buy, bid only", LIMIT_BUY, ctx(tick=tick(ask=None)), None),
    ("stale", {}, ctx(tick_age_s=10.01), C.STALE_PRICE),
    ("age unknown", {}, ctx(tick_age_s=None), C.STALE_PRICE),
    ("age at the limit", {}, ctx(tick_age_s=10.0), None),
    # 11 bracket on the right side of the reference
    ("long stop above ask", {"stop_loss": D("1.1660")}, ctx(), C.OCO_WRONG_SIDE),
    ("long stop at ask", {"stop_loss": D("1.1652")}, ctx(), C.OCO_WRONG_SIDE),
    ("long tp below ask", {"take_profit": D("1.1651")}, ctx(), C.OCO_WRONG_SIDE),
    ("long tp at ask", {"take_profit": D("1.1652")}, ctx(), C.OCO_WRONG_SIDE),
    ("long inverted", {"stop_loss": D("1.17"), "take_profit": D("1.16")}, ctx(), C.OCO_WRONG_SIDE),
    ("short stop below bid", {**SHORT, "stop_loss": D("1.1640")}, ctx(), C.OCO_WRONG_SIDE),
    ("short stop at bid", {**SHORT, "stop_loss": D("1.1650")}, ctx(), C.OCO_WRONG_SIDE),
    ("short tp at bid", {**SHORT, "take_profit": D("1.1650")}, ctx(), C.OCO_WRONG_SIDE),
    ("short with long bracket", {"side": "SELL"}, ctx(), C.OCO_WRONG_SIDE),
    ("limit judged on its limit", {**LIMIT_BUY, "stop_loss": D("1.1645")}, ctx(), C.OCO_WRONG_SIDE),
    (
        "limit away from market ok",
        {
            "order_type": "LIMIT",
            "limit_price": D("1.1500"),
            "stop_loss": D("1.1400"),
            "take_profit": D("1.1600"),
        },
        ctx(),
        None,
    ),
    # 12 notional (quote currency): 100_000 * 1.1652 = 116_520
    (
        "notional above",
        {"qty": D(100_000)},
        ctx(limits={"EUR_USD": Limits(max_notional=D(100_000))}),
        C.NOTIONAL_TOO_LARGE,
    ),
    (
        "notional at",
        {"qty": D(100_000)},
        ctx(limits={"EUR_USD": Limits(max_notional=D(116_520))}),
        None,
    ),
    (
        "notional of a limit uses the limit",
        {**LIMIT_BUY, "qty": D(100_000)},
        ctx(limits={"EUR_USD": Limits(max_notional=D(116_400))}),
        None,
    ),
    # 10 BTC at the ask 42_500.50 is 425_005
    (
        "coinbase notional",
        {**BTC, "qty": D(10)},
        btc_ctx(default_limits=Limits(max_qty=D(10), max_notional=D(425_000))),
        C.NOTIONAL_TOO_LARGE,
    ),
]


@pytest.mark.parametrize(
    ("over", "context", "code"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_check(over: dict[str, Any], context: GuardContext, code: Code | None) -> None:
    got = check(req(**over), context)
    if code is None:
        assert got is None, got
        return
    assert got is not None
    assert got.code == code
    assert got.message and "None" not in got.message


def test_no_pin_on_the_bus() -> None:
    """The PIN is checked at the API: an order request carries only the verdict."""
    assert "pin" not in OrderRequest.__struct_fields__
    assert "pin_ok" in OrderRequest.__struct_fields__
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"user":"u","venue":"oanda","symbol":"EUR_USD","side":"BUY",'
                            b'"order_type":"MARKET","qty":"1","pin":"841921"}', type=OrderRequest)  # fmt: skip


def test_checks_run_in_the_documented_order() -> None:
    """A request that breaks every rule, repaired one rule at a time, is refused
    by each rule in turn, in the order the module doc gives."""
    steps: list[tuple[Code, dict[str, Any], dict[str, Any]]] = [
        # code refused, request fix, context fix (applied after the refusal)
        (C.TRADING_HALTED, {}, {"trading_state": TradingState.REDUCING}),
        (C.LIVE_DISABLED, {"live": False}, {}),
        (C.UNKNOWN_SYMBOL, {"symbol": "EUR_USD"}, {}),
        (C.QTY_INVALID, {"qty": D(100)}, {}),
        (C.TRADING_REDUCING, {}, {"trading_state": TradingState.ACTIVE}),
        (C.TTL_TOO_LONG, {"ttl_minutes": 360}, {}),
        (C.OCO_MISSING, {"stop_loss": D("1.1600"), "take_profit": D("1.1550")}, {}),
        (C.PRICE_INVALID, {"limit_price": D("1.1640")}, {}),
        (C.QUALITY_MISSING, {"quality_score": D(71)}, {}),
        (C.QTY_TOO_LARGE, {}, {"limits": {"EUR_USD": Limits(max_qty=D(100), max_notional=D(1))}}),
        (C.NO_PRICE, {}, {"tick": tick()}),
        (C.STALE_PRICE, {}, {"tick_age_s": 0.5}),
        (C.OCO_WRONG_SIDE, {"take_profit": D("1.1700")}, {}),
        (C.NOTIONAL_TOO_LARGE, {}, {"limits": {"EUR_USD": Limits(max_qty=D(100))}}),
    ]
    r = req(
        live=True,
        symbol="NOPE",
        qty=D(0),
        stop_loss=D(0),
        take_profit=D(0),
        order_type="LIMIT",
        quality_score=None,
        ttl_minutes=361,
    )
    c = ctx(
        trading_state=TradingState.HALTED,
        tick=None,
        tick_age_s=None,
        limits={"EUR_USD": Limits(max_qty=D(1))},
    )
    seen = []
    for code, fix_req, fix_ctx in steps:
        got = check(r, c)
        assert got is not None, f"expected {code}"
        seen.append(got.code)
        r, c = msgspec.structs.replace(r, **fix_req), dataclasses.replace(c, **fix_ctx)
    assert check(r, c) is None
    assert seen == [s[0] for s in steps]
    assert len(RULES) == 13


def test_every_code_has_a_status() -> None:
    """The bus carries the code; the API's one table maps every code to HTTP."""
    assert set(GUARD_STATUS) == set(Code)
    assert {c: guard_status(c) for c in Code} == {
        C.TRADING_HALTED: 409,
        C.LIVE_DISABLED: 403,
        C.PIN_REQUIRED: 403,
        C.PIN_INVALID: 403,
        C.UNKNOWN_SYMBOL: 422,
        C.QTY_INVALID: 422,
        C.TRADING_REDUCING: 409,
        C.TTL_TOO_LONG: 422,
        C.OCO_MISSING: 422,
        C.PRICE_INVALID: 422,
        C.QUALITY_MISSING: 422,
        C.QUALITY_TOO_LOW: 422,
        C.QTY_TOO_LARGE: 422,
        C.NO_PRICE: 409,
        C.STALE_PRICE: 409,
        C.OCO_WRONG_SIDE: 422,
        C.NOTIONAL_TOO_LARGE: 422,
        C.RATE_LIMITED: 429,
        C.BAD_REQUEST: 400,
        C.GUARD_ERROR: 503,
        C.LIVE_UNAVAILABLE: 409,
        C.IDEMPOTENCY_CONFLICT: 409,
        C.BUS_UNAVAILABLE: 503,
        C.ORDER_NOT_FOUND: 404,
        C.ORDER_FINAL: 409,
    }
    assert guard_status("a_code_from_a_newer_guard") == 503
    assert guard_status(None) == 503


def test_long_user_input_is_cut_short_in_messages() -> None:
    got = check(req(symbol="X" * 500), ctx())
    assert got is not None and got.code == C.UNKNOWN_SYMBOL
    assert len(got.message) < 120


def test_default_context_requires_quality_on_oanda_only() -> None:
    plain = GuardContext(known_symbols={})
    assert dict(plain.quality_required) == {"oanda": True, "coinbase": False}
    assert plain.quality_threshold == D(70)
    assert plain.trading_state is TradingState.ACTIVE
    assert (plain.execution_enabled, plain.pin_configured, plain.pin_ok) == (False, False, None)


# -- rate limiting -------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.mark.parametrize(
    ("rate", "burst", "allowed_at_once", "wait"),
    [
        (6, None, 6, 10.0),
        (60, None, 60, 1.0),
        (6, 1, 1, 10.0),
        (120, 3, 3, 0.5),
        (1, None, 1, 60.0),
    ],
)
def test_bucket_allows_a_burst_then_says_how_long_to_wait(
    rate: float, burst: float | None, allowed_at_once: int, wait: float
) -> None:
    clock = Clock()
    rl = RateLimiter(rate, clock, burst=burst)
    assert [rl.hit("u") for _ in range(allowed_at_once)] == [0.0] * allowed_at_once
    assert rl.hit("u") == pytest.approx(wait)
    assert rl.hit("u") == pytest.approx(wait)  # a refused hit takes nothing
    clock.t += wait / 2
    assert rl.hit("u") == pytest.approx(wait / 2)
    clock.t += wait / 2
    assert rl.hit("u") == 0.0
    assert rl.hit("u") == pytest.approx(wait)


def test_users_have_their_own_buckets() -> None:
    rl = RateLimiter(2, Clock())
    assert [rl.hit("a"), rl.hit("a"), rl.hit("b")] == [0.0, 0.0, 0.0]
    assert rl.hit("a") > 0 and rl.hit("b") == 0.0


def test_refill_is_capped_at_the_burst() -> None:
    clock = Clock()
    rl = RateLimiter(60, clock, burst=2)
    clock.t += 3600
    assert [rl.hit("u") for _ in range(3)][:2] == [0.0, 0.0]


def test_a_clock_going_back_gives_no_tokens_and_no_crash() -> None:
    clock = Clock()
    rl = RateLimiter(60, clock, burst=1)
    assert rl.hit("u") == 0.0
    clock.t -= 100
    assert rl.hit("u") == pytest.approx(1.0)


def test_odd_rates_do_not_deny_a_due_token() -> None:
    clock = Clock()
    rl = RateLimiter(7, clock, burst=1)
    assert rl.hit("u") == 0.0
    for _ in range(50):
        wait = rl.hit("u")
        assert wait > 0
        clock.t += wait
        assert rl.hit("u") == 0.0


def test_full_buckets_are_forgotten() -> None:
    clock = Clock()
    rl = RateLimiter(60, clock, max_users=3)
    for user in ("a", "b", "c"):
        rl.hit(user)
    assert len(rl) == 3
    clock.t += 1.0
    rl.hit("d")  # four tracked > 3: prune; a, b, c have refilled
    assert len(rl) == 1
    assert rl.prune() == 0


def test_prune_keeps_users_still_waiting() -> None:
    clock = Clock()
    rl = RateLimiter(60, clock, burst=1)
    rl.hit("busy")
    rl.hit("idle")
    clock.t += 0.5
    assert rl.prune() == 0
    clock.t += 0.5
    assert rl.prune() == 2 and len(rl) == 0


@pytest.mark.parametrize(
    ("rate", "burst"), [(0, None), (-1, None), (60, 0.5), (float("nan"), None)]
)
def test_bad_limiter_settings_are_refused(rate: float, burst: float | None) -> None:
    with pytest.raises(ValueError):
        RateLimiter(rate, Clock(), burst=burst)


@pytest.mark.parametrize(("wait", "header"), [(0.2, "1"), (1.0, "1"), (2.1, "3"), (59.99, "60")])
def test_rate_limited_rejection(wait: float, header: str) -> None:
    assert rate_limited(wait) == Rejection(
        code=C.RATE_LIMITED,
        message=f"too many orders: try again in {header} s",
        detail={"retry_after": header},
    )
