"""Order state at scale (issue 10): reads from indexes, the active set, and the
correctness items found in review, each on a real nats-server through the real app."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import httpx
import msgspec
import pytest

from rbot.actors.guard.service import OrderGuard
from rbot.api.users import user_id
from rbot.bus import codec, keys
from rbot.bus.config import Settings
from rbot.bus.connection import Bus
from rbot.bus.kvscan import scan
from rbot.bus.messages import (
    ActiveMark,
    Order,
    OrderStatus,
    Position,
    TradingState,
    TradingStateRecord,
    UserIndexChunk,
)
from tests.stack import EventTap, kv_until, publish_tick, running_stack, tick_until

NO_SIM = ["heartbeat", "order_guard", "paper_executor", "ttl_reaper"]
EURUSD = {
    "instrument": "EUR_USD", "side": "BUY", "units": 100, "stop_loss_price": 1.1600,
    "take_profit_price": 1.1700, "quality_score": 75,
}  # fmt: skip


async def _orders(bus: Bus) -> dict[str, Order]:
    kv = await bus.kv("orders")
    return {e.key[2:]: codec.decode(e.value or b"", Order) for e in await scan(kv, "o.*")}


async def _mark(bus: Bus, oid: str) -> tuple[str, ActiveMark] | None:
    kv = await bus.kv("orders")
    found = [e for e in await scan(kv, keys.active_all()) if e.key.endswith(f".{oid}")]
    return (found[0].key, codec.decode(found[0].value or b"", ActiveMark)) if found else None


async def open_position(c: httpx.AsyncClient, bus: Bus, tap: EventTap) -> str:
    """A market BUY of EUR_USD 100, filled: its order id."""
    oid: str = (await c.post("/brokers/oanda/orders", json=EURUSD)).json()["order_id"]
    await tap.next("oco_placed", oid)
    await publish_tick(bus, "oanda", "EUR_USD", "1.16500", "1.16514")
    await tap.next("order_filled", oid)
    return oid


async def indexed(bus: Bus, user: str, ids: list[str]) -> None:
    """Wait (a KV watch on the user's first history chunk) until it holds ``ids``."""
    watcher = await (await bus.kv("orders")).watch(keys.user_chunk(user, 0))
    try:
        async with asyncio.timeout(10):
            async for entry in watcher:
                held = (
                    codec.decode(entry.value, UserIndexChunk).ids if entry and entry.value else []
                )
                if set(ids) <= set(held):
                    return
    finally:
        await watcher.stop()


async def test_orders_pages_newest_first_with_cursor(settings: Settings, bus: Bus) -> None:
    async with running_stack(settings, only=NO_SIM) as stack, EventTap(bus) as tap:
        token = await stack.user("pages@test")
        other = await stack.user("other@test")
        await publish_tick(bus, "oanda", "EUR_USD", "1.16500", "1.16514")
        ids = []
        async with stack.client(token) as c, stack.client(other) as o:
            for n in range(7):
                r = await c.post(
                    "/brokers/oanda/orders", json={**EURUSD, "client_order_id": f"p{n}"}
                )
                assert r.status_code == 200, r.text
                ids.append(r.json()["order_id"])
                assert (await o.post("/brokers/oanda/orders", json=EURUSD)).status_code == 200
            for oid in ids:
                await tap.next("oco_placed", oid)
            # the executor indexes an order just after its event: wait for the index
            await indexed(bus, user_id("pages@test"), ids)
            first = (await c.get("/orders?limit=3")).json()
            assert [x["id"] for x in first["orders"]] == ids[::-1][:3]
            assert first["total"] == 7 and first["next_cursor"] == 4
            second = (await c.get(f"/orders?limit=3&cursor={first['next_cursor']}")).json()
            assert [x["id"] for x in second["orders"]] == ids[::-1][3:6]
            third = (await c.get(f"/orders?limit=3&cursor={second['next_cursor']}")).json()
            assert [x["id"] for x in third["orders"]] == ids[:1] and third["next_cursor"] is None
            off = (await c.get("/orders?limit=2&offset=2")).json()
            assert [x["id"] for x in off["orders"]] == ids[::-1][2:4]
            # a filter over history walks back within a budget and says where to go on
            coinbase = (await c.get("/orders?venue=coinbase")).json()
            assert coinbase["orders"] == [] and coinbase["total"] is None
            pending = (await c.get("/orders?status=PENDING")).json()
            assert {x["id"] for x in pending["orders"]} <= set(ids)
            # another user's order is not visible; the counters saw all 14
            r = await o.get(f"/orders/{ids[0]}")
            assert r.status_code == 404
            metrics = (await c.get("/metrics")).text
            placed = sum(
                float(line.split()[-1]) for line in metrics.splitlines()
                if line.startswith("rbot_orders{")
            )  # fmt: skip
            assert placed == 14


async def test_cancel_right_after_place_is_never_404(settings: Settings, bus: Bus) -> None:
    settings = settings.model_copy(update={"rbot_orders_per_minute": 100_000})
    async with running_stack(settings, only=NO_SIM) as stack, EventTap(bus) as tap:
        token = await stack.user("quick@test")
        await publish_tick(bus, "oanda", "EUR_USD", "1.16500", "1.16514")
        limit = {**EURUSD, "order_type": "LIMIT", "entry_price": 1.1500,
                 "stop_loss_price": 1.1400, "take_profit_price": 1.1700}  # fmt: skip
        async with stack.client(token) as c:
            ids = []
            for n in range(200):  # the count: place, then cancel at once
                r = await c.post(
                    "/brokers/oanda/orders", json={**limit, "client_order_id": f"q{n}"}
                )
                assert r.status_code == 200, r.text
                oid = r.json()["order_id"]
                ids.append(oid)
                r = await c.delete(f"/orders/{oid}")  # no wait: maybe not booked yet
                assert r.status_code == 200, r.text
                assert r.json()["requested"] == "cancel"
            for oid in ids:
                await tap.next("order_cancelled", oid, timeout=30)
            r = await c.delete(f"/orders/{ids[0]}")
            assert r.status_code == 409 and r.json()["code"] == "order_final"
            assert (await c.delete("/orders/paper-oanda-999999")).status_code == 404


async def test_close_without_a_price_is_durable_across_a_restart(
    settings: Settings, bus: Bus
) -> None:
    async with running_stack(settings, only=NO_SIM) as stack, EventTap(bus) as tap:
        token = await stack.user("closing@test")
        await publish_tick(bus, "oanda", "EUR_USD", "1.16500", "1.16514")
        async with stack.client(token) as c:
            # The no-price tick (core) and the close (guard -> JetStream) reach the
            # executor by different paths; if both wait in one wake-up the command
            # goes first and closes at the old price.  Nothing shows when a tick was
            # applied, so a close that went through at once is tried again.
            for _attempt in range(5):
                await publish_tick(bus, "oanda", "EUR_USD", "1.16500", "1.16514")
                oid = await open_position(c, bus, tap)
                # the market goes away (no usable bid) and the trader asks to close
                tick = {"venue": "oanda", "symbol": "EUR_USD", "bid": None, "ask": None,
                        "time": codec.now_iso(), "tradeable": False}  # fmt: skip
                data = codec.encode_envelope("tick", "oanda", tick)
                await bus.nc.publish(bus.subjects.tick("oanda", "EUR_USD"), data)
                await bus.nc.flush()
                r = await c.delete(f"/orders/{oid}")
                assert r.status_code == 200 and r.json()["requested"] == "close"
                state = await kv_until(
                    bus, "orders", keys.order(oid),
                    lambda v: codec.decode(v, Order).closing
                    or codec.decode(v, Order).status is OrderStatus.CLOSED,
                )  # fmt: skip
                if codec.decode(state, Order).closing:
                    break
            else:
                raise AssertionError("every close went through at the old price")
    # every actor stopped and started again: the close is still owed
    async with running_stack(settings, only=NO_SIM, api=False), EventTap(bus) as tap:
        closed = await tick_until(tap, "position_closed", oid, bus, "oanda", "EUR_USD",
                                  "1.16600", "1.16614")  # fmt: skip
        assert closed["payload"]["reason"] == "CLIENT_REQUEST"


async def test_rebuild_repairs_an_effect_a_crash_cut_off(settings: Settings, bus: Bus) -> None:
    async with running_stack(settings, only=NO_SIM) as stack, EventTap(bus) as tap:
        token = await stack.user("repair@test")
        await publish_tick(bus, "oanda", "EUR_USD", "1.16500", "1.16514")
        async with stack.client(token) as c:
            oid = await open_position(c, bus, tap)
    # as if the executor died after writing the fill but before booking it: the
    # position never moved and the marker still says PENDING (event 1)
    kv = await bus.kv("orders")
    user = (await _orders(bus))[oid].user
    await kv.delete(keys.position(user, "oanda", "EUR_USD"))
    found = await _mark(bus, oid)
    assert found is not None
    key, mark = found
    await kv.put(key, codec.encode(msgspec.structs.replace(mark, n=1, status="PENDING")))
    watcher = await kv.watch(keys.position(user, "oanda", "EUR_USD"))
    async with running_stack(settings, only=NO_SIM, api=False):
        async with asyncio.timeout(15):
            while True:  # the rebuild books the fill, once
                entry = await watcher.updates(timeout=15)
                if entry and entry.value and codec.decode(entry.value, Position).qty == 100:
                    break
        await watcher.stop()  # type: ignore[no-untyped-call]
        repaired = await _mark(bus, oid)
        assert repaired is not None and repaired[1].n == 2 and repaired[1].status == "OPEN"


async def test_reducing_counts_pending_orders(settings: Settings, bus: Bus) -> None:
    async with running_stack(settings, only=NO_SIM) as stack, EventTap(bus) as tap:
        token = await stack.user("reduce@test")
        await publish_tick(bus, "oanda", "EUR_USD", "1.16500", "1.16514")
        async with stack.client(token) as c:
            await open_position(c, bus, tap)
            control = await bus.kv("control")
            await control.put(keys.TRADING, codec.encode(TradingStateRecord(
                state=TradingState.REDUCING, reason="test")))  # fmt: skip
            sell = {**EURUSD, "side": "SELL", "order_type": "LIMIT", "entry_price": 1.1700,
                    "stop_loss_price": 1.1800, "take_profit_price": 1.1600}  # fmt: skip
            codes = []
            for n in range(5):
                r = await c.post("/brokers/oanda/orders", json={**sell, "client_order_id": f"s{n}"})
                codes.append(r.json().get("code", "ok") if r.status_code != 200 else "ok")
                if r.status_code == 200:
                    await tap.next("oco_placed", r.json()["order_id"])
            assert codes == ["ok"] + ["trading_reducing"] * 4
            stored = [o for o in (await _orders(bus)).values() if o.side == "SELL"]
            assert len(stored) == 1 and stored[0].reduce_only


async def test_ttl_above_max_hold_is_refused(settings: Settings, bus: Bus) -> None:
    async with running_stack(settings, only=NO_SIM) as stack:
        token = await stack.user("ttl@test")
        await publish_tick(bus, "oanda", "EUR_USD", "1.16500", "1.16514")
        async with stack.client(token) as c:
            r = await c.post("/brokers/oanda/orders", json={**EURUSD, "ttl_minutes": 361})
            assert r.status_code == 422 and r.json()["code"] == "ttl_too_long", r.text
            assert "MAX_HOLD_MIN" in r.json()["message"]


async def test_pnl_in_a_third_currency_is_converted(settings: Settings, bus: Bus) -> None:
    settings = settings.model_copy(update={"rbot_oanda_symbols": "EUR_GBP,GBP_USD"})
    async with running_stack(settings, only=NO_SIM) as stack, EventTap(bus) as tap:
        token = await stack.user("fx@test")
        await publish_tick(bus, "oanda", "GBP_USD", "1.25000", "1.25000")
        await publish_tick(bus, "oanda", "EUR_GBP", "0.85000", "0.85010")
        body: dict[str, Any] = {
            "instrument": "EUR_GBP", "side": "BUY", "units": 1000, "stop_loss_price": 0.8400,
            "take_profit_price": 0.8600, "quality_score": 80,
        }  # fmt: skip
        async with stack.client(token) as c:
            oid = (await c.post("/brokers/oanda/orders", json=body)).json()["order_id"]
            await tap.next("oco_placed", oid)
            await publish_tick(bus, "oanda", "EUR_GBP", "0.85000", "0.85010")
            await tap.next("order_filled", oid)
            await publish_tick(bus, "oanda", "GBP_USD", "1.25000", "1.25000")
            await publish_tick(bus, "oanda", "EUR_GBP", "0.86010", "0.86020")
            closed = await tap.next("position_closed", oid)
            gbp = (Decimal("0.86010") - Decimal("0.85010")) * 1000
            assert closed["payload"]["currency"] == "USD"
            assert Decimal(closed["payload"]["realized_pnl"]) == gbp * Decimal("1.25")
            # the account is booked right after the event: wait for it, then read it
            kv = await bus.kv("orders")
            watcher = await kv.watch(keys.account(closed["payload"]["user"]))
            async with asyncio.timeout(10):
                while (entry := await watcher.updates(timeout=10)) is None or not entry.value:
                    pass
            await watcher.stop()  # type: ignore[no-untyped-call]
            acct = (await c.get("/account")).json()
            assert Decimal(acct["realized_pnl"]) == gbp * Decimal("1.25")


async def test_rate_limit_is_shared_by_every_guard(settings: Settings, bus: Bus) -> None:
    settings = settings.model_copy(update={"rbot_orders_per_minute": 5})
    guards = [OrderGuard(settings, settings.nats_url or "") for _ in range(2)]
    for g in guards:
        g.bus = bus
        g.settings = settings
        g.kv_limits = await bus.kv("limits")
    waits = [await guards[n % 2]._rate("shared") for n in range(8)]
    assert waits[:5] == [0.0] * 5 and all(w > 0 for w in waits[5:])


@pytest.mark.parametrize("status", [OrderStatus.OPEN])
async def test_positions_and_account_read_only_active_orders(
    settings: Settings, bus: Bus, status: OrderStatus
) -> None:
    async with running_stack(settings, only=NO_SIM) as stack, EventTap(bus) as tap:
        token = await stack.user("pos@test")
        await publish_tick(bus, "oanda", "EUR_USD", "1.16500", "1.16514")
        async with stack.client(token) as c:
            oid = await open_position(c, bus, tap)
            await publish_tick(bus, "oanda", "EUR_USD", "1.16600", "1.16614")
            pos = (await c.get("/positions")).json()["positions"]
            assert [p["order_id"] for p in pos] == [oid]
            assert (
                Decimal(pos[0]["unrealized_pnl"]) == (Decimal("1.16600") - Decimal("1.16514")) * 100
            )
            acct = (await c.get("/account")).json()
            assert Decimal(acct["equity"]) == Decimal(acct["balance"]) + Decimal(
                pos[0]["unrealized_pnl_account"]
            )
            assert (await _orders(bus))[oid].status is status


async def test_upgrade_indexes_orders_written_before_partitions(
    settings: Settings, bus: Bus
) -> None:
    from rbot.bus import userindex
    from rbot.bus.migrate import migrate

    kv = await bus.kv("orders")
    old = [
        Order(id=f"paper-oanda-{n}", user="olduser", venue="oanda", symbol="EUR_USD",
              side="BUY", order_type="LIMIT", qty=Decimal(1), stop_loss=Decimal("1.0"),
              take_profit=Decimal("1.3"), limit_price=Decimal("1.1"), entry_price=Decimal("1.1"),
              status=OrderStatus.PENDING if n == 3 else OrderStatus.CANCELLED,
              created_at=f"2026-01-01T00:00:0{n}.000000Z", expires_at="2099-01-01T00:00:00Z",
              events=1 if n == 3 else 2, last_event="oco_placed" if n == 3 else "order_cancelled")
        for n in range(1, 4)
    ]  # fmt: skip
    for o in old:
        await kv.put(keys.order(o.id), codec.encode(o))
    assert await migrate(bus, "test") is True
    assert await migrate(bus, "test") is False  # once
    other = type(bus.subjects)(prefix=bus.subjects.prefix, partitions=bus.subjects.partitions + 1)
    real, bus.subjects = bus.subjects, other
    from rbot.bus.migrate import PartitionsChanged

    with pytest.raises(PartitionsChanged, match="RBOT_PARTITIONS"):
        await migrate(bus, "test")
    bus.subjects = real
    page = await userindex.page(kv, "olduser", None, 10)
    assert page.ids == ["paper-oanda-3", "paper-oanda-2", "paper-oanda-1"]
    found = await _mark(bus, "paper-oanda-3")
    assert found is not None and found[1].status == "PENDING"
    assert await _mark(bus, "paper-oanda-1") is None
    # the executor takes the old pending order into its books: a cancel works
    async with running_stack(settings, only=NO_SIM, api=False), EventTap(bus) as tap:
        from rbot.bus.messages import CancelCmd

        await bus.js.publish(bus.subjects.exec("oanda", "EUR_USD"),
                             codec.encode(CancelCmd(order_id="paper-oanda-3", user="olduser")))  # fmt: skip
        await tap.next("order_cancelled", "paper-oanda-3", timeout=20)


async def test_a_command_the_executor_cannot_apply_is_parked_as_rejected(
    settings: Settings, bus: Bus
) -> None:
    """A decodable but invalid place (a LIMIT without a price) becomes order_rejected
    and is acknowledged, instead of crash-looping the executor."""
    from rbot.bus.messages import PlaceCmd

    bad = Order(id="paper-oanda-777", user="poison", venue="oanda", symbol="EUR_USD",
                side="BUY", order_type="LIMIT", qty=Decimal(1), stop_loss=Decimal("1.0"),
                take_profit=Decimal("1.3"), expires_at="2099-01-01T00:00:00Z")  # fmt: skip
    stream = bus.subjects.stream("EXEC")
    acks = await bus.nc.subscribe(f"$JS.ACK.{stream}.>")
    async with running_stack(settings, only=NO_SIM, api=False), EventTap(bus) as tap:
        await bus.js.publish(bus.subjects.exec("oanda", "EUR_USD"),
                             codec.encode(PlaceCmd(order=bad)))  # fmt: skip
        rejected = await tap.next("order_rejected", "paper-oanda-777", timeout=20)
        assert rejected["payload"]["reason"] == "order_invalid"
        stored = (await _orders(bus))["paper-oanda-777"]
        assert stored.status is OrderStatus.REJECTED
        ack = await acks.next_msg(timeout=20)  # acknowledged: nothing left to redeliver
        assert ack.data in (b"", b"+ACK")
        async with asyncio.timeout(10):
            while (await bus.js.stream_info(stream)).state.messages:
                await bus.nc.flush()
    await acks.unsubscribe()


async def test_a_stuck_command_is_an_event_and_a_metric(settings: Settings, bus: Bus) -> None:
    """JetStream's max-deliveries advisory for a partition's consumer (the safety net
    behind parking) becomes an actor event in SYSTEM and ``rbot_exec_max_deliveries``."""
    import json

    async with running_stack(settings, only=NO_SIM) as stack:
        token = await stack.user("stuck@test")
        events = await bus.nc.subscribe(
            bus.subjects.actor_event("paper_executor", "max_deliveries")
        )
        kv = await bus.kv("orders")
        watcher = await kv.watch(keys.fence(0))  # wait until partition 0 has its owner
        while (entry := await watcher.updates(timeout=15)) is None or not entry.value:
            pass
        await watcher.stop()  # type: ignore[no-untyped-call]
        advisory = {"type": "io.nats.jetstream.advisory.v1.max_deliver", "stream":
                    bus.subjects.stream("EXEC"), "consumer": bus.subjects.exec_consumer(0),
                    "stream_seq": 42, "deliveries": 10}  # fmt: skip
        subject = bus.subjects.max_deliveries().replace("*", bus.subjects.exec_consumer(0))
        await bus.nc.publish(subject, json.dumps(advisory).encode())
        msg = await events.next_msg(timeout=15)
        assert "EXEC sequence 42" in json.loads(msg.data)["payload"]["reason"]
        async with stack.client(token) as c:
            text = (await c.get("/metrics")).text
        assert "rbot_exec_max_deliveries_total 1.0" in text, text
