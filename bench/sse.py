"""4. SSE fan-out: M clients on ``GET /events`` receiving order events, vs one client.

The stack runs in a child process (``bench.stack_proc``); this process holds
the SSE clients (httpx streams, all as the same trader, subjects
``evt.order.>``) and publishes ``oco_placed`` envelopes for that trader to the
``ORDERS`` stream, exactly as the executor does.  Each client has its own
ordered consumer in the API, so M clients cost the server M deliveries, M
ownership checks and M SSE writes per event.

Events go one at a time: publish, wait until every client has the event's SSE
``id`` (the stream sequence the PubAck returned), then the next.  Delivery
latency = a client's receipt - the publish call, one clock, one process.
Clients connect with ``since=<last sequence>``, so nothing is missed while
their consumers are being created, and the first ``WARMUP`` events are not
counted.  Phases alternate 1, M, 1, M ...; medians of the phases are reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from rbot.bus.connection import Bus, connect
from rbot.bus.subjects import Subjects

from .child import StackInfo, stack_child
from .common import Row, Section, median, pct, proc_cpu_s
from .natsd import servers
from .payloads import order_event

CLIENTS = 50
EVENTS = {1: 300, CLIENTS: 100}  # more for 1 client: its CPU per event is small
WARMUP = 10
ROUNDS = 3
EVENT_TIMEOUT = 10.0
PHASE_S = 4.0  # no new event after this; the phase reports what it measured


@dataclass
class Phase:
    m: int
    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    last_p50: list[float] = field(default_factory=list)  # until the M-th client has it
    cpu: list[float] = field(default_factory=list)  # stack process CPU us per event
    events: list[int] = field(default_factory=list)


class Fanout:
    def __init__(self, info: StackInfo, bus: Bus, m: int) -> None:
        self.info = info
        self.bus = bus
        self.m = m
        self.arrivals: dict[int, list[float]] = defaultdict(list)
        self.waiters: dict[int, asyncio.Future[None]] = {}
        self.connected = 0
        self.all_connected = asyncio.Event()

    async def client(self, http: httpx.AsyncClient, since: int) -> None:
        params = {"subjects": "evt.order.>", "since": str(since)}
        async with http.stream("GET", "/events", params=params) as r:
            if r.status_code != 200:
                raise RuntimeError(f"SSE answered {r.status_code}")
            self.connected += 1
            if self.connected == self.m:
                self.all_connected.set()
            pc = time.perf_counter
            async for line in r.aiter_lines():
                if line.startswith("id: "):
                    now = pc()
                    seq = int(line[4:])
                    got = self.arrivals[seq]
                    got.append(now)
                    if len(got) == self.m:
                        w = self.waiters.get(seq)
                        if w is not None and not w.done():
                            w.set_result(None)

    async def publish(self, n: int) -> tuple[int, float]:
        subject = self.bus.subjects.order_event("oanda", "EUR_USD", "oco_placed")
        data = order_event(n, self.info.sub)
        t0 = time.perf_counter()
        ack = await self.bus.js.publish(subject, data, headers={"Nats-Msg-Id": f"bench-sse-{n}"})
        seq = ack.seq
        if len(self.arrivals[seq]) < self.m:
            w = self.waiters[seq] = asyncio.get_running_loop().create_future()
            async with asyncio.timeout(EVENT_TIMEOUT):
                await w
        return seq, t0


async def phase(info: StackInfo, bus: Bus, m: int, counter: list[int], out: Phase) -> None:
    stream = bus.subjects.stream("ORDERS")
    since = (await bus.js.stream_info(stream)).state.last_seq
    fan = Fanout(info, bus, m)
    limits = httpx.Limits(max_connections=m + 1, max_keepalive_connections=m + 1)
    headers = {"Authorization": f"Bearer {info.token}"}
    timeout = httpx.Timeout(30.0, read=None)
    async with httpx.AsyncClient(
        base_url=info.base, headers=headers, limits=limits, timeout=timeout
    ) as http:
        tasks = [asyncio.create_task(fan.client(http, since)) for _ in range(m)]
        try:
            async with asyncio.timeout(30):
                await fan.all_connected.wait()
            sent: list[tuple[int, float]] = []
            cpu0 = 0.0
            stop_at = time.perf_counter() + PHASE_S
            for i in range(WARMUP + EVENTS.get(m, 100)):
                if i == WARMUP:
                    cpu0 = proc_cpu_s(info.pid)
                elif i > WARMUP and time.perf_counter() > stop_at:
                    break
                counter[0] += 1
                seq, t0 = await fan.publish(counter[0])
                if i >= WARMUP:
                    sent.append((seq, t0))
            out.cpu.append((proc_cpu_s(info.pid) - cpu0) / len(sent) * 1e6)
            out.events.append(len(sent))
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await t
    lat = [(t - t0) * 1e6 for seq, t0 in sent for t in fan.arrivals[seq]]
    last = [(max(fan.arrivals[seq]) - t0) * 1e6 for seq, t0 in sent]
    assert len(lat) == m * len(sent)
    out.p50.append(pct(lat, 50))
    out.p99.append(pct(lat, 99))
    out.last_p50.append(pct(last, 50))


async def run(workdir: Path, quick: bool = False, nodelay: bool = False) -> Section:
    rounds = 2 if quick else ROUNDS
    title = f"4. SSE fan-out: {CLIENTS} clients vs 1"
    sec = Section(title + (" (what-if: API sockets with TCP_NODELAY)" if nodelay else ""))
    one, many = Phase(1), Phase(CLIENTS)
    async with (
        servers(workdir, always=True) as srv,
        stack_child(srv["always"].url, workdir / "stack-sse.log", nodelay=nodelay) as info,
    ):
        bus = await connect(srv["always"].url, Subjects(prefix=info.prefix), "bench-sse")
        try:
            counter = [0]
            for r in range(rounds):
                order = (one, many) if r % 2 == 0 else (many, one)
                for ph in order:
                    await phase(info, bus, ph.m, counter, ph)
        finally:
            await bus.close()

        def span(xs: list[int]) -> str:
            return f"{min(xs)}" if min(xs) == max(xs) else f"{min(xs)}-{max(xs)}"

        sec.facts.append(
            f"{rounds} phases each of 1 client x {span(one.events)} events "
            f"and {CLIENTS} clients x {span(many.events)} events (+{WARMUP} "
            f"warm-up; <= {PHASE_S:g} s a phase), one event in flight; server "
            f"sync={srv['always'].sync_label}; latency from the publish call to a client's SSE "
            "id line; CPU from /proc (10 ms ticks)"
        )

    def row(name: str, field_: str) -> Row:
        fig, base = median(getattr(many, field_)), median(getattr(one, field_))
        return Row("4 sse", name, fig, base, "us", "1 client")

    sec.rows += [
        row(f"delivery p50, {CLIENTS} clients", "p50"),
        row(f"delivery p99, {CLIENTS} clients", "p99"),
        row(f"all {CLIENTS} delivered p50", "last_p50"),
        row(f"API CPU per event, {CLIENTS} clients", "cpu"),
    ]
    per_client = (median(many.cpu) - median(one.cpu)) / (CLIENTS - 1)
    sec.facts.append(
        f"API process CPU per event per extra client: ~{per_client:.0f} us (consumer delivery, "
        "ownership check, SSE frame, socket send)"
    )
    return sec
