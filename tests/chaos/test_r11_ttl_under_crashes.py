"""R11: every order past its TTL is expired in time, exactly once, while the reaper
is SIGKILLed again and again.

Real processes on 127.0.0.1: a nats-server, ``rbot actors --only
paper_executor`` (left alone) and ``rbot actors --only ttl_reaper`` (interval
0.5 s), killed with SIGKILL and started again.  The API cannot set a TTL under a
minute, so the test places the orders as the guard would: ``PlaceCmd`` on EXEC
(``Nats-Msg-Id: place.<id>``), limit BUYs far below the market (no ticks: they
stay pending), with ``expires_at`` spread over the next minute.

For the first half of the kills the reaper comes back under the same instance
name and takes its own lease back at once; for the second half under a new
name, so it waits for the dead leader's lease to expire (lease TTL 6 s, retried
every 2 s).

Bounds, per order (deadline D, expiry E = the order's ``closed_at``):

* once the deadline has passed and a reaper leads, within two intervals:
  ``E - max(D, start of the leader that expired it) <= 2 x 0.5 s + 0.5 s``;
* overall ``E - D <= 2 x 0.5 s + 6 s (lease TTL) + 2 s (lease retry) + 3 s
  (process start) + 0.5 s`` = 12.5 s;
* exactly one ``order_expired`` event, the KV record EXPIRED.

Two sizes: the default run (chaos-lite: 60 orders over 25 s, 6 kills, the
floors) and ``-m chaos`` (RBOT_R11_ORDERS 120, RBOT_R11_KILLS 10,
RBOT_R11_SPAN_S 50; never below the floors).  The server runs the project's
``nats.conf`` settings.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import random
import re
import time
from collections import Counter, defaultdict
from decimal import Decimal

import pytest
from nats.aio.msg import Msg

from rbot.bus import codec
from rbot.bus.connection import Bus
from rbot.bus.messages import Order, OrderStatus, PlaceCmd
from rbot.bus.provision import LEASE_TTL_S
from tests.chaos.conftest import (
    BANNER_ACTORS,
    RbotProc,
    Spawn,
    figures,
    kv_values,
    rbot_env,
    read_stream,
    sized,
    spread,
)
from tests.natsd import NatsServer

FLOOR_ORDERS, FLOOR_KILLS, FLOOR_SPAN_S = 60, 6, 25
# the first deadline, after the orders are booked: every order must be booked
# before it (asserted, with a second to spare).  It was 3 s, and booking 60
# orders (each a few fsynced writes with sync_interval always) on a loaded
# 2-core machine during the whole suite can take that long: the likely cause of
# the lite variant's one failure (a timeout before any kill)
FIRST_S = 8.0
INTERVAL = 0.5
SLACK = 0.5
START_S = 3.0  # a restarted process until it asks for the lease
AFTER_LEADER = 2 * INTERVAL + SLACK
WORST = 2 * INTERVAL + LEASE_TTL_S + LEASE_TTL_S / 3 + START_S + SLACK
_LEADS = re.compile(r"^(\S+ \S+) INFO +rbot\.lease: (\S+) leads ttl_reaper")


def log_time(stamp: str) -> float:
    """A log line's asctime (local time, milliseconds) as an epoch."""
    return dt.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def epoch(iso: str) -> float:
    return codec.parse_iso(iso).timestamp()


def ttl_order(i: int, t0: float, n_orders: int, span_s: float) -> Order:
    expires = dt.datetime.fromtimestamp(t0 + FIRST_S + i * span_s / n_orders, dt.UTC)
    return Order(
        id=f"ttl-{i}",
        user="u_r11",
        venue="oanda",
        symbol="EUR_USD",
        side="BUY",
        order_type="LIMIT",
        qty=Decimal(100),
        stop_loss=Decimal("1.14000"),
        take_profit=Decimal("1.17000"),
        entry_price=Decimal("1.15000"),
        limit_price=Decimal("1.15000"),
        created_at=codec.now_iso(),
        expires_at=codec.utc_iso(expires),
    )


class Expiries:
    """order_expired (and every other event) from ORDERS, as they come."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.types: Counter[str] = Counter()
        self.expired: set[str] = set()
        self.placed: set[str] = set()
        self.all_placed = asyncio.Event()
        self.all_expired = asyncio.Event()

    async def on_event(self, msg: Msg) -> None:
        env = json.loads(msg.data)
        self.types[env["type"]] += 1
        oid = env["payload"].get("order_id")
        if env["type"] == "oco_placed":
            self.placed.add(oid)
        if env["type"] == "order_expired":
            self.expired.add(oid)
        if len(self.placed) >= self.n:
            self.all_placed.set()
        if len(self.expired) >= self.n:
            self.all_expired.set()


class Killer:
    def __init__(self, reaper: RbotProc, min_kills: int) -> None:
        self.reaper = reaper
        self.min_kills = min_kills
        self.rng = random.Random(11)
        self.kills: list[tuple[float, str]] = []  # (epoch, how the next one came up)

    async def run(self) -> None:
        for k in itertools.count(1):
            if k > self.min_kills:
                return
            await self.reaper.wait_for("leads ttl_reaper", timeout=60)
            await asyncio.sleep(self.rng.uniform(0.5, 2.5))  # pacing: let it lead a while
            await self.reaper.kill()
            same = k <= self.min_kills // 2
            self.kills.append((time.time(), "same name" if same else "new name"))
            await self.reaper.start(**({"RBOT_INSTANCE": "reaper-a"} if same else {}))


@pytest.mark.timeout(300)
async def test_r11_lite_ttl_holds_through_six_reaper_kills(
    own_nats_server: NatsServer, prefix: str, chaos_bus: Bus, spawn: Spawn
) -> None:
    """Chaos-lite, in the default run: the floors."""
    await ttl_under_kills(
        own_nats_server, prefix, chaos_bus, spawn,
        n_orders=sized("RBOT_R11_LITE_ORDERS", FLOOR_ORDERS, FLOOR_ORDERS),
        min_kills=sized("RBOT_R11_LITE_KILLS", FLOOR_KILLS, FLOOR_KILLS),
        span_s=float(sized("RBOT_R11_LITE_SPAN_S", FLOOR_SPAN_S, FLOOR_SPAN_S)),
    )  # fmt: skip


@pytest.mark.chaos
@pytest.mark.timeout(600)
async def test_r11_ttl_holds_while_the_reaper_is_killed(
    own_nats_server: NatsServer, prefix: str, chaos_bus: Bus, spawn: Spawn
) -> None:
    await ttl_under_kills(
        own_nats_server, prefix, chaos_bus, spawn,
        n_orders=sized("RBOT_R11_ORDERS", FLOOR_ORDERS, 120),
        min_kills=sized("RBOT_R11_KILLS", FLOOR_KILLS, 10),
        span_s=float(sized("RBOT_R11_SPAN_S", FLOOR_SPAN_S, 50)),
    )  # fmt: skip


async def ttl_under_kills(
    own_nats_server: NatsServer, prefix: str, bus: Bus, spawn: Spawn,
    *, n_orders: int, min_kills: int, span_s: float,
) -> None:  # fmt: skip
    wall = time.monotonic()
    env = rbot_env(own_nats_server.url, prefix, RBOT_REAPER_INTERVAL_S=str(INTERVAL))
    executor = spawn("paper_executor", ["actors", "--only", "paper_executor"], env, BANNER_ACTORS)
    reaper = spawn("ttl_reaper", ["actors", "--only", "ttl_reaper"], env, BANNER_ACTORS)
    seen = Expiries(n_orders)
    sub = await bus.js.subscribe(bus.subjects.order_events, cb=seen.on_event, ordered_consumer=True)
    try:
        await executor.start(RBOT_INSTANCE="exec-r11")
        await executor.wait_for(r"rebuilt \(epoch", timeout=30)
        t0 = time.time()
        orders = [ttl_order(i, t0, n_orders, span_s) for i in range(n_orders)]
        for o in orders:
            await bus.js.publish(
                bus.subjects.exec(o.venue, o.symbol),
                codec.encode(PlaceCmd(order=o)),
                headers={"Nats-Msg-Id": f"place.{o.id}"},
            )
        async with asyncio.timeout(FIRST_S - 1):  # all booked before the first deadline
            await seen.all_placed.wait()
        booked = time.time() - t0
        await reaper.start(RBOT_INSTANCE="reaper-a")
        killer = Killer(reaper, min_kills)
        await killer.run()
        async with asyncio.timeout(span_s + 2 * WORST):
            await seen.all_expired.wait()
    finally:
        await sub.unsubscribe()

    # -- the comparison --------------------------------------------------------
    leads = sorted(log_time(m.group(1)) for line in reaper.lines if (m := _LEADS.match(line)))
    gaps: dict[str, list[float]] = defaultdict(list)
    leaderless: list[tuple[float, float]] = []  # from a kill to the next leader
    for t, how in killer.kills:
        nxt = min((s for s in leads if s > t), default=float("inf"))
        leaderless.append((t, nxt))
        gaps[how].append(nxt - t)
    stored = {k[2:]: v for k, v in (await kv_values(bus, "orders", "o.*", Order)).items()}
    events: Counter[tuple[str, str]] = Counter(
        (e["payload"].get("order_id"), e["type"]) for _, _, e in await read_stream(bus, "ORDERS")
    )
    late_quiet: list[float] = []
    late_disturbed: list[float] = []
    after_leader: list[float] = []
    problems: list[str] = []
    for o in orders:
        rec = stored.get(o.id)
        if rec is None or rec.status is not OrderStatus.EXPIRED or rec.closed_at is None:
            problems.append(f"{o.id}: {None if rec is None else rec.status}")
            continue
        d, e = epoch(o.expires_at), epoch(rec.closed_at)
        if events[(o.id, "order_expired")] != 1 or events[(o.id, "oco_placed")] != 1:
            problems.append(f"{o.id}: events {events[(o.id, 'order_expired')]} expired")
        if e < d:
            problems.append(f"{o.id}: expired {d - e:.3f} s early")
        leader = max((s for s in leads if s <= e), default=e)
        after_leader.append(e - max(d, leader))
        no_leader = any(k <= d < nxt for k, nxt in leaderless)
        (late_disturbed if no_leader else late_quiet).append(e - d)
    other = {t: n for (_, t), n in events.items() if t not in ("oco_placed", "order_expired")}

    figures(
        "R11 TTL under reaper SIGKILLs",
        {
            "orders (deadlines over)": f"{n_orders} ({span_s:g} s)",
            "all booked after": f"{booked:.2f} s (first deadline {FIRST_S:g} s)",
            "reaper interval": f"{INTERVAL} s",
            "kills (SIGKILL)": f"{len(killer.kills)} {dict(Counter(h for _, h in killer.kills))}",
            **{f"kill -> next leader, {k}": spread(v) for k, v in gaps.items()},
            "leader terms": len(leads),
            "late, a leader at the deadline": spread(late_quiet),
            "late, no leader at the deadline": spread(late_disturbed),
            "deadline+leader -> expired": spread(after_leader) + f" (bound {AFTER_LEADER:g} s)",
            "bound overall": f"{WORST:g} s = 2 x {INTERVAL} + lease {LEASE_TTL_S:g} + "
            f"retry {LEASE_TTL_S / 3:g} + start {START_S:g} + slack {SLACK}",
            "order_expired events": sum(n for (_, t), n in events.items() if t == "order_expired"),
            "other order events": other,
            "problems": len(problems),
            "wall time": f"{time.monotonic() - wall:.1f} s",
        },
    )
    assert not problems, problems[:20]
    assert not other, other
    assert len(orders) == n_orders >= FLOOR_ORDERS
    assert len(killer.kills) >= min_kills >= FLOOR_KILLS
    assert max(after_leader) <= AFTER_LEADER
    assert max(late_quiet + late_disturbed) <= WORST
    assert "Traceback" not in executor.text, executor.tail(60)
