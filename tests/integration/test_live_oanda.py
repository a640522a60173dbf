"""Live OANDA routing against the fake v20 server (real HTTP, real NATS; R9 holds)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from rbot.bus import codec, keys
from rbot.bus.config import Settings
from rbot.bus.connection import Bus
from rbot.bus.messages import TradingState, TradingStateRecord
from tests.fakes.oanda import FakeOanda
from tests.stack import EventTap, Stack, publish_tick, running_stack

PIN = "4321"
ORDER = {
    "instrument": "EUR_USD", "side": "BUY", "units": 100, "entry_price": 1.0915,
    "stop_loss_price": 1.0850, "take_profit_price": 1.0950, "quality_score": 75,
}  # fmt: skip
ACTORS = ["heartbeat", "order_guard", "live_executor", "ttl_reaper"]


def live_settings(settings: Settings, fake: FakeOanda, **over: Any) -> Settings:
    return settings.model_copy(
        update={
            "paper_mode": False, "execution_enabled": True, "live_pin": _secret(PIN),
            "oanda_practice_account_id": fake.account_id,
            "oanda_practice_token": _secret(fake.token), "oanda_rest_url": fake.url,
            "rbot_live_timeout_s": 0.5, **over,
        }
    )  # fmt: skip


def _secret(value: str) -> Any:
    from pydantic import SecretStr

    return SecretStr(value)


@contextlib.asynccontextmanager
async def live(
    settings: Settings, bus: Bus, **fake_args: Any
) -> AsyncIterator[tuple[FakeOanda, Stack, EventTap, str]]:
    """A fake OANDA and the stack routing live orders to it."""
    async with (
        FakeOanda(heartbeat_interval=0.2, **fake_args).serving() as fake,
        live_stack(settings, bus, fake) as (stack, tap, token),
    ):
        yield fake, stack, tap, token


@contextlib.asynccontextmanager
async def live_stack(
    settings: Settings, bus: Bus, fake: FakeOanda, **over: Any
) -> AsyncIterator[tuple[Stack, EventTap, str]]:
    async with (
        running_stack(live_settings(settings, fake, **over), only=ACTORS) as stack,
        EventTap(bus) as tap,
    ):
        token = await stack.user("live@test")
        await publish_tick(bus, "oanda", "EUR_USD", "1.09148", "1.09162", seq=1)
        yield stack, tap, token


async def place(stack: Stack, token: str, **over: Any) -> dict[str, Any]:
    async with stack.client(token) as c:
        r = await c.post("/brokers/oanda/orders", json={**ORDER, **over}, headers={"X-PIN": PIN})
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
        filled = await tap.next("order_filled", oid)
        assert filled["payload"]["fill"]["price"] == "1.09162"
        assert filled["payload"]["mode"] == "live"
        assert fake.creates == 1
        fake.set_price("EUR_USD", "1.09510", "1.09524")
        closed = await tap.next("position_closed", oid)
        assert closed["payload"]["reason"] == "TAKE_PROFIT_ORDER"
        assert closed["payload"]["fill"]["price"] == "1.09500"
        async with stack.client(token) as c:
            got = (await c.get(f"/orders/{oid}")).json()
        assert got["status"] == "CLOSED" and got["mode"] == "live"
        await _audit_kept_the_create(bus, oid, fake.token)


async def _audit_kept_the_create(bus: Bus, oid: str, token: str) -> None:
    """The durable AUDIT stream holds the create's send and answer, and no secret."""
    stream = bus.subjects.stream("AUDIT")
    n = (await bus.js.stream_info(stream)).state.messages
    records = [
        json.loads((await bus.js.get_msg(stream, seq)).data or b"{}") for seq in range(1, n + 1)
    ]
    assert token not in json.dumps(records)
    kinds = [(r["payload"]["kind"], r["payload"]["method"]) for r in records]
    assert ("send", "POST") in kinds and ("answer", "POST") in kinds, kinds
    sent = next(r["payload"] for r in records if r["payload"]["kind"] == "send")
    assert oid in json.dumps(sent["body"])  # clientExtensions.id names our order


async def test_place_fill_stop_loss_gap(settings: Settings, bus: Bus) -> None:
    async with live(settings, bus) as (fake, stack, tap, token):
        oid = (await place(stack, token))["order_id"]
        await tap.next("order_filled", oid)
        fake.set_price("EUR_USD", "1.08400", "1.08414")  # gaps through the stop
        closed = await tap.next("position_closed", oid)
        assert closed["payload"]["reason"] == "STOP_LOSS_ORDER"
        assert closed["payload"]["fill"]["price"] == "1.08400"


async def test_reject_carries_broker_reason(settings: Settings, bus: Bus) -> None:
    async with live(settings, bus, balance="1.0000") as (fake, stack, tap, token):
        oid = (await place(stack, token))["order_id"]
        rejected = await tap.next("order_rejected", oid)
        assert rejected["payload"]["reason"] == "INSUFFICIENT_MARGIN"
        assert rejected["payload"]["mode"] == "live"


async def test_limit_cancel_and_gtd_expiry(settings: Settings, bus: Bus) -> None:
    async with live(settings, bus) as (fake, stack, tap, token):
        limit = {"order_type": "LIMIT", "entry_price": 1.0900}
        a = (await place(stack, token, **limit))["order_id"]
        b = (await place(stack, token, **limit, client_order_id="second"))["order_id"]
        await tap.next("oco_placed", a)
        await tap.next("oco_placed", b)
        async with stack.client(token) as c:
            r = await c.delete(f"/orders/{a}")
            assert r.status_code == 200, r.text
        cancelled = await tap.next("order_cancelled", a)
        assert cancelled["payload"]["reason"] == "CLIENT_REQUEST"
        # the broker's clock reaches b's gtdTime: the stream tells us
        await _until_sent(fake, b)
        assert fake.account.expire(b)
        expired = await tap.next("order_expired", b)
        assert expired["payload"]["reason"] == "TIME_IN_FORCE_EXPIRED"
        assert fake.creates == 2


async def _until_sent(fake: FakeOanda, client_id: str) -> None:
    """Wait for the broker to record the order's create (a transaction, not a timer)."""
    sent = asyncio.Event()

    def on_txn(txn: dict[str, Any]) -> None:
        if fake.account._find_order("@" + client_id) is not None:
            sent.set()

    fake.account.listeners.append(on_txn)
    on_txn({})
    async with asyncio.timeout(10):
        await sent.wait()


async def test_timeout_after_accept_one_order(settings: Settings, bus: Bus) -> None:
    async with live(settings, bus) as (fake, stack, tap, token):
        fake.delay_next_create(2.0)  # our timeout is 0.5 s
        oid = (await place(stack, token))["order_id"]
        filled = await tap.next("order_filled", oid)
        assert filled["payload"]["fill"]["price"] == "1.09162"
        assert fake.creates == 1  # looked up by @id, never sent twice
        assert len(fake.account.trades) == 1


async def test_rate_limited_send_backs_off(settings: Settings, bus: Bus) -> None:
    async with live(settings, bus) as (fake, stack, tap, token):
        fake.reject_rest(2, 429)
        oid = (await place(stack, token))["order_id"]
        await tap.next("order_filled", oid)
        assert fake.creates == 1 and fake.rejected == 2


async def test_dropped_stream_caught_up_by_changes(settings: Settings, bus: Bus) -> None:
    async with live(settings, bus) as (fake, stack, tap, token):
        oid = (await place(stack, token))["order_id"]
        await tap.next("order_filled", oid)
        kv = await bus.kv("orders")
        await _cursor_at_least(kv, 1)
        # the stream goes away; the TP fills while nobody listens
        fake.drop_transactions()
        fake._streams.clear()
        fake.account.listeners.clear()
        fake.set_price("EUR_USD", "1.09510", "1.09524")
        fake.account.listeners.append(fake._on_txn)
        closed = await tap.next("position_closed", oid)
        assert closed["payload"]["reason"] == "TAKE_PROFIT_ORDER"


async def _cursor_at_least(kv: Any, n: int) -> None:
    """Wait (a KV watch) until the executor applied transaction ``n`` from the stream."""
    watcher = await kv.watch(keys.live_cursor("oanda"))
    try:
        async with asyncio.timeout(10):
            async for entry in watcher:
                if entry is not None and entry.value and int(entry.value) >= n:
                    return
    finally:
        await watcher.stop()


async def test_halted_refuses_queued_live_sends(settings: Settings, bus: Bus) -> None:
    async with live(settings, bus) as (fake, stack, tap, token):
        async with stack.client(token) as c:
            # the guard refuses new ones
            kv = await bus.kv("control")
            rec = TradingStateRecord(state=TradingState.HALTED, reason="test", by="t")
            await kv.put(keys.TRADING, codec.encode(rec))
            r = await c.post("/brokers/oanda/orders", json=ORDER, headers={"X-PIN": PIN})
            assert r.status_code == 409 or r.status_code == 403, r.text
            assert r.json()["code"] == "trading_halted"
        assert fake.creates == 0


async def test_restart_mid_flight_reconciled(settings: Settings, bus: Bus) -> None:
    async with FakeOanda(heartbeat_interval=0.2).serving() as fake:
        s = settings.model_copy(update={"rbot_instance": "live-a"})
        async with live_stack(s, bus, fake) as (stack, tap, token):
            oid = (await place(stack, token))["order_id"]
            await tap.next("order_filled", oid)
        # nobody runs: the take-profit fills at the broker
        fake.set_price("EUR_USD", "1.09510", "1.09524")
        async with live_stack(s, bus, fake) as (stack, tap, token):
            closed = await tap.next("position_closed", oid)
            assert closed["payload"]["reason"] in ("TAKE_PROFIT_ORDER", "RECONCILED")
            reply = await bus.nc.request(bus.subjects.live_reconcile, b"", timeout=10)
            summary = json.loads(reply.data)
            assert summary["venues"]["oanda"]["unknown"] == 0
            assert fake.creates == 1
