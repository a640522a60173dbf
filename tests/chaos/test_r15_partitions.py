"""R15: three executor processes share the partitions; a SIGKILLed one's work moves.

Real processes on a real nats-server: ``rbot actors --only heartbeat order_guard``,
``rbot api`` and three ``rbot actors --only paper_executor`` (6 partitions,
beats every 0.5 s).  The three split the partitions 2/2/2; while orders stream
in through the API the owner of partitions is SIGKILLed; the survivors take its
partitions over (printed: kill -> taken over).  Then every acknowledged order is
cancelled or closed, and:

* every acknowledged order reached exactly one final state, with exactly one
  ``oco_placed`` and one final event;
* no partition was applied by two instances: along the ``ORDERS`` stream the
  epochs of each partition never go back, and each (partition, epoch) has one
  executor (every event names its ``executor``, ``epoch`` and ``partition``);
* ``/orders`` lists every acknowledged order for its user.

Runs in the default suite (about 30 s); the longer R1 runs stay behind ``-m chaos``.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from decimal import Decimal
from typing import Any

import httpx
import pytest

from rbot.bus.connection import Bus
from tests.chaos.conftest import (
    BANNER_ACTORS,
    BANNER_API,
    RBOT,
    Spawn,
    Waker,
    active_left,
    figures,
    publish_tick,
    rbot_env,
    read_stream,
    trader_token,
    wait_holders,
)
from tests.natsd import NatsServer

PARTITIONS = 6
ORDERS = 120
USERS = 3
MARKETS = {
    ("oanda", "EUR_USD"): Decimal("1.16500"),
    ("oanda", "GBP_USD"): Decimal("1.27000"),
    ("oanda", "USD_JPY"): Decimal("150.000"),
    ("oanda", "AUD_USD"): Decimal("0.66000"),
    ("coinbase", "BTC-USD"): Decimal("42500.00"),
    ("coinbase", "ETH-USD"): Decimal("2300.00"),
    ("coinbase", "SOL-USD"): Decimal("100.00"),
}
FINAL = {"order_cancelled", "order_expired", "position_closed", "order_rejected"}


def body(n: int, venue: str, symbol: str, bid: Decimal) -> dict[str, Any]:
    """A market order (fills at once) or a limit far away (stays pending)."""
    sl, tp = bid * Decimal("0.9"), bid * Decimal("1.1")
    if venue == "oanda":
        out: dict[str, Any] = {
            "instrument": symbol, "side": "BUY", "units": 10, "quality_score": 80,
            "stop_loss_price": str(sl), "take_profit_price": str(tp),
            "client_order_id": f"r15-{n}",
        }  # fmt: skip
        if n % 2:
            out |= {"order_type": "LIMIT", "entry_price": str(bid * Decimal("0.95"))}
        return out
    out = {
        "product_id": symbol, "side": "BUY", "size": "0.01", "order_type": "MARKET",
        "stop_loss_price": str(sl), "take_profit_price": str(tp), "client_order_id": f"r15-{n}",
    }  # fmt: skip
    if n % 2:
        out |= {"order_type": "LIMIT", "limit_price": str(bid * Decimal("0.95"))}
    return out


async def ticker(bus: Bus, stop: asyncio.Event) -> None:
    while not stop.is_set():
        for (venue, symbol), bid in MARKETS.items():
            await publish_tick(bus, venue, symbol, bid, bid * Decimal("1.0001"))
        try:
            async with asyncio.timeout(0.2):  # the market's pace, not a wait for a fact
                await stop.wait()
        except TimeoutError:
            pass


@pytest.mark.timeout(240)
async def test_r15_partitions_split_and_move_without_double_apply(
    own_nats_server: NatsServer, prefix: str, chaos_bus: Bus, spawn: Spawn
) -> None:
    bus = chaos_bus
    env = rbot_env(
        own_nats_server.url, prefix, RBOT_PARTITIONS=str(PARTITIONS),
        RBOT_BEAT_INTERVAL_S="0.5", RBOT_ORDERS_PER_MINUTE="1000000",
    )  # fmt: skip
    bus.subjects = type(bus.subjects)(prefix=prefix, partitions=PARTITIONS)
    core = spawn("core", ["actors", "--only", "heartbeat", "order_guard"], env, BANNER_ACTORS)
    api = spawn("api", ["api"], env, BANNER_API)
    execs = [
        spawn(f"exec{i}", ["actors", "--only", "paper_executor"], env, BANNER_ACTORS)
        for i in range(3)
    ]
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tg:
        tick_task = tg.create_task(ticker(bus, stop))
        _, banner, *_ = await asyncio.gather(
            core.start(), api.start(),
            *(e.start(RBOT_INSTANCE=f"exec-{i}") for i, e in enumerate(execs)),
        )  # fmt: skip
        base = f"http://127.0.0.1:{banner.group(1)}"
        split = await wait_holders(
            bus,
            lambda h: len(h) == PARTITIONS and sorted(Counter(h.values()).values()) == [2, 2, 2],
        )
        acked: dict[str, tuple[str, str]] = {}  # order id -> (token, client id)
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            tokens = [await trader_token(client, f"r15-{u}@test") for u in range(USERS)]
            markets = list(MARKETS.items())
            victim = "exec-1"
            killed_at = 0.0

            async def place(n: int) -> None:
                (venue, symbol), bid = markets[n % len(markets)]
                path = (
                    "/brokers/oanda/orders" if venue == "oanda" else "/brokers/coinbase-adv/orders"
                )
                token = tokens[n % USERS]
                for _ in range(10):  # a retry keeps the client_order_id: idempotent
                    r = await client.post(path, json=body(n, venue, symbol, bid),
                                          headers={"Authorization": f"Bearer {token}"})  # fmt: skip
                    if r.status_code == 200:
                        acked[r.json()["order_id"]] = (token, f"r15-{n}")
                        return
                    assert r.status_code == 503, r.text
                raise AssertionError(f"order {n} never acknowledged")

            for n in range(ORDERS):
                if n == ORDERS // 3:
                    await execs[1].kill()
                    killed_at = time.monotonic()
                await place(n)
            moved = await wait_holders(
                bus,
                lambda h: len(h) == PARTITIONS and victim not in h.values()
                and sorted(Counter(h.values()).values()) == [3, 3],
            )  # fmt: skip
            takeover = time.monotonic() - killed_at
            # visible in GET /system and in `rbot status`
            r = await client.get("/system", headers={"Authorization": f"Bearer {tokens[0]}"})
            owners = {p["partition"]: p["owner"] for p in r.json()["partitions"]}
            assert owners == moved, (owners, moved)
            status = await asyncio.create_subprocess_exec(
                str(RBOT), "status", env=env, stdout=asyncio.subprocess.PIPE
            )
            out = (await status.communicate())[0].decode()
            assert status.returncode == 0, out
            assert "exec-0: 3" in out and "exec-2: 3" in out and victim + ":" not in out, out

            # end every acknowledged order: cancel pending, close open
            for oid, (token, _) in acked.items():
                r = await client.delete(
                    f"/orders/{oid}", headers={"Authorization": f"Bearer {token}"}
                )
                assert r.status_code in (200, 409), r.text
            async with Waker(bus, bus.subjects.order_events) as waker, asyncio.timeout(90):
                while True:
                    left, _ = await active_left(bus, acked)
                    if not left:
                        break
                    await waker.wait()
            listed: set[str] = set()
            for token in tokens:
                r = await client.get(
                    "/orders?limit=500", headers={"Authorization": f"Bearer {token}"}
                )
                assert r.status_code == 200, r.text
                listed |= {
                    o["order_id"] if "order_id" in o else o["id"] for o in r.json()["orders"]
                }
        stop.set()
        await tick_task

    events = [(seq, ev) for seq, _, ev in await read_stream(bus, "ORDERS")]
    per_order: dict[str, Counter[str]] = defaultdict(Counter)
    last_epoch: dict[int, int] = {}
    writers: dict[tuple[int, int], set[str]] = defaultdict(set)
    for _, ev in events:
        p = ev["payload"]
        if p.get("order_id") is None:
            continue
        per_order[p["order_id"]][ev["type"]] += 1
        assert p.get("executor") and p.get("epoch") and p.get("partition") is not None, p
        part, epoch = p["partition"], p["epoch"]
        assert epoch >= last_epoch.get(part, 0), f"partition {part} went back to epoch {epoch}"
        last_epoch[part] = epoch
        writers[(part, epoch)].add(p["executor"])
    for oid in acked:
        kinds = per_order[oid]
        assert kinds["oco_placed"] == 1, (oid, kinds)
        assert sum(kinds[k] for k in FINAL) == 1, (oid, kinds)
        assert all(n == 1 for n in kinds.values()), (oid, kinds)
    assert all(len(w) == 1 for w in writers.values()), writers
    assert set(acked) <= listed
    figures("R15: partitions across three executors", {
        "partitions": PARTITIONS,
        "split before the kill": dict(Counter(split.values())),
        "split after": dict(Counter(moved.values())),
        "orders acknowledged": len(acked),
        "epochs seen (partition: epochs)": {
            p: sorted(e for q, e in writers if q == p) for p in range(PARTITIONS)
        },
        "kill -> every partition held by a live instance": f"{takeover:.2f} s",
    })  # fmt: skip
