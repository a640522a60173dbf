"""In-process rate limits: token buckets per key, 429 + ``Retry-After`` when empty.

A bucket holds ``rate`` tokens and refills at ``rate / per`` tokens a second, so
``TokenBucket(5, 60)`` allows a burst of five and then one every twelve seconds.
The buckets are a pure core (``now`` is passed in); ``RateLimits`` owns one app's
buckets and its clock (``time.monotonic``, replaced in tests), and lives on the
``ApiContext``, never in a module global.

Limits are per process: behind a balancer with N API replicas a client gets up
to N times the budget.  The client address is the socket's peer; a proxy in
front would make every client one address (no ``X-Forwarded-For`` is trusted).

Dependencies for routers::

    router = APIRouter(dependencies=[Depends(limit_ip("market", 600, 60))])

    @router.post("/orders", dependencies=[Depends(limit_user("orders", 120, 60))])
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request

from .context import ApiContext, Ctx
from .errors import ApiError
from .principal import Principal
from .security import current_principal

EXTRAS_KEY = "ratelimits"


class TokenBucket:
    """``rate`` tokens per ``per`` seconds for each key; at most ``max_keys`` keys kept."""

    def __init__(self, rate: int, per: float, *, max_keys: int = 100_000) -> None:
        if rate < 1 or per <= 0:
            raise ValueError("rate must be >= 1 and per > 0")
        self.rate = float(rate)
        self.per = per
        self.max_keys = max_keys
        self._state: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def _tokens(self, key: str, now: float) -> float:
        got = self._state.get(key)
        if got is None:
            return self.rate
        tokens, last = got
        return min(self.rate, tokens + max(0.0, now - last) * self.rate / self.per)

    def retry_after(self, key: str, now: float) -> float:
        """Seconds until one token is available (0 when one is available now)."""
        tokens = self._tokens(key, now)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) * self.per / self.rate

    def take(self, key: str, now: float) -> float:
        """Take a token: 0 on success, else the seconds to wait (nothing is taken)."""
        wait = self.retry_after(key, now)
        if wait > 0:
            return wait
        self._state[key] = (self._tokens(key, now) - 1.0, now)
        self._state.move_to_end(key)
        while len(self._state) > self.max_keys:
            self._state.popitem(last=False)  # the least recently charged key
        return 0.0

    def reset(self, key: str) -> None:
        self._state.pop(key, None)

    def __len__(self) -> int:
        return len(self._state)


class RateLimits:
    """One app's buckets, by name, and the clock they read."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._buckets: dict[str, TokenBucket] = {}

    def bucket(self, name: str, rate: int, per: float) -> TokenBucket:
        b = self._buckets.get(name)
        if b is None or b.rate != rate or b.per != per:
            b = self._buckets[name] = TokenBucket(rate, per)
        return b

    def take(self, name: str, rate: int, per: float, key: str) -> None:
        """Charge ``key``; raise the 429 ``ApiError`` when its bucket is empty."""
        wait = self.bucket(name, rate, per).take(key, self.clock())
        if wait > 0:
            raise too_many(wait)

    def check(self, name: str, rate: int, per: float, key: str) -> None:
        """Raise the 429 when ``key``'s bucket is empty, without charging it."""
        wait = self.bucket(name, rate, per).retry_after(key, self.clock())
        if wait > 0:
            raise too_many(wait)


def too_many(wait: float) -> ApiError:
    seconds = max(1, math.ceil(wait))
    return ApiError(
        429,
        "rate_limited",
        "too many requests; retry later",
        {"retry_after": seconds},
        headers={"Retry-After": str(seconds)},
    )


def limits_of(ctx: ApiContext) -> RateLimits:
    limits = ctx.extras.get(EXTRAS_KEY)
    if not isinstance(limits, RateLimits):
        limits = ctx.extras[EXTRAS_KEY] = RateLimits()
    return limits


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def limit_ip(name: str, rate: int, per: float = 60.0) -> Callable[..., Awaitable[None]]:
    """A dependency allowing ``rate`` requests per ``per`` seconds per client address."""

    async def dependency(request: Request, ctx: Ctx) -> None:
        limits_of(ctx).take(name, rate, per, client_ip(request))

    return dependency


def limit_user(name: str, rate: int, per: float = 60.0) -> Callable[..., Awaitable[None]]:
    """A dependency allowing ``rate`` requests per ``per`` seconds per signed-in user."""

    async def dependency(
        ctx: Ctx, principal: Annotated[Principal, Depends(current_principal)]
    ) -> None:
        limits_of(ctx).take(name, rate, per, principal.sub)

    return dependency
