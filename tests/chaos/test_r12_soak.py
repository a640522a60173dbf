"""R12: it runs for hours — a bounded soak of the whole stack.

``rbot up`` as a real subprocess (embedded nats-server, every actor, the API;
the sim ticks every 50 ms on 7 symbols), three SSE clients reading ``/events``
(two on the default ``evt.>``, one on order events and every tick), and a
steady order flow over HTTP (with ``/prices`` and ``/positions`` polled 4 times a
second, as a dashboard would): market orders on EUR_USD and BTC-USD with
brackets close to the market (they open and close during the run), limit
orders with a one-minute TTL (the reaper expires them) and cancels.

Measured every 5 s after a warm-up (``WARMUP_S``): RSS, threads and open fds
of ``rbot up`` and of its nats-server, and the asyncio tasks alive in ``rbot
up``'s loop (``rbot_asyncio_tasks`` in ``/metrics``).  Asserted flat:

* RSS slope (least squares over the samples after warm-up) of ``rbot up``
  <= ``RSS_SLOPE_KIB_MIN`` (3 MiB/min), of nats-server <= 16 MiB/min (it caches
  the streams, which grow with every order), and the
  total growth under a generous bound;
* asyncio tasks: the spread (max - min) after warm-up <= ``TASK_SPREAD`` (40:
  requests and SSE writes in flight come and go) and no upward trend (the last
  third's mean <= the first third's + ``TASK_SPREAD`` / 2);
* fds: max - min after warm-up <= ``FD_GROWTH``; threads likewise;

plus SSE ids strictly increasing per client, no 5xx, no "Traceback" in the
output, a clean Ctrl-C.  Length: ``RBOT_SOAK_S`` (180 s; ``scripts/chaos.sh
--soak`` makes it 30 minutes).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from rbot.bus.timing import every
from tests.chaos.conftest import figures, json_code, proc_stats, spread, trader_token
from tests.rbotproc import RbotUp

SOAK_S = float(os.environ.get("RBOT_SOAK_S", "180"))
WARMUP_S = min(300.0, SOAK_S / 4)  # 30 s for the 2-minute proof run, 5 min for 30
ORDER_EVERY_S = 0.25
SAMPLE_EVERY_S = 15.0
RSS_GROWTH_KIB = 64 * 1024  # generous: allocator arenas, caches and KV growth
NATS_RSS_GROWTH_KIB = 256 * 1024
FD_GROWTH = 32
THREAD_GROWTH = 8
RSS_SLOPE_KIB_MIN = 3 * 1024  # KiB per minute, rbot up
# nats-server caches what it stores (ORDERS and KV grow with every order): its RSS
# follows the stored data, a looser bound (2-minute run: +9.7 MiB/min)
NATS_RSS_SLOPE_KIB_MIN = 16 * 1024
# tasks: in-flight HTTP requests and SSE writes are tasks, so one sample can catch a
# burst (the first 30-minute run: 183-248 with first/last third means 188.5 / 187.2).
# Flat means the band most samples lie in (5th-95th percentile) stays narrow and the
# mean does not climb; a leak moves both, a burst neither.
TASK_SPREAD = 40
SSE_SUBJECTS = [None, None, "evt.order.>,md.tick.>"]


class Sse:
    """One SSE client: ids must only go up; reconnects resume with Last-Event-ID."""

    def __init__(self, client: httpx.AsyncClient, headers: dict[str, str], subjects: str | None):
        self.client = client
        self.headers = headers
        self.subjects = subjects
        self.last_id: int | None = None
        self.ids = 0
        self.out_of_order: list[tuple[int, int]] = []
        self.types: Counter[str] = Counter()
        self.reconnects = 0
        self.errors: list[str] = []

    async def run(self, stop: asyncio.Event) -> None:
        params = {"subjects": self.subjects} if self.subjects else {}
        while not stop.is_set():
            headers = dict(self.headers)
            if self.last_id is not None:
                headers["Last-Event-ID"] = str(self.last_id)
            try:
                async with self.client.stream(
                    "GET", "/events", params=params, headers=headers
                ) as r:
                    assert r.status_code == 200, await r.aread()
                    async for line in r.aiter_lines():
                        self._line(line)
            except httpx.TransportError as exc:
                self.errors.append(f"{time.strftime('%H:%M:%S')} {exc!r}")
            self.reconnects += 1

    def _line(self, line: str) -> None:
        if line.startswith("id: "):
            n = int(line[4:])
            if self.last_id is not None and n <= self.last_id:
                self.out_of_order.append((self.last_id, n))
            self.last_id = n
            self.ids += 1
        elif line.startswith("data: "):
            self.types[json.loads(line[6:])["type"]] += 1


class Flow:
    """A steady order flow with brackets near the market."""

    def __init__(self, client: httpx.AsyncClient, headers: dict[str, str]) -> None:
        self.client = client
        self.headers = headers
        self.statuses: Counter[str] = Counter()
        self.server_errors: list[str] = []
        self.transport_errors: list[str] = []
        self.pending: list[str] = []
        self.latencies: list[float] = []

    async def run(self, stop: asyncio.Event) -> None:
        async for i in every(ORDER_EVERY_S):  # pacing of the load
            if stop.is_set():
                return
            prices = await self._call("GET", "/prices")
            await self._call("GET", "/positions")  # a dashboard's poll: scans prices and orders
            if prices is None:
                continue
            quote = {(p["venue"], p["symbol"]): p for p in prices["prices"]}
            eur, btc = quote.get(("oanda", "EUR_USD")), quote.get(("coinbase", "BTC-USD"))
            if eur is None or btc is None:
                continue
            await self._order(i, eur, btc)

    async def _order(self, i: int, eur: dict[str, Any], btc: dict[str, Any]) -> None:
        bid, ask = Decimal(eur["bid"]), Decimal(eur["ask"])
        kind = i % 5
        if kind == 0:  # a pending limit with a one-minute TTL
            body = {"instrument": "EUR_USD", "side": "BUY", "units": "100", "quality_score": 75,
                    "order_type": "LIMIT", "entry_price": str(bid - Decimal("0.003")),
                    "stop_loss_price": str(bid - Decimal("0.004")),
                    "take_profit_price": str(bid + Decimal("0.002")), "ttl_minutes": 1}  # fmt: skip
            got = await self._call("POST", "/brokers/oanda/orders", body)
            if got is not None:
                self.pending.append(got["order_id"])
        elif kind == 1:  # cancel the oldest pending limit we know of
            if self.pending:
                await self._call("DELETE", f"/orders/{self.pending.pop(0)}")
        elif kind in (2, 3):
            buy = kind == 2
            ref = ask if buy else bid
            sl, tp = ref - Decimal("0.0015"), ref + Decimal("0.0015")
            body = {"instrument": "EUR_USD", "side": "BUY" if buy else "SELL", "units": "1000",
                    "quality_score": 80, "stop_loss_price": str(sl if buy else tp),
                    "take_profit_price": str(tp if buy else sl)}  # fmt: skip
            await self._call("POST", "/brokers/oanda/orders", body)
        else:
            buy = (i // 5) % 2 == 0
            ref = Decimal(btc["ask"] if buy else btc["bid"])
            lo, hi = (
                (ref * Decimal("0.995")).quantize(Decimal("0.01")),
                (ref * Decimal("1.005")).quantize(Decimal("0.01")),
            )
            body = {"product_id": "BTC-USD", "side": "BUY" if buy else "SELL", "size": "0.001",
                    "stop_loss_price": str(lo if buy else hi),
                    "take_profit_price": str(hi if buy else lo)}  # fmt: skip
            await self._call("POST", "/brokers/coinbase-adv/orders", body)

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        t = time.monotonic()
        try:
            r = await self.client.request(method, path, json=body, headers=self.headers)
        except httpx.TransportError as exc:  # the API dropped the connection
            self.transport_errors.append(f"{time.strftime('%H:%M:%S')} {method} {path} {exc!r}")
            return None
        self.latencies.append(time.monotonic() - t)
        key = path.split("/")[1] if method != "POST" else path.split("/")[2]
        self.statuses[f"{method} {key} {r.status_code} {json_code(r) or ''}".strip()] += 1
        if r.status_code >= 500:
            self.server_errors.append(f"{method} {path} {r.status_code} {r.text[:300]}")
        return r.json() if r.status_code == 200 else None


def sample(rbot: RbotUp) -> dict[str, dict[str, int]]:
    assert rbot.proc is not None
    return {"rbot": proc_stats(rbot.proc.pid), "nats": proc_stats(rbot.nats_pid())}


async def asyncio_tasks(client: httpx.AsyncClient) -> int:
    """``rbot_asyncio_tasks`` from ``/metrics`` (the scrape's own task included)."""
    r = await client.get("/metrics")
    for line in r.text.splitlines():
        if line.startswith("rbot_asyncio_tasks "):
            return int(float(line.split()[1]))
    raise AssertionError(f"no rbot_asyncio_tasks in /metrics: {r.status_code} {r.text[:400]}")


def slope_per_min(points: list[tuple[float, int]]) -> float:
    """Least-squares slope of (seconds, value) points, per minute."""
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    var = sum((t - mx) ** 2 for t, _ in points)
    cov = sum((t - mx) * (v - my) for t, v in points)
    return 60.0 * cov / var if var else 0.0


@dataclass
class Series:
    """Samples after warm-up: (seconds since start, value) per measure."""

    points: dict[str, list[tuple[float, int]]] = field(default_factory=dict)

    def add(self, at: float, **values: int) -> None:
        for k, v in values.items():
            self.points.setdefault(k, []).append((at, v))

    def spread(self, k: str) -> int:
        vs = [v for _, v in self.points[k]]
        return max(vs) - min(vs)

    def band(self, k: str) -> int:
        """The 5th-95th percentile spread: flatness without one sample's burst."""
        vs = sorted(v for _, v in self.points[k])
        return vs[int(0.95 * (len(vs) - 1))] - vs[int(0.05 * (len(vs) - 1))]

    def thirds(self, k: str) -> tuple[float, float]:
        vs = [v for _, v in self.points[k]]
        third = max(1, len(vs) // 3)
        return sum(vs[:third]) / third, sum(vs[-third:]) / third

    def describe(self, k: str) -> str:
        vs = [v for _, v in self.points[k]]
        return f"min {min(vs)} max {max(vs)} (n={len(vs)}, p5-p95 band {self.band(k)})"


@pytest.mark.chaos
@pytest.mark.timeout(int(SOAK_S) + 300)
async def test_r12_soak(tmp_path: Path) -> None:
    rbot = RbotUp(
        tmp_path / "var",
        RBOT_SIM_INTERVAL_S="0.05",
        RBOT_ORDERS_PER_MINUTE="100000",
        RBOT_REAPER_INTERVAL_S="1",
        RBOT_ARGON2_FAST="1",
        RBOT_LOG_LEVEL="INFO",
    )
    await rbot.start()
    wall = time.monotonic()
    trend: list[str] = []
    stop = asyncio.Event()
    try:
        async with httpx.AsyncClient(base_url=rbot.base, timeout=30) as client:
            headers = {"Authorization": f"Bearer {await trader_token(client, 'soak@test')}"}
            clients = [Sse(client, headers, s) for s in SSE_SUBJECTS]
            flow = Flow(client, headers)
            async with asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(c.run(stop)) for c in clients]
                tasks.append(tg.create_task(flow.run(stop)))
                warm: dict[str, dict[str, int]] = {}
                series = Series()
                async for n in every(SAMPLE_EVERY_S / 3):  # the soak's own clock
                    elapsed = time.monotonic() - wall
                    s = sample(rbot)
                    tasks_now = await asyncio_tasks(client)
                    if not warm and elapsed >= WARMUP_S:
                        warm = s
                    if warm:
                        series.add(
                            elapsed, rss=s["rbot"]["rss_kib"], nats_rss=s["nats"]["rss_kib"],
                            fds=s["rbot"]["fds"], threads=s["rbot"]["threads"], tasks=tasks_now,
                        )  # fmt: skip
                    if n % 3 == 0:
                        trend.append(
                            f"{elapsed:6.0f}s rbot {s['rbot']['rss_kib'] // 1024} MiB "
                            f"nats {s['nats']['rss_kib'] // 1024} MiB fds {s['rbot']['fds']} "
                            f"tasks {tasks_now}"
                        )
                    if elapsed >= SOAK_S:
                        break
                end = sample(rbot)
                stop.set()
                for t in tasks:
                    t.cancel()
    finally:
        code = await rbot.stop(signal.SIGINT)
        log = tmp_path / "rbot-up.log"
        log.write_text(rbot.text)

    growth = {k: end[k]["rss_kib"] - warm[k]["rss_kib"] for k in end}
    rss_slope = slope_per_min(series.points["rss"])
    nats_slope = slope_per_min(series.points["nats_rss"])
    tasks_first, tasks_last = series.thirds("tasks")
    orders_ok = sum(n for k, n in flow.statuses.items() if k.startswith("POST") and " 200" in k)
    text = rbot.text
    figures(
        "R12 soak (rbot up, sim 50 ms, 3 SSE clients, steady orders)",
        {
            "length / warm-up": f"{SOAK_S:g} s / {WARMUP_S:g} s",
            "rbot RSS warm -> end": f"{warm['rbot']['rss_kib'] // 1024} -> "
            f"{end['rbot']['rss_kib'] // 1024} MiB (+{growth['rbot'] // 1024} MiB)",
            "nats RSS warm -> end": f"{warm['nats']['rss_kib'] // 1024} -> "
            f"{end['nats']['rss_kib'] // 1024} MiB (+{growth['nats'] // 1024} MiB)",
            "rbot threads / fds warm -> end": f"{warm['rbot']['threads']} / "
            f"{warm['rbot']['fds']} -> {end['rbot']['threads']} / {end['rbot']['fds']}",
            "rbot RSS slope after warm-up": f"{rss_slope:+.0f} KiB/min "
            f"(bound {RSS_SLOPE_KIB_MIN} KiB/min)",
            "nats RSS slope after warm-up": f"{nats_slope:+.0f} KiB/min "
            f"(bound {NATS_RSS_SLOPE_KIB_MIN} KiB/min)",
            "asyncio tasks after warm-up": f"{series.describe('tasks')}, first/last third mean "
            f"{tasks_first:.1f} / {tasks_last:.1f} (p5-p95 band bound {TASK_SPREAD})",
            "fds after warm-up": f"{series.describe('fds')} (spread bound {FD_GROWTH})",
            "threads after warm-up": f"{series.describe('threads')} (spread bound {THREAD_GROWTH})",
            "orders accepted": orders_ok,
            "HTTP answers": dict(flow.statuses),
            "HTTP latency": spread(flow.latencies),
            **{
                f"SSE client {i} ({c.subjects or 'evt.>'})": f"{sum(c.types.values())} events, "
                f"{c.ids} ids, out of order {len(c.out_of_order)}, reconnects {c.reconnects}, "
                f"{dict(c.types.most_common(6))}"
                for i, c in enumerate(clients)
            },
            "HTTP transport errors": len(flow.transport_errors),
            "ERROR lines in the output": text.count(" ERROR "),
            "output": str(log),
            "exit code (Ctrl-C)": code,
        },
    )
    print("   trend:\n     " + "\n     ".join(trend))
    at = text.find("Traceback")
    first_traceback = text[max(0, at - 1500) : at + 5000] if at >= 0 else ""
    assert not flow.server_errors, (flow.server_errors[:5], first_traceback)
    assert not flow.transport_errors, (flow.transport_errors[:5], first_traceback)
    for c in clients:
        assert not c.out_of_order, c.out_of_order[:10]
        assert c.reconnects == 0, c.errors
    assert clients[0].ids > 0 and clients[2].types["tick"] > 0
    assert orders_ok > 0
    assert growth["rbot"] <= RSS_GROWTH_KIB, trend
    assert growth["nats"] <= NATS_RSS_GROWTH_KIB, trend
    assert end["rbot"]["fds"] - warm["rbot"]["fds"] <= FD_GROWTH
    assert end["rbot"]["threads"] - warm["rbot"]["threads"] <= THREAD_GROWTH
    assert rss_slope <= RSS_SLOPE_KIB_MIN, trend
    assert nats_slope <= NATS_RSS_SLOPE_KIB_MIN, trend
    assert series.band("tasks") <= TASK_SPREAD, trend
    assert tasks_last <= tasks_first + TASK_SPREAD / 2, trend
    assert series.spread("fds") <= FD_GROWTH, trend
    assert series.spread("threads") <= THREAD_GROWTH, trend
    assert not first_traceback, first_traceback
    assert "never retrieved" not in text
    assert code == 0, text[-3000:]
