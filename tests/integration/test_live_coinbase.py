"""Live Coinbase Advanced routing against the fake (real HTTP + WebSocket, real NATS; R9 holds)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import SecretStr

from rbot.actors.feeds.errors import CredentialError
from rbot.actors.live.coinbase_proto import key_algorithm
from rbot.bus import codec, keys
from rbot.bus.config import Settings
from rbot.bus.connection import Bus
from rbot.bus.messages import TradingState, TradingStateRecord
from tests.fakes.coinbase import FakeCoinbase
from tests.stack import EventTap, Stack, publish_tick, running_stack

PIN = "4321"
ORDER = {
    "product_id": "BTC-USD", "side": "BUY", "order_type": "MARKET", "size": 0.01,
    "stop_loss_price": 21500, "take_profit_price": 22500, "quality_score": 75,
}  # fmt: skip
ACTORS = ["heartbeat", "order_guard", "live_executor", "ttl_reaper"]


def live_settings(settings: Settings, fake: FakeCoinbase, pem: str, **over: Any) -> Settings:
    return settings.model_copy(
        update={
            "paper_mode": False, "execution_enabled": True, "live_pin": SecretStr(PIN),
            "coinbase_api_key_id": next(iter(fake.keys)), "coinbase_api_key_secret": SecretStr(pem),
            "coinbase_adv_base": fake.url, "coinbase_ws_url": fake.ws_url,
            "rbot_live_timeout_s": 0.5, **over,
        }
    )  # fmt: skip


@contextlib.asynccontextmanager
async def live(
    settings: Settings, bus: Bus, **fake_args: Any
) -> AsyncIterator[tuple[FakeCoinbase, Stack, EventTap, str]]:
    async with FakeCoinbase(heartbeat_interval=0.2, **fake_args).serving() as fake:
        _, pem = fake.new_key()
        async with live_stack(settings, bus, fake, pem) as (stack, tap, token):
            yield fake, stack, tap, token


@contextlib.asynccontextmanager
async def live_stack(
    settings: Settings, bus: Bus, fake: FakeCoinbase, pem: str, **over: Any
) -> AsyncIterator[tuple[Stack, EventTap, str]]:
    async with (
        running_stack(live_settings(settings, fake, pem, **over), only=ACTORS) as stack,
        EventTap(bus) as tap,
    ):
        token = await stack.user("live@test")
        await publish_tick(bus, "coinbase", "BTC-USD", "21931.98", "21933.98", seq=1)
        yield stack, tap, token


async def place(stack: Stack, token: str, **over: Any) -> dict[str, Any]:
    async with stack.client(token) as c:
        r = await c.post(
            "/brokers/coinbase-adv/orders", json={**ORDER, **over}, headers={"X-PIN": PIN}
        )
    body: dict[str, Any] = r.json()
    body["_status"] = r.status_code
    return body


async def test_place_fill_take_profit(settings: Settings, bus: Bus) -> None:
    async with live(settings, bus) as (fake, stack, tap, token):
        body = await place(stack, token)
        assert body["_status"] == 200 and body["mode"] == "live", body
        oid = body["order_id"]
        placed = await tap.next("oco_placed", oid)
        assert placed["payload"]["mode"] == "live"
        filled = await tap.next("order_filled", oid)  # from the user channel
        assert filled["payload"]["fill"]["price"] == "21933.98"
        assert filled["payload"]["mode"] == "live"
        sent = fake.desk.find(oid)
        assert sent is not None and fake.creates == 1
        bracket = sent["attached_order_configuration"]["trigger_bracket_gtc"]
        assert bracket == {"limit_price": "22500", "stop_trigger_price": "21500"}
        fake.set_quote("BTC-USD", "22510.00", "22512.00")
        closed = await tap.next("position_closed", oid)
        assert closed["payload"]["reason"] == "TAKE_PROFIT_ORDER"
        assert closed["payload"]["fill"]["price"] == "22500"
        async with stack.client(token) as c:
            got = (await c.get(f"/orders/{oid}")).json()
        assert got["status"] == "CLOSED" and got["mode"] == "live"


async def test_place_fill_stop_loss_gap(settings: Settings, bus: Bus) -> None:
    async with live(settings, bus) as (fake, stack, tap, token):
        oid = (await place(stack, token))["order_id"]
        await tap.next("order_filled", oid)
        fake.set_quote("BTC-USD", "21400.00", "21402.00")  # gaps through the stop
        closed = await tap.next("position_closed", oid)
        assert closed["payload"]["reason"] == "STOP_LOSS_ORDER"
        assert closed["payload"]["fill"]["price"] == "21400.00"


async def test_reject_carries_broker_reason(settings: Settings, bus: Bus) -> None:
    async with live(settings, bus, quote_balance="10") as (fake, stack, tap, token):
        oid = (await place(stack, token))["order_id"]
        rejected = await tap.next("order_rejected", oid)
        assert rejected["payload"]["reason"] == "INSUFFICIENT_FUND"
        assert rejected["payload"]["mode"] == "live"
        assert fake.creates == 0


async def test_limit_cancel_and_expiry(settings: Settings, bus: Bus) -> None:
    async with live(settings, bus) as (fake, stack, tap, token):
        limit = {"order_type": "LIMIT", "limit_price": 21800}
        a = (await place(stack, token, **limit))["order_id"]
        b = (await place(stack, token, **limit, client_order_id="second"))["order_id"]
        await tap.next("oco_placed", a)
        await tap.next("oco_placed", b)
        async with stack.client(token) as c:
            r = await c.delete(f"/orders/{a}")
            assert r.status_code == 200, r.text
        cancelled = await tap.next("order_cancelled", a)
        assert cancelled["payload"]["reason"] == "CLIENT_REQUEST"
        assert fake.desk.find(a)["status"] == "CANCELLED"  # type: ignore[index]
        await _until_sent(fake, b)
        assert fake.expire(b)  # the broker's clock reaches end_time: the user channel says so
        expired = await tap.next("order_expired", b)
        assert expired["payload"]["reason"] == "TIME_IN_FORCE_EXPIRED"
        assert fake.creates == 2


async def _until_sent(fake: FakeCoinbase, client_id: str) -> None:
    """Wait for the broker to hold the order (its change listener, not a timer)."""
    sent = asyncio.Event()

    def on_order(record: dict[str, Any]) -> None:
        if fake.desk.find(client_id) is not None:
            sent.set()

    fake.desk.listeners.append(on_order)
    on_order({})
    async with asyncio.timeout(10):
        await sent.wait()


async def test_timeout_after_accept_one_order(settings: Settings, bus: Bus) -> None:
    async with live(settings, bus) as (fake, stack, tap, token):
        fake.delay_next_create(2.0)  # our timeout is 0.5 s
        oid = (await place(stack, token))["order_id"]
        filled = await tap.next("order_filled", oid)
        assert filled["payload"]["fill"]["price"] == "21933.98"
        assert fake.creates == 1  # looked up by client_order_id, never sent twice
        assert fake.lists >= 1
        assert sum(1 for o in fake.desk.orders.values() if o["client_order_id"] == oid) == 1


async def test_rate_limited_send_backs_off(settings: Settings, bus: Bus) -> None:
    async with live(settings, bus) as (fake, stack, tap, token):
        fake.reject_rest(2, 429)
        oid = (await place(stack, token))["order_id"]
        await tap.next("order_filled", oid)
        assert fake.creates == 1 and fake.rejected >= 2


async def test_dropped_user_channel_caught_up(settings: Settings, bus: Bus) -> None:
    async with live(settings, bus) as (fake, stack, tap, token):
        oid = (await place(stack, token))["order_id"]
        await tap.next("order_filled", oid)
        # the user channel goes away; the take-profit fills while nobody listens
        fake.desk.listeners.remove(fake._on_order)
        fake.drop()
        fake.set_quote("BTC-USD", "22510.00", "22512.00")
        fake.desk.listeners.append(fake._on_order)
        closed = await tap.next("position_closed", oid)  # reconciled after the reconnect
        assert closed["payload"]["reason"] == "TAKE_PROFIT_ORDER"


async def test_halted_refuses_live_sends(settings: Settings, bus: Bus) -> None:
    async with live(settings, bus) as (fake, stack, tap, token):
        kv = await bus.kv("control")
        rec = TradingStateRecord(state=TradingState.HALTED, reason="test", by="t")
        await kv.put(keys.TRADING, codec.encode(rec))
        async with stack.client(token) as c:
            r = await c.post("/brokers/coinbase-adv/orders", json=ORDER, headers={"X-PIN": PIN})
        assert r.status_code in (403, 409), r.text
        assert r.json()["code"] == "trading_halted"
        assert fake.creates == 0


async def test_restart_mid_flight_reconciled(settings: Settings, bus: Bus) -> None:
    async with FakeCoinbase(heartbeat_interval=0.2).serving() as fake:
        _, pem = fake.new_key()
        s = settings.model_copy(update={"rbot_instance": "live-a"})
        async with live_stack(s, bus, fake, pem) as (stack, tap, token):
            oid = (await place(stack, token))["order_id"]
            await tap.next("order_filled", oid)
        fake.set_quote("BTC-USD", "22510.00", "22512.00")  # nobody runs: the TP fills
        async with live_stack(s, bus, fake, pem) as (stack, tap, token):
            closed = await tap.next("position_closed", oid)
            assert closed["payload"]["reason"] == "TAKE_PROFIT_ORDER"
            reply = await bus.nc.request(bus.subjects.live_reconcile, b"", timeout=10)
            summary = json.loads(reply.data)
            assert summary["venues"]["coinbase"]["unknown"] == 0
            assert fake.creates == 1


def test_api_algo_checked_against_the_key() -> None:
    fake = FakeCoinbase()
    _, pem = fake.new_key()
    assert key_algorithm(pem, None) == "ES256"
    assert key_algorithm(pem, "es256") == "ES256"
    with pytest.raises(CredentialError, match="disagrees with the key"):
        key_algorithm(pem, "EdDSA")
    with pytest.raises(CredentialError, match="unknown"):
        key_algorithm(pem, "HS256")


async def _halted_before_the_executor_runs(
    settings: Settings, bus: Bus, place_it: Any, guard_only: Settings
) -> str:
    """An order the guard accepted waits in EXEC; HALTED is set; then the executor starts."""
    async with running_stack(guard_only, only=["heartbeat", "order_guard"]) as stack:
        token = await stack.user("live@test")
        await publish_tick(bus, "coinbase", "BTC-USD", "21931.98", "21933.98", seq=1)
        await publish_tick(bus, "oanda", "EUR_USD", "1.09148", "1.09162", seq=1)
        body = await place_it(stack, token)
        assert body["_status"] == 200 and body["mode"] == "live", body
    kv = await bus.kv("control")
    rec = TradingStateRecord(state=TradingState.HALTED, reason="test", by="t")
    await kv.put(keys.TRADING, codec.encode(rec))
    oid: str = body["order_id"]
    return oid


async def test_halted_executor_refuses_queued_coinbase_send(settings: Settings, bus: Bus) -> None:
    async with FakeCoinbase(heartbeat_interval=0.2).serving() as fake:
        _, pem = fake.new_key()
        s = live_settings(settings, fake, pem)
        oid = await _halted_before_the_executor_runs(settings, bus, place, s)
        async with running_stack(s, only=ACTORS), EventTap(bus) as tap:
            rejected = await tap.next("order_rejected", oid)
        assert rejected["payload"]["reason"] == "trading_halted"
        assert fake.creates == 0


async def test_halted_executor_refuses_queued_oanda_send(settings: Settings, bus: Bus) -> None:
    from tests.fakes.oanda import FakeOanda
    from tests.integration import test_live_oanda as oanda

    async with FakeOanda(heartbeat_interval=0.2).serving() as fake:
        s = oanda.live_settings(settings, fake)
        oid = await _halted_before_the_executor_runs(settings, bus, oanda.place, s)
        async with running_stack(s, only=ACTORS), EventTap(bus) as tap:
            rejected = await tap.next("order_rejected", oid)
        assert rejected["payload"]["reason"] == "trading_halted"
        assert fake.creates == 0


async def test_r9_live_off_never_reaches_coinbase(settings: Settings, bus: Bus) -> None:
    """A CDP key for Coinbase's real hosts, live off: the live executor leads no venue,
    so nothing connects (the session's R9 guard fails the test on any attempt)."""
    pem = FakeCoinbase().new_key()[1]
    s = settings.model_copy(
        update={
            "paper_mode": True, "execution_enabled": False, "live_pin": SecretStr(PIN),
            "coinbase_api_key_id": "organizations/o/apiKeys/k",
            "coinbase_api_key_secret": SecretStr(pem),
        }
    )  # fmt: skip
    assert s.live_venues() == ["coinbase"]
    async with running_stack(s, only=ACTORS, api=False):
        reply = await bus.nc.request(bus.subjects.live_reconcile, b"", timeout=10)
        assert json.loads(reply.data)["venues"] == {}
