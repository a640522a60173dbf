"""Each feed client against its fake, in-process on a random port.

Nothing sleeps to wait: every step awaits a tick, a book, a counter in the fake
or a line from a subprocess, under ``asyncio.timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from decimal import Decimal
from typing import TypeVar

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedOK

from rbot.actors.backoff import Backoff
from rbot.actors.feeds.coinbase_client import CdpCredentials, CoinbaseRest, MarketDataStream
from rbot.actors.feeds.errors import VenueHttpError
from rbot.actors.feeds.link import LinkState, PlainSecret
from rbot.actors.feeds.oanda_client import OandaRest, PricingStream
from rbot.actors.process import stop_process
from rbot.bus.messages import Book, Tick
from tests.fakes.coinbase import FakeCoinbase
from tests.fakes.oanda import FakeOanda

D = Decimal
T = TypeVar("T")
FAST = Backoff(initial=0.01, factor=2.0, cap=0.05, jitter=0.0)
WAIT = 5.0  # generous ceiling per step; steps normally take milliseconds


async def next_item(
    items: AsyncGenerator[T, None], pred: Callable[[T], bool] = lambda _: True
) -> T:
    """The next item that satisfies ``pred``."""
    async with asyncio.timeout(WAIT):
        while True:
            item = await anext(items)
            if pred(item):
                return item


# --------------------------------------------------------------------------- OANDA


@contextlib.asynccontextmanager
async def oanda_stream(
    fake: FakeOanda, **over: object
) -> AsyncIterator[tuple[PricingStream, AsyncGenerator[Tick, None]]]:
    kw: dict[str, object] = dict(
        base_url=fake.url,
        account_id=fake.account_id,
        token=PlainSecret(fake.token),
        instruments=["EUR_USD", "USD_JPY"],
        silence_timeout=2.0,
        backoff=FAST,
        rate_limit_backoff=FAST,
        max_connects_per_s=100.0,
    )
    kw.update(over)
    stream = PricingStream(**kw)  # type: ignore[arg-type]
    async with contextlib.aclosing(stream.ticks()) as ticks:
        yield stream, ticks


def fx(symbol: str) -> Callable[[Tick], bool]:
    return lambda t: t.symbol == symbol


async def test_oanda_ticks_are_exact_and_follow_pushed_prices(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with (
        FakeOanda(heartbeat_interval=0.05).serving() as fake,
        oanda_stream(fake) as (stream, ticks),
    ):
        first = await next_item(ticks, fx("EUR_USD"))
        assert (first.bid, first.ask, first.tradeable) == (D("1.09148"), D("1.09162"), True)
        assert first.venue == "oanda" and first.source == "oanda"
        fake.set_price("EUR_USD", "1.10001", "1.10015")
        tick = await next_item(ticks, lambda t: t.symbol == "EUR_USD" and t.bid != first.bid)
        assert tick.bid == D("1.10001") and tick.spread == D("0.00014")
        assert tick.seq > first.seq
        assert stream.stats.connected and stream.stats.state is LinkState.STREAMING
        age = stream.stats.last_message_age
        assert age is not None and age < WAIT
    assert caplog.records and fake.token not in caplog.text


async def test_oanda_empty_sides_and_untradeable_prices_are_not_a_crash() -> None:
    async with (
        FakeOanda(heartbeat_interval=0.05).serving() as fake,
        oanda_stream(fake) as (stream, ticks),
    ):
        await next_item(ticks, fx("USD_JPY"))
        fake.set_price("USD_JPY", "150.100", "150.120", empty="bids", tradeable=False)
        tick = await next_item(ticks, lambda t: t.symbol == "USD_JPY" and t.bid is None)
        assert tick.ask == D("150.120") and tick.mid is None and not tick.tradeable
        fake.set_price("USD_JPY", "150.100", "150.120", empty="both", tradeable=False)
        tick = await next_item(ticks, lambda t: t.symbol == "USD_JPY" and t.ask is None)
        assert tick.bid is None and not tick.tradeable
        assert stream.stats.malformed == 0 and fake.connections.value == 1


async def test_oanda_reconnects_after_a_drop() -> None:
    async with (
        FakeOanda(heartbeat_interval=0.05).serving() as fake,
        oanda_stream(fake) as (stream, ticks),
    ):
        await next_item(ticks)
        assert fake.drop() == 1
        # the new connection's snapshot
        tick = await next_item(
            ticks, lambda t: t.symbol == "EUR_USD" and stream.stats.connects == 2
        )
        assert tick.bid == D("1.09148") and fake.connections.value == 2
        st = stream.stats
        assert (st.connects, st.reconnects, st.errors) == (2, 1, 1)
        assert "RemoteProtocolError" in st.last_error


async def test_oanda_malformed_line_is_survived_and_counted() -> None:
    async with (
        FakeOanda(heartbeat_interval=0.05).serving() as fake,
        oanda_stream(fake) as (stream, ticks),
    ):
        await next_item(ticks)
        fake.send_malformed()
        fake.send_malformed(b'{"type":"PRICE","instrument":"EUR_USD","time":"x","bids":[]}')
        fake.set_price("EUR_USD", "1.2", "1.2002")
        tick = await next_item(ticks, lambda t: t.bid == D("1.2"))
        assert tick.ask == D("1.2002")
        assert stream.stats.malformed == 2
        assert fake.connections.value == 1 and stream.stats.reconnects == 0


async def test_oanda_silence_is_detected_and_the_stream_replaced() -> None:
    async with (
        FakeOanda(heartbeat_interval=0.05).serving() as fake,
        oanda_stream(fake, silence_timeout=0.3) as (stream, ticks),
    ):
        await next_item(ticks)
        fake.go_silent()  # heartbeats stop too; the socket stays open
        await next_item(ticks, lambda _: stream.stats.connects == 2)
        assert fake.connections.value == 2
        assert stream.stats.silences == 1 and stream.stats.reconnects == 1


async def test_oanda_429_backs_off_with_the_rate_limit_schedule() -> None:
    slow = Backoff(initial=0.2, factor=1.0, cap=0.2, jitter=0.0)
    async with FakeOanda(heartbeat_interval=0.05).serving() as fake:
        fake.reject_next(2)
        async with oanda_stream(fake, rate_limit_backoff=slow) as (stream, ticks):
            await next_item(ticks)
            st = stream.stats
            assert st.rate_limited == 2 and st.connects == 1 and st.attempts == 3
            assert st.last_delay == pytest.approx(0.2)
            t = fake.connect_times
            assert len(t) == 3 and t[1] - t[0] >= 0.19 and t[2] - t[1] >= 0.19


async def test_oanda_never_opens_more_than_two_connections_a_second() -> None:
    async with FakeOanda(heartbeat_interval=0.05).serving() as fake:
        fake.reject_next(3, status=503)
        async with oanda_stream(fake, max_connects_per_s=2.0) as (stream, ticks):
            await next_item(ticks)
            t = fake.connect_times
            assert len(t) == 4 and stream.stats.errors == 3
            assert t[2] - t[0] >= 0.99 and t[3] - t[1] >= 0.99


async def test_oanda_backoff_restarts_after_a_healthy_connection() -> None:
    grow = Backoff(initial=0.01, factor=10.0, cap=1.0, jitter=0.0)
    for healthy_after, second_delay in ((1000.0, 0.1), (0.0, 0.01)):
        async with (
            FakeOanda(heartbeat_interval=0.05).serving() as fake,
            oanda_stream(fake, backoff=grow, healthy_after=healthy_after) as (stream, ticks),
        ):
            await next_item(ticks)
            fake.drop()
            await next_item(ticks, lambda _: stream.stats.connects == 2)
            assert stream.stats.last_delay == pytest.approx(0.01)
            fake.drop()
            await next_item(ticks, lambda _: stream.stats.connects == 3)
            assert stream.stats.last_delay == pytest.approx(second_delay)
            assert fake.connections.value == 3


async def test_oanda_bad_token_is_fatal_and_never_retried() -> None:
    async with FakeOanda().serving() as fake:
        async with oanda_stream(fake, token=PlainSecret("wrong")) as (stream, ticks):
            with pytest.raises(VenueHttpError) as info:
                await next_item(ticks)
        assert info.value.status == 401 and not info.value.retryable
        assert "Insufficient authorization" in info.value.message
        assert stream.stats.state is LinkState.STOPPED and fake.requests == 1
        assert "wrong" not in repr(PlainSecret("wrong"))


async def test_oanda_candles_over_rest_with_429_retried() -> None:
    async with FakeOanda().serving() as fake:
        fake.reject_rest(1)
        async with OandaRest(
            base_url=fake.url, token=PlainSecret(fake.token), backoff=FAST
        ) as rest:
            candles = await rest.candles("EUR_USD", "M15", count=3, price="BA")
            assert len(candles) == 3 and candles[-1].granularity == "M15"
            assert [c.complete for c in candles] == [True, True, False]
            assert all(c.h >= c.l for c in candles)
            assert rest.stats.rate_limited == 1 and rest.stats.retries == 1
            with pytest.raises(ValueError):
                await rest.candles("EUR_USD", "M7")
            with pytest.raises(VenueHttpError) as info:
                await rest.candles("XAU_XYZ")
            assert info.value.status == 400 and info.value.request_id


# --------------------------------------------------------------------------- Coinbase


@contextlib.asynccontextmanager
async def coinbase_stream(
    fake: FakeCoinbase, **over: object
) -> AsyncIterator[tuple[MarketDataStream, AsyncGenerator[Tick | Book, None]]]:
    kw: dict[str, object] = dict(
        url=fake.ws_url, product_ids=["BTC-USD"], silence_timeout=2.0, backoff=FAST, depth=5
    )
    kw.update(over)
    stream = MarketDataStream(**kw)  # type: ignore[arg-type]
    async with contextlib.aclosing(stream.events()) as events:
        yield stream, events


def is_tick(pred: Callable[[Tick], bool] = lambda _: True) -> Callable[[Tick | Book], bool]:
    return lambda x: isinstance(x, Tick) and pred(x)


def is_book(pred: Callable[[Book], bool] = lambda _: True) -> Callable[[Tick | Book], bool]:
    return lambda x: isinstance(x, Book) and pred(x)


async def test_coinbase_ticks_and_books_follow_the_venue() -> None:
    async with (
        FakeCoinbase(heartbeat_interval=0.05).serving() as fake,
        coinbase_stream(fake) as (stream, events),
    ):
        tick = await next_item(events, is_tick())
        assert isinstance(tick, Tick)
        assert (tick.bid, tick.ask) == (D("21931.98"), D("21933.98"))
        assert tick.venue == "coinbase" and tick.tradeable
        book = await next_item(events, is_book())
        assert isinstance(book, Book)
        assert book.bids[0].price == D("21931.98") and len(book.bids) == 5
        assert [b.price for b in book.bids] == sorted((b.price for b in book.bids), reverse=True)
        fake.set_quote("BTC-USD", "21932.50", "21932.60")
        tick = await next_item(events, is_tick(lambda t: t.bid == D("21932.50")))
        assert isinstance(tick, Tick) and tick.ask == D("21932.60")
        book = await next_item(events, is_book(lambda b: b.bids[0].price == D("21932.50")))
        assert isinstance(book, Book) and book.asks[0].price == D("21932.60")
        fake.set_level("BTC-USD", "offer", "21932.60", "0")  # "0" removes the level
        book = await next_item(events, is_book(lambda b: b.asks[0].price != D("21932.60")))
        assert isinstance(book, Book) and book.asks[0].price > D("21932.60")
        assert stream.stats.gaps == 0 and stream.stats.connected


async def test_coinbase_reconnects_after_a_drop() -> None:
    async with (
        FakeCoinbase(heartbeat_interval=0.05).serving() as fake,
        coinbase_stream(fake) as (stream, events),
    ):
        await next_item(events, is_book())
        fake.drop()
        await next_item(events, lambda _: stream.stats.connects == 2)  # the new snapshot
        assert fake.connections.value == 2
        st = stream.stats
        assert (st.connects, st.reconnects) == (2, 1) and "ConnectionClosed" in st.last_error


async def test_coinbase_malformed_frame_is_survived_and_counted() -> None:
    async with (
        FakeCoinbase(heartbeat_interval=0.05).serving() as fake,
        coinbase_stream(fake) as (stream, events),
    ):
        await next_item(events, is_tick())
        fake.send_malformed()
        fake.set_quote("BTC-USD", "21940.00", "21940.10")
        await next_item(events, is_tick(lambda t: t.bid == D("21940.00")))
        assert stream.stats.malformed == 1 and fake.connections.value == 1


async def test_coinbase_sequence_gap_triggers_a_resnapshot() -> None:
    async with (
        FakeCoinbase(heartbeat_interval=0.05).serving() as fake,
        coinbase_stream(fake) as (stream, events),
    ):
        await next_item(events, is_book())
        assert fake.snapshots.value == 1
        fake.skip_sequence()
        fake.set_quote("BTC-USD", "21950.00", "21950.10")
        book = await next_item(events, is_book(lambda b: b.bids[0].price == D("21950.00")))
        assert isinstance(book, Book) and book.asks[0].price == D("21950.10")
        st = stream.stats
        assert st.gaps == 1 and st.resnapshots == 1
        assert fake.snapshots.value == 2 and fake.connections.value == 1


async def test_coinbase_silence_is_detected_and_the_socket_replaced() -> None:
    async with (
        FakeCoinbase(heartbeat_interval=0.05).serving() as fake,
        coinbase_stream(fake, silence_timeout=0.3) as (stream, events),
    ):
        await next_item(events, is_book())
        fake.go_silent()
        await next_item(events, lambda _: stream.stats.connects == 2)
        assert fake.connections.value == 2
        assert stream.stats.silences == 1 and stream.stats.reconnects == 1


async def test_coinbase_stream_with_cdp_jwt_never_logs_it(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with FakeCoinbase(heartbeat_interval=0.05).serving() as fake:
        name, pem = fake.new_key()  # the fake now verifies the jwt of every subscribe
        creds = CdpCredentials(name, PlainSecret(pem))
        async with coinbase_stream(fake, credentials=creds) as (stream, events):
            await next_item(events, is_book())
            assert stream.stats.errors == 0 and fake.subscribes.value == 3
    assert "eyJ" not in caplog.text and "PRIVATE KEY" not in caplog.text


async def test_coinbase_429_at_connect_backs_off() -> None:
    async with FakeCoinbase(heartbeat_interval=0.05).serving() as fake:
        fake.reject_ws(2)
        async with coinbase_stream(fake) as (stream, events):
            await next_item(events, is_tick())
            st = stream.stats
            assert st.rate_limited == 2 and st.attempts == 3 and st.connects == 1
            assert st.last_delay == pytest.approx(0.02)  # FAST: 0.01, then 0.02


async def test_coinbase_fake_closes_sockets_that_do_not_subscribe() -> None:
    async with (
        FakeCoinbase(subscribe_timeout=0.2).serving() as fake,
        asyncio.timeout(WAIT),
        connect(fake.ws_url) as ws,
    ):
        with pytest.raises(ConnectionClosedOK):
            await ws.recv()
        assert ws.close_reason == "subscribe timeout"


async def test_coinbase_rest_public_429_backs_off_and_reports_limits() -> None:
    async with FakeCoinbase().serving() as fake:
        fake.reject_rest(2)
        async with CoinbaseRest(base_url=fake.url, backoff=FAST) as rest:
            products = await rest.products()
            assert [p.product_id for p in products] == ["BTC-USD", "ETH-USD", "SOL-USD"]
            assert rest.stats.rate_limited == 2 and rest.stats.retries == 2
            assert rest.rate_limit is not None and rest.rate_limit.limit == 10
            book = await rest.product_book("BTC-USD", limit=3)
            assert len(book.bids) == 3 and book.mid_market is not None
            now = int(await _server_now(fake))
            candles = await rest.candles("BTC-USD", start=now - 180, end=now)
            assert 3 <= len(candles) <= 4 and candles[0].start > candles[-1].start
            with pytest.raises(VenueHttpError) as info:
                await rest.product_book("DOGE-XYZ")
            assert info.value.status == 404 and info.value.code == "NOT_FOUND"


async def test_coinbase_rest_with_cdp_jwt() -> None:
    async with FakeCoinbase().serving() as fake:
        name, pem = fake.new_key()
        creds = CdpCredentials(name, PlainSecret(pem))
        assert "PRIVATE" not in repr(creds)
        async with CoinbaseRest(base_url=fake.url, credentials=creds, backoff=FAST) as rest:
            products = await rest.products()
            assert products[0].status == "online" and not products[0].trading_disabled
            book = await rest.product_book("ETH-USD", limit=2)
            assert book.bids[0].price < book.asks[0].price
            assert rest.rate_limit is not None and rest.rate_limit.limit == 30
        other_name, other_pem = FakeCoinbase().new_key()  # a key the fake does not know
        bad = CdpCredentials(other_name, PlainSecret(other_pem))
        async with CoinbaseRest(base_url=fake.url, credentials=bad, backoff=FAST) as rest:
            with pytest.raises(VenueHttpError) as info:
                await rest.products()
            assert info.value.status == 401 and rest.stats.retries == 0


async def _server_now(fake: FakeCoinbase) -> float:
    async with httpx.AsyncClient() as c:
        r = await c.get(f"{fake.url}/_control/stats")
    from email.utils import parsedate_to_datetime

    return parsedate_to_datetime(r.headers["date"]).timestamp()


# --------------------------------------------------------------------------- fakes as processes


@pytest.mark.parametrize("venue", ["oanda", "coinbase"])
async def test_fake_runs_as_a_process_and_takes_control_over_http(venue: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        f"tests.fakes.{venue}",
        "--port",
        "0",
        "--tick-interval",
        "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(15):
            line = (await proc.stdout.readline()).decode().strip()
        assert line.startswith("LISTENING http://127.0.0.1:")
        url = line.split()[1]
        async with httpx.AsyncClient(base_url=url) as c:
            action = "reject" if venue == "oanda" else "reject_rest"
            r = await c.post(f"/_control/{action}", content=json.dumps({"n": 1}))
            assert r.status_code == 200
            stats = (await c.get("/_control/stats")).json()
            assert stats["rejected"] == 0
    finally:
        await stop_process(proc, grace=10)
