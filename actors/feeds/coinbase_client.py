"""Coinbase Advanced Trade clients, NATS-free: the market-data WebSocket as an
async generator of ``Tick``s and ``Book``s, and the public/CDP-authenticated
REST calls the feed needs.

Usage::

    stream = MarketDataStream(product_ids=["BTC-USD"])
    async with contextlib.aclosing(stream.events()) as events:
        async for item in events:   # Tick (from ticker) or Book (top-N of level2)
            ...

``events()`` runs in the consumer's task.  It uses websockets'
``async for ws in connect(...)``: connect failures (network, 429, 5xx) are
retried by websockets with our ``Backoff`` schedule; anything else at connect
time is fatal and raised.  Per connection it subscribes to ``ticker``,
``level2`` and ``heartbeats`` at once (Coinbase drops sockets that have not
subscribed within 5 s), checks ``sequence_num`` and, on a gap, resets the local
books and resubscribes ``level2`` for a fresh snapshot.  A socket silent for
``silence_timeout`` seconds, closed or dropped is replaced after a backoff
delay that restarts once a connection has lived ``healthy_after`` seconds.
Malformed frames are counted and skipped; ``{"type": "error"}`` frames are
counted and logged.  A ``Book`` is yielded after every applied L2 event: the
consumer throttles if it needs to.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import AsyncGenerator, Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import cast

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.client import process_exception as default_process_exception
from websockets.exceptions import ConnectionClosed, InvalidStatus

from rbot.actors.backoff import Backoff
from rbot.bus.messages import Book, Tick

from .coinbase_proto import (
    COINBASE_GRANULARITIES,
    CbCandle,
    Heartbeat,
    L2Event,
    OrderBook,
    Product,
    ProductBook,
    SequenceTracker,
    TickerEvent,
    WsError,
    WsMessage,
    cdp_jwt,
    cdp_uri,
    load_cdp_key,
    parse_candles,
    parse_product_book,
    parse_products,
    parse_rest_error,
    parse_ws_message,
    to_tick,
)
from .errors import BookNotReady, ProtocolError
from .link import LinkState, RestClient, Secret, StreamClient

log = logging.getLogger("rbot.feeds.coinbase")


class _NoFrameLog(logging.LoggerAdapter[logging.Logger]):
    """websockets' logger minus DEBUG: frame dumps could show a subscribe's JWT."""

    def isEnabledFor(self, level: int) -> bool:
        return level > logging.DEBUG and self.logger.isEnabledFor(level)


_ws_log = _NoFrameLog(logging.getLogger("rbot.feeds.coinbase.ws"))

WS_URL = "wss://advanced-trade-ws.coinbase.com"
REST_URL = "https://api.coinbase.com"
API = "/api/v3/brokerage"
DEFAULT_CHANNELS = ("ticker", "level2", "heartbeats")

MarketEvent = Tick | Book


class CdpCredentials:
    """A CDP API key: its name and its private key (PEM or base64 Ed25519).

    The key is checked on construction (``CredentialError``) and never shown.
    """

    def __init__(self, key_name: str, private_key: Secret) -> None:
        load_cdp_key(private_key.get_secret_value())
        self.key_name = key_name
        self._key = private_key

    def jwt(self, method: str | None = None, url: str | None = None) -> str:
        """A fresh JWT; with ``method`` and ``url`` it carries the REST ``uri`` claim."""
        uri = cdp_uri(method, url) if method and url else None
        return cdp_jwt(self.key_name, self._key.get_secret_value(), uri, time.time())

    def __repr__(self) -> str:
        return f"CdpCredentials(key_name={self.key_name!r}, private_key='**********')"


class _Lost(Exception):
    """The socket went silent: replace it."""


class MarketDataStream(StreamClient):
    """The market-data WebSocket with reconnects; see the module doc."""

    def __init__(
        self,
        *,
        product_ids: Sequence[str],
        url: str = WS_URL,
        channels: Sequence[str] = DEFAULT_CHANNELS,
        depth: int = 10,
        silence_timeout: float = 10.0,
        healthy_after: float = 10.0,
        backoff: Backoff = Backoff(initial=0.5, factor=2.0, cap=30.0),
        open_timeout: float = 10.0,
        close_timeout: float = 2.0,
        max_size: int = 32 * 1024 * 1024,
        credentials: CdpCredentials | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not product_ids:
            raise ValueError("no products to stream")
        super().__init__(
            silence_timeout=silence_timeout, healthy_after=healthy_after, backoff=backoff, rng=rng
        )
        self.url = url
        self.product_ids = list(product_ids)
        self.channels = list(channels)
        self.depth = depth
        self.open_timeout = open_timeout
        self.close_timeout = close_timeout
        self.max_size = max_size
        self._credentials = credentials
        self._awaiting: set[str] = set()

    async def events(self) -> AsyncGenerator[MarketEvent, None]:
        """Ticks and books for ever; raises websockets' error on a fatal connect failure."""
        connector = connect(
            self.url,
            open_timeout=self.open_timeout,
            close_timeout=self.close_timeout,
            max_size=self.max_size,
            process_exception=self._classify,
            reconnect_delays=self._connect_delays,
            logger=_ws_log,
        )
        # connect.__aiter__ is an async generator: close it (and its socket) with us
        conns = cast(AsyncGenerator[ClientConnection, None], connector.__aiter__())
        attempt = 0
        self.stats.state = LinkState.CONNECTING
        try:
            async with contextlib.aclosing(conns):
                async for ws in conns:
                    self.stats.count_attempt()
                    self.stats.connects += 1
                    self.stats.state = LinkState.STREAMING
                    connected_at = time.monotonic()
                    log.info("coinbase market data connected (%s)", ",".join(self.product_ids))
                    try:
                        async with contextlib.aclosing(self._session(ws)) as session:
                            async for item in session:
                                yield item
                        reason: Exception = _Lost("session ended")  # unreachable
                    except (ConnectionClosed, _Lost) as exc:
                        reason = exc
                    if self.healthy(connected_at):
                        attempt = 0  # a healthy connection restarts the backoff
                    await asyncio.sleep(self._lost(reason, attempt))
                    attempt += 1
                    self.stats.state = LinkState.CONNECTING
        finally:
            self.stats.state = LinkState.STOPPED

    async def _session(self, ws: ClientConnection) -> AsyncGenerator[MarketEvent, None]:
        st = self.stats
        tracker = SequenceTracker()
        books = {p: OrderBook(p) for p in self.product_ids} if "level2" in self.channels else {}
        self._awaiting = set(books)  # books whose snapshot is on its way
        for channel in self.channels:
            await self._send(ws, "subscribe", channel)
        while True:
            try:
                async with asyncio.timeout(self.silence_timeout):
                    raw = await ws.recv()
            except TimeoutError:
                st.silences += 1
                raise _Lost(f"nothing for {self.silence_timeout:g}s") from None
            st.last_message_at = time.monotonic()
            try:
                msg = parse_ws_message(raw)
            except ProtocolError as exc:
                st.malformed += 1
                log.warning("coinbase: skipped a malformed frame: %s", exc)
                continue
            st.messages += 1
            if isinstance(msg, WsError):
                st.errors += 1
                st.last_error = f"venue error: {msg.message}"
                log.warning("coinbase: error frame: %s", msg.message)
                continue
            if tracker.observe(msg.seq) is not None:
                st.gaps += 1
                if books:
                    await self._resnapshot(ws, books)
            out, stale = self._apply(msg, books)
            for item in out:
                yield item
            if stale:
                await self._resnapshot(ws, books)

    def _apply(self, msg: WsMessage, books: dict[str, OrderBook]) -> tuple[list[MarketEvent], bool]:
        """What one message yields, and whether a book needs a fresh snapshot."""
        out: list[MarketEvent] = []
        stale = False
        for ev in msg.events:
            if isinstance(ev, TickerEvent):
                out += [
                    to_tick(t, time=msg.timestamp, seq=msg.seq)
                    for t in ev.tickers
                    if t.product_id in self.product_ids
                ]
            elif isinstance(ev, L2Event) and (book := books.get(ev.product_id)) is not None:
                try:
                    book.apply(ev)
                except BookNotReady:
                    # after a reset the snapshot is on its way; otherwise ask for one
                    stale = stale or ev.product_id not in self._awaiting
                    continue
                self._awaiting.discard(ev.product_id)
                out.append(book.to_book(self.depth, time=msg.timestamp, seq=msg.seq))
            elif isinstance(ev, Heartbeat):
                self.stats.heartbeats += 1
        return out, stale

    async def _resnapshot(self, ws: ClientConnection, books: dict[str, OrderBook]) -> None:
        for book in books.values():
            book.reset()
        self._awaiting = set(books)
        await self._send(ws, "unsubscribe", "level2")
        await self._send(ws, "subscribe", "level2")
        self.stats.resnapshots += 1
        log.info("coinbase: level2 resubscribed for a fresh snapshot")

    async def _send(self, ws: ClientConnection, kind: str, channel: str) -> None:
        msg: dict[str, object] = {"type": kind, "channel": channel}
        if channel != "heartbeats":
            msg["product_ids"] = self.product_ids
        if self._credentials is not None:
            msg["jwt"] = self._credentials.jwt()
        await ws.send(json.dumps(msg))

    def _classify(self, exc: Exception) -> Exception | None:
        """websockets' ``process_exception``: None retries, an exception is fatal."""
        self.stats.count_attempt()
        st = self.stats
        st.last_error = f"connect: {type(exc).__name__}: {exc}"
        if isinstance(exc, InvalidStatus) and exc.response.status_code == 429:
            st.rate_limited += 1
            return None
        st.errors += 1
        return default_process_exception(exc)

    def _connect_delays(self) -> Generator[float, None, None]:
        for delay in self.backoff.delays(self._rng):
            self.stats.state = LinkState.WAITING
            self.stats.last_delay = delay
            yield delay

    def _lost(self, exc: Exception, attempt: int) -> float:
        delay = self.backoff.delay(attempt, self._rng)
        self.stats.lost(exc, delay)
        log.warning(
            "coinbase market data lost (%s); reconnecting in %.2fs", self.stats.last_error, delay
        )
        return delay


@dataclass(frozen=True, slots=True)
class RateLimit:
    """The last ``x-ratelimit-*`` headers seen (``reset`` passed through as sent)."""

    limit: int | None
    remaining: int | None
    reset: str | None


def _rate_limit(headers: Mapping[str, str]) -> RateLimit | None:
    def num(name: str) -> int | None:
        value = headers.get(name)
        return int(value) if value is not None and value.isdigit() else None

    if "x-ratelimit-limit" not in headers:
        return None
    return RateLimit(
        num("x-ratelimit-limit"), num("x-ratelimit-remaining"), headers.get("x-ratelimit-reset")
    )


def _error_fields(body: bytes) -> tuple[str | None, str]:
    err = parse_rest_error(body)
    return err.error or None, err.message or err.error_details


class CoinbaseRest(RestClient):
    """Products, product book and candles.  With credentials: the private
    endpoints and a fresh CDP JWT per request; without: the public
    ``/market`` mirrors.  429 and 5xx are retried with ``backoff``."""

    def __init__(
        self,
        *,
        base_url: str = REST_URL,
        credentials: CdpCredentials | None = None,
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
        self.credentials = credentials
        self.rate_limit: RateLimit | None = None

    async def products(self, product_type: str = "SPOT") -> list[Product]:
        resp = await self._get("/products", {"product_type": product_type})
        return parse_products(resp.content)

    async def product_book(self, product_id: str, limit: int = 50) -> ProductBook:
        resp = await self._get("/product_book", {"product_id": product_id, "limit": limit})
        return parse_product_book(resp.content)

    async def candles(
        self, product_id: str, *, start: int, end: int, granularity: str = "ONE_MINUTE"
    ) -> list[CbCandle]:
        """Candles in ``[start, end]`` (unix seconds), newest first, as sent."""
        if granularity not in COINBASE_GRANULARITIES:
            raise ValueError(f"granularity must be one of {' '.join(COINBASE_GRANULARITIES)}")
        params = {"start": str(start), "end": str(end), "granularity": granularity}
        resp = await self._get(f"/products/{product_id}/candles", params)
        return parse_candles(resp.content)

    async def _get(self, tail: str, params: Mapping[str, str | int]) -> httpx.Response:
        prefix = API if self.credentials is not None else f"{API}/market"
        url = f"{self.base_url}{prefix}{tail}"
        resp = await self._get_url(url, lambda: self._headers("GET", url), params)
        self.rate_limit = _rate_limit(resp.headers) or self.rate_limit
        return resp

    def _headers(self, method: str, url: str) -> dict[str, str]:
        if self.credentials is None:
            return {}
        return {"Authorization": f"Bearer {self.credentials.jwt(method, url)}"}
