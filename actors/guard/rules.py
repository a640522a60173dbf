"""Order guard rules: pure checks from (request, context) to a rejection or ``None``.

The ``order_guard`` actor gathers a ``GuardContext`` (settings, the last tick
and its age, the trading state, the user's net position, the PIN check's
outcome) and calls ``check``; nothing here does I/O or reads a clock, except
through the ``now_fn`` a ``RateLimiter`` is given.

Checks run in this order and the first failure wins:

==  ====================  ====  ==============================================
 #  code                  HTTP  refused when
==  ====================  ====  ==============================================
 1  trading_halted        409   the trading state is HALTED: everything is
                                refused, before the order is even read
 2  live_disabled         403   a live order while ``EXECUTION_ENABLED`` is off
                                or no ``LIVE_PIN`` is configured
    pin_required          403   a live order without an ``X-PIN``
    pin_invalid           403   a live order whose PIN did not check out
 3  unknown_symbol        422   the venue or the symbol is not known
 4  qty_invalid           422   qty is not a positive number
 5  trading_reducing      409   REDUCING and the order does not shrink the
                                user's net position (opposite side,
                                qty + pending reductions <= abs(net)); an
                                accepted one is reduce-only: the executor
                                cancels it rather than grow the position
    ttl_too_long          422   ttl_minutes outside 1..MAX_HOLD_MIN
 6  oco_missing           422   stop_loss or take_profit is not a positive price
 7  price_invalid         422   a LIMIT without a limit, or a non-positive
                                limit_price / entry_price
 8  quality_missing       422   no quality_score where the venue requires one
    quality_too_low       422   quality_score below the threshold
 9  qty_too_large         422   qty above the symbol's limit
10  no_price              409   no tick for the symbol, or none on the side a
                                market order needs
    stale_price           409   the last tick is older than price_max_age_s
11  oco_wrong_side        422   not SL < reference < TP (long) or
                                TP < reference < SL (short); the reference is
                                the limit for a LIMIT and the current ask
                                (buy) or bid (sell) for a MARKET
12  notional_too_large    422   qty * reference above the symbol's limit (in
                                the quote currency)
--  rate_limited          429   ``RateLimiter`` said no (the actor asks it
                                first, see ``rate_limited``)
==  ====================  ====  ==============================================

Why this order: the kill switch first, so a halt refuses even a malformed
order; the live gate next, so an unauthorised live order learns nothing else;
then what the request alone can tell, then what needs the market.

HTTP statuses (the API's table, ``api/errors.py``; the bus carries only the
code): 409 (Conflict) says "the request is fine, the server's current
state refuses it": a halt, reduce-only, no fresh price.  423 (Locked) was
considered for HALTED and not taken: it is WebDAV's lock status (RFC 4918) and
clients do not expect it; the stable ``code`` tells a halt apart.  A missing
price is 409, not 503: it is a market condition, and 5xx stays for a broken
server.  403 for the live gate (R6), 422 for a request that can never pass.

Messages are for people; they never echo the PIN (nor anything derived from it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from types import MappingProxyType
from typing import Final

from rbot.bus.messages import OrderRequest, ReplyCode, Tick, TradingState

# the stable codes live on the bus (the API maps them to HTTP statuses)
Code = ReplyCode

# oanda's seed orders carry a quality_score; the seed's coinbase example does not
DEFAULT_QUALITY_REQUIRED: Final[Mapping[str, bool]] = MappingProxyType(
    {"oanda": True, "coinbase": False}
)


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why an order was refused: a stable ``code`` and a message for people."""

    code: ReplyCode
    message: str
    detail: Mapping[str, str] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """Size limits for one symbol; ``None`` means no limit."""

    max_qty: Decimal | None = None
    max_notional: Decimal | None = None  # in the symbol's quote currency


@dataclass(frozen=True, slots=True, kw_only=True)
class GuardContext:
    """Everything ``check`` needs besides the request, gathered by the actor."""

    known_symbols: Mapping[str, frozenset[str]]  # venue -> symbols
    limits: Mapping[str, Limits] = field(default_factory=dict)  # symbol -> limits
    default_limits: Limits = Limits()
    quality_threshold: Decimal = Decimal(70)
    quality_required: Mapping[str, bool] = field(  # venue -> required; unknown venue: True
        default_factory=lambda: DEFAULT_QUALITY_REQUIRED
    )
    tick: Tick | None = None  # the last tick of the request's symbol
    tick_age_s: float | None = None
    price_max_age_s: float = 10.0
    trading_state: TradingState = TradingState.ACTIVE
    net_position: Decimal = Decimal(0)  # the user's, on this symbol, signed
    # reduce-only orders of the user on this symbol that are accepted and not filled yet
    pending_reductions: Decimal = Decimal(0)
    max_hold_min: int = 360
    execution_enabled: bool = False
    pin_configured: bool = False
    pin_ok: bool | None = None  # the outcome of the constant-time PIN check

    def limits_for(self, symbol: str) -> Limits:
        return self.limits.get(symbol, self.default_limits)


Rule = Callable[[OrderRequest, GuardContext], Rejection | None]


def reject(code: Code, message: str, detail: Mapping[str, str] | None = None) -> Rejection:
    return Rejection(code=code, message=message, detail=detail)


def rate_limited(retry_after_s: float) -> Rejection:
    """The rejection for a ``RateLimiter`` refusal; ``detail["retry_after"]`` is
    whole seconds, ready for a ``Retry-After`` header."""
    seconds = max(1, math.ceil(retry_after_s))
    return reject(
        Code.RATE_LIMITED,
        f"too many orders: try again in {seconds} s",
        {"retry_after": str(seconds)},
    )


# -- helpers ---------------------------------------------------------------


def _shown(value: str) -> str:
    """A user-supplied token, quoted and cut short, for a message."""
    return repr(value if len(value) <= 40 else value[:40] + "...")


def _positive(value: Decimal | None) -> bool:
    return value is not None and value.is_finite() and value > 0


def _limit_price(req: OrderRequest) -> Decimal | None:
    return req.limit_price if req.limit_price is not None else req.entry_price


def _touch(req: OrderRequest, tick: Tick) -> Decimal | None:
    """The side of the tick this order trades against: the ask to buy, the bid to sell."""
    if not tick.tradeable:  # the venue says the market is closed: no price to trade at
        return None
    price = tick.ask if req.side == "BUY" else tick.bid
    return price if _positive(price) else None


def reference_price(req: OrderRequest, ctx: GuardContext) -> Decimal | None:
    """The price the bracket and the notional are judged against."""
    if req.order_type == "LIMIT":
        return _limit_price(req)
    return None if ctx.tick is None else _touch(req, ctx.tick)


# -- the rules, in order -----------------------------------------------------


def check_halted(req: OrderRequest, ctx: GuardContext) -> Rejection | None:
    if ctx.trading_state == TradingState.HALTED:
        return reject(Code.TRADING_HALTED, "trading is halted: no new orders are accepted")
    return None


def check_live(req: OrderRequest, ctx: GuardContext) -> Rejection | None:
    if not req.live:
        return None
    if not ctx.execution_enabled:
        return reject(Code.LIVE_DISABLED, "live execution is disabled on this server")
    if not ctx.pin_configured:
        return reject(Code.LIVE_DISABLED, "live orders need a PIN configured on the server")
    if req.pin_ok is None:
        return reject(Code.PIN_REQUIRED, "live orders need the X-PIN header")
    if ctx.pin_ok is not True:
        return reject(Code.PIN_INVALID, "the PIN is not correct")
    return None


def check_symbol(req: OrderRequest, ctx: GuardContext) -> Rejection | None:
    symbols = ctx.known_symbols.get(req.venue)
    if symbols is None:
        return reject(Code.UNKNOWN_SYMBOL, f"unknown venue {_shown(req.venue)}")
    if req.symbol not in symbols:
        return reject(
            Code.UNKNOWN_SYMBOL, f"unknown symbol {_shown(req.symbol)} on {_shown(req.venue)}"
        )
    return None


def check_qty(req: OrderRequest, ctx: GuardContext) -> Rejection | None:
    if not _positive(req.qty):
        return reject(Code.QTY_INVALID, f"qty must be a positive number, got {req.qty}")
    return None


def check_reducing(req: OrderRequest, ctx: GuardContext) -> Rejection | None:
    if ctx.trading_state != TradingState.REDUCING:
        return None
    net = ctx.net_position
    room = abs(net) - ctx.pending_reductions  # what pending reductions leave
    if net > 0 and req.side == "SELL" and req.qty <= room:
        return None
    if net < 0 and req.side == "BUY" and req.qty <= room:
        return None
    return reject(
        Code.TRADING_REDUCING,
        f"trading is reduce-only: only an order that shrinks your net position ({net}) "
        f"is accepted (the opposite side, at most {max(room, Decimal(0))} more, counting "
        "your pending reduce-only orders)",
    )


def check_ttl(req: OrderRequest, ctx: GuardContext) -> Rejection | None:
    ttl = req.ttl_minutes
    if ttl is not None and not 1 <= ttl <= ctx.max_hold_min:
        return reject(
            Code.TTL_TOO_LONG,
            f"ttl_minutes must be 1..{ctx.max_hold_min} (MAX_HOLD_MIN), got {ttl}",
        )
    return None


def check_oco(req: OrderRequest, ctx: GuardContext) -> Rejection | None:
    for name, value in (("stop_loss", req.stop_loss), ("take_profit", req.take_profit)):
        if not _positive(value):
            return reject(
                Code.OCO_MISSING,
                f"every order needs a stop_loss and a take_profit (OCO): "
                f"{name} must be a positive price, got {value}",
            )
    return None


def check_prices(req: OrderRequest, ctx: GuardContext) -> Rejection | None:
    if req.order_type == "LIMIT" and _limit_price(req) is None:
        return reject(Code.PRICE_INVALID, "a LIMIT order needs a limit_price (or entry_price)")
    for name, value in (("limit_price", req.limit_price), ("entry_price", req.entry_price)):
        if value is not None and not _positive(value):
            return reject(Code.PRICE_INVALID, f"{name} must be a positive price, got {value}")
    return None


def check_quality(req: OrderRequest, ctx: GuardContext) -> Rejection | None:
    score, threshold = req.quality_score, ctx.quality_threshold
    if score is None:
        if ctx.quality_required.get(req.venue, True):
            return reject(
                Code.QUALITY_MISSING,
                f"orders on {req.venue} need a quality_score (at least {threshold})",
            )
        return None
    if not score.is_finite():
        return reject(Code.QUALITY_MISSING, f"quality_score must be a number, got {score}")
    if score < threshold:
        return reject(
            Code.QUALITY_TOO_LOW, f"quality_score {score} is below the threshold {threshold}"
        )
    return None


def check_size(req: OrderRequest, ctx: GuardContext) -> Rejection | None:
    max_qty = ctx.limits_for(req.symbol).max_qty
    if max_qty is not None and req.qty > max_qty:
        return reject(
            Code.QTY_TOO_LARGE, f"qty {req.qty} is above the limit {max_qty} for {req.symbol}"
        )
    return None


def check_price_feed(req: OrderRequest, ctx: GuardContext) -> Rejection | None:
    tick = ctx.tick
    if (
        tick is None
        or (tick.venue, tick.symbol) != (req.venue, req.symbol)
        or not (_positive(tick.bid) or _positive(tick.ask))
    ):
        return reject(Code.NO_PRICE, f"no price for {req.symbol} yet")
    age = ctx.tick_age_s
    if age is None or age > ctx.price_max_age_s:
        shown = "of unknown age" if age is None else f"{age:.1f} s old"
        return reject(
            Code.STALE_PRICE,
            f"the last price for {req.symbol} is {shown} (at most {ctx.price_max_age_s} s)",
        )
    if req.order_type == "MARKET" and _touch(req, tick) is None:
        wanted = "ask" if req.side == "BUY" else "bid"
        return reject(Code.NO_PRICE, f"no {wanted} for {req.symbol}: a market {req.side} needs one")
    return None


def check_bracket(req: OrderRequest, ctx: GuardContext) -> Rejection | None:
    ref = reference_price(req, ctx)
    if ref is None:  # not reached: check_prices and check_price_feed refuse that first
        return reject(Code.NO_PRICE, f"no reference price for {req.symbol}")
    sl, tp = req.stop_loss, req.take_profit
    if sl is None or tp is None:  # not reached: check_oco refuses that first
        return reject(Code.OCO_MISSING, "an order needs stop_loss_price and take_profit_price")
    if req.side == "BUY" and not sl < ref < tp:
        wanted = "stop_loss < reference < take_profit"
    elif req.side == "SELL" and not tp < ref < sl:
        wanted = "take_profit < reference < stop_loss"
    else:
        return None
    source = (
        "the limit"
        if req.order_type == "LIMIT"
        else "the current " + ("ask" if req.side == "BUY" else "bid")
    )
    return reject(
        Code.OCO_WRONG_SIDE,
        f"a {req.side} needs {wanted}; reference {ref} ({source}), "
        f"stop_loss {sl}, take_profit {tp}",
    )


def check_notional(req: OrderRequest, ctx: GuardContext) -> Rejection | None:
    max_notional = ctx.limits_for(req.symbol).max_notional
    ref = reference_price(req, ctx)
    if max_notional is None or ref is None:
        return None
    notional = req.qty * ref
    if notional > max_notional:
        return reject(
            Code.NOTIONAL_TOO_LARGE,
            f"notional {notional} (qty {req.qty} at {ref}) is above the limit "
            f"{max_notional} for {req.symbol}",
        )
    return None


RULES: Final[tuple[Rule, ...]] = (
    check_halted,
    check_live,
    check_symbol,
    check_qty,
    check_reducing,
    check_ttl,
    check_oco,
    check_prices,
    check_quality,
    check_size,
    check_price_feed,
    check_bracket,
    check_notional,
)


def check(req: OrderRequest, ctx: GuardContext) -> Rejection | None:
    """The first rule that refuses ``req``, or ``None`` if every rule lets it pass."""
    for rule in RULES:
        rejection = rule(req, ctx)
        if rejection is not None:
            return rejection
    return None


# -- rate limit ----------------------------------------------------------------


class RateLimiter:
    """A token bucket per user: ``rate_per_min`` a minute, bursts of up to ``burst``
    (``rate_per_min`` unless given).

    ``hit(user)`` takes a token and returns ``0.0``, or takes nothing and returns
    how many seconds to wait.  Buckets that have filled up again are forgotten
    (``prune``, run by ``hit`` once more than ``max_users`` are tracked), so
    memory follows the active users, not all users ever seen.
    """

    _EPS: Final = 1e-9  # float refill arithmetic must not deny a due token

    def __init__(
        self,
        rate_per_min: float,
        now_fn: Callable[[], float],
        *,
        burst: float | None = None,
        max_users: int = 100_000,
    ) -> None:
        if not rate_per_min > 0:
            raise ValueError("rate_per_min must be > 0")
        self.per_second = rate_per_min / 60
        self.burst = float(rate_per_min if burst is None else burst)
        if self.burst < 1:
            raise ValueError("burst must be >= 1")
        self._now = now_fn
        self._max_users = max_users
        self._prune_at = max_users
        self._buckets: dict[str, tuple[float, float]] = {}  # user -> (tokens, when)

    def __len__(self) -> int:
        return len(self._buckets)

    def _tokens(self, user: str, now: float) -> float:
        tokens, when = self._buckets.get(user, (self.burst, now))
        return min(self.burst, tokens + max(0.0, now - when) * self.per_second)

    def hit(self, user: str) -> float:
        """``0.0`` if ``user`` may go now (a token is taken), else seconds to wait."""
        now = self._now()
        tokens = self._tokens(user, now)
        if tokens >= 1 - self._EPS:
            self._buckets[user] = (max(0.0, tokens - 1), now)
            if len(self._buckets) > self._prune_at:
                self.prune()
            return 0.0
        self._buckets[user] = (tokens, now)
        return (1 - tokens) / self.per_second

    def prune(self) -> int:
        """Forget users whose bucket is full again; returns how many."""
        now = self._now()
        full = [u for u in self._buckets if self._tokens(u, now) >= self.burst - self._EPS]
        for user in full:
            del self._buckets[user]
        self._prune_at = max(self._max_users, 2 * len(self._buckets))
        return len(full)


def take_token(
    tokens: float | None, last: float | None, now: float, per_second: float, burst: float
) -> tuple[float, float]:
    """One token-bucket step, for a bucket kept elsewhere (KV, shared by every guard).

    ``(tokens, last)`` is the stored bucket (None: a full new one).  Returns the
    tokens to store and ``0.0`` (a token was taken) or the seconds to wait."""
    eps = RateLimiter._EPS
    have = burst if tokens is None or last is None else tokens + max(0.0, now - last) * per_second
    have = min(burst, have)
    if have >= 1 - eps:
        return max(0.0, have - 1), 0.0
    return have, (1 - have) / per_second
