"""What a feed leader runs: a price *source* (sim, OANDA, Coinbase) and the
``FeedOutput`` it publishes through.

Published through ``output.FeedOutput`` (subjects from ``bus/subjects.py``):

* every ``Tick`` on ``rbot.md.tick.<venue>.<symbol>`` and into KV ``prices``
  as received, untradeable ones included.  Decision: KV holds the latest tick,
  not the latest *usable* one, so nobody acts on a quote the venue no longer
  stands behind: an empty side is ``null`` and ``tradeable`` is false, the
  executor never fills on such a tick, the guard refuses a market order
  whose side is empty (``no_price``), and ``/brokers/oanda/prices`` shows
  what OANDA shows;
* Coinbase ``Book``\\ s on ``rbot.md.book.coinbase.<product>``, at most one per
  ``book_interval`` per product (4/s): a newer book waits for its slot and
  only the newest waiting one goes out; the last one is repeated every
  ``book_keepalive`` seconds so a subscriber that just started soon has one;
* the last ``candle_count`` M1 candles over REST every ``candle_interval``, on
  ``rbot.md.candle.<venue>.<symbol>.M1`` (all of them each time, so an API
  that starts later has the history within a round; the last candle is
  usually ``complete: false``);
* and, written by the actor, the link's health every ``status_interval`` in
  KV ``actors``, key ``feed.<venue>``: an ``ActorStatus`` whose ``info`` is
  ``status_info`` (read by ``/metrics`` and ``/brokers/coinbase/status``).

A fatal answer (bad token, unknown account, missing credentials) does not
crash the actor: a crash loop would trip the supervisor's intensity and halt
trading over a typo.  The source records ``state=stopped`` and the error,
waits ``fatal_retry`` seconds and returns; the actor then gives its lease up
so another process may lead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from urllib.parse import urlsplit

import httpx
import msgspec
from websockets.exceptions import WebSocketException

from rbot.bus import granularity
from rbot.bus.config import Settings
from rbot.bus.messages import Book, Candle
from rbot.bus.timing import every

from .coinbase_client import REST_URL, WS_URL, CdpCredentials, CoinbaseRest, MarketDataStream
from .coinbase_proto import COINBASE_GRANULARITIES, CbCandle, to_candles
from .errors import CredentialError, FeedError
from .link import LinkState, LinkStats, Secret
from .oanda_client import OandaRest, PricingStream, hosts
from .output import FeedOutput, FeedTuning
from .sim import SimMarket

log = logging.getLogger("rbot.feeds")

CANDLE_GRANULARITY = granularity.BROKER_CANDLES  # on the bus, OANDA's names for both venues
COINBASE_CANDLES = "ONE_MINUTE"


def status_info(source: Source, out: FeedOutput) -> dict[str, str]:
    """The flat strings stored in ``ActorStatus.info`` under ``feed.<venue>``."""
    st = source.stats
    info = {
        "source": source.name,
        "symbols": ",".join(source.symbols),
        **st.as_info(),
        "connects": str(st.connects),
        "attempts": str(st.attempts),
        "errors": str(st.errors),
        "heartbeats": str(st.heartbeats),
        "messages": str(st.messages),
        "resnapshots": str(st.resnapshots),
        "last_delay": f"{st.last_delay:.3f}",
        "last_error": st.last_error[:200],
        "ticks": str(out.ticks),
        "books": str(out.books),
        "candles": str(out.candles),
        "rest_errors": str(source.rest_errors),
    }
    info.update(source.extra)
    return info


class Source:
    """A price source: ``run`` publishes into ``out``; ``stats`` describes the link."""

    name = "source"

    def __init__(self, venue: str, settings: Settings, tuning: FeedTuning) -> None:
        self.venue = venue
        self.settings = settings
        self.tuning = tuning
        self.symbols = settings.symbols(venue)
        self.stats = LinkStats()
        self.extra: dict[str, str] = {}  # more status info (Coinbase: product.<id> -> status)
        self.rest_errors = 0

    async def run(self, out: FeedOutput) -> None:
        raise NotImplementedError

    async def _fatal(self, exc: BaseException) -> None:
        """Record a fatal error, wait ``fatal_retry``, then let the caller return."""
        st = self.stats
        st.state = LinkState.STOPPED
        st.last_error = f"{type(exc).__name__}: {exc}"
        log.error(
            "%s feed stopped: %s; giving the lead up in %gs",
            self.venue,
            st.last_error,
            self.tuning.fatal_retry,
        )
        await asyncio.sleep(self.tuning.fatal_retry)

    def _rest_failed(self, what: str, exc: Exception) -> None:
        self.rest_errors += 1
        log.warning("%s %s failed: %s: %s", self.venue, what, type(exc).__name__, exc)


class SimSource(Source):
    """The seeded random walk of ``sim.py`` (no network at all)."""

    name = "sim"

    async def run(self, out: FeedOutput) -> None:
        market = SimMarket(
            self.venue,
            self.symbols,
            self.settings.rbot_sim_seed,
            books=self.venue == "coinbase",  # level-2 books where the venue has them
            depth=self.tuning.book_depth,
        )
        log.info("sim source for %s: %s", self.venue, ", ".join(market.specs))
        st = self.stats
        st.state, st.attempts, st.connects = LinkState.STREAMING, 1, 1
        async for _ in every(self.settings.rbot_sim_interval_s):
            for tick in market.step():
                await out.tick(tick)
                book = market.book(tick)
                if book is not None:
                    await out.book(book)  # the path a real Coinbase book takes
            await out.flush_books()
            st.messages += 1
            st.last_message_at = time.monotonic()


# ---------------------------------------------------------------------- OANDA


def oanda_endpoints(settings: Settings) -> tuple[str, str]:
    """(stream, rest) base URLs.  ``OANDA_STREAM_URL`` / ``OANDA_REST_URL``
    override the hosts of ``OANDA_ENV``; one override alone serves both (a fake
    or a proxy serves both), so pointing one at a fake never reaches OANDA."""
    try:
        base = hosts(settings.oanda_env)
    except ValueError as exc:
        raise FeedError(str(exc)) from None
    override = settings.oanda_stream_url or settings.oanda_rest_url
    return (
        settings.oanda_stream_url or override or base.stream,
        settings.oanda_rest_url or override or base.rest,
    )


def oanda_account(settings: Settings) -> tuple[str, Secret]:
    """The account id and token of ``OANDA_ENV`` (the seed's variable names)."""
    if settings.oanda_env == "live":
        names, account, token = (
            "OANDA_LIVE",
            settings.oanda_live_account_id,
            settings.oanda_live_token,
        )
    else:
        names = "OANDA_PRACTICE"
        account, token = settings.oanda_practice_account_id, settings.oanda_practice_token
    if not account or token is None:
        raise CredentialError(f"the OANDA feed needs {names}_ACCOUNT_ID and {names}_TOKEN")
    return account, token


class OandaSource(Source):
    """The v20 pricing stream, and M1 candles over REST."""

    name = "oanda"

    async def run(self, out: FeedOutput) -> None:
        t = self.tuning
        try:
            stream_url, rest_url = oanda_endpoints(self.settings)
            account, token = oanda_account(self.settings)
        except FeedError as exc:
            await self._fatal(exc)
            return
        stream = PricingStream(
            base_url=stream_url,
            account_id=account,
            token=token,
            instruments=self.symbols,
            silence_timeout=t.silence_timeout,
            healthy_after=t.healthy_after,
            backoff=t.backoff,
            rate_limit_backoff=t.rate_limit_backoff,
            max_connects_per_s=t.max_connects_per_s,
        )
        self.stats = stream.stats
        fatal: Exception = FeedError("the pricing stream ended")  # ticks() never returns
        async with (
            OandaRest(base_url=rest_url, token=token, backoff=t.rest_backoff) as rest,
            asyncio.TaskGroup() as tg,
        ):
            candles = tg.create_task(self._candles(rest, out))
            try:
                async with contextlib.aclosing(stream.ticks()) as ticks:
                    async for tick in ticks:
                        await out.tick(tick)
            except FeedError as exc:  # only fatal answers leave ticks()
                fatal = exc
            candles.cancel()
        await self._fatal(fatal)

    async def _candles(self, rest: OandaRest, out: FeedOutput) -> None:
        async for _ in every(self.tuning.candle_interval):
            for symbol in self.symbols:
                try:
                    candles = await rest.candles(
                        symbol, CANDLE_GRANULARITY, self.tuning.candle_count
                    )
                except (FeedError, httpx.HTTPError) as exc:
                    self._rest_failed(f"candles of {symbol}", exc)
                    continue
                for candle in candles:
                    await out.candle(candle)


# ---------------------------------------------------------------------- Coinbase


def coinbase_rest_base(settings: Settings) -> str:
    """``COINBASE_ADV_BASE``; left at its default while ``COINBASE_WS_URL`` points
    elsewhere (a fake), REST follows the WebSocket's host, so a fake run never
    reaches api.coinbase.com."""
    base = settings.coinbase_adv_base.rstrip("/")
    if base != REST_URL or settings.coinbase_ws_url.rstrip("/") == WS_URL:
        return base
    ws = urlsplit(settings.coinbase_ws_url)
    return f"{'https' if ws.scheme == 'wss' else 'http'}://{ws.netloc}"


def coinbase_credentials(settings: Settings) -> CdpCredentials | None:
    """A CDP key from ``COINBASE_API_KEY_ID`` / ``_SECRET``, or None (public data)."""
    key, secret = settings.coinbase_api_key_id, settings.coinbase_api_key_secret
    if key is None and secret is None:
        return None
    if not key or secret is None:
        raise CredentialError("COINBASE_API_KEY_ID and COINBASE_API_KEY_SECRET go together")
    return CdpCredentials(key, secret)


def coinbase_candles(product_id: str, raw: list[CbCandle], now: float) -> list[Candle]:
    """Bus candles (oldest first) keeping the base volume; the one still open is incomplete."""
    secs = COINBASE_GRANULARITIES[COINBASE_CANDLES]
    ordered = sorted(raw, key=lambda c: c.start)
    return [
        msgspec.structs.replace(c, volume_base=r.volume, complete=r.start + secs <= now)
        for c, r in zip(to_candles(product_id, CANDLE_GRANULARITY, ordered), ordered, strict=True)
    ]


class CoinbaseSource(Source):
    """The Advanced Trade market-data WebSocket (ticker, level2, heartbeats), M1
    candles and the products' venue status over REST."""

    name = "coinbase"

    async def run(self, out: FeedOutput) -> None:
        t = self.tuning
        try:
            creds = coinbase_credentials(self.settings)
        except FeedError as exc:
            await self._fatal(exc)
            return
        stream = MarketDataStream(
            product_ids=self.symbols,
            url=self.settings.coinbase_ws_url,
            depth=t.book_depth,
            silence_timeout=t.silence_timeout,
            healthy_after=t.healthy_after,
            backoff=t.backoff,
            credentials=creds,
        )
        self.stats = stream.stats
        base = coinbase_rest_base(self.settings)
        fatal: Exception = FeedError("the market-data stream ended")  # events() never returns
        async with (
            CoinbaseRest(base_url=base, credentials=creds, backoff=t.rest_backoff) as rest,
            asyncio.TaskGroup() as tg,
        ):
            side = [tg.create_task(self._rest(rest, out)), tg.create_task(self._flush(out))]
            try:
                async with contextlib.aclosing(stream.events()) as events:
                    async for item in events:
                        if isinstance(item, Book):
                            await out.book(item)
                        else:
                            await out.tick(item)
            except WebSocketException as exc:  # a fatal connect failure (401, bad URL)
                fatal = exc
            for task in side:
                task.cancel()
        await self._fatal(fatal)

    async def _flush(self, out: FeedOutput) -> None:
        async for _ in every(self.tuning.book_interval):
            await out.flush_books()

    async def _rest(self, rest: CoinbaseRest, out: FeedOutput) -> None:
        secs = COINBASE_GRANULARITIES[COINBASE_CANDLES]
        count = self.tuning.candle_count
        async for n in every(self.tuning.candle_interval):
            if n % self.tuning.products_every == 0:
                await self._products(rest)
            for pid in self.symbols:
                now = time.time()
                start, end = int(now) - count * secs, int(now)
                try:
                    raw = await rest.candles(
                        pid, start=start, end=end, granularity=COINBASE_CANDLES
                    )
                except (FeedError, httpx.HTTPError) as exc:
                    self._rest_failed(f"candles of {pid}", exc)
                    continue
                for candle in coinbase_candles(pid, raw, now):
                    await out.candle(candle)

    async def _products(self, rest: CoinbaseRest) -> None:
        try:
            products = await rest.products()
        except (FeedError, httpx.HTTPError) as exc:
            self._rest_failed("products", exc)
            return
        for p in products:
            if p.product_id in self.symbols:
                status = "trading_disabled" if p.trading_disabled else p.status
                self.extra[f"product.{p.product_id}"] = status


def make_source(venue: str, settings: Settings, tuning: FeedTuning) -> Source:
    if settings.use_sim(venue):
        return SimSource(venue, settings, tuning)
    if venue == "oanda":
        return OandaSource(venue, settings, tuning)
    return CoinbaseSource(venue, settings, tuning)
