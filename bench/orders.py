"""2. Order placement end to end vs bare HTTP and a bare NATS request/reply.

The system runs in a child process (``bench.stack_proc``: the real API and
``order_guard`` under the supervisor); the load comes from this process.

* ``POST /brokers/oanda/orders`` (the seed's body, a new order each time): HTTP,
  auth, validation, NATS request to the guard, its KV reads and idempotency
  ``create``, the JetStream PubAck, the reply;
* ``GET /health`` on the same server: HTTP and the framework only;
* a NATS request to a bare echo responder in the same child process.

Each at concurrency ``CONCURRENCY`` (httpx async clients, one keep-alive
connection each) for req/s and p50/p99, and one at a time for p50.  Two identical
stacks run, one on a ``sync_interval: always`` server (as ``rbot up``) and one on
the default, so the table also shows what ``always`` costs an order end to end.
Rounds alternate the targets; medians of the rounds are reported.  Every
phase is bounded in count and in time (``MAX_S``): a slow target does fewer
requests, and its rate is what it did in that time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import nats
from nats.aio.client import Client as NATS

from .child import StackInfo, stack_child
from .common import Row, Section, median, pct, proc_cpu_s
from .natsd import BenchNats, servers
from .payloads import SEED_OANDA, place_cmd

CONCURRENCY = 32
ROUNDS = 3
N = {"order": 1200, "health": 3000, "echo": 6000}
N_SERIAL = 200
WARMUP = 200
MAX_S = {"concurrent": 3.0, "serial": 1.5}
STALL_US = 30_000  # a c=1 /health slower than this is the Nagle / delayed-ACK stall


@dataclass
class Stats:
    rate: list[float] = field(default_factory=list)
    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    serial_p50: list[float] = field(default_factory=list)
    cpu_stack: list[float] = field(default_factory=list)  # us of CPU per request
    cpu_nats: list[float] = field(default_factory=list)
    cpu_client: list[float] = field(default_factory=list)
    msgs: list[float] = field(default_factory=list)  # nats-server msgs in + out per request
    errors: int = 0
    first_error: str = ""


Call = Callable[[], Awaitable[str | None]]  # returns an error text, or None when fine


async def load(
    calls: Sequence[Call],
    n: int,
    st: Stats | None,
    max_s: float = 10.0,
    pids: tuple[int, int] = (0, 0),
    server: BenchNats | None = None,
) -> None:
    """At most ``n`` calls by ``len(calls)`` workers (worker i uses ``calls[i]``), none
    started after ``max_s``; records rate, latencies and CPU per request (``pids``:
    the stack process and its nats-server; this process for the client) into ``st``."""
    left = n
    msgs0 = await server.msgs() if server is not None else 0
    cpu0 = (proc_cpu_s(pids[0]), proc_cpu_s(pids[1]), time.process_time())
    samples: list[float] = []
    pc = time.perf_counter
    stop_at = pc() + max_s

    async def worker(call: Call) -> None:
        nonlocal left
        while left > 0 and pc() < stop_at:
            left -= 1
            t0 = pc()
            err = await call()
            samples.append(pc() - t0)
            if err is not None and st is not None:
                st.errors += 1
                st.first_error = st.first_error or err

    t0 = pc()
    async with asyncio.timeout(120):
        await asyncio.gather(*(worker(c) for c in calls))
    elapsed = pc() - t0
    cpu1 = (proc_cpu_s(pids[0]), proc_cpu_s(pids[1]), time.process_time())
    msgs1 = await server.msgs() if server is not None else 0
    if st is None:
        return
    if len(calls) == 1:
        st.serial_p50.append(pct(samples, 50) * 1e6)
    else:
        st.rate.append(len(samples) / elapsed)
        per = [(b - a) / len(samples) * 1e6 for a, b in zip(cpu0, cpu1, strict=True)]
        st.cpu_stack.append(per[0])
        st.cpu_nats.append(per[1])
        st.cpu_client.append(per[2])
        st.msgs.append((msgs1 - msgs0) / len(samples))
        st.p50.append(pct(samples, 50) * 1e6)
        st.p99.append(pct(samples, 99) * 1e6)


async def http_clients(
    stack: contextlib.AsyncExitStack, info: StackInfo
) -> list[httpx.AsyncClient]:
    """``CONCURRENCY`` clients of one keep-alive connection each.

    One shared client with a pool of 32 costs several times more client CPU per
    request (httpcore walks its pool under a lock on every request; measured
    here: ~5 ms vs ~1.4 ms per GET at c=32), which would make the load
    generator, not the server, the bottleneck."""
    headers = {"Authorization": f"Bearer {info.token}", "Content-Type": "application/json"}
    return [
        await stack.enter_async_context(
            httpx.AsyncClient(
                base_url=info.base,
                headers=headers,
                limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
                timeout=30,
            )
        )
        for _ in range(CONCURRENCY)
    ]


def order_call(client: httpx.AsyncClient) -> Call:
    body = json.dumps(SEED_OANDA).encode()

    async def call() -> str | None:
        r = await client.post("/brokers/oanda/orders", content=body)
        return None if r.status_code == 200 else f"{r.status_code} {r.text[:200]}"

    return call


def health_call(client: httpx.AsyncClient) -> Call:
    async def call() -> str | None:
        r = await client.get("/health")
        return None if r.status_code == 200 else f"{r.status_code} {r.text[:200]}"

    return call


def echo_call(nc: NATS, subject: str) -> Call:
    payload = place_cmd(1)  # about the size of an order request

    async def call() -> str | None:
        msg = await nc.request(subject, payload, timeout=10)
        return None if msg.data == payload else "echo mismatch"

    return call


async def run(workdir: Path, quick: bool = False, nodelay: bool = False) -> Section:
    rounds = 2 if quick else ROUNDS
    scale = 0.3 if quick else 1.0
    n = {k: int(v * scale) for k, v in N.items()}
    n_serial = int(N_SERIAL * scale)
    title = "2. Order placement end to end"
    sec = Section(title + (" (what-if: API sockets with TCP_NODELAY)" if nodelay else ""))
    st = {k: Stats() for k in ("order", "order_default", "health", "echo")}
    async with (
        servers(workdir, always=True, default=False) as srv,
        stack_child(srv["always"].url, workdir / "stack-always.log", nodelay=nodelay) as a,
        stack_child(srv["default"].url, workdir / "stack-default.log", nodelay=nodelay) as d,
        contextlib.AsyncExitStack() as clients,
    ):
        ca, cd = await http_clients(clients, a), await http_clients(clients, d)
        nc = await nats.connect(srv["always"].url, name="bench-echo-client")
        try:
            calls: dict[str, list[Call]] = {
                "order": [order_call(c) for c in ca],
                "order_default": [order_call(c) for c in cd],
                "health": [health_call(c) for c in ca],
                "echo": [echo_call(nc, a.echo)] * CONCURRENCY,
            }
            for cs in calls.values():  # warm-up: connections, caches, stream files
                await load(cs, WARMUP, None, MAX_S["concurrent"])
                await load(cs[:1], 20, None, MAX_S["serial"])
            sa, sd = srv["always"], srv["default"]
            on = {"order": (a, sa), "order_default": (d, sd), "health": (a, sa), "echo": (a, sa)}
            names = list(calls)
            for r in range(rounds):
                for name in names if r % 2 == 0 else reversed(names):
                    kind = name.split("_")[0]
                    cs = calls[name]
                    info, ns = on[name]
                    await load(cs, n[kind], st[name], MAX_S["concurrent"], (info.pid, ns.pid), ns)
                    await load(cs[:1], n_serial, st[name], MAX_S["serial"])
        finally:
            await nc.close()
        sec.facts.append(
            f"stacks: API + order_guard in a child process each, on nats-server "
            f"sync={srv['always'].sync_label} and sync={srv['default'].sync_label} "
            f"(from /varz); load: httpx in this process, {CONCURRENCY} clients x 1 keep-alive "
            "connection"
        )
    for name, s in st.items():
        if s.errors:
            raise RuntimeError(f"{name}: {s.errors} failed requests, first: {s.first_error}")
    o, od, h, e = st["order"], st["order_default"], st["health"], st["echo"]
    c = f"c={CONCURRENCY}"

    def row(name: str, unit: str, field_: str, base: Stats, base_name: str) -> Row:
        fig, ref = median(getattr(o, field_)), median(getattr(base, field_))
        return Row("2 order", name, fig, ref, unit, base_name)

    sec.rows += [
        row(f"POST order req/s {c}", "/s", "rate", h, "GET /health"),
        row(f"POST order p50 {c}", "us", "p50", h, "GET /health"),
        row(f"POST order p99 {c}", "us", "p99", h, "GET /health"),
        row("POST order p50 c=1", "us", "serial_p50", h, "GET /health"),
        row(f"POST order req/s {c}", "/s", "rate", e, "NATS echo"),
        row(f"POST order p50 {c}", "us", "p50", e, "NATS echo"),
        row(f"POST order p99 {c}", "us", "p99", e, "NATS echo"),
        row("POST order p50 c=1", "us", "serial_p50", e, "NATS echo"),
        row("stack CPU per order", "us", "cpu_stack", h, "per GET /health"),
        row("stack CPU per order", "us", "cpu_stack", e, "per NATS echo"),
        row(f"POST order req/s {c}, sync always", "/s", "rate", od, "sync default"),
        row("POST order p50 c=1, sync always", "us", "serial_p50", od, "sync default"),
    ]
    sec.facts.append(
        f"{rounds} rounds x up to {n['order']} orders / {n['health']} health / {n['echo']} echo "
        f"at c={CONCURRENCY} (<= {MAX_S['concurrent']:g} s), + up to {n_serial} each at c=1 "
        f"(<= {MAX_S['serial']:g} s); every answer checked (200, echo equal)"
    )
    sec.facts.append(
        "CPU per request at c=32 (us): stack process (API + guard + echo) "
        + ", ".join(f"{k} {median(v.cpu_stack):.0f}" for k, v in st.items())
        + "; nats-server "
        + ", ".join(f"{k} {median(v.cpu_nats):.0f}" for k, v in st.items())
        + "; load client (httpx / nats-py, this process) "
        + ", ".join(f"{k} {median(v.cpu_client):.0f}" for k, v in st.items())
    )
    sec.facts.append(
        "nats-server messages (in + out) per request: "
        + ", ".join(f"{k} {median(v.msgs):.1f}" for k, v in st.items())
        + " (an authenticated order: token and user reads, the request to the guard, its"
        " KV reads and create, the PubAck)"
    )
    if median(h.serial_p50) > STALL_US:
        sec.facts.append(
            f"STALL: GET /health takes {median(h.serial_p50) / 1000:.0f} ms one at a time on a "
            "keep-alive connection: Nagle + delayed ACK. api/server.py binds its own socket "
            "(proto 0), so asyncio never sets TCP_NODELAY on accepted connections, and uvicorn "
            "writes the headers and the body in two sends. Fix: setsockopt(IPPROTO_TCP, "
            "TCP_NODELAY, 1) on the listening socket. Measure the fix: python -m bench --nodelay"
        )
    return sec
