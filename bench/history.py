"""5. Cost does not grow with history (R14): the same reads at 100 and at 50,000 orders.

The real API (``bench.stack_proc``, a child process) serves one trader.  Their
history is written straight into KV in the layout the executor writes
(``o.<id>``, the history index ``uh``/``ul``, active-set markers ``a.*`` for 5
open positions), together with another user's 20,000 orders, on a default-sync
server (seeding speed; the reads measured do not fsync).  Then, one request at
a time, ``GET /orders?limit=50``, ``/positions`` and ``/account`` are timed
with 100 orders in the trader's history, and again with 50,000: the ratio is the
figure (target <= 1.5x).

The executor's rebuild is timed the same way, in this process: one partition
with 500 active orders alone, then the same 500 beside 50,000 ended ones.
"""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from pathlib import Path

import httpx

from rbot.actors.paper.partition import PartitionWorker
from rbot.bus import codec, keys, userindex
from rbot.bus.active import mark_of
from rbot.bus.config import Settings
from rbot.bus.connection import Bus, connect
from rbot.bus.fence import PartitionFence
from rbot.bus.messages import Fill, Order, OrderStatus, UserIndexChunk, UserIndexHead
from rbot.bus.provision import provision
from rbot.bus.subjects import Subjects

from .child import stack_child
from .common import Row, Section, median
from .natsd import servers

SMALL, LARGE, OTHERS = 100, 50_000, 20_000
ACTIVE_REBUILD = 500
N_REQ = 150
ROUTES = ("/orders?limit=50", "/positions", "/account")


def _order(oid: str, user: str, status: OrderStatus, n: int) -> Order:
    fill = Fill(price=Decimal("1.165"), trigger="MARKET", level=None, tick_bid=Decimal("1.1649"),
                tick_ask=Decimal("1.165"), tick_time="2026-11-30T00:00:00Z", tick_seq=n,
                spread=Decimal("0.0001"), slippage=Decimal(0), gap=Decimal(0),
                time="2026-11-30T00:00:00Z")  # fmt: skip
    return Order(
        id=oid, user=user, venue="oanda", symbol="EUR_USD", side="BUY", order_type="MARKET",
        qty=Decimal(100), stop_loss=Decimal("1.10"), take_profit=Decimal("1.30"), status=status,
        created_at=f"2026-11-30T00:00:{n % 60:02d}.{n:06d}Z", entry_fill=fill,
        opened_at="2026-11-30T00:00:00.000000Z", events=2 if status is OrderStatus.OPEN else 3,
        last_event="order_filled" if status is OrderStatus.OPEN else "position_closed",
    )  # fmt: skip


async def _seed(bus: Bus, user: str, start: int, count: int, open_: int = 0) -> None:
    """``count`` orders for ``user`` (numbered from ``start``), the last ``open_`` OPEN."""
    kv = await bus.kv("orders")
    s = bus.subjects
    futures = []
    ids = []
    for n in range(start, start + count):
        oid = f"h-{user}-{n}"
        ids.append(oid)
        status = OrderStatus.OPEN if n >= start + count - open_ else OrderStatus.CLOSED
        order = _order(oid, user, status, n)
        futures.append(await bus.js.publish_async(
            s.kv_subject("orders", keys.order(oid)), codec.encode(order)))  # fmt: skip
        if status is OrderStatus.OPEN:
            part = s.partition("oanda", "EUR_USD")
            futures.append(await bus.js.publish_async(
                s.kv_subject("orders", keys.active(part, user, oid)),
                codec.encode(mark_of(order, 1))))  # fmt: skip
        if len(futures) >= 2000:
            await asyncio.gather(*futures)
            futures = []
    await asyncio.gather(*futures)
    # the history index, chunk by chunk (what userindex.append would have written)
    have = await userindex.count(kv, user)
    allids = ids if have == 0 else None
    if allids is None:  # append to an existing history: read the open chunk first
        page = await userindex.page(kv, user, None, have % userindex.CHUNK or 0)
        allids = page.ids[::-1] + ids
        first_chunk = have // userindex.CHUNK
    else:
        first_chunk = 0
    for i in range(0, len(allids), userindex.CHUNK):
        chunk = UserIndexChunk(ids=allids[i : i + userindex.CHUNK])
        await kv.put(keys.user_chunk(user, first_chunk + i // userindex.CHUNK), codec.encode(chunk))
    total = have + len(ids)
    await kv.put(
        keys.user_head(user),
        codec.encode(UserIndexHead(chunks=max(1, -(-total // userindex.CHUNK)))),
    )


async def _time_routes(base: str, token: str) -> dict[str, float]:
    out: dict[str, float] = {}
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"},
                                 timeout=30) as c:  # fmt: skip
        for route in ROUTES:
            for _ in range(10):
                r = await c.get(route)
                assert r.status_code == 200, r.text
            samples = []
            for _ in range(N_REQ):
                t0 = time.perf_counter()
                await c.get(route)
                samples.append((time.perf_counter() - t0) * 1e6)
            out[route] = median(samples)
    return out


async def _rebuild_us(bus: Bus, settings: Settings) -> float:
    kv = await bus.kv("orders")
    fence = PartitionFence(bus, kv, 0, "bench")
    assert await fence.claim()
    try:
        worker = PartitionWorker(bus, kv, await bus.kv("prices"), fence, settings,
                                 lambda a, b: None, {})  # fmt: skip
        t0 = time.perf_counter()
        await worker.rebuild()
        return (time.perf_counter() - t0) * 1e6
    finally:
        await fence.release()


async def _rebuild_case(url: str, prefix: str, ended: int) -> float:
    subjects = Subjects(prefix=prefix, partitions=1)
    settings = Settings(_env_file=None, nats_url=url, rbot_prefix=prefix, rbot_partitions=1)  # type: ignore[call-arg]
    bus = await connect(url, subjects, "bench-rebuild")
    try:
        await provision(bus)
        await _seed(bus, "active", 0, ACTIVE_REBUILD, open_=ACTIVE_REBUILD)
        if ended:
            await _seed(bus, "ended", 0, ended)
        return await _rebuild_us(bus, settings)
    finally:
        await bus.close()


async def run(workdir: Path, quick: bool = False) -> Section:
    sec = Section("5. History independence: reads and rebuild at 100 vs 50,000 orders (R14)")
    large = 10_000 if quick else LARGE
    async with servers(workdir, default=False) as srv:
        url = srv["default"].url
        async with stack_child(url, workdir / "history-stack.log") as info:
            bus = await connect(url, Subjects(prefix=info.prefix), "bench-history")
            try:
                await _seed(bus, "someone-else", 0, OTHERS // (5 if quick else 1))
                await _seed(bus, info.sub, 0, SMALL, open_=5)
                small = await _time_routes(info.base, info.token)
                t0 = time.perf_counter()
                await _seed(bus, info.sub, SMALL, large - SMALL)
                seeded = time.perf_counter() - t0
                big = await _time_routes(info.base, info.token)
            finally:
                await bus.close()
        for route in ROUTES:
            sec.rows.append(Row("history", f"GET {route} p50 @{large:,} orders", big[route],
                                small[route], "us", f"@{SMALL} orders"))  # fmt: skip
        alone = await _rebuild_case(url, "rbA", 0)
        beside = await _rebuild_case(url, "rbB", large)
        sec.rows.append(Row("history", f"rebuild {ACTIVE_REBUILD} active + {large:,} ended",
                            beside, alone, "us", f"{ACTIVE_REBUILD} active only"))  # fmt: skip
    sec.facts += [
        f"one trader, {SMALL} then {large:,} orders in history (5 open), beside another "
        f"user's {OTHERS // (5 if quick else 1):,}; {N_REQ} requests a route, one at a time, "
        f"median; seeding {large - SMALL:,} orders took {seeded:.1f} s",
        "target: every ratio <= 1.5x (the cost follows the page and the active orders)",
    ]
    return sec
