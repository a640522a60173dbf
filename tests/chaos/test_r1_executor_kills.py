"""R1: no acknowledged order is lost or duplicated while the executor is SIGKILLed.

Real processes on 127.0.0.1: a nats-server (the project's ``nats.conf``
settings: ``sync_interval: always``), ``rbot actors --only heartbeat
order_guard``, ``rbot api`` and two ``rbot actors --only paper_executor``
processes sharing 5 partitions.  The test submits orders over HTTP (16 at a
time, paced) — market BUYs and SELLs that fill on the next tick and close on
the next price spike, and limit BUYs far below the market that stay pending —
while it SIGKILLs the executor holding the most partitions (read from the
``fence.<N>`` leases) and starts it again.  Most restarts keep the instance
name (it takes its own leases back at once, like a restarted unit); every
fourth one comes up under a new name, so the survivor takes the dead owner's
partitions over.  Every fourth kill lands on the process just restarted, right
after it took a partition, while it rebuilds.

A submission is retried with the same ``client_order_id`` on a 503 or a
broken connection (up to 40 times); any other answer than 200 or 503 is a
refusal, counted.  Asserted: acknowledged >= 90 % of submitted (refusals and
give-ups included), kills >= the size asked.

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
by rebuilds, EXEC deliveries, wall time.  Two sizes: the default run (chaos-lite,
floors 300 orders / 10 kills) and ``-m chaos`` (scripts/chaos.sh: RBOT_R1_ORDERS,
default 1000, RBOT_R1_KILLS, default 20; never below the floors);
RBOT_R1_RATE (orders/s, 15).
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
    holders,
    kv_values,
    publish_tick,
    rbot_env,
    read_stream,
    sized,
    spread,
    trader_token,
    wait_exec_drained,
    wait_holders,
)
from tests.natsd import NatsServer

FLOOR_ORDERS, FLOOR_KILLS = 300, 10
RATE = float(os.environ.get("RBOT_R1_RATE", "15"))
ACK_SHARE = 0.9  # acknowledged / submitted, at least
ATTEMPTS = 40  # per order on 503 / a broken connection, same client_order_id
PARTITIONS = 5  # uneven: one executor holds 3, the kill takes the larger share
EXECUTORS = 2
CONCURRENCY = 16
USERS = 4
TICK_S = 0.1
SPIKE_EVERY = 15  # ticks
SAME_NAME_RESTARTS = 4  # then a new instance name (the survivor takes over)
P = Decimal("0.00001")

# symbol -> (bid, spread)
MARKETS = {"EUR_USD": (Decimal("1.16500"), Decimal("0.00014")),
           "GBP_USD": (Decimal("1.33500"), Decimal("0.00018"))}  # fmt: skip
_CLAIM = re.compile(r"partition \d+ (claimed|taken over|adopted)")
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
    def __init__(self, client: httpx.AsyncClient, tokens: list[str], n_orders: int) -> None:
        self.client = client
        self.tokens = tokens
        self.n_orders = n_orders
        self.acked: dict[str, tuple[str, str]] = {}  # order_id -> (client_order_id, kind)
        self.statuses: Counter[str] = Counter()
        self.retries = 0
        self.latencies: list[float] = []
        self.unanswered: list[str] = []  # 40 x 503 / transport error
        self.refused: list[str] = []  # any other answer than 200 or 503

    async def run(self) -> None:
        indices = iter(range(self.n_orders))
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
            for attempt in range(ATTEMPTS):  # a retry keeps the client_order_id: idempotent
                if attempt:
                    self.retries += 1
                    await asyncio.sleep(0.25)  # pacing of the retries
                started = time.monotonic()
                try:
                    r = await self.client.post("/brokers/oanda/orders", json=body, headers=headers)
                except httpx.TransportError as exc:
                    self.statuses[type(exc).__name__] += 1
                    continue
                self.latencies.append(time.monotonic() - started)
                self.statuses[str(r.status_code)] += 1
                if r.status_code == 200:
                    self.acked[r.json()["order_id"]] = (body["client_order_id"], kind)
                    break
                if r.status_code != 503:
                    self.refused.append(
                        f"{body['client_order_id']}: {r.status_code} {r.text[:200]}"
                    )
                    break
            else:
                self.unanswered.append(body["client_order_id"])


class Killer:
    """SIGKILLs the executor holding the most partitions, and starts it again."""

    def __init__(
        self, bus: Bus, executors: list[RbotProc], load_done: asyncio.Event, kills: int
    ) -> None:
        self.bus = bus
        self.executors = executors
        self.names = {id(e): f"exec-{i}" for i, e in enumerate(executors)}
        self.load_done = load_done
        self.min_kills = kills
        self.rng = random.Random(1)
        self.kills: Counter[str] = Counter()
        self.partitions_of_victim: Counter[int] = Counter()
        self.to_lead: dict[str, list[float]] = defaultdict(list)

    def by_name(self, name: str) -> RbotProc:
        return next(e for e in self.executors if self.names[id(e)] == name)

    async def run(self) -> None:
        last: RbotProc | None = None
        for k in itertools.count(1):
            if k > self.min_kills and self.load_done.is_set():
                return
            if k % 4 == 0 and last is not None:  # right after it took a partition: rebuilding
                victim = last
                await victim.wait_for(_CLAIM, timeout=60)
                phase = "just restarted, while rebuilding"
            else:
                names = set(self.names.values())
                await wait_holders(
                    self.bus,
                    lambda h, names=names: len(h) == PARTITIONS and set(h.values()) <= names,
                    timeout=60,
                )
                await asyncio.sleep(self.rng.uniform(0.3, 1.5))  # pacing: let them work
                held = Counter((await holders(self.bus)).values())
                owner, count = held.most_common(1)[0]
                victim = self.by_name(owner)
                phase = "holder of the most partitions"
                self.partitions_of_victim[count] += 1
            await victim.kill()
            killed = time.monotonic()
            self.kills[phase] += 1
            renamed = k % SAME_NAME_RESTARTS == 0
            if renamed:
                self.names[id(victim)] = f"exec-{EXECUTORS + k}"
            await victim.start(RBOT_INSTANCE=self.names[id(victim)])
            await victim.wait_for(_CLAIM, timeout=60)
            how = "new name (survivor took over)" if renamed else "same name (lease reclaim)"
            self.to_lead[how].append(time.monotonic() - killed)
            last = victim


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


@pytest.mark.timeout(360)
async def test_r1_lite_ten_kills_of_the_partition_owners(
    own_nats_server: NatsServer, prefix: str, chaos_bus: Bus, spawn: Spawn
) -> None:
    """Chaos-lite, in the default run: the floors (300 orders, 10 SIGKILLs)."""
    await executor_kills(
        own_nats_server, prefix, chaos_bus, spawn,
        n_orders=sized("RBOT_R1_LITE_ORDERS", FLOOR_ORDERS, FLOOR_ORDERS),
        min_kills=sized("RBOT_R1_LITE_KILLS", FLOOR_KILLS, FLOOR_KILLS),
    )  # fmt: skip


@pytest.mark.chaos
@pytest.mark.timeout(900)
async def test_r1_executor_sigkills_lose_and_duplicate_nothing(
    own_nats_server: NatsServer, prefix: str, chaos_bus: Bus, spawn: Spawn
) -> None:
    await executor_kills(
        own_nats_server, prefix, chaos_bus, spawn,
        n_orders=sized("RBOT_R1_ORDERS", FLOOR_ORDERS, 1000),
        min_kills=sized("RBOT_R1_KILLS", FLOOR_KILLS, 20),
    )  # fmt: skip


async def executor_kills(
    server: NatsServer, prefix: str, bus: Bus, spawn: Spawn, *, n_orders: int, min_kills: int
) -> None:
    wall = time.monotonic()
    env = rbot_env(
        server.url, prefix, RBOT_ORDERS_PER_MINUTE="1000000",
        RBOT_PARTITIONS=str(PARTITIONS), RBOT_BEAT_INTERVAL_S="0.5",
    )  # fmt: skip
    bus.subjects = type(bus.subjects)(prefix=prefix, partitions=PARTITIONS)
    core = spawn("actors", ["actors", "--only", "heartbeat", "order_guard"], env, BANNER_ACTORS)
    api = spawn("api", ["api"], env, BANNER_API)
    executors = [
        spawn(f"paper_executor{i}", ["actors", "--only", "paper_executor"], env, BANNER_ACTORS)
        for i in range(EXECUTORS)
    ]
    for symbol, (bid, sp) in MARKETS.items():
        await publish_tick(bus, "oanda", symbol, bid, bid + sp)
    _, banner, *_ = await asyncio.gather(
        core.start(), api.start(),
        *(e.start(RBOT_INSTANCE=f"exec-{i}") for i, e in enumerate(executors)),
    )  # fmt: skip
    base = f"http://127.0.0.1:{banner.group(1)}"
    await wait_holders(
        bus, lambda h: len(h) == PARTITIONS and len(set(h.values())) == EXECUTORS, timeout=60
    )

    stop_ticks = asyncio.Event()
    load_done = asyncio.Event()
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as client:
        tokens = [await trader_token(client, f"r1-{u}@test") for u in range(USERS)]
        load = Load(client, tokens, n_orders)
        killer = Killer(bus, executors, load_done, min_kills)
        async with asyncio.TaskGroup() as tg:
            ticks = tg.create_task(ticker(bus, stop_ticks))
            kills = tg.create_task(killer.run())
            await load.run()
            load_done.set()
            load_s = time.monotonic() - wall
            await kills
            await wait_holders(bus, lambda h: len(h) == PARTITIONS, timeout=60)
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
    rebuilds = [tuple(map(int, m.groups())) for ex in executors for line in ex.lines
                if (m := _REBUILT.search(line))]  # fmt: skip

    figures(
        "R1 executor SIGKILLs",
        {
            "orders submitted": n_orders,
            "executors / partitions": f"{EXECUTORS} / {PARTITIONS}",
            "HTTP statuses": dict(load.statuses),
            "acknowledged (200)": len(load.acked),
            "retries (same client_order_id)": load.retries,
            "acknowledged share": f"{len(load.acked) / n_orders:.1%} (floor {ACK_SHARE:.0%})",
            "refused (not 200/503) / gave up (40 x 503)": f"{len(load.refused)} / {len(load.unanswered)}",
            "HTTP latency": spread(load.latencies),
            "kills (SIGKILL)": f"{sum(killer.kills.values())} {dict(killer.kills)}",
            "partitions held by the victim (kills)": dict(
                sorted(killer.partitions_of_victim.items())
            ),
            "executor runs": sum(e.runs for e in executors),
            "in-process executor crashes": sum(
                e.count("INFO  rbot.supervisor: paper_executor crashed") for e in executors
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
    assert n_orders >= FLOOR_ORDERS
    assert len(load.acked) >= ACK_SHARE * n_orders, (len(load.acked), load.refused[:5])
    assert not load.refused, load.refused[:20]
    assert not load.unanswered, load.unanswered[:20]
    assert sum(killer.kills.values()) >= min_kills >= FLOOR_KILLS
    assert not drift_pos, drift_pos
    assert not drift_acct, drift_acct
    for proc in (core, api, *executors):  # SIGKILL itself leaves no traceback
        assert "Traceback" not in proc.text, proc.tail(60)
