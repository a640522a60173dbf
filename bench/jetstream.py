"""1. JetStream PubAck: ``sync_interval: always`` (what ``rbot up`` runs) vs the default.

Two nats-server processes, each from its own temp dir and generated config,
identical but for ``sync_interval``; ``/varz`` confirms which is which.  Each
gets a file stream like ``EXEC`` (duplicate window 10 min) and the guard's own
message: a ~0.6 KiB ``PlaceCmd`` with a unique ``Nats-Msg-Id``.

* latency: one publish at a time, awaiting each PubAck (p50 / p99);
* throughput: ``CONCURRENCY`` publishers awaiting their PubAcks, as the guard
  does under load (msgs/s).

Rounds alternate the servers (ABBA...) and the medians of the rounds are reported.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path

import nats
from nats.js import api

from .common import Row, Section, fs_type, median, pct
from .natsd import BenchNats, servers
from .payloads import place_cmd

ROUNDS = 5
N_LATENCY = 1000
N_THROUGHPUT = 3000
CONCURRENCY = 32
WARMUP = 300
MAX_S = 2.0  # per phase: no new publish after this (bounded in count and time)


class _Target:
    def __init__(self, srv: BenchNats) -> None:
        self.srv = srv
        self.ids = itertools.count()
        self.p50: list[float] = []
        self.p99: list[float] = []
        self.rate: list[float] = []

    async def open(self) -> None:
        self.nc = await nats.connect(self.srv.url, name="bench-js")
        self.js = self.nc.jetstream(timeout=10.0)
        await self.js.add_stream(
            api.StreamConfig(
                name="BENCH",
                subjects=["bench.>"],
                retention=api.RetentionPolicy.WORK_QUEUE,
                storage=api.StorageType.FILE,
                duplicate_window=600.0,
                max_msg_size=256 * 1024,
            )
        )
        self.payload = place_cmd(1)

    async def close(self) -> None:
        await self.nc.close()

    async def publish(self) -> None:
        n = next(self.ids)
        await self.js.publish(
            "bench.exec.0.oanda.EUR_USD", self.payload, headers={"Nats-Msg-Id": f"place.{n}"}
        )

    async def latency(self, n: int) -> None:
        samples = []
        pc = time.perf_counter
        stop_at = pc() + MAX_S
        for _ in range(n):
            if pc() > stop_at:
                break
            t0 = pc()
            await self.publish()
            samples.append(pc() - t0)
        self.p50.append(pct(samples, 50) * 1e6)
        self.p99.append(pct(samples, 99) * 1e6)

    async def throughput(self, n: int, concurrency: int) -> None:
        left = n
        done = 0
        stop_at = time.perf_counter() + MAX_S

        async def worker() -> None:
            nonlocal left, done
            while left > 0 and time.perf_counter() < stop_at:
                left -= 1
                await self.publish()
                done += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        self.rate.append(done / (time.perf_counter() - t0))


async def run(workdir: Path, quick: bool = False) -> Section:
    rounds = 3 if quick else ROUNDS
    scale = 0.3 if quick else 1.0
    n_lat, n_tp = int(N_LATENCY * scale), int(N_THROUGHPUT * scale)
    sec = Section("1. JetStream PubAck: sync_interval always vs default")
    async with servers(workdir, always=True, default=False) as srv:
        always, default = _Target(srv["always"]), _Target(srv["default"])
        for t in (always, default):
            await t.open()
        try:
            for t in (always, default):  # warm-up: connections, stream files, page cache
                for _ in range(WARMUP):
                    await t.publish()
                await t.throughput(WARMUP, CONCURRENCY)
                t.rate.clear()
            for r in range(rounds):
                order = (always, default) if r % 2 == 0 else (default, always)
                for t in order:
                    await t.latency(n_lat)
                for t in order:
                    await t.throughput(n_tp, CONCURRENCY)
        finally:
            for t in (always, default):
                await t.close()
        store = workdir / "always"
        sec.facts += [
            f"servers: nats-server {srv['always'].name} sync={srv['always'].sync_label}, "
            f"{srv['default'].name} sync={srv['default'].sync_label} (from /varz)",
            f"store: a temp dir on {fs_type(store)}; payload {len(always.payload)} B PlaceCmd "
            f"+ Nats-Msg-Id; {rounds} rounds x {n_lat} serial + {n_tp} at concurrency "
            f"{CONCURRENCY} (each <= {MAX_S:g} s)",
        ]
    b = "1 js"
    base = "sync default"
    sec.rows += [
        Row(b, "PubAck p50, sync always", median(always.p50), median(default.p50), "us", base),
        Row(b, "PubAck p99, sync always", median(always.p99), median(default.p99), "us", base),
        Row(
            b,
            f"publish rate c={CONCURRENCY}, sync always",
            median(always.rate),
            median(default.rate),
            "/s",
            base,
        ),
    ]
    return sec
