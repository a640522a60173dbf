"""OANDA v20 clients, NATS-free: the pricing stream as an async generator of
``Tick``s, and candles over REST.

Usage::

    stream = PricingStream(base_url=PRACTICE.stream, account_id=acct, token=secret,
                           instruments=["EUR_USD"])
    async with contextlib.aclosing(stream.ticks()) as ticks:
        async for tick in ticks:
            ...

``ticks()`` runs entirely in the consumer's task (no background tasks): it
connects, yields ticks, and on any loss (transport error, server end, a
malformed chunk stream, > ``silence_timeout`` seconds without a line, 429 or
5xx) backs off with ``actors.backoff.Backoff`` and reconnects, never opening
more than ``max_connects_per_s`` connections a second.  The backoff restarts
from its first delay once a connection has lived ``healthy_after`` seconds.
A 4xx other than 429 (bad token, unknown account or instrument) is fatal and
raised as ``VenueHttpError``.  Malformed lines are counted and skipped.

The token goes only into the ``Authorization`` header; it is never logged and
never part of a URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass

import httpx

from rbot.actors.backoff import Backoff
from rbot.bus.messages import Candle, Tick

from .errors import ProtocolError, VenueHttpError
from .link import ConnectPacer, LinkState, RestClient, Secret, StreamClient, retry_after
from .oanda_proto import (
    CANDLE_COUNT_DEFAULT,
    CANDLE_COUNT_MAX,
    DEFAULT_GRANULARITY,
    OANDA_GRANULARITIES,
    PRICE_COMPONENTS,
    CandleComponent,
    HeartbeatMsg,
    PriceMsg,
    parse_candles,
    parse_error,
    parse_line,
    to_tick,
)

log = logging.getLogger("rbot.feeds.oanda")


@dataclass(frozen=True, slots=True)
class OandaHosts:
    rest: str
    stream: str


PRACTICE = OandaHosts("https://api-fxpractice.oanda.com", "https://stream-fxpractice.oanda.com")
LIVE = OandaHosts("https://api-fxtrade.oanda.com", "https://stream-fxtrade.oanda.com")


def hosts(env: str) -> OandaHosts:
    """``practice`` or ``live``."""
    if env not in ("practice", "live"):
        raise ValueError(f"OANDA env must be 'practice' or 'live', not {env!r}")
    return PRACTICE if env == "practice" else LIVE


class _Lost(Exception):
    """The stream ended, went silent or broke: reconnect."""


def _error_fields(body: bytes) -> tuple[str | None, str]:
    err = parse_error(body)
    return err.error_code, err.error_message


MAX_LINE = 1 << 20


async def ndjson_lines(
    chunks: AsyncIterator[bytes], max_line: int = MAX_LINE
) -> AsyncGenerator[bytes, None]:
    """Split a chunked body into lines (without the newline).

    A line longer than ``max_line`` raises ``ProtocolError``: the stream is
    broken, better to reconnect than to buffer without bound.  A last line
    without a newline is yielded as is (and will most likely fail to parse).
    """
    buf = bytearray()
    async for chunk in chunks:
        buf += chunk
        while (i := buf.find(b"\n")) >= 0:
            yield bytes(buf[:i])
            del buf[: i + 1]
        if len(buf) > max_line:
            raise ProtocolError(f"line longer than {max_line} bytes")
    if buf:
        yield bytes(buf)


class PricingStream(StreamClient):
    """``GET /v3/accounts/{id}/pricing/stream`` with reconnects; see the module doc."""

    def __init__(
        self,
        *,
        base_url: str,
        account_id: str,
        token: Secret,
        instruments: Sequence[str],
        snapshot: bool = True,
        silence_timeout: float = 10.0,
        healthy_after: float = 10.0,
        backoff: Backoff = Backoff(initial=0.5, factor=2.0, cap=30.0),
        rate_limit_backoff: Backoff = Backoff(initial=2.0, factor=2.0, cap=60.0),
        max_connects_per_s: float = 2.0,
        connect_timeout: float = 10.0,
        client: httpx.AsyncClient | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not instruments:
            raise ValueError("no instruments to stream")
        super().__init__(
            silence_timeout=silence_timeout, healthy_after=healthy_after, backoff=backoff, rng=rng
        )
        self.url = f"{base_url.rstrip('/')}/v3/accounts/{account_id}/pricing/stream"
        self.instruments = list(instruments)
        self.snapshot = snapshot
        self.rate_limit_backoff = rate_limit_backoff
        self.connect_timeout = connect_timeout
        self._token = token
        self._client = client
        self._pacer = ConnectPacer(rate=max_connects_per_s)
        self._seq = 0
        self._connected_at: float | None = None

    async def ticks(self) -> AsyncGenerator[Tick, None]:
        """Ticks for ever; raises ``VenueHttpError`` only on a fatal answer."""
        async with contextlib.AsyncExitStack() as stack:
            client = self._client
            if client is None:
                client = await stack.enter_async_context(httpx.AsyncClient())
            attempt = 0
            try:
                while True:
                    await self._pacer.wait()
                    self.stats.count_attempt()
                    self._connected_at = None
                    try:
                        async with contextlib.aclosing(self._connection(client)) as conn:
                            async for tick in conn:
                                yield tick
                        raise _Lost("stream ended")  # unreachable: _connection never returns
                    except VenueHttpError as exc:
                        if not exc.retryable:
                            raise
                        delay = self._failed(exc, attempt)
                    except (_Lost, httpx.RequestError) as exc:
                        if self.healthy(self._connected_at):
                            attempt = 0  # a healthy connection restarts the backoff
                        delay = self._failed(exc, attempt)
                    attempt += 1
                    await asyncio.sleep(delay)
            finally:
                self.stats.state = LinkState.STOPPED

    async def _connection(self, client: httpx.AsyncClient) -> AsyncGenerator[Tick, None]:
        st = self.stats
        st.state = LinkState.CONNECTING
        params = {"instruments": ",".join(self.instruments)}
        if not self.snapshot:
            params["snapshot"] = "false"
        # the read timeout only guards the wait for headers: silence in the body
        # is caught (and counted) by the asyncio timeout below, which fires first
        timeout = httpx.Timeout(self.connect_timeout, read=self.silence_timeout + 1.0)
        headers = {"Authorization": f"Bearer {self._token.get_secret_value()}"}
        async with client.stream(
            "GET", self.url, params=params, headers=headers, timeout=timeout
        ) as resp:
            if resp.status_code != 200:
                body = await resp.aread()
                code, message = _error_fields(body)
                raise VenueHttpError(
                    resp.status_code,
                    code,
                    message,
                    resp.headers.get("requestid"),
                    retry_after(resp.headers),
                )
            st.connects += 1
            self._connected_at = time.monotonic()
            st.state = LinkState.STREAMING
            log.info("oanda pricing stream connected (%s)", ",".join(self.instruments))
            async with contextlib.aclosing(ndjson_lines(resp.aiter_bytes())) as lines:
                while True:
                    try:
                        async with asyncio.timeout(self.silence_timeout):
                            line = await anext(lines)
                    except TimeoutError:
                        st.silences += 1
                        raise _Lost(f"no line for {self.silence_timeout:g}s") from None
                    except StopAsyncIteration:
                        raise _Lost("stream ended by the server") from None
                    except ProtocolError as exc:
                        st.malformed += 1
                        raise _Lost(str(exc)) from None
                    st.last_message_at = time.monotonic()
                    try:
                        msg = parse_line(line)
                    except ProtocolError as exc:
                        st.malformed += 1
                        log.warning("oanda: skipped a malformed line: %s", exc)
                        continue
                    if msg is None:
                        continue
                    st.messages += 1
                    if isinstance(msg, HeartbeatMsg):
                        st.heartbeats += 1
                    elif isinstance(msg, PriceMsg):
                        self._seq += 1
                        yield to_tick(msg, self._seq)

    def _failed(self, exc: Exception, attempt: int) -> float:
        if isinstance(exc, VenueHttpError) and exc.rate_limited:
            wait = exc.retry_after or 0.0
            delay = max(self.rate_limit_backoff.delay(attempt, self._rng), wait)
            self.stats.lost(exc, delay, rate_limited=True)
        else:
            delay = self.backoff.delay(attempt, self._rng)
            self.stats.lost(exc, delay)
        log.warning(
            "oanda pricing stream lost (%s); reconnecting in %.2fs", self.stats.last_error, delay
        )
        return delay


class OandaRest(RestClient):
    """REST calls (candles for now) with 429/5xx retries; ``async with`` closes
    the HTTP client if this object made it."""

    def __init__(
        self,
        *,
        base_url: str,
        token: Secret,
        client: httpx.AsyncClient | None = None,
        backoff: Backoff = Backoff(initial=0.5, factor=2.0, cap=10.0),
        max_retries: int = 3,
        timeout: float = 10.0,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(
            base_url=base_url, client=client, backoff=backoff, max_retries=max_retries,
            timeout=timeout, rng=rng, parse_error=_error_fields,
        )  # fmt: skip
        self._token = token

    async def candles(
        self,
        instrument: str,
        granularity: str = DEFAULT_GRANULARITY,
        count: int = CANDLE_COUNT_DEFAULT,
        price: str = "M",
    ) -> list[Candle]:
        """``GET /v3/instruments/{instrument}/candles``; the first letter of
        ``price`` (M, B or A) picks the prices the candles carry."""
        if granularity not in OANDA_GRANULARITIES:
            raise ValueError(f"granularity must be one of {' '.join(OANDA_GRANULARITIES)}")
        if not 1 <= count <= CANDLE_COUNT_MAX:
            raise ValueError(f"count must be within 1..{CANDLE_COUNT_MAX}")
        if not price or set(price) - set(PRICE_COMPONENTS):
            raise ValueError("price must be made of M, B and A")
        component: CandleComponent = PRICE_COMPONENTS[price[0]]
        resp = await self._get_url(
            f"{self.base_url}/v3/instruments/{instrument}/candles",
            self._headers,
            {"granularity": granularity, "count": count, "price": price},
        )
        return parse_candles(resp.content, component)

    def _headers(self) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self._token.get_secret_value()}",
            "Accept-Datetime-Format": "RFC3339",
        }
