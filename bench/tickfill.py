"""5. Tick -> fill through the bus, with 100 .. 100,000 resting orders.

A tick published on NATS (core, as a feed sends it) -> the paper executor (its
own process, ``bench.tickfill_proc``) -> ``order_filled`` received by a core
subscriber in this process: one clock, one process.  The executor's fill path
is the real one: the order to KV (fenced compare-and-set), the event on
``ORDERS`` (PubAck), then the ledger and marker (after the event is out).

Resting orders: pending buy and sell limits and open longs and shorts (SL and
TP legs) on the one symbol, every level 2,000 to 7,000 pips (of 0.00001) from
the market.  Seeding 100,000 through the executor's commands would take
minutes (about six round trips each), so they are written the way the executor
leaves them (the order ``o.<id>`` and its active-set marker, pipelined) and the
executor *rebuilds* from the markers when it starts: its own restart path.  The
run prints how long seeding and rebuilding took.  The executor restarts for
each size (a rebuild of the larger set).

Then K buy limits, 1 .. K pips under the ask, are placed through ``EXEC`` (a
``PlaceCmd`` each, as the guard sends it).  Sample j: a tick with the ask j
pips down fills exactly order j (the ones above it went before, the resting
ones are far away), timed to its ``order_filled``; then wait (a KV watch on the
partition's counters, which the executor writes once it has applied its
inputs) until the executor is idle, so each tick finds it free.  Baseline,
after each sample: a core publish -> a subscriber in the executor's process
that publishes again -> a subscriber here (``ping -> pong``): the same two
hops without the executor's work.  Executor CPU per fill: ``/proc`` over the
samples (the fill, its ledger and marker writes, the counters).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import msgspec
from nats.aio.msg import Msg
from nats.js.kv import KeyValue

from rbot.bus import codec, keys
from rbot.bus.active import mark_of
from rbot.bus.connection import Bus, connect
from rbot.bus.messages import Order, OrderStatus, PartitionCounts, PlaceCmd, Side, Tick
from rbot.bus.provision import provision

from . import busprofile
from .book import ASK, BID, PIP, SYMBOL, VENUE
from .busprofile import TICK_STAGES
from .child import _spawn
from .common import Row, Section, median, pct, proc_cpu_s
from .natsd import BenchNats
from .tickfill_proc import executor_settings


@dataclass(frozen=True)
class Plan:
    sizes: tuple[int, ...]
    samples: int
    warmup: int = 10
    profile_s: int = 0  # py-spy on the executor during the largest size's samples


FULL = Plan((100, 10_000, 100_000), 300)
PROFILE = Plan((100, 10_000), 600, profile_s=3)
QUICK = Plan((100, 10_000), 150)
SMOKE = Plan((400,), 30, warmup=5)  # one size: the bench runs, no growth figure
FAST_SEED_OVER = 2_000  # more new orders than this are seeded on a server without fsync
SEED_CHUNK = 1_000  # orders per batch of pipelined writes (2 each)
SAMPLE_TIMEOUT_S = 10.0
FAR = Decimal("0.01")  # a filled trigger order's SL / TP: 1,000 pips away, never reached
GAP_PIPS = 2_000  # resting orders start this far from the market: trigger ticks never reach them


@dataclass
class Measured:
    size: int
    fill_us: list[float] = field(default_factory=list)
    base_us: list[float] = field(default_factory=list)
    cpu_us: float = float("nan")  # executor process CPU per tick that fills one
    seed_s: float = 0.0
    rebuild_s: float = 0.0
    profile: list[str] = field(default_factory=list)


class Waiter:
    """Futures keyed by order id (or ping number), resolved by core subscriptions."""

    def __init__(self) -> None:
        self.futures: dict[str, asyncio.Future[float]] = {}

    def expect(self, key: str) -> asyncio.Future[float]:
        fut = self.futures[key] = asyncio.get_running_loop().create_future()
        return fut

    def hit(self, key: str) -> None:
        fut = self.futures.pop(key, None)
        if fut is not None and not fut.done():
            fut.set_result(time.perf_counter())


class _Payload(msgspec.Struct):
    order_id: str | None = None


class _Env(msgspec.Struct):
    payload: _Payload


_env = msgspec.json.Decoder(_Env)


def _stored(order: Order) -> Order:
    """The order as the executor leaves it after ``oco_placed`` (one event booked)."""
    return msgspec.structs.replace(order, events=1, last_event="oco_placed", currency="USD")


async def seed(bus: Bus, orders: list[Order]) -> None:
    """Write orders and their markers, ``SEED_CHUNK`` PubAcks in flight."""
    part = bus.subjects.partition(VENUE, SYMBOL)

    def put(key: str, value: bytes) -> Awaitable[object]:
        subject = bus.subjects.kv_subject("orders", key)
        return bus.js.publish(subject, value, timeout=60.0)

    for start in range(0, len(orders), SEED_CHUNK):
        puts = []
        for o in orders[start : start + SEED_CHUNK]:
            o = _stored(o)
            puts.append(put(keys.order(o.id), codec.encode(o)))
            puts.append(put(keys.active(part, o.user, o.id), codec.encode(mark_of(o, 1))))
        await asyncio.gather(*puts)


@contextlib.asynccontextmanager
async def nats_on(store: Path, always: bool, prefix: str) -> AsyncIterator[tuple[BenchNats, Bus]]:
    """A server on ``store`` (the same store each time) and a connection to it."""
    srv = BenchNats("bench_tickfill", store, always)
    await srv.start()
    try:
        bus = await connect(srv.url, executor_settings(srv.url, prefix).subjects(), "bench-tick")
        try:
            yield srv, bus
        finally:
            await bus.close()
    finally:
        await srv.stop()


def resting(n: int, seed: int = 7) -> list[Order]:
    """n resting orders, every level GAP_PIPS .. GAP_PIPS + 5,000 pips from the market:
    1/4 each pending buy limits, pending sell limits, open longs, open shorts."""
    rnd = random.Random(seed)

    def away() -> Decimal:
        return PIP * rnd.randint(GAP_PIPS, GAP_PIPS + 5000)

    out: list[Order] = []
    for i in range(n):
        kind = i % 4
        side: Side = "BUY" if kind in (0, 2) else "SELL"
        status = OrderStatus.PENDING if kind < 2 else OrderStatus.OPEN
        limit: Decimal | None = None
        if kind == 0:  # pending buy limit under the ask
            limit = ASK - away()
            sl, tp = limit - away(), limit + away()
        elif kind == 1:  # pending sell limit over the bid
            limit = BID + away()
            sl, tp = limit + away(), limit - away()
        elif kind == 2:  # open long: SL under the bid, TP over it
            sl, tp = BID - away(), BID + away()
        else:  # open short: SL over the ask, TP under it
            sl, tp = ASK + away(), ASK - away()
        out.append(
            Order(
                id=f"r{i}",
                user="bench",
                venue=VENUE,
                symbol=SYMBOL,
                side=side,
                order_type="LIMIT" if limit is not None else "MARKET",
                qty=Decimal(1000),
                stop_loss=sl,
                take_profit=tp,
                limit_price=limit,
                status=status,
                created_at="2026-01-01T00:00:00Z",
            )  # fmt: skip
        )
    return out


def trigger_order(oid: str, j: int) -> Order:
    """A buy limit ``j`` pips under the quiet ask (SL / TP ``FAR`` away)."""
    now = dt.datetime.now(dt.UTC)
    limit = ASK - j * PIP
    return Order(
        id=oid, user="bench", venue=VENUE, symbol=SYMBOL, side="BUY", order_type="LIMIT",
        qty=Decimal(1000), stop_loss=ASK - FAR, take_profit=ASK + FAR, limit_price=limit,
        status=OrderStatus.PENDING, created_at=codec.utc_iso(now),
        expires_at=codec.utc_iso(now + dt.timedelta(hours=1)),
    )  # fmt: skip


def trigger_tick(j: int, seq: int) -> Tick:
    """The ask down to the ``j``-th trigger level: fills exactly trigger order ``j``."""
    ask = ASK - j * PIP
    return Tick(
        venue=VENUE, symbol=SYMBOL, bid=ask - 2 * PIP, ask=ask, time=codec.now_iso(), seq=seq
    )


class Counts:
    """The partition's counters record (KV watch): the executor writes it once it has
    applied a batch of inputs, so "OPEN reached n" says it is idle again."""

    def __init__(self) -> None:
        self.active: dict[str, int] = {}
        self.changed = asyncio.Event()

    async def follow(self, watcher: KeyValue.KeyWatcher) -> None:
        async for entry in watcher:
            if entry is not None and entry.value:
                self.active = codec.decode(entry.value, PartitionCounts).active
                self.changed.set()

    async def until(self, status: str, n: int) -> None:
        async with asyncio.timeout(SAMPLE_TIMEOUT_S):
            while self.active.get(status, 0) != n:
                self.changed.clear()
                await self.changed.wait()


async def measure(
    bus: Bus, info: dict[str, str], pid: int, plan: Plan, out: Measured, prof: Path | None = None
) -> None:
    placed, filled, pongs = Waiter(), Waiter(), Waiter()

    async def on_event(msg: Msg) -> None:
        oid = _env.decode(msg.data).payload.order_id or ""
        (placed if msg.subject.endswith(".oco_placed") else filled).hit(oid)

    s = bus.subjects
    subs = [
        await bus.nc.subscribe(s.order_event(VENUE, SYMBOL, "oco_placed"), cb=on_event),
        await bus.nc.subscribe(s.order_event(VENUE, SYMBOL, "order_filled"), cb=on_event),
        await bus.nc.subscribe(info["pong"], cb=pong_cb(pongs)),
    ]
    await bus.nc.flush()
    kv = await bus.kv("orders")
    counts = Counts()
    watcher = await kv.watch(keys.counters(s.partition(VENUE, SYMBOL)))
    n = plan.warmup + plan.samples
    try:
        async with asyncio.TaskGroup() as tg:
            follower = tg.create_task(counts.follow(watcher))
            # the trigger orders, through EXEC as the guard sends them, all booked first
            got = [placed.expect(f"t{out.size}x{j}") for j in range(1, n + 1)]
            for j in range(1, n + 1):
                oid = f"t{out.size}x{j}"
                await bus.js.publish(
                    s.exec(VENUE, SYMBOL), codec.encode(PlaceCmd(order=trigger_order(oid, j))),
                    headers={"Nats-Msg-Id": f"place.{oid}"},
                )  # fmt: skip
            async with asyncio.timeout(SAMPLE_TIMEOUT_S * 3):
                await asyncio.gather(*got)
            pending = out.size // 2 + n
            await counts.until("PENDING", pending)
            cpu0 = 0.0
            for j in range(1, n + 1):
                if j == plan.warmup + 1:
                    cpu0 = proc_cpu_s(pid)
                    if prof is not None:
                        recording = tg.create_task(
                            busprofile.facts(pid, plan.profile_s, prof, TICK_STAGES, "the executor")
                        )
                data = codec.encode_envelope("tick", VENUE, trigger_tick(j, 1_000_000 + j))
                fut = filled.expect(f"t{out.size}x{j}")
                t0 = time.perf_counter()
                await bus.nc.publish(s.tick(VENUE, SYMBOL), data)
                async with asyncio.timeout(SAMPLE_TIMEOUT_S):
                    t1 = await fut
                await counts.until("PENDING", pending - j)  # booked and flushed: idle
                pong = pongs.expect(str(j))
                b0 = time.perf_counter()
                await bus.nc.publish(info["ping"], str(j).encode())
                async with asyncio.timeout(SAMPLE_TIMEOUT_S):
                    b1 = await pong
                if j > plan.warmup:
                    out.fill_us.append((t1 - t0) * 1e6)
                    out.base_us.append((b1 - b0) * 1e6)
            out.cpu_us = (proc_cpu_s(pid) - cpu0) / plan.samples * 1e6
            if prof is not None:
                out.profile = await recording
            follower.cancel()
    finally:
        await watcher.stop()  # type: ignore[no-untyped-call]
        for sub in subs:
            await sub.unsubscribe()


def pong_cb(pongs: Waiter) -> Callable[[Msg], Awaitable[None]]:
    async def on_pong(msg: Msg) -> None:
        pongs.hit(msg.data.decode())

    return on_pong


async def run(workdir: Path, plan: Plan) -> Section:
    sec = Section("5. Tick -> fill through the bus (paper executor, resting orders)")
    results: list[Measured] = []
    prefix = "tf" + uuid.uuid4().hex[:8]
    store = workdir / "nats"
    orders = resting(max(plan.sizes))
    have, sync = 0, "?"

    async def prepare(bus: Bus, upto: int) -> None:
        if have == 0:
            await provision(bus)
            quiet = Tick(venue=VENUE, symbol=SYMBOL, bid=BID, ask=ASK, time=codec.now_iso())
            prices = await bus.kv("prices")
            await prices.put(keys.price(VENUE, SYMBOL), codec.encode(quiet))
        await seed(bus, orders[have:upto])

    for size in plan.sizes:
        m = Measured(size)
        t0 = time.perf_counter()
        if size - have > FAST_SEED_OVER:
            # a big batch: the same store on a server without fsync per write (fast)
            async with nats_on(store, False, prefix) as (_, bus):
                await prepare(bus, size)
            have = size
        # measured: sync always, as ``rbot up`` runs
        async with nats_on(store, True, prefix) as (srv, bus):
            if have < size:
                await prepare(bus, size)
                have = size
            m.seed_s = time.perf_counter() - t0
            sync = srv.sync_label
            t0 = time.perf_counter()
            log = workdir / f"executor-{size}.log"
            async with _spawn("bench.tickfill_proc", [srv.url, prefix], log, 900) as (info, pid):
                m.rebuild_s = time.perf_counter() - t0
                prof = (
                    workdir / "executor.prof"
                    if plan.profile_s and size == max(plan.sizes)
                    else None
                )
                await measure(bus, info, pid, plan, m, prof)
        results.append(m)

    by = {m.size: m for m in results}
    small, big = by[min(by)], by[max(by)]
    mid = by.get(10_000, big)
    p99_mid = pct(mid.fill_us, 99)
    sec.facts.append(
        f"{plan.samples} samples per size (+{plan.warmup} warm-up), server sync={sync}; "
        "resting orders on one symbol: 1/4 each pending buy limits, pending sell limits, "
        "open longs, open shorts"
    )
    for m in results:
        sec.facts.append(
            f"{m.size:,} resting: seeded in {m.seed_s:.1f} s (2 KV writes each, pipelined; "
            f"over {FAST_SEED_OVER:,} new ones on the same store without fsync per write, "
            "server restarts included), "
            f"executor up and rebuilt in {m.rebuild_s:.1f} s; tick->fill p50 "
            f"{pct(m.fill_us, 50):,.0f} us, p99 {pct(m.fill_us, 99):,.0f} us, max "
            f"{max(m.fill_us):,.0f} us; executor CPU per fill {m.cpu_us:,.0f} us"
        )
    for m in results:
        sec.facts += m.profile
    verdict = "met" if p99_mid < 5000 else "MISSED"
    sec.facts.append(f"target p99 < 5 ms with {mid.size:,} resting: {verdict} ({p99_mid:,.0f} us)")
    base = "NATS pub->sub->pub->sub"
    sec.rows += [
        Row("5 tick", f"tick->fill p50, {mid.size:,} resting", pct(mid.fill_us, 50),
            median([pct(mid.base_us, 50)]), "us", base + " p50"),
        Row("5 tick", f"tick->fill p99, {mid.size:,} resting (target < 5 ms)", p99_mid,
            pct(mid.base_us, 99), "us", base + " p99"),
    ]  # fmt: skip
    if small is big:  # one size (the smoke): no growth to show
        return sec
    growth = pct(big.fill_us, 50) / pct(small.fill_us, 50)
    sec.facts.append(
        f"target growth {small.size:,} -> {big.size:,} resting < 3x: "
        f"{'met' if growth < 3 else 'MISSED'} ({growth:.2f}x, p50)"
    )
    sec.rows += [
        Row("5 tick", f"tick->fill p50, {big.size:,} resting (target < 3x)",
            pct(big.fill_us, 50), pct(small.fill_us, 50), "us", f"{small.size:,} resting"),
        Row("5 tick", f"tick->fill p99, {big.size:,} resting", pct(big.fill_us, 99),
            pct(small.fill_us, 99), "us", f"{small.size:,} resting"),
        Row("5 tick", f"executor CPU per fill, {big.size:,}", big.cpu_us, small.cpu_us, "us",
            f"{small.size:,} resting"),
    ]  # fmt: skip
    return sec


def _summary(sec: Section) -> str:  # for a quick look: python -m bench.tickfill
    return json.dumps({"facts": sec.facts, "rows": [r.__dict__ for r in sec.rows]}, indent=1)


if __name__ == "__main__":
    import sys
    import tempfile

    with tempfile.TemporaryDirectory(prefix="rbot-tickfill-") as d:
        p = {"smoke": SMOKE, "quick": QUICK, "profile": PROFILE}.get(
            sys.argv[1] if len(sys.argv) > 1 else "", FULL
        )
        print(_summary(asyncio.run(run(Path(d), p))))
