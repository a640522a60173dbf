"""What both venue clients share: secrets, link stats, connection pacing and a
retrying REST call.  No NATS here; the feed actors publish what these report.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Protocol, Self

import httpx

from rbot.actors.backoff import Backoff

from .errors import VenueHttpError

log = logging.getLogger("rbot.feeds")


class Secret(Protocol):
    """Anything holding a secret string, e.g. ``pydantic.SecretStr``."""

    def get_secret_value(self) -> str: ...


class PlainSecret:
    """A ``Secret`` for tests and scripts: masked in ``repr`` and ``str``."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get_secret_value(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "PlainSecret('**********')"

    __str__ = __repr__


class LinkState(enum.StrEnum):
    IDLE = "idle"  # not started
    CONNECTING = "connecting"
    STREAMING = "streaming"  # connected, messages flowing
    WAITING = "waiting"  # lost; backing off before the next connect
    STOPPED = "stopped"  # gave up (fatal error) or the consumer stopped


@dataclass
class LinkStats:
    """Health of one streaming link; ``last_message_age`` is in seconds."""

    state: LinkState = LinkState.IDLE
    attempts: int = 0  # connection attempts, refused ones included
    connects: int = 0  # connections established
    reconnects: int = 0  # attempts after the first
    malformed: int = 0  # lines/frames that failed to parse (skipped)
    heartbeats: int = 0
    messages: int = 0  # parsed messages of any kind
    silences: int = 0  # connections dropped for saying nothing too long
    rate_limited: int = 0  # 429 answers
    errors: int = 0  # transport errors, 5xx, drops
    gaps: int = 0  # sequence gaps (Coinbase)
    resnapshots: int = 0  # book resubscriptions after a gap (Coinbase)
    last_error: str = ""
    last_delay: float = 0.0  # the last backoff delay slept, seconds
    last_message_at: float | None = None  # time.monotonic()

    def count_attempt(self) -> None:
        """A connection attempt (a refused one too); each after the first is a reconnect."""
        if self.attempts:
            self.reconnects += 1
        self.attempts += 1

    def lost(self, exc: Exception, delay: float, *, rate_limited: bool = False) -> None:
        """The link broke (or was refused): counted, and waiting ``delay`` seconds."""
        self.state = LinkState.WAITING
        self.last_error = f"{type(exc).__name__}: {exc}"
        if rate_limited:
            self.rate_limited += 1
        else:
            self.errors += 1
        self.last_delay = delay

    @property
    def connected(self) -> bool:
        return self.state is LinkState.STREAMING

    @property
    def last_message_age(self) -> float | None:
        if self.last_message_at is None:
            return None
        return time.monotonic() - self.last_message_at

    def as_info(self) -> dict[str, str]:
        """Flat strings, e.g. for ``ActorStatus.info``."""
        age = self.last_message_age
        return {
            "state": self.state.value,
            "connected": str(self.connected).lower(),
            "reconnects": str(self.reconnects),
            "malformed": str(self.malformed),
            "silences": str(self.silences),
            "rate_limited": str(self.rate_limited),
            "gaps": str(self.gaps),
            "last_message_age": "" if age is None else f"{age:.3f}",
        }


@dataclass
class ConnectPacer:
    """At most ``rate`` new connections in any ``per`` seconds (OANDA: 2/s)."""

    rate: float = 2.0
    per: float = 1.0
    clock: Callable[[], float] = time.monotonic
    _recent: collections.deque[float] = field(default_factory=collections.deque)

    def delay(self) -> float:
        """Seconds to wait before the next connection may start."""
        now = self.clock()
        while self._recent and now - self._recent[0] >= self.per:
            self._recent.popleft()
        if len(self._recent) < max(1, int(self.rate * self.per)):
            return 0.0
        return self.per - (now - self._recent[0])

    def record(self) -> None:
        self._recent.append(self.clock())

    async def wait(self) -> None:
        """Sleep until a connection may start, then count it (one caller at a time)."""
        delay = self.delay()
        if delay > 0:
            await asyncio.sleep(delay)
        self.record()


@dataclass
class RestStats:
    requests: int = 0
    rate_limited: int = 0
    retries: int = 0
    errors: int = 0


def retry_after(headers: Mapping[str, str]) -> float | None:
    """A ``Retry-After`` in seconds, when the server sent one."""
    value = headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


async def request(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    headers: Callable[[], dict[str, str]],
    parse_error: Callable[[bytes], tuple[str | None, str]],
    params: Mapping[str, str | int] | None = None,
    json: object = None,
    backoff: Backoff,
    max_retries: int,
    stats: RestStats,
    rng: random.Random | None = None,
) -> httpx.Response:
    """One REST call, retried on 429, 5xx and transport errors with ``backoff``.

    ``headers`` is called per attempt (a CDP JWT is single-use and short-lived).
    Raises ``VenueHttpError`` for an answer that is not 2xx once retries are
    spent (or at once when it is not retryable); transport errors propagate.
    """
    for attempt in range(max_retries + 1):
        stats.requests += 1
        try:
            resp = await client.request(method, url, params=params, json=json, headers=headers())
        except httpx.TransportError:
            stats.errors += 1
            if attempt == max_retries:
                raise
            delay = backoff.delay(attempt, rng)
        else:
            if resp.is_success:
                return resp
            code, message = parse_error(resp.content)
            rid = resp.headers.get("requestid") or resp.headers.get("x-request-id")
            err = VenueHttpError(resp.status_code, code, message, rid, retry_after(resp.headers))
            if err.rate_limited:
                stats.rate_limited += 1
            else:
                stats.errors += 1
            if not err.retryable or attempt == max_retries:
                raise err
            delay = max(backoff.delay(attempt, rng), err.retry_after or 0.0)
            log.info("%s %s answered %s; retrying in %.2fs", method, url, resp.status_code, delay)
        stats.retries += 1
        await asyncio.sleep(delay)
    raise AssertionError("unreachable")


class StreamClient:
    """What both venues' streaming clients share: their silence and backoff timings,
    their stats, and when a connection counts as healthy (it restarts the backoff)."""

    def __init__(
        self,
        *,
        silence_timeout: float,
        healthy_after: float,
        backoff: Backoff,
        rng: random.Random | None,
    ) -> None:
        self.silence_timeout = silence_timeout
        self.healthy_after = healthy_after
        self.backoff = backoff
        self.stats = LinkStats()
        self._rng = rng

    def healthy(self, connected_at: float | None) -> bool:
        """A connection made at ``connected_at`` (monotonic) lived long enough."""
        return connected_at is not None and time.monotonic() - connected_at >= self.healthy_after


class RestClient:
    """What both venues' REST clients share: base URL, retry policy, stats, and
    closing the HTTP client on ``async with`` exit if this object made it."""

    def __init__(
        self,
        *,
        base_url: str,
        client: httpx.AsyncClient | None,
        backoff: Backoff,
        max_retries: int,
        timeout: float,
        rng: random.Random | None,
        parse_error: Callable[[bytes], tuple[str | None, str]],
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.stats = RestStats()
        self.backoff = backoff
        self.max_retries = max_retries
        self._own = client is None
        self._client = client or httpx.AsyncClient(timeout=timeout)
        self._rng = rng
        self._parse_error = parse_error

    async def _get_url(
        self, url: str, headers: Callable[[], dict[str, str]], params: Mapping[str, str | int]
    ) -> httpx.Response:
        """``GET`` with this client's retry policy (``request``); counted in ``stats``."""
        return await request(
            self._client, "GET", url, headers=headers, parse_error=self._parse_error,
            params=params, backoff=self.backoff, max_retries=self.max_retries,
            stats=self.stats, rng=self._rng,
        )  # fmt: skip

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._own:
            await self._client.aclose()
