"""R2: no acknowledged order is lost across nats-server restarts (SIGTERM and SIGKILL),
and the API answers 503 with a JSON code (never 500) while NATS is down.

Real processes on 127.0.0.1: a nats-server (its store and port kept across
restarts), ``rbot actors --only heartbeat order_guard paper_executor`` and
``rbot api``.  The test places orders over HTTP all the time (8 at a time,
paced); a 503 is retried with the same ``client_order_id``, as a client
should.  It stops the server alternately with SIGTERM and SIGKILL; while the
server is down it probes the API (an order, a read) and wants 503 + a JSON
``code``; then it starts the server again and waits until an order placed
after the restart is acknowledged (the processes recover by themselves).

Afterwards, with the executor's work queue drained: every 200-acknowledged
order is in KV ``o.<id>`` (or its place command is still in EXEC, or its
``oco_placed`` in ORDERS), no ``client_order_id`` was booked twice, and the
acknowledged id is the booked one; acknowledged >= 90 % of the orders submitted
(a refusal other than 503, or 40 x 503, counts against it) and >= 10 per restart.
The server runs the project's ``nats.conf`` settings (``sync_interval: always``).
Two sizes: the default run (chaos-lite: 3 restarts, the floor) and ``-m chaos``
(RBOT_R2_RESTARTS, default 10, never below 3).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import random
import re
import signal
import time
from collections import Counter
from decimal import Decimal
from typing import Any

import httpx
import pytest
from nats.errors import Error as NatsError

from rbot.bus import codec
from rbot.bus.connection import Bus
from rbot.bus.messages import Order, TradingStateRecord
from rbot.bus.timing import every
from tests.chaos.conftest import (
    BANNER_ACTORS,
    BANNER_API,
    Spawn,
    figures,
    json_code,
    kv_values,
    publish_tick,
    rbot_env,
    read_stream,
    sized,
    spread,
    trader_token,
    wait_exec_drained,
)
from tests.natsd import NatsServer

FLOOR_RESTARTS = 3
ACK_SHARE = 0.9
ACKS_PER_RESTART = 10
RATE = 20.0  # orders per second while the bus is up
CONCURRENCY = 8
ATTEMPTS = 40  # per order, same client_order_id
BID, SPREAD = Decimal("1.16500"), Decimal("0.00014")
_RESTARTING = re.compile(r"(\S+ \S+) INFO +rbot\.supervisor: \S+ restarting")


def busiest(times: list[float], window: float) -> int:
    """The most events within any ``window`` seconds."""
    return max((sum(t <= u < t + window for u in times) for t in times), default=0)


def body(i: int) -> dict[str, Any]:
    side = "BUY" if i % 2 else "SELL"
    sl, tp = (Decimal("1.16000"), Decimal("1.17000"))
    if side == "SELL":
        sl, tp = tp, sl
    b: dict[str, Any] = {
        "instrument": "EUR_USD", "side": side, "units": "100", "quality_score": 75,
        "stop_loss_price": str(sl), "take_profit_price": str(tp), "client_order_id": f"r2-{i}",
    }  # fmt: skip
    if i % 3 == 0:  # a pending limit now and then
        b.update(order_type="LIMIT", entry_price="1.15000" if side == "BUY" else "1.18000")
        b.update(stop_loss_price="1.14000" if side == "BUY" else "1.19000")
    return b


async def ticker(bus: Bus, stop: asyncio.Event, failed: Counter[str]) -> None:
    """A feed: a tick every 0.2 s; while the server is down the puts fail (counted)."""
    async for _ in every(0.2):
        if stop.is_set():
            return
        try:
            async with asyncio.timeout(1.0):
                await publish_tick(bus, "oanda", "EUR_USD", BID, BID + SPREAD)
        except (NatsError, TimeoutError, OSError) as exc:
            failed[type(exc).__name__] += 1


class Load:
    def __init__(self, client: httpx.AsyncClient, token: str) -> None:
        self.client = client
        self.headers = {"Authorization": f"Bearer {token}"}
        self.acked: dict[str, str] = {}  # order_id -> client_order_id
        self.statuses: Counter[str] = Counter()
        self.five_hundreds: list[str] = []
        self.no_code: list[str] = []
        self.gave_up: list[str] = []
        self.refused: list[str] = []  # any answer other than 200 / 503
        self.submitted = 0
        self.last_ack_sent = 0.0  # when the request of the latest 200 was sent
        self.acked_now = asyncio.Event()
        self.stop = asyncio.Event()

    async def run(self) -> None:
        indices = itertools.count()
        async with asyncio.TaskGroup() as tg:
            for _ in range(CONCURRENCY):
                tg.create_task(self._worker(indices))

    async def _worker(self, indices: Any) -> None:
        for i in indices:
            if self.stop.is_set():
                return
            await asyncio.sleep(CONCURRENCY / RATE)  # pacing
            if self.stop.is_set():
                return
            b = body(i)
            self.submitted += 1
            for _ in range(ATTEMPTS):
                sent = time.monotonic()
                try:
                    r = await self.client.post(
                        "/brokers/oanda/orders", json=b, headers=self.headers
                    )
                except httpx.TransportError as exc:
                    self.statuses[type(exc).__name__] += 1
                    continue
                code = json_code(r)
                self.statuses[f"{r.status_code} {code}"] += 1
                if r.status_code >= 500 and code is None:
                    self.no_code.append(f"{r.status_code} {r.text[:200]}")
                if r.status_code == 500:
                    self.five_hundreds.append(r.text[:300])
                if r.status_code == 200:
                    self.acked[r.json()["order_id"]] = b["client_order_id"]
                    self.last_ack_sent = max(self.last_ack_sent, sent)
                    self.acked_now.set()
                    break
                if r.status_code != 503:
                    self.refused.append(f"{b['client_order_id']}: {r.status_code} {r.text[:200]}")
                    break
                await asyncio.sleep(0.25)  # pacing of the retries
            else:
                self.gave_up.append(b["client_order_id"])

    async def ack_after(self, t: float, timeout: float) -> float:
        """Wait until an order *sent* after ``t`` is acknowledged; when it was."""
        async with asyncio.timeout(timeout):
            while self.last_ack_sent <= t:
                self.acked_now.clear()
                await self.acked_now.wait()
        return time.monotonic()


async def probe(client: httpx.AsyncClient, headers: dict[str, str], k: int) -> list[str]:
    """While NATS is down: an order and two reads at once, each 503 with a JSON code."""

    async def one(method: str, path: str, payload: dict[str, Any] | None) -> str:
        t = time.monotonic()
        r = await client.request(method, path, json=payload, headers=headers)
        assert r.status_code == 503 and json_code(r), (method, path, r.status_code, r.text)
        return f"{method} {path} {r.status_code} {json_code(r)} {time.monotonic() - t:.2f}s"

    order = {**body(10**6 + k), "client_order_id": f"probe-{k}"}
    return list(
        await asyncio.gather(
            one("POST", "/brokers/oanda/orders", order),
            one("GET", "/orders", None),
            one("GET", "/account", None),
        )
    )


@pytest.mark.timeout(300)
async def test_r2_lite_three_nats_restarts(
    own_nats_server: NatsServer, prefix: str, chaos_bus: Bus, spawn: Spawn
) -> None:
    """Chaos-lite, in the default run: 3 restarts (SIGTERM, SIGKILL, SIGTERM)."""
    restarts = sized("RBOT_R2_LITE_RESTARTS", FLOOR_RESTARTS, FLOOR_RESTARTS)
    await nats_restarts(own_nats_server, prefix, chaos_bus, spawn, restarts)


@pytest.mark.chaos
@pytest.mark.timeout(900)
async def test_r2_nats_restarts_lose_no_acknowledged_order(
    own_nats_server: NatsServer, prefix: str, chaos_bus: Bus, spawn: Spawn
) -> None:
    restarts = sized("RBOT_R2_RESTARTS", FLOOR_RESTARTS, 10)
    await nats_restarts(own_nats_server, prefix, chaos_bus, spawn, restarts)


async def nats_restarts(
    server: NatsServer, prefix: str, bus: Bus, spawn: Spawn, n_restarts: int
) -> None:
    assert server.production, "durability is tested on the project's nats.conf settings"
    wall = time.monotonic()
    rng = random.Random(2)
    env = rbot_env(server.url, prefix, RBOT_ORDERS_PER_MINUTE="1000000")
    actors = spawn(
        "actors",
        ["actors", "--only", "heartbeat", "order_guard", "paper_executor"],
        env,
        BANNER_ACTORS,
    )
    api = spawn("api", ["api"], env, BANNER_API)
    await publish_tick(bus, "oanda", "EUR_USD", BID, BID + SPREAD)
    _, banner = await asyncio.gather(actors.start(), api.start())
    base = f"http://127.0.0.1:{banner.group(1)}"

    down_s: list[float] = []
    recover_s: list[float] = []
    probes: list[str] = []
    signals: Counter[str] = Counter()
    tick_failures: Counter[str] = Counter()
    stop_ticks = asyncio.Event()
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        token = await trader_token(client, "r2@test")
        load = Load(client, token)
        async with asyncio.TaskGroup() as tg:
            ticks = tg.create_task(ticker(bus, stop_ticks, tick_failures))
            work = tg.create_task(load.run())
            await load.ack_after(0.0, timeout=30)
            for k in range(n_restarts):
                sig = signal.SIGTERM if k % 2 == 0 else signal.SIGKILL
                signals[sig.name] += 1
                await asyncio.to_thread(server.kill, sig)
                down = time.monotonic()
                probes += await probe(client, load.headers, k)
                await asyncio.to_thread(server.start)
                up = time.monotonic()
                down_s.append(up - down)
                recover_s.append(await load.ack_after(up, timeout=90) - up)
                await asyncio.sleep(rng.uniform(1.0, 3.0))  # pacing: load on a healthy bus
            load.stop.set()
            await work
            stop_ticks.set()
            await ticks

    ci, exec_stream = await wait_exec_drained(bus, timeout=120)
    orders = {k[2:]: v for k, v in (await kv_values(bus, "orders", "o.*", Order)).items()}
    placed = {
        e["payload"]["order_id"]
        for _, _, e in await read_stream(bus, "ORDERS")
        if e["type"] == "oco_placed"
    }
    queued = {
        e["order"]["id"] for _, _, e in await read_stream(bus, "EXEC") if e.get("cmd") == "place"
    }
    missing = sorted(o for o in load.acked if o not in orders and o not in placed | queued)
    by_coid = Counter(o.client_order_id for o in orders.values())
    double = sorted(c for c, n in by_coid.items() if c and n > 1)
    coid_of = {o.client_order_id: oid for oid, o in orders.items()}
    mismatched = sorted(oid for oid, c in load.acked.items() if coid_of.get(c, oid) != oid)
    unacked_booked = sorted(set(orders) - set(load.acked))
    trading = "ACTIVE"
    with contextlib.suppress(NatsError):
        entry = await (await bus.kv("control")).get("trading")
        trading = str(codec.decode(entry.value or b"", TradingStateRecord).state)

    restarts = [
        dt.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        for line in actors.lines
        if (m := _RESTARTING.match(line))
    ]
    count = Counter[str]()
    for key, n in load.statuses.items():
        count[key.split()[0]] += n
    figures(
        "R2 nats-server restarts",
        {
            "restarts": f"{n_restarts} {dict(signals)}",
            "server settings": "project nats.conf (sync_interval: always)",
            "HTTP answers": dict(count),
            "HTTP answers by code": dict(load.statuses),
            "500s / 5xx without a JSON code": f"{len(load.five_hundreds)} / {len(load.no_code)}",
            "orders submitted / acknowledged": f"{load.submitted} / {len(load.acked)} "
            f"({len(load.acked) / max(1, load.submitted):.1%}, floor {ACK_SHARE:.0%})",
            "refused (not 200/503)": len(load.refused),
            "orders given up (40 x 503)": len(load.gave_up),
            "server down (probe time)": spread(down_s),
            "restart -> first new ack": spread(recover_s),
            "probes while down": len(probes),
            "KV orders (unacked but booked)": f"{len(orders)} ({len(unacked_booked)})",
            "missing acked orders": len(missing),
            "double-booked client_order_ids": len(double),
            "EXEC consumer deliveries / commands": f"{sum(c.delivered.consumer_seq for c in ci)} / "
            f"{exec_stream.last_seq} (consumer state may roll back on a server kill)",
            "tick puts failed while down": dict(tick_failures),
            "actor restarts (most in 30 s)": f"{len(restarts)} ({busiest(restarts, 30.0)}; "
            "the supervisor escalates above 10)",
            "trading state after": trading,
            "wall time": f"{time.monotonic() - wall:.1f} s",
        },
    )
    print("   probe answers:\n     " + "\n     ".join(probes))
    assert not load.five_hundreds, load.five_hundreds[:5]
    assert not load.no_code, load.no_code[:5]
    assert sum(signals.values()) == n_restarts >= FLOOR_RESTARTS
    assert set(signals) == {"SIGTERM", "SIGKILL"}
    assert len(load.acked) >= ACK_SHARE * load.submitted, (load.refused[:5], load.gave_up[:5])
    assert len(load.acked) >= ACKS_PER_RESTART * n_restarts, len(load.acked)
    assert not missing, missing[:20]
    assert not double, double[:20]
    assert not mismatched, mismatched[:20]
    assert actors.alive and api.alive, actors.tail(80)
    assert trading == "ACTIVE", actors.tail(80)
