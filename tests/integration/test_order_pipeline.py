"""The order pipeline on a real nats-server: guard, executor, reaper, API, events."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import httpx
import msgspec
import pytest

from rbot.api.users import ensure_admin
from rbot.bus import codec, keys
from rbot.bus.config import Settings
from rbot.bus.connection import Bus
from rbot.bus.messages import Account, Order
from tests.conftest import make_settings
from tests.natsd import NatsServer
from tests.stack import EventTap, kv_until, publish_tick, running_stack, tick_until

SEED_TEST2 = {
    "instrument": "EUR_USD", "side": "BUY", "units": 100, "entry_price": 1.1655,
    "stop_loss_price": 1.1600, "take_profit_price": 1.1700, "quality_score": 75,
}  # fmt: skip
SEED_TEST3 = {
    "product_id": "BTC-USD", "side": "BUY", "order_type": "MARKET", "size": 0.001,
    "stop_loss_price": 40000, "take_profit_price": 45000,
}  # fmt: skip

NO_SIM = ["heartbeat", "order_guard", "paper_executor", "ttl_reaper"]


@pytest.fixture
def settings(production_nats_server: NatsServer, prefix: str) -> Settings:
    """The pipeline runs on the project's nats.conf settings (sync_interval: always)."""
    return make_settings(production_nats_server.url, prefix)


async def test_seed_orders_fill_and_close_on_tp(settings: Settings, bus: Bus) -> None:
    async with running_stack(settings, only=NO_SIM) as stack, EventTap(bus) as tap:
        token = await stack.user("trader@test")
        await publish_tick(bus, "oanda", "EUR_USD", "1.16500", "1.16514", seq=1)
        await publish_tick(bus, "coinbase", "BTC-USD", "42500.00", "42501.00", seq=1)
        async with stack.client(token) as c:
            r = await c.post("/brokers/oanda/orders", json=SEED_TEST2)
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["ok"] is True and body["status"] == "PENDING" and body["mode"] == "paper"
            oid = body["order_id"]
            assert oid.startswith("paper-oanda-")
            r = await c.post("/brokers/coinbase-adv/orders", json=SEED_TEST3)
            assert r.status_code == 200, r.text
            assert r.json()["order_id"].startswith("paper-") and "oanda" not in r.json()["order_id"]

            placed = await tap.next("oco_placed", oid)
            assert placed["source"] == "oanda"
            assert placed["payload"]["stop_loss"] == "1.16"  # exact decimals, as strings

            # market BUY fills at the next tick's ask
            await publish_tick(bus, "oanda", "EUR_USD", "1.16510", "1.16524", seq=2)
            filled = await tap.next("order_filled", oid)
            fill = filled["payload"]["fill"]
            assert fill["price"] == "1.16524" and fill["tick_ask"] == "1.16524"
            assert fill["tick_seq"] == 2 and fill["spread"] == "0.00014"

            # the bid reaches the take-profit: closed at the bid (limit or better)
            await publish_tick(bus, "oanda", "EUR_USD", "1.17010", "1.17024", seq=3)
            closed = await tap.next("position_closed", oid)
            assert closed["payload"]["reason"] == "TAKE_PROFIT_ORDER"
            pnl = Decimal(closed["payload"]["realized_pnl"])
            assert pnl == (Decimal("1.17010") - Decimal("1.16524")) * 100

            r = await c.get(f"/orders/{oid}")
            assert r.status_code == 200 and r.json()["status"] == "CLOSED"
            user = (await c.get("/auth/me")).json()["sub"]
            await kv_until(
                bus, "orders", keys.account(user), lambda v: codec.decode(v, Account).trades >= 1
            )
            acct = (await c.get("/account")).json()
            assert Decimal(acct["realized_pnl"]) == pnl
            assert Decimal(acct["balance"]) == Decimal(100000) + pnl


async def test_stop_loss_gap_fills_at_first_price_through(settings: Settings, bus: Bus) -> None:
    async with running_stack(settings, only=NO_SIM) as stack, EventTap(bus) as tap:
        token = await stack.user("sl@test")
        await publish_tick(bus, "oanda", "EUR_USD", "1.16500", "1.16514")
        async with stack.client(token) as c:
            r = await c.post("/brokers/oanda/orders", json={**SEED_TEST2, "side": "SELL",
                             "stop_loss_price": 1.17, "take_profit_price": 1.16})  # fmt: skip
            oid = r.json()["order_id"]
            # a market order fills on the first tick after it is booked: tick until then
            await tick_until(tap, "order_filled", oid, bus, "oanda", "EUR_USD",
                             "1.16500", "1.16514")  # fmt: skip
            # gap: the ask jumps from below the stop to well above it
            await publish_tick(bus, "oanda", "EUR_USD", "1.17090", "1.17104")
            closed = await tap.next("position_closed", oid)
            p = closed["payload"]
            assert p["reason"] == "STOP_LOSS_ORDER"
            assert p["fill"]["price"] == "1.17104"  # the first price through, not the stop
            assert p["fill"]["gap"] == "0.00104"
            assert Decimal(p["realized_pnl"]) == (Decimal("1.16500") - Decimal("1.17104")) * 100


async def test_cancel_pending_and_close_open(settings: Settings, bus: Bus) -> None:
    async with running_stack(settings, only=NO_SIM) as stack, EventTap(bus) as tap:
        token = await stack.user("cancel@test")
        other = await stack.user("other@test")
        await publish_tick(bus, "oanda", "EUR_USD", "1.16500", "1.16514")
        async with stack.client(token) as c, stack.client(other) as o:
            limit = {**SEED_TEST2, "order_type": "LIMIT", "entry_price": 1.1620,
                     "stop_loss_price": 1.1550, "take_profit_price": 1.1700}  # fmt: skip
            pending = (await c.post("/brokers/oanda/orders", json=limit)).json()["order_id"]
            await tap.next("oco_placed", pending)
            assert (await o.delete(f"/orders/{pending}")).status_code == 404  # not theirs
            assert (await o.get(f"/orders/{pending}")).status_code == 404
            r = await c.delete(f"/orders/{pending}")
            assert r.status_code == 200, r.text
            ev = await tap.next("order_cancelled", pending)
            assert ev["payload"]["reason"] == "CLIENT_REQUEST"

            market = (await c.post("/brokers/oanda/orders", json=SEED_TEST2)).json()["order_id"]
            await tap.next("oco_placed", market)  # booked: the next tick fills it
            await publish_tick(bus, "oanda", "EUR_USD", "1.16500", "1.16514")
            await tap.next("order_filled", market)
            pos = (await c.get("/positions")).json()
            assert len(pos["positions"]) == 1, ((await c.get("/orders")).json(), pos)
            assert (await c.delete(f"/orders/{market}")).status_code == 200
            ev = await tap.next("position_closed", market)
            assert ev["payload"]["reason"] == "CLIENT_REQUEST"
            r = await c.delete(f"/orders/{market}")
            assert r.status_code == 409 and r.json()["code"] == "order_final"


@pytest.mark.parametrize(
    ("change", "code", "status"),
    [
        ({"stop_loss_price": None}, "oco_missing", 422),
        ({"stop_loss_price": 1.17, "take_profit_price": 1.18}, "oco_wrong_side", 422),
        ({"quality_score": 50}, "quality_too_low", 422),
        ({"instrument": "XAU_EUR"}, "unknown_symbol", 422),
        ({"units": 100_000_000}, "qty_too_large", 422),
    ],
)
async def test_guard_rejections(
    settings: Settings, bus: Bus, change: dict[str, object], code: str, status: int
) -> None:
    async with running_stack(settings, only=["order_guard"]) as stack, EventTap(bus) as tap:
        token = await stack.user("rej@test")
        await publish_tick(bus, "oanda", "EUR_USD", "1.16500", "1.16514")
        body = {k: v for k, v in {**SEED_TEST2, **change}.items() if v is not None}
        async with stack.client(token) as c:
            r = await c.post("/brokers/oanda/orders", json=body)
        assert r.status_code == status, r.text
        assert r.json()["code"] == code
        ev = await tap.next("order_rejected")
        assert ev["payload"]["reason"] == code and ev["payload"]["status"] == "REJECTED"


async def test_bad_input_is_a_clear_4xx(settings: Settings, bus: Bus) -> None:
    async with running_stack(settings, only=["order_guard"]) as stack:
        token = await stack.user("bad@test")
        async with stack.client(token) as c:
            r = await c.post("/brokers/oanda/orders", json={**SEED_TEST2, "instrument": "EUR.USD"})
            assert r.status_code == 422 and r.json()["code"] == "validation_error"
            r = await c.post("/brokers/oanda/orders", json={**SEED_TEST2, "instrument": "EUR_*"})
            assert r.status_code == 422
            r = await c.post("/brokers/oanda/orders", json={**SEED_TEST2, "colour": "red"})
            assert r.status_code == 422 and r.json()["code"] == "unknown_field"
            r = await c.post(
                "/brokers/oanda/orders",
                content=b"{not json",
                headers={"content-type": "application/json"},
            )
            assert r.status_code == 422
            r = await c.get("/orders/does.not.exist")
            assert r.status_code == 404


async def test_idempotent_retry_returns_the_original(settings: Settings, bus: Bus) -> None:
    async with running_stack(settings, only=NO_SIM) as stack, EventTap(bus) as tap:
        token = await stack.user("idem@test")
        await publish_tick(bus, "oanda", "EUR_USD", "1.16500", "1.16514")
        body = {**SEED_TEST2, "client_order_id": "my-order-1"}
        async with stack.client(token) as c:
            first = (await c.post("/brokers/oanda/orders", json=body)).json()
            await tap.next("oco_placed", first["order_id"])
            again = await asyncio.gather(
                *[c.post("/brokers/oanda/orders", json=body) for _ in range(5)]
            )
            assert {r.json()["order_id"] for r in again} == {first["order_id"]}
            r = await c.post("/brokers/oanda/orders", json={**body, "units": 200})
            assert r.status_code == 409 and r.json()["code"] == "idempotency_conflict"
            hdr = {"Idempotency-Key": "key-42"}
            a = (await c.post("/brokers/oanda/orders", json=SEED_TEST2, headers=hdr)).json()
            b = (await c.post("/brokers/oanda/orders", json=SEED_TEST2, headers=hdr)).json()
            assert a["order_id"] == b["order_id"] != first["order_id"]
            await tap.next("oco_placed", a["order_id"])  # booked (and indexed) by the executor
            listed = (await c.get("/orders")).json()
            assert listed["total"] == 2


async def test_halt_refuses_new_orders_and_survives(settings: Settings, bus: Bus) -> None:
    """R8: from the admin's ``POST /admin/trading-state`` HALTED to the guard refusing
    a new order: < 1 s (asserted); the halt survives a restart of every process."""
    async with running_stack(settings, only=["order_guard"]) as stack:
        token = await stack.user("halt@test")
        created = await ensure_admin(bus)
        assert created is not None
        async with stack.client() as c:
            r = await c.post("/auth/login", json={"email": created[0], "password": created[1]})
            assert r.status_code == 200, r.text
            admin = r.json()["access_token"]
        await publish_tick(bus, "oanda", "EUR_USD", "1.16500", "1.16514")
        async with stack.client(token) as c:
            r = await c.post("/brokers/oanda/orders", json=SEED_TEST2)
            assert r.status_code == 200, r.text  # trading is ACTIVE before the halt
        loop = asyncio.get_running_loop()
        async with stack.client(admin) as a, stack.client(token) as c:
            t0 = loop.time()
            r = await a.post("/admin/trading-state", json={"state": "HALTED", "reason": "R8"})
            assert r.status_code == 200 and r.json()["trading_state"] == "HALTED", r.text
            accepted = 0
            async with asyncio.timeout(1.0):  # the promise itself: refused within 1 s
                while True:
                    r = await c.post("/brokers/oanda/orders", json=SEED_TEST2)
                    if r.status_code != 200:
                        break
                    accepted += 1  # the guard had not seen the halt yet
            elapsed = loop.time() - t0
        assert r.status_code == 409 and r.json()["code"] == "trading_halted", r.text
        assert elapsed < 1.0
        print(f"halt (POST /admin/trading-state) -> refusal: {elapsed * 1000:.1f} ms, "
              f"{accepted} accepted in between")  # fmt: skip
        async with stack.client(token) as c:  # a trader may not lift it
            r = await c.post("/admin/trading-state", json={"state": "ACTIVE"})
            assert r.status_code == 403 and r.json()["code"] == "forbidden", r.text
    # a fresh guard (a restart of every process) still refuses
    async with running_stack(settings, only=["order_guard"]) as stack:
        token = await stack.user("halt@test")
        async with stack.client(token) as c:
            r = await c.post("/brokers/oanda/orders", json=SEED_TEST2)
        assert r.status_code == 409 and r.json()["code"] == "trading_halted"


async def test_ttl_expiry_by_the_reaper(settings: Settings, bus: Bus) -> None:
    async with running_stack(settings, only=NO_SIM) as stack, EventTap(bus) as tap:
        token = await stack.user("ttl@test")
        await publish_tick(bus, "oanda", "EUR_USD", "1.16500", "1.16514")
        limit = {**SEED_TEST2, "order_type": "LIMIT", "entry_price": 1.1620,
                 "stop_loss_price": 1.1550, "take_profit_price": 1.1700}  # fmt: skip
        async with stack.client(token) as c:
            oid = (await c.post("/brokers/oanda/orders", json=limit)).json()["order_id"]
        placed = await tap.next("oco_placed", oid)
        # rewrite the deadline into the past, as if the TTL had run out
        kv = await bus.kv("orders")
        from rbot.bus import codec
        from rbot.bus.messages import Order

        entry = await kv.get(f"o.{oid}")
        assert entry.value is not None
        order = codec.decode(entry.value, Order)
        order.expires_at = "2000-01-01T00:00:00.000000Z"
        assert placed["payload"]["expires_at"]
    # with every actor stopped, move the deadline into the past (time passing):
    # in the order and in its active-set marker, which the reaper watches
    await kv.update(f"o.{oid}", codec.encode(order), last=entry.revision)
    from msgspec.structs import replace

    from rbot.bus.kvscan import scan
    from rbot.bus.messages import ActiveMark

    (mark,) = [e for e in await scan(kv, "a.>") if e.key.endswith(f".{oid}")]
    assert mark.value is not None
    old = codec.decode(mark.value, ActiveMark)
    await kv.put(mark.key, codec.encode(replace(old, deadline=order.expires_at)))
    async with running_stack(settings, only=NO_SIM, api=False), EventTap(bus) as tap:
        expired = await tap.next("order_expired", oid)
        assert expired["payload"]["reason"] == "TIME_IN_FORCE_EXPIRED"
        assert expired["payload"]["status"] == "EXPIRED"


async def test_executor_restart_rebuilds_books_without_duplicates(
    settings: Settings, bus: Bus
) -> None:
    async with running_stack(settings, only=NO_SIM) as stack, EventTap(bus) as tap:
        token = await stack.user("restart@test")
        await publish_tick(bus, "oanda", "EUR_USD", "1.16500", "1.16514")
        async with stack.client(token) as c:
            oid = (await c.post("/brokers/oanda/orders", json=SEED_TEST2)).json()["order_id"]
        await tap.next("oco_placed", oid)
        await publish_tick(bus, "oanda", "EUR_USD", "1.16500", "1.16514")
        await tap.next("order_filled", oid)
    # everything stopped; a new executor rebuilds the open bracket from KV
    async with running_stack(settings, only=NO_SIM, api=False), EventTap(bus) as tap:
        closed = await tick_until(
            tap, "position_closed", oid, bus, "oanda", "EUR_USD", "1.17100", "1.17114"
        )
        assert closed["payload"]["reason"] == "TAKE_PROFIT_ORDER"
    # exactly one event of each kind in the stream for this order
    js = bus.js
    seen: dict[str, int] = {}
    sub = await js.subscribe(bus.subjects.order_events, ordered_consumer=True)
    info = await js.stream_info(bus.subjects.stream("ORDERS"))
    for _ in range(info.state.messages):
        msg = await sub.next_msg(timeout=5)
        env = __import__("json").loads(msg.data)
        if env["payload"].get("order_id") == oid:
            seen[env["type"]] = seen.get(env["type"], 0) + 1
    await sub.unsubscribe()
    assert seen == {"oco_placed": 1, "order_filled": 1, "position_closed": 1}


async def test_sse_resumes_from_last_event_id(settings: Settings, bus: Bus) -> None:
    import json

    async with running_stack(settings, only=NO_SIM) as stack, EventTap(bus) as tap:
        token = await stack.user("sse@test")
        await publish_tick(bus, "oanda", "EUR_USD", "1.16500", "1.16514")
        async with stack.client(token) as c:
            ids: list[int] = []
            async with c.stream("GET", "/events?subjects=evt.order.>&since=0") as resp:
                assert resp.status_code == 200
                oid = (await c.post("/brokers/oanda/orders", json=SEED_TEST2)).json()["order_id"]
                last_id = None
                async for line in resp.aiter_lines():
                    if line.startswith("id: "):
                        last_id = int(line[4:])
                        ids.append(last_id)
                    if line.startswith("data: ") and json.loads(line[6:])["type"] == "oco_placed":
                        break
            # while disconnected: a fill happens
            await publish_tick(bus, "oanda", "EUR_USD", "1.16500", "1.16514")
            await tap.next("order_filled", oid)
            async with c.stream(
                "GET", "/events?subjects=evt.order.>", headers={"Last-Event-ID": str(last_id)}
            ) as resp:
                async for line in resp.aiter_lines():
                    if line.startswith("id: "):
                        ids.append(int(line[4:]))
                    if line.startswith("data: ") and json.loads(line[6:])["type"] == "order_filled":
                        break
        # this test's ORDERS stream holds only this user's events (its own prefix):
        # the two connections together saw every sequence once, in order, no gap
        assert ids == sorted(set(ids)), ids  # no duplicates, in order
        assert ids == list(range(1, ids[-1] + 1)), ids  # no gap, from the first one
        assert ids.index(last_id) + 1 < len(ids) and ids[ids.index(last_id) + 1] == last_id + 1


async def _resting_limit(c: httpx.AsyncClient, tap: EventTap) -> str:
    """A buy limit below the market (it rests): its id once it is booked."""
    limit = {**SEED_TEST2, "order_type": "LIMIT", "entry_price": 1.1620,
             "stop_loss_price": 1.1550, "take_profit_price": 1.1700}  # fmt: skip
    oid: str = (await c.post("/brokers/oanda/orders", json=limit)).json()["order_id"]
    await tap.next("oco_placed", oid)
    return oid


async def _cancelled(c: httpx.AsyncClient, tap: EventTap, oid: str) -> None:
    """Cancel ``oid`` by REST and see its ``order_cancelled`` (client's reason)."""
    r = await c.delete(f"/orders/{oid}")
    assert r.status_code == 200, r.text
    async with asyncio.timeout(30):
        ev = await tap.next("order_cancelled", oid)
    assert ev["payload"]["reason"] == "CLIENT_REQUEST"


@pytest.mark.timeout(90)
async def test_a_partition_whose_consumer_is_gone_makes_it_again(
    settings: Settings, bus: Bus
) -> None:
    """R16: after a node loss and a pause, a partition's consumer answered every fetch
    503 (gone, or without a leader); the partition re-ran every few seconds without
    ever re-creating it (not a new epoch), so no command of it was applied again."""
    async with running_stack(settings, only=NO_SIM) as stack, EventTap(bus) as tap:
        token = await stack.user("consumer@test")
        await publish_tick(bus, "oanda", "EUR_USD", "1.16500", "1.16514")
        async with stack.client(token) as c:
            oid = await _resting_limit(c, tap)
            part = bus.subjects.partition("oanda", "EUR_USD")
            await bus.js.delete_consumer(
                bus.subjects.stream("EXEC"), bus.subjects.exec_consumer(part)
            )
            await _cancelled(c, tap, oid)  # the command waits on EXEC


@pytest.mark.timeout(90)
async def test_an_active_order_the_rebuild_missed_is_cancelled_all_the_same(
    settings: Settings, bus: Bus
) -> None:
    """R16: a rebuild read the partition's active markers from a replica still
    catching up and missed three orders; their cancels later found them in KV
    and were taken for orders already ended (acknowledged, never applied).  Here
    the marker is gone before a restart: the rebuild cannot see the order."""
    async with running_stack(settings, only=NO_SIM) as stack, EventTap(bus) as tap:
        token = await stack.user("missed@test")
        await publish_tick(bus, "oanda", "EUR_USD", "1.16500", "1.16514")
        async with stack.client(token) as c:
            oid = await _resting_limit(c, tap)
            user = (await c.get(f"/orders/{oid}")).json()["user"]
    kv = await bus.kv("orders")
    await kv.delete(keys.active(bus.subjects.partition("oanda", "EUR_USD"), user, oid))
    async with running_stack(settings, only=NO_SIM) as stack, EventTap(bus) as tap:
        token = await stack.user("missed@test")
        async with stack.client(token) as c:
            await _cancelled(c, tap, oid)


@pytest.mark.timeout(90)
async def test_a_place_cut_off_after_its_kv_write_is_finished_before_its_cancel(
    settings: Settings, bus: Bus
) -> None:
    """A place cut off after its KV write (no event, no marker yet), its command
    waiting for redelivery while the cancel behind it is delivered: the cancel
    finishes the place first (``oco_placed``), then cancels (R16, seen once the
    cancel stopped being dropped: an ``order_cancelled`` with no ``oco_placed``)."""
    async with running_stack(settings, only=NO_SIM) as stack, EventTap(bus) as tap:
        token = await stack.user("cutoff@test")
        await publish_tick(bus, "oanda", "EUR_USD", "1.16500", "1.16514")
        async with stack.client(token) as c:
            oid = await _resting_limit(c, tap)
    # the state a cut-off place leaves: the order's record only, under a new id
    kv = await bus.kv("orders")
    entry = await kv.get(keys.order(oid))
    twin_id = f"{oid}9"
    twin = codec.decode(entry.value or b"", Order)
    await kv.put(keys.order(twin_id), codec.encode(msgspec.structs.replace(twin, id=twin_id)))
    async with running_stack(settings, only=NO_SIM) as stack, EventTap(bus) as tap:
        token = await stack.user("cutoff@test")
        async with stack.client(token) as c:
            r = await c.delete(f"/orders/{twin_id}")
            assert r.status_code == 200, r.text
            async with asyncio.timeout(30):
                placed = await tap.next("oco_placed", twin_id)
                cancelled = await tap.next("order_cancelled", twin_id)
            assert placed["payload"]["order_id"] == cancelled["payload"]["order_id"] == twin_id
