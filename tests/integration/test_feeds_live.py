"""The feed actors with live sources, each against its fake, on a real nats-server.

Settings say ``RBOT_SIM=off`` and point the venue URLs at the fake; the actor
runs exactly as under the supervisor (``Actor.main``), with short timings
(``FeedTuning``).  Every step waits on a fact: a message on the bus, a KV
watch on the status key ``feed.<venue>``, a counter in the fake.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest

from rbot.actors.backoff import Backoff
from rbot.actors.feeds.actor import CoinbaseFeed, FeedActor, OandaFeed
from rbot.actors.feeds.output import BookThrottle, FeedTuning
from rbot.bus import codec, keys
from rbot.bus.config import Settings
from rbot.bus.connection import Bus
from rbot.bus.messages import ActorStatus, Book, BookLevel, Tick
from rbot.bus.provision import LEASE_TTL_S
from rbot.bus.timing import cancel_and_wait
from tests.conftest import make_settings
from tests.fakes.coinbase import FakeCoinbase
from tests.fakes.oanda import FakeOanda
from tests.natsd import NatsServer

D = Decimal
WAIT = 5.0  # ceiling per step; steps take milliseconds
FAST_BACKOFF = Backoff(initial=0.01, factor=2.0, cap=0.05, jitter=0.0)
FAST = FeedTuning(
    silence_timeout=2.0,
    backoff=FAST_BACKOFF,
    rate_limit_backoff=FAST_BACKOFF,
    rest_backoff=FAST_BACKOFF,
    max_connects_per_s=100.0,
    status_interval=0.05,
    book_interval=0.05,
    book_keepalive=1.0,
    candle_count=5,
    fatal_retry=30.0,
)


# --------------------------------------------------------------------------- helpers


def oanda_settings(server: NatsServer, prefix: str, fake: FakeOanda, **over: object) -> Settings:
    kw: dict[str, object] = dict(
        rbot_sim="off",
        oanda_stream_url=fake.url,
        oanda_rest_url=fake.url,
        oanda_practice_account_id=fake.account_id,
        oanda_practice_token=fake.token,
        rbot_oanda_symbols="EUR_USD,USD_JPY",
    )
    kw.update(over)
    return make_settings(server.url, prefix, **kw)


def coinbase_settings(server: NatsServer, prefix: str, fake: FakeCoinbase) -> Settings:
    return make_settings(
        server.url,
        prefix,
        rbot_sim="off",
        coinbase_ws_url=fake.ws_url,
        coinbase_adv_base=fake.url,
        rbot_coinbase_symbols="BTC-USD,ETH-USD",
    )


@contextlib.asynccontextmanager
async def running(actor: FeedActor) -> AsyncIterator[asyncio.Task[None]]:
    """The actor's supervisor entry point in a task, cancelled at the end."""
    ready = asyncio.Event()
    task = asyncio.create_task(actor.main(ready.set))
    try:
        async with asyncio.timeout(WAIT):
            waiter = asyncio.create_task(ready.wait())
            await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
        if task.done():
            task.result()  # raise what stopped it
        yield task
    finally:
        await cancel_and_wait(task)


class Tap:
    """Envelopes on a core subject pattern, as a queue."""

    def __init__(self, bus: Bus, pattern: str) -> None:
        self.bus, self.pattern = bus, pattern
        self.queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        self.seen = 0
        self._more = asyncio.Event()

    async def __aenter__(self) -> Tap:
        async def cb(msg: Any) -> None:
            self.seen += 1
            self._more.set()
            self.queue.put_nowait((msg.subject, json.loads(msg.data)))

        self.sub = await self.bus.nc.subscribe(self.bus.subjects.pattern(self.pattern), cb=cb)
        await self.bus.nc.flush()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.sub.unsubscribe()

    async def reach(self, n: int) -> None:
        """Until ``n`` messages arrived in all."""
        async with asyncio.timeout(WAIT):
            while self.seen < n:
                self._more.clear()
                await self._more.wait()

    def arrived(self) -> int:
        """Messages received so far, including those not yet through the callback."""
        return self.seen + self.sub.pending_msgs

    async def next(
        self, pred: Callable[[dict[str, Any]], bool] = lambda _: True, timeout: float = WAIT
    ) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                _, env = await self.queue.get()
                if pred(env["payload"]):
                    return env


def price(bid: str) -> Callable[[dict[str, Any]], bool]:
    return lambda p: p.get("bid") == bid


async def status_until(
    bus: Bus,
    venue: str,
    pred: Callable[[dict[str, str]], bool],
    timeout: float = WAIT,
    instance: str | None = None,
) -> ActorStatus:
    """The feed's status (KV ``actors`` ``feed.<venue>``) once ``pred(info)`` holds."""
    kv = await bus.kv("actors")
    watcher = await kv.watch(keys.feed(venue))
    try:
        async with asyncio.timeout(timeout):
            async for entry in watcher:
                if entry is None or not entry.value:
                    continue
                status = codec.decode(entry.value, ActorStatus)
                if instance not in (None, status.instance):
                    continue
                if pred(status.info or {}):
                    return status
    finally:
        await watcher.stop()  # type: ignore[no-untyped-call]
    raise AssertionError("watch ended")


async def kv_tick_until(bus: Bus, key: str, pred: Callable[[Tick], bool]) -> Tick:
    kv = await bus.kv("prices")
    watcher = await kv.watch(key)
    try:
        async with asyncio.timeout(WAIT):
            async for entry in watcher:
                if entry is not None and entry.value:
                    tick = codec.decode(entry.value, Tick)
                    if pred(tick):
                        return tick
    finally:
        await watcher.stop()  # type: ignore[no-untyped-call]
    raise AssertionError("watch ended")


# --------------------------------------------------------------------------- OANDA


async def test_oanda_feed_publishes_ticks_prices_candles_and_status(
    nats_server: NatsServer, prefix: str, bus: Bus
) -> None:
    async with FakeOanda(heartbeat_interval=0.05).serving() as fake:
        settings = oanda_settings(nats_server, prefix, fake)
        async with (
            Tap(bus, "md.tick.oanda.*") as ticks,
            Tap(bus, "md.candle.oanda.>") as candles,
            running(OandaFeed(settings, nats_server.url, "feed-1", tuning=FAST)),
        ):
            env = await ticks.next(lambda p: p["symbol"] == "EUR_USD")
            assert env["type"] == "tick" and env["source"] == "oanda"
            assert env["payload"]["bid"] == "1.09148" and env["payload"]["tradeable"] is True
            fake.set_price("EUR_USD", "1.10001", "1.10015")
            await ticks.next(price("1.10001"))
            kv_tick = await kv_tick_until(bus, "oanda.EUR_USD", lambda t: t.bid == D("1.10001"))
            assert kv_tick.ask == D("1.10015") and kv_tick.source == "oanda"

            # no liquidity on a side: published and stored as it is, flagged untradeable
            fake.set_price("USD_JPY", "150.100", "150.120", empty="bids", tradeable=False)
            env = await ticks.next(lambda p: p["symbol"] == "USD_JPY" and p["bid"] is None)
            assert env["payload"]["ask"] == "150.120" and env["payload"]["tradeable"] is False
            await kv_tick_until(bus, "oanda.USD_JPY", lambda t: not t.tradeable)

            candle = await candles.next()
            assert candle["type"] == "candle" and candle["payload"]["granularity"] == "M1"
            status = await status_until(
                bus, "oanda", lambda i: i["connected"] == "true" and int(i["candles"]) >= 10
            )
            info = status.info or {}
            assert status.actor == "oanda_feed" and status.instance == "feed-1"
            assert status.state == "streaming" and info["source"] == "oanda"
            assert info["symbols"] == "EUR_USD,USD_JPY" and int(info["ticks"]) >= 4
            assert float(info["last_message_age"]) < WAIT
            assert fake.token not in json.dumps(info)


async def test_oanda_feed_survives_drop_malformed_silence_and_counts_them(
    nats_server: NatsServer, prefix: str, bus: Bus
) -> None:
    tuning = replace(FAST, silence_timeout=0.3)
    async with FakeOanda(heartbeat_interval=0.05).serving() as fake:
        settings = oanda_settings(nats_server, prefix, fake)
        async with (
            Tap(bus, "md.tick.oanda.*") as ticks,
            running(OandaFeed(settings, nats_server.url, "feed-1", tuning=tuning)),
        ):
            await ticks.next()
            # a malformed line: skipped and counted, same connection
            fake.send_malformed()
            fake.set_price("EUR_USD", "1.20000", "1.20014")
            await ticks.next(price("1.20000"))
            await status_until(bus, "oanda", lambda i: i["malformed"] == "1")
            assert fake.connections.value == 1

            # a dropped connection: reconnected, ticks resume
            fake.drop()
            await fake.connections.reach(2)
            fake.set_price("EUR_USD", "1.20100", "1.20114")
            await ticks.next(price("1.20100"))
            await status_until(bus, "oanda", lambda i: i["reconnects"] == "1")

            # silence (no heartbeat either): detected, replaced, ticks resume
            fake.go_silent()
            await fake.connections.reach(3)
            fake.set_price("EUR_USD", "1.20200", "1.20214")
            await ticks.next(price("1.20200"))
            status = await status_until(
                bus, "oanda", lambda i: (i["silences"], i["reconnects"]) == ("1", "2")
            )
            info = status.info or {}
            assert info["malformed"] == "1" and info["errors"] == "2"


async def test_oanda_feed_backs_off_on_429(nats_server: NatsServer, prefix: str, bus: Bus) -> None:
    slow = Backoff(initial=0.2, factor=1.0, cap=0.2, jitter=0.0)
    async with FakeOanda(heartbeat_interval=0.05).serving() as fake:
        fake.reject_next(2)
        settings = oanda_settings(nats_server, prefix, fake)
        feed = OandaFeed(
            settings, nats_server.url, "feed-1", tuning=replace(FAST, rate_limit_backoff=slow)
        )
        async with Tap(bus, "md.tick.oanda.*") as ticks, running(feed):
            await ticks.next()
            status = await status_until(bus, "oanda", lambda i: i["connected"] == "true")
            info = status.info or {}
            assert info["rate_limited"] == "2" and info["connects"] == "1"
            t = fake.connect_times
            assert len(t) == 3 and t[1] - t[0] >= 0.19 and t[2] - t[1] >= 0.19


async def test_oanda_feed_with_a_bad_token_stops_without_crashing(
    nats_server: NatsServer, prefix: str, bus: Bus, caplog: pytest.LogCaptureFixture
) -> None:
    async with FakeOanda(heartbeat_interval=0.05).serving() as fake:
        settings = oanda_settings(nats_server, prefix, fake, oanda_practice_token="wrong-token-xyz")
        async with running(OandaFeed(settings, nats_server.url, "feed-1", tuning=FAST)) as task:
            status = await status_until(bus, "oanda", lambda i: i["state"] == "stopped")
            info = status.info or {}
            assert "401" in info["last_error"] and info["connected"] == "false"
            assert info["attempts"] == "1" and not task.done()  # not retried, not crashed
    assert "wrong-token-xyz" not in caplog.text


@pytest.mark.parametrize(
    ("feed_cls", "over", "needs"),
    [
        (OandaFeed, {}, "OANDA_PRACTICE_ACCOUNT_ID and OANDA_PRACTICE_TOKEN"),
        (OandaFeed, {"oanda_env": "live"}, "OANDA_LIVE_ACCOUNT_ID and OANDA_LIVE_TOKEN"),
        (CoinbaseFeed, {"coinbase_api_key_id": "organizations/o/apiKeys/k"}, "go together"),
    ],
)
async def test_live_without_credentials_says_so_and_connects_nowhere(
    nats_server: NatsServer,
    prefix: str,
    bus: Bus,
    feed_cls: type[FeedActor],
    over: dict[str, str],
    needs: str,
) -> None:
    settings = make_settings(nats_server.url, prefix, rbot_sim="off", **over)
    async with running(feed_cls(settings, nats_server.url, "feed-1", tuning=FAST)) as task:
        status = await status_until(bus, feed_cls.venue, lambda i: i["state"] == "stopped")
        info = status.info or {}
        assert needs in info["last_error"] and info["attempts"] == "0"
        assert not task.done()


async def test_leader_failover_without_double_publishing(
    nats_server: NatsServer, prefix: str, bus: Bus
) -> None:
    async with FakeOanda(heartbeat_interval=0.05).serving() as fake:
        settings = oanda_settings(nats_server, prefix, fake)
        a = OandaFeed(settings, nats_server.url, "feed-a", tuning=FAST)
        b = OandaFeed(settings, nats_server.url, "feed-b", tuning=FAST)
        polls: asyncio.Queue[str | None] = asyncio.Queue()
        standby = b.on_standby

        def spy(holder: str | None) -> None:
            standby(holder)
            polls.put_nowait(holder)

        b.on_standby = spy  # type: ignore[method-assign]
        async with Tap(bus, "md.tick.oanda.*") as ticks:
            async with running(a) as task_a:
                await ticks.next()  # a leads
                async with running(b):
                    # b finds the lease taken at once, and again one lease period later
                    async with asyncio.timeout(LEASE_TTL_S):
                        assert await polls.get() == "feed-a"
                        fake.set_price("EUR_USD", "1.10000", "1.10014")
                        await ticks.next(price("1.10000"))
                        assert await polls.get() == "feed-a"
                    fake.set_price("EUR_USD", "1.10001", "1.10015")
                    await ticks.next(price("1.10001"))
                    # both ran: only the leader streamed and published
                    assert b.output is None and b.standby_polls >= 2
                    assert fake.connections.value == 1 and a.output is not None

                    # the leader dies; its lease is released on the way out
                    await cancel_and_wait(task_a)
                    killed = time.monotonic()
                    a_ticks = a.output.ticks
                    await ticks.next(lambda _: b.output is not None, timeout=LEASE_TTL_S)
                    takeover = time.monotonic() - killed
                    fake.set_price("EUR_USD", "1.10300", "1.10314")
                    await ticks.next(price("1.10300"))
                    status = await status_until(
                        bus, "oanda", lambda i: i["ticks"] != "0", instance="feed-b"
                    )
                    assert status.state == "streaming"
                assert b.output is not None
                b_ticks = b.output.ticks
            # every tick was published once: what arrived is exactly what the two published
            await ticks.reach(a_ticks + b_ticks)
            await bus.nc.flush()
            assert ticks.arrived() == a_ticks + b_ticks
            assert fake.connections.value == 2  # one stream per leader, never two at once
        print(f"\nfailover: the standby published {takeover:.2f}s after the leader died "
              f"(lease TTL {LEASE_TTL_S:g}s); ticks a={a_ticks} b={b_ticks}")  # fmt: skip
        assert takeover < LEASE_TTL_S


# --------------------------------------------------------------------------- Coinbase


async def test_coinbase_feed_publishes_ticks_throttled_books_candles_and_status(
    nats_server: NatsServer, prefix: str, bus: Bus
) -> None:
    tuning = replace(FAST, book_interval=0.2, book_keepalive=30.0)
    async with FakeCoinbase(heartbeat_interval=0.05).serving() as fake:
        settings = coinbase_settings(nats_server, prefix, fake)
        async with (
            Tap(bus, "md.tick.coinbase.*") as ticks,
            Tap(bus, "md.book.coinbase.BTC-USD") as books,
            Tap(bus, "md.candle.coinbase.>") as candles,
            running(CoinbaseFeed(settings, nats_server.url, "feed-1", tuning=tuning)),
        ):
            env = await ticks.next(lambda p: p["symbol"] == "BTC-USD")
            assert (env["payload"]["bid"], env["payload"]["ask"]) == ("21931.98", "21933.98")
            await kv_tick_until(bus, "coinbase.BTC-USD", lambda t: t.bid == D("21931.98"))
            first = await books.next()
            assert first["type"] == "book" and first["payload"]["bids"][0] == ["21931.98", "0.5"]

            # a burst of quotes: at most one book per interval, and the newest one goes out
            for i in range(20):
                fake.set_quote("BTC-USD", f"{21940 + i}.00", f"{21940 + i}.10")
            final = await books.next(lambda p: p["bids"][0][0] == "21959.00")
            assert final["payload"]["asks"][0][0] == "21959.10"
            assert books.seen <= 3  # the snapshot's, at most one at once, then the newest

            candle = await candles.next()
            payload = candle["payload"]
            assert payload["granularity"] == "M1" and payload["volume_base"] is not None
            status = await status_until(
                bus, "coinbase", lambda i: i.get("product.BTC-USD") == "online"
            )
            info = status.info or {}
            assert info["source"] == "coinbase" and info["connected"] == "true"
            assert int(info["books"]) >= books.seen and int(info["candles"]) >= 10


async def test_coinbase_feed_resnapshots_on_a_gap_and_survives_faults(
    nats_server: NatsServer, prefix: str, bus: Bus
) -> None:
    tuning = replace(FAST, silence_timeout=0.3)
    async with FakeCoinbase(heartbeat_interval=0.05).serving() as fake:
        settings = coinbase_settings(nats_server, prefix, fake)
        async with (
            Tap(bus, "md.book.coinbase.BTC-USD") as books,
            running(CoinbaseFeed(settings, nats_server.url, "feed-1", tuning=tuning)),
        ):
            await books.next()
            assert fake.snapshots.value == 2  # BTC-USD and ETH-USD

            fake.skip_sequence()
            fake.set_quote("BTC-USD", "21950.00", "21950.10")
            await books.next(lambda p: p["bids"][0][0] == "21950.00")
            await status_until(
                bus, "coinbase", lambda i: (i["gaps"], i["resnapshots"]) == ("1", "1")
            )
            assert fake.snapshots.value == 4 and fake.connections.value == 1

            fake.send_malformed()
            fake.set_quote("BTC-USD", "21951.00", "21951.10")
            await books.next(lambda p: p["bids"][0][0] == "21951.00")
            await status_until(bus, "coinbase", lambda i: i["malformed"] == "1")

            fake.drop()
            await fake.connections.reach(2)
            fake.go_silent()
            await fake.connections.reach(3)
            fake.set_quote("BTC-USD", "21952.00", "21952.10")
            await books.next(lambda p: p["bids"][0][0] == "21952.00")
            await status_until(
                bus, "coinbase", lambda i: (i["silences"], i["reconnects"]) == ("1", "2")
            )


async def test_coinbase_feed_backs_off_on_429(
    nats_server: NatsServer, prefix: str, bus: Bus
) -> None:
    async with FakeCoinbase(heartbeat_interval=0.05).serving() as fake:
        fake.reject_ws(2)
        settings = coinbase_settings(nats_server, prefix, fake)
        async with (
            Tap(bus, "md.tick.coinbase.*") as ticks,
            running(CoinbaseFeed(settings, nats_server.url, "feed-1", tuning=FAST)),
        ):
            await ticks.next()
            status = await status_until(bus, "coinbase", lambda i: i["connected"] == "true")
            info = status.info or {}
            assert info["rate_limited"] == "2" and info["connects"] == "1"


# --------------------------------------------------------------------------- sim


@pytest.mark.parametrize("feed_cls", [OandaFeed, CoinbaseFeed])
async def test_without_credentials_the_sim_runs(
    nats_server: NatsServer,
    prefix: str,
    bus: Bus,
    feed_cls: type[FeedActor],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for var in ("RBOT_SIM", "OANDA_PRACTICE_TOKEN", "OANDA_LIVE_TOKEN", "COINBASE_API_KEY_ID",
                "COINBASE_WS_URL"):  # fmt: skip
        monkeypatch.delenv(var, raising=False)
    settings = make_settings(nats_server.url, prefix, rbot_sim="auto")
    venue = feed_cls.venue
    async with (
        Tap(bus, f"md.tick.{venue}.*") as ticks,
        running(feed_cls(settings, nats_server.url, "feed-1", tuning=FAST)),
    ):
        env = await ticks.next()
        assert env["payload"]["source"] == "sim"
        status = await status_until(bus, venue, lambda i: i["ticks"] != "0")
        assert (status.info or {})["source"] == "sim" and status.state == "streaming"


# --------------------------------------------------------------------------- pure parts


def test_book_throttle_sends_at_most_one_per_interval_and_the_newest_waiting() -> None:
    def book(bid: str) -> Book:
        level = [BookLevel(D(bid), D(1))]
        return Book(venue="coinbase", symbol="BTC-USD", bids=level, asks=level, time="")

    th = BookThrottle(interval=0.25, keepalive=5.0)
    assert th.offer(book("1"), now=0.0)
    assert not th.offer(book("2"), now=0.1) and not th.offer(book("3"), now=0.2)
    assert th.due(0.2) == []
    assert [b.bids[0].price for b in th.due(0.3)] == [D("3")]  # "2" was superseded
    assert th.due(0.6) == []
    assert th.offer(book("4"), now=0.6)
    assert [b.bids[0].price for b in th.due(5.7)] == [D("4")]  # keepalive repeat
    assert th.due(5.8) == []
