"""Market-data routes and /metrics over real HTTP, with the real feed actors
against the fakes (and with the sim), via ``running_stack``.

The API answers from what it holds (KV, its candle book, its market cache),
never by asking a broker; the facts each step waits on are messages on the
bus or KV entries.  An answer that depends on the API having taken a message
off the bus is read again until it shows (bounded, no sleeps): the test sees
the message on its own connection a moment before the API does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from typing import Any

import httpx
import pytest

from rbot.bus import codec
from rbot.bus.connection import Bus
from rbot.bus.messages import Candle
from tests.conftest import make_settings
from tests.fakes.coinbase import FakeCoinbase
from tests.fakes.oanda import FakeOanda
from tests.integration.test_feeds_live import Tap, kv_tick_until, status_until
from tests.natsd import NatsServer
from tests.stack import Stack, running_stack

D = Decimal


async def eventually(
    get: Callable[[], Awaitable[httpx.Response]],
    ok: Callable[[httpx.Response], bool],
    attempts: int = 500,
) -> httpx.Response:
    """Ask again until ``ok``: each try is a full HTTP round trip, no sleep."""
    r = await get()
    for _ in range(attempts):
        if ok(r):
            return r
        r = await get()
    raise AssertionError(f"never got there; last answer {r.status_code} {r.text[:300]}")


def metric(body: str, name: str, **labels: str) -> float | None:
    """The value of one sample in a Prometheus text body."""
    pairs = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))  # sorted, as written
    want = name + ("{" + pairs + "}" if labels else "")
    for line in body.splitlines():
        if line.startswith(want + " "):
            return float(line.split()[-1])
    return None


@pytest.fixture
async def live(
    nats_server: NatsServer, prefix: str, bus: Bus
) -> AsyncIterator[tuple[Stack, FakeOanda, FakeCoinbase]]:
    async with (
        FakeOanda(heartbeat_interval=0.2).serving() as oanda,
        FakeCoinbase(heartbeat_interval=0.2).serving() as coinbase,
    ):
        settings = make_settings(
            nats_server.url,
            prefix,
            rbot_sim="off",
            oanda_stream_url=oanda.url,
            oanda_rest_url=oanda.url,
            oanda_practice_account_id=oanda.account_id,
            oanda_practice_token=oanda.token,
            coinbase_ws_url=coinbase.ws_url,
            coinbase_adv_base=coinbase.url,
            rbot_oanda_symbols="EUR_USD,USD_JPY",
            rbot_coinbase_symbols="BTC-USD,ETH-USD",
        )
        only = ["heartbeat", "oanda_feed", "coinbase_feed"]
        async with running_stack(settings, only=only) as stack:
            yield stack, oanda, coinbase


async def test_market_routes_serve_what_the_live_feeds_publish(
    live: tuple[Stack, FakeOanda, FakeCoinbase], bus: Bus
) -> None:
    stack, oanda, coinbase = live
    token = await stack.user("viewer@test")
    async with stack.client() as anon:
        r = await anon.get("/brokers/coinbase/status")
        assert r.status_code == 401
        r = await anon.get("/brokers/oanda/candles", params={"instrument": "EUR_USD"})
        assert r.status_code == 401

    async with stack.client(token) as c:
        # prices: OANDA's own shape, from KV
        await kv_tick_until(bus, "oanda.EUR_USD", lambda t: t.source == "oanda")
        r = await c.get("/brokers/oanda/prices", params={"instrument": "EUR_USD"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["bids"][0]["price"] == "1.09148" and body["source"] == "oanda"
        # the best bucket's liquidity, as the venue sent it (the fake: 1,000,000)
        assert body["bids"][0]["liquidity"] == body["asks"][0]["liquidity"] == 1000000

        # candles: validated, 404 for an unknown instrument, OANDA's shape
        r = await c.get(
            "/brokers/oanda/candles", params={"instrument": "EUR_USD", "granularity": "M7"}
        )
        assert (r.status_code, r.json()["code"]) == (422, "invalid_granularity")
        for count in (0, 5001):
            r = await c.get(
                "/brokers/oanda/candles", params={"instrument": "EUR_USD", "count": count}
            )
            assert r.status_code == 422
        r = await c.get("/brokers/oanda/candles", params={"instrument": "XAU_XYZ"})
        assert (r.status_code, r.json()["code"]) == (404, "unknown_instrument")
        r = await c.get(
            "/brokers/oanda/candles", params={"instrument": "EUR_USD", "granularity": "D"}
        )
        assert r.status_code == 200 and r.json() == {
            "instrument": "EUR_USD", "granularity": "D", "candles": [],
        }  # fmt: skip

        async with Tap(bus, "md.tick.oanda.EUR_USD") as ticks:
            oanda.set_price("EUR_USD", "1.10000", "1.10020")
            await ticks.next(lambda p: p["bid"] == "1.10000")
        params = {"instrument": "EUR_USD", "granularity": "S5", "count": 3}
        r = await eventually(
            lambda: c.get("/brokers/oanda/candles", params=params),
            lambda r: (
                bool(r.json()["candles"]) and r.json()["candles"][-1]["mid"]["c"] == "1.10010"
            ),
        )
        last = r.json()["candles"][-1]
        assert last["complete"] is False and last["volume"] >= 1
        assert last["time"].endswith("Z") and len(last["time"].rsplit(".", 1)[1]) == 10  # ns + Z

        # a broker candle published by a feed is served in OANDA's shape
        daily = Candle(
            venue="oanda", symbol="EUR_USD", granularity="D", time="2024-01-02T00:00:00.000000Z",
            o=D("1.1"), h=D("1.2"), l=D("1.0"), c=D("1.15"), volume=481, complete=True,
        )  # fmt: skip
        await bus.nc.publish(
            bus.subjects.candle("oanda", "EUR_USD", "D"),
            codec.encode_envelope("candle", "oanda", daily),
        )
        r = await eventually(
            lambda: c.get(
                "/brokers/oanda/candles", params={"instrument": "EUR_USD", "granularity": "D"}
            ),
            lambda r: bool(r.json()["candles"]),
        )
        assert r.json()["candles"] == [
            {"complete": True, "volume": 481, "time": "2024-01-02T00:00:00.000000000Z",
             "mid": {"o": "1.1", "h": "1.2", "l": "1.0", "c": "1.15"}},
        ]  # fmt: skip

        # coinbase status: products with their venue status and last price
        await status_until(bus, "coinbase", lambda i: "product.ETH-USD" in i)
        await kv_tick_until(bus, "coinbase.ETH-USD", lambda t: t.source == "coinbase")
        r = await c.get("/brokers/coinbase/status")
        assert r.status_code == 200, r.text
        status = r.json()
        assert status["source"] == "coinbase" and status["feed"]["connected"] == "true"
        products = {p["product_id"]: p for p in status["products"]}
        assert set(products) == {"BTC-USD", "ETH-USD"}
        assert products["BTC-USD"]["status"] == "online" and products["BTC-USD"]["fresh"]
        assert products["BTC-USD"]["price"] == "21932.98"  # mid of 21931.98 / 21933.98

        # books: the last one the feed published
        r = await c.get("/brokers/coinbase/books", params={"product_id": "DOGE-USD"})
        assert (r.status_code, r.json()["code"]) == (404, "no_book")
        async with Tap(bus, "md.book.coinbase.BTC-USD") as books:
            coinbase.set_quote("BTC-USD", "21932.50", "21933.50")  # inside the spread
            await books.next(lambda p: p["bids"][0][0] == "21932.50")
        params = {"product_id": "BTC-USD", "limit": 2}
        r = await eventually(
            lambda: c.get("/brokers/coinbase/books", params=params),
            lambda r: (
                r.status_code == 200 and r.json()["pricebook"]["bids"][0]["price"] == "21932.50"
            ),
        )
        book = r.json()
        assert len(book["pricebook"]["bids"]) == 2 and len(book["pricebook"]["asks"]) == 2
        assert book["pricebook"]["asks"] == [
            {"price": "21933.50", "size": "2.0"}, {"price": "21933.98", "size": "0.4"},
        ]  # fmt: skip
        assert book["mid_market"] == "21933.00" and book["spread_absolute"] == "1.00"
        assert book["spread_bps"] == "0.4559"


async def test_metrics_show_feed_faults_actor_states_and_no_secrets(
    live: tuple[Stack, FakeOanda, FakeCoinbase], bus: Bus
) -> None:
    stack, oanda, coinbase = live
    await status_until(bus, "oanda", lambda i: i["connected"] == "true")
    oanda.send_malformed()
    coinbase.skip_sequence()
    coinbase.set_quote("BTC-USD", "21945.00", "21945.10")
    await status_until(bus, "oanda", lambda i: i["malformed"] == "1")
    await status_until(bus, "coinbase", lambda i: i["resnapshots"] == "1")
    async with Tap(bus, "evt.heartbeat") as pulses:
        await pulses.next(lambda p: any(a["actor"] == "oanda_feed" for a in p["actors"]))

    async with stack.client() as anon:  # no token: /metrics is open
        r = await eventually(
            lambda: anon.get("/metrics"),
            lambda r: (
                'rbot_actor_up{actor="oanda_feed"' in r.text
                and metric(r.text, "rbot_feed_resnapshots_total", venue="coinbase") == 1.0
            ),
        )
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert metric(text, "rbot_feed_connected", venue="oanda") == 1.0
    assert metric(text, "rbot_feed_connected", venue="coinbase") == 1.0
    assert metric(text, "rbot_feed_malformed_total", venue="oanda") == 1.0
    assert metric(text, "rbot_feed_gaps_total", venue="coinbase") == 1.0
    assert metric(text, "rbot_feed_reconnects_total", venue="oanda") == 0.0
    age = metric(text, "rbot_feed_last_message_age_seconds", venue="oanda")
    assert age is not None and age < 5
    info = [ln for ln in text.splitlines() if ln.startswith("rbot_feed_info{")]
    assert len(info) == 2 and all(ln.endswith(" 1.0") for ln in info)
    assert any('source="oanda",state="streaming",venue="oanda"' in ln for ln in info)
    assert metric(text, "rbot_trading_state", state="ACTIVE") == 1.0
    assert metric(text, "rbot_orders", status="OPEN") == 0.0
    assert metric(text, "rbot_price_tradeable", venue="oanda", symbol="EUR_USD") == 1.0
    assert metric(text, "rbot_nats_connected") == 1.0
    assert "rbot_metrics_scrapes_total" in text
    assert oanda.token not in text and oanda.account_id not in text
    print(f"\n/metrics: {len(text.splitlines())} lines, {len(text)} bytes")


async def test_sim_mode_routes(nats_server: NatsServer, prefix: str, bus: Bus) -> None:
    settings = make_settings(nats_server.url, prefix)  # RBOT_SIM=on
    async with running_stack(settings, only=["oanda_feed", "coinbase_feed"]) as stack:
        token = await stack.user("viewer@test")
        await kv_tick_until(bus, "coinbase.SOL-USD", lambda t: t.source == "sim")
        async with stack.client(token) as c:
            r = await c.get("/brokers/coinbase/status")
            status: dict[str, Any] = r.json()
            assert status["source"] == "sim" and status["feed"]["source"] == "sim"
            assert [p["product_id"] for p in status["products"]] == [
                "BTC-USD",
                "ETH-USD",
                "SOL-USD",
            ]
            assert all(p["status"] == "online" and p["price"] for p in status["products"])
            # the sim publishes level-2 books through the feed's book path
            async with Tap(bus, "md.book.coinbase.BTC-USD") as books:
                await books.next()
            params = {"product_id": "BTC-USD", "limit": "25"}
            r = await eventually(
                lambda: c.get("/brokers/coinbase/books", params=params),
                lambda r: r.status_code == 200,
            )
            book = r.json()
            bids, asks = book["pricebook"]["bids"], book["pricebook"]["asks"]
            assert len(bids) == len(asks) == 25
            assert D(bids[0]["price"]) < D(asks[0]["price"]) and D(book["spread_bps"]) > 0
            assert all(D(lv["size"]) > 0 for lv in bids + asks)
            r = await c.get("/brokers/coinbase/status")
            assert next(p for p in r.json()["products"] if p["product_id"] == "BTC-USD")["book"]
            # the sim says nothing about liquidity, so the route does not invent any
            await kv_tick_until(bus, "oanda.EUR_USD", lambda t: t.source == "sim")
            r = await c.get("/brokers/oanda/prices", params={"instrument": "EUR_USD"})
            quote = r.json()
            assert quote["bids"] and all(
                "liquidity" not in b for b in quote["bids"] + quote["asks"]
            )
            params = {"instrument": "EUR_USD", "granularity": "S5", "count": 2}
            r = await eventually(
                lambda: c.get("/brokers/oanda/candles", params=params),
                lambda r: bool(r.json()["candles"]),
            )
            assert set(r.json()["candles"][0]["mid"]) == {"o", "h", "l", "c"}
            r = await c.get("/metrics")
            assert 'source="sim"' in r.text


async def test_metrics_gathering_never_needs_a_feed(nats_server: NatsServer, prefix: str) -> None:
    """No feed, no pulse, no price: /metrics still answers (and so do the market routes)."""
    settings = make_settings(nats_server.url, prefix)
    async with running_stack(settings, only=["heartbeat"]) as stack:
        token = await stack.user("viewer@test")
        async with stack.client(token) as c:
            r = await c.get("/metrics")
            assert r.status_code == 200 and "rbot_feed_connected{" not in r.text
            r = await c.get("/brokers/coinbase/status")
            assert r.status_code == 200 and r.json()["feed"] is None
            assert {p["status"] for p in r.json()["products"]} == {"no_data"}
            r = await c.get("/brokers/oanda/candles", params={"instrument": "EUR_USD"})
            assert r.status_code == 200 and r.json()["candles"] == []
