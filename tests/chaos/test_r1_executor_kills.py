"""R1: no acknowledged order is lost or duplicated while the executor is SIGKILLed.

Real processes on 127.0.0.1: a nats-server, ``rbot actors --only heartbeat
order_guard``, ``rbot api`` and ``rbot actors --only paper_executor``.  The
test submits orders over HTTP (16 at a time, paced) — market BUYs and SELLs
that fill on the next tick and close on the next price spike, and limit BUYs
far below the market that stay pending — while it SIGKILLs the executor and
starts it again.  Most restarts keep the executor's instance name (it takes
its own lease back at once, like a restarted unit); every fourth one comes up
under a new name and must wait for the dead owner's lease to expire.  Some
kills land right after the new executor took the lease, while it rebuilds.

The test publishes the ticks: plain ticks (core subject + KV ``prices``, as a
feed) and every 1.5 s a spike up or down on the core subject only, so the
executor's market moves through every bracket while the guard's reference
price (KV) stays where the brackets were computed.

Afterwards, with the executor's work queue drained: every acknowledged
``order_id`` has its KV record, one ``oco_placed``, and (market orders) one
``order_filled`` and one ``position_closed``; no order has two events of a
kind; the record's event count equals the events in the stream; and positions
and accounts add up to the closed orders.

Figures: orders, HTTP statuses, kills, kill -> lead times, events re-published
by rebuilds, EXEC deliveries, wall time.  Sizes: RBOT_R1_ORDERS (1000),
RBOT_R1_KILLS (20), RBOT_R1_RATE (orders/s, 15).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import re
import time
from collections import Counter, defaultdict
from decimal import Decimal
from typing import Any

import httpx
import pytest

from rbot.bus.connection import Bus
from rbot.bus.messages import Account, Order, OrderStatus, Position
from rbot.bus.timing import every
from tests.chaos.conftest import (
    BANNER_ACTORS,
    BANNER_API,
    RbotProc,
    Spawn,
    Waker,
    figures,
    kv_values,
    publish_tick,
    rbot_env,
    read_stream,
    spread,
    trader_token,
    wait_exec_drained,
)
from tests.natsd import NatsServer

N_ORDERS = int(os.environ.get("RBOT_R1_ORDERS", "1000"))
MIN_KILLS = int(os.environ.get("RBOT_R1_KILLS", "20"))
RATE = float(os.environ.get("RBOT_R1_RATE", "15"))
CONCURRENCY = 16
USERS = 4
TICK_S = 0.1
SPIKE_EVERY = 15  # ticks
SAME_NAME_RESTARTS = 4  # then a new instance name (lease takeover by expiry)
P = Decimal("0.00001")

# symbol -> (bid, spread)
MARKETS = {"EUR_USD": (Decimal("1.16500"), Decimal("0.00014")),
           "GBP_USD": (Decimal("1.33500"), Decimal("0.00018"))}  # fmt: skip
_REBUILT = re.compile(r"rebuilt \(epoch \d+\): (\d+) active orders, (\d+) repaired")


def px(x: Decimal) -> Decimal:
    return x.quantize(P)


def order_body(i: int) -> tuple[dict[str, Any], str]:
    """The i-th order: 40% market BUY, 30% market SELL, 30% pending limit BUY."""
    symbol = list(MARKETS)[i % len(MARKETS)]
    bid, sp = MARKETS[symbol]
    ask = bid + sp
    body: dict[str, Any] = {
        "instrument": symbol,
        "units": str(100 + 50 * (i % 7)),
        "quality_score": 75,
        "client_order_id": f"r1-{i}",
    }
    kind = i % 10
    if kind < 4:
        body.update(side="BUY", stop_loss_price=str(px(ask * Decimal("0.995"))),
                    take_profit_price=str(px(ask * Decimal("1.005"))))  # fmt: skip
        return body, "market"
    if kind < 7:
        body.update(side="SELL", stop_loss_price=str(px(bid * Decimal("1.005"))),
                    take_profit_price=str(px(bid * Decimal("0.995"))))  # fmt: skip
        return body, "market"
    body.update(side="BUY", order_type="LIMIT", entry_price=str(px(bid * Decimal("0.98"))),
                stop_loss_price=str(px(bid * Decimal("0.97"))),
                take_profit_price=str(px(bid * Decimal("1.005"))))  # fmt: skip
    return body, "limit"


async def ticker(bus: Bus, stop: asyncio.Event) -> int:
    """Plain ticks every 0.1 s; every 15th a spike (up, then down) on the core subject."""
    spikes = 0
    async for n in every(TICK_S):
        if stop.is_set():
            return spikes
        spike = n % SPIKE_EVERY == SPIKE_EVERY - 1
        up = (n // SPIKE_EVERY) % 2 == 0
        for symbol, (bid, sp) in MARKETS.items():
            if spike:
                b = px(bid * (Decimal("1.006") if up else Decimal("0.994")))
                await publish_tick(bus, "oanda", symbol, b, b + sp, store=False)
            else:
                await publish_tick(bus, "oanda", symbol, bid, bid + sp)
        spikes += spike
    return spikes


class Load:
    def __init__(self, client: httpx.AsyncClient, tokens: list[str]) -> None:
        self.client = client
        self.tokens = tokens
        self.acked: dict[str, tuple[str, str]] = {}  # order_id -> (client_order_id, kind)
        self.statuses: Counter[str] = Counter()
        self.retries = 0
        self.latencies: list[float] = []
        self.unanswered: list[str] = []

    async def run(self) -> None:
        indices = iter(range(N_ORDERS))
        t0 = time.monotonic()
        async with asyncio.TaskGroup() as tg:
            for _ in range(CONCURRENCY):
                tg.create_task(self._worker(indices, t0))

    async def _worker(self, indices: Any, t0: float) -> None:
        for i in indices:
            # pacing: order i goes out at t0 + i / RATE (spreads the load over the kills)
            await asyncio.sleep(max(0.0, t0 + i / RATE - time.monotonic()))
            body, kind = order_body(i)
            headers = {"Authorization": f"Bearer {self.tokens[i % len(self.tokens)]}"}
            for _attempt in range(5):  # a retry keeps the client_order_id: idempotent
                started = time.monotonic()
                try:
                    r = await self.client.post("/brokers/oanda/orders", json=body, headers=headers)
                except httpx.TransportError as exc:
                    self.statuses[type(exc).__name__] += 1
                    self.retries += 1
                    continue
                self.latencies.append(time.monotonic() - started)
                self.statuses[str(r.status_code)] += 1
                if r.status_code == 200:
                    self.acked[r.json()["order_id"]] = (body["client_order_id"], kind)
                    break
                if r.status_code != 503:
                    break
                self.retries += 1
            else:
                self.unanswered.append(body["client_order_id"])


class Killer:
    def __init__(self, executor: RbotProc, load_done: asyncio.Event) -> None:
        self.executor = executor
        self.load_done = load_done
        self.rng = random.Random(1)
        self.kills: Counter[str] = Counter()
        self.to_lead: dict[str, list[float]] = defaultdict(list)

    async def run(self) -> None:
        ex = self.executor
        for k in itertools.count(1):
            if k > MIN_KILLS and self.load_done.is_set():
                return
            if k % 4 == 0:  # right after it took the lease: while it rebuilds
                await ex.wait_for(r"partition \d+ (claimed|taken over|adopted)", timeout=60)
                phase = "while rebuilding"
            else:
                await ex.wait_for(r"rebuilt \(epoch", timeout=60)
                await asyncio.sleep(self.rng.uniform(0.3, 2.5))  # pacing: let it work
                phase = "while serving"
            await ex.kill()
            killed = time.monotonic()
            self.kills[phase] += 1
            name = f"exec-{k // SAME_NAME_RESTARTS}"
            renamed = k % SAME_NAME_RESTARTS == 0
            await ex.start(RBOT_INSTANCE=name)
            await ex.wait_for(r"partition \d+ (claimed|taken over|adopted)", timeout=60)
            how = "new name (lease expiry)" if renamed else "same name (lease reclaim)"
            self.to_lead[how].append(time.monotonic() - killed)


async def settle(bus: Bus, market_ids: list[str], timeout: float = 90.0) -> None:
    """Until every acknowledged market order is CLOSED (the ticker keeps spiking)."""
    async with Waker(bus, bus.subjects.order_events) as waker, asyncio.timeout(timeout):
        while True:
            orders = await kv_values(bus, "orders", "o.*", Order)
            left = [o for o in market_ids if (rec := orders.get(f"o.{o}")) is None
                    or rec.status is not OrderStatus.CLOSED]  # fmt: skip
            if not left:
                return
            await waker.wait()


@pytest.mark.chaos
@pytest.mark.timeout(900)
async def test_r1_executor_sigkills_lose_and_duplicate_nothing(
    own_nats_server: NatsServer, prefix: str, chaos_bus: Bus, spawn: Spawn
) -> None:
    bus = chaos_bus
    wall = time.monotonic()
    env = rbot_env(own_nats_server.url, prefix, RBOT_ORDERS_PER_MINUTE="1000000")
    core = spawn("actors", ["actors", "--only", "heartbeat", "order_guard"], env, BANNER_ACTORS)
    api = spawn("api", ["api"], env, BANNER_API)
    executor = spawn("paper_executor", ["actors", "--only", "paper_executor"], env, BANNER_ACTORS)
    for symbol, (bid, sp) in MARKETS.items():
        await publish_tick(bus, "oanda", symbol, bid, bid + sp)
    _, banner, _ = await asyncio.gather(
        core.start(), api.start(), executor.start(RBOT_INSTANCE="exec-0")
    )
    base = f"http://127.0.0.1:{banner.group(1)}"

    stop_ticks = asyncio.Event()
    load_done = asyncio.Event()
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as client:
        tokens = [await trader_token(client, f"r1-{u}@test") for u in range(USERS)]
        load = Load(client, tokens)
        killer = Killer(executor, load_done)
        async with asyncio.TaskGroup() as tg:
            ticks = tg.create_task(ticker(bus, stop_ticks))
            kills = tg.create_task(killer.run())
            await load.run()
            load_done.set()
            load_s = time.monotonic() - wall
            await kills
            await executor.wait_for(r"rebuilt \(epoch", timeout=60)
            ci, exec_stream = await wait_exec_drained(bus, timeout=180)
            market = [oid for oid, (_, kind) in load.acked.items() if kind == "market"]
            await settle(bus, market)
            stop_ticks.set()
            spikes = await ticks

    # -- the comparison --------------------------------------------------------
    events = await read_stream(bus, "ORDERS")
    per: dict[str, Counter[str]] = defaultdict(Counter)
    for _, _, env_ in events:
        oid = env_["payload"].get("order_id")
        if oid:
            per[oid][env_["type"]] += 1
    orders = {k[2:]: v for k, v in (await kv_values(bus, "orders", "o.*", Order)).items()}
    duplicated = {oid: dict(c) for oid, c in per.items() if any(n > 1 for n in c.values())}
    missing = sorted(oid for oid in load.acked if oid not in orders)
    wrong_history: dict[str, dict[str, int]] = {}
    wrong_state: dict[str, str] = {}
    for oid, (coid, kind) in load.acked.items():
        want = (
            {"oco_placed": 1, "order_filled": 1, "position_closed": 1}
            if kind == "market"
            else {"oco_placed": 1}
        )
        if dict(per[oid]) != want:
            wrong_history[oid] = dict(per[oid])
        rec = orders.get(oid)
        status = OrderStatus.CLOSED if kind == "market" else OrderStatus.PENDING
        if rec is not None and (
            rec.status is not status
            or rec.events != sum(want.values())
            or rec.client_order_id != coid
        ):
            wrong_state[oid] = f"{rec.status} events={rec.events} coid={rec.client_order_id}"
    by_coid = Counter(o.client_order_id for o in orders.values())
    double_booked = sorted(c for c, n in by_coid.items() if c and n > 1)
    unacked_booked = sorted(set(orders) - set(load.acked))

    # derived state: every position back to flat, every account = its closed orders
    positions = await kv_values(bus, "orders", "pos.*.*.*", Position)
    accounts = await kv_values(bus, "orders", "acct.*", Account)
    closed = [o for o in orders.values() if o.status is OrderStatus.CLOSED]
    want_trades = Counter(o.user for o in closed)
    want_pnl: dict[str, Decimal] = defaultdict(Decimal)
    for o in closed:
        want_pnl[o.user] += o.realized_pnl or Decimal(0)
    drift_pos = {k: str(p.qty) for k, p in positions.items() if p.qty != 0}
    drift_acct = {
        k: f"trades {a.trades} (want {want_trades[k[5:]]}), pnl {a.realized_pnl} "
        f"(want {want_pnl[k[5:]]})"
        for k, a in accounts.items()
        if a.trades != want_trades[k[5:]] or a.realized_pnl != want_pnl[k[5:]]
    }
    rebuilds = [tuple(map(int, m.groups())) for line in executor.lines
                if (m := _REBUILT.search(line))]  # fmt: skip

    figures(
        "R1 executor SIGKILLs",
        {
            "orders submitted": N_ORDERS,
            "HTTP statuses": dict(load.statuses),
            "acknowledged (200)": len(load.acked),
            "retries (same client_order_id)": load.retries,
            "never answered 200": len(load.unanswered),
            "HTTP latency": spread(load.latencies),
            "kills (SIGKILL)": f"{sum(killer.kills.values())} {dict(killer.kills)}",
            "executor runs": executor.runs,
            "in-process executor crashes": executor.count(
                "INFO  rbot.supervisor: paper_executor crashed"
            ),
            **{f"kill -> leading, {k}": spread(v) for k, v in killer.to_lead.items()},
            "rebuilds (active, re-published)": f"{len(rebuilds)}, "
            f"re-published events total {sum(r[1] for r in rebuilds)}",
            "EXEC deliveries / commands": f"{sum(c.delivered.consumer_seq for c in ci)} / {exec_stream.last_seq}",
            "ORDERS stream messages": len(events),
            "spikes": spikes,
            "KV orders (unacked but booked)": f"{len(orders)} ({len(unacked_booked)})",
            "missing acked orders": len(missing),
            "orders with duplicate events": len(duplicated),
            "wrong histories / states": f"{len(wrong_history)} / {len(wrong_state)}",
            "positions not flat / accounts off": f"{len(drift_pos)} / {len(drift_acct)}",
            "load time": f"{load_s:.1f} s",
            "wall time": f"{time.monotonic() - wall:.1f} s",
        },
    )
    assert not missing, missing[:20]
    assert not duplicated, list(duplicated.items())[:20]
    assert not wrong_history, list(wrong_history.items())[:20]
    assert not wrong_state, list(wrong_state.items())[:20]
    assert not double_booked, double_booked[:20]
    assert not load.unanswered, load.unanswered[:20]
    assert sum(killer.kills.values()) >= MIN_KILLS
    assert not drift_pos, drift_pos
    assert not drift_acct, drift_acct
    for proc in (core, api, executor):  # SIGKILL itself leaves no traceback
        assert "Traceback" not in proc.text, proc.tail(60)
