"""4. SSE fan-out: 100 authenticated clients of several traders at 1,000 events/s.

The API runs alone in a child process (``bench.fanout_proc``: API + heartbeat
actor, ``USERS`` traders registered through HTTP); the per-user stream cap
(``relay.MAX_STREAMS_PER_USER``) is why there are several.  This process holds
the load:

- **clients**: raw asyncio sockets (``GET /events?subjects=evt.order.>&since=N``
  with a bearer header, HTTP/1.1; the reader waits for ``: connected`` (the
  API has it in its shared feed), then only splits lines and reads the ``id:``
  ones).  Client i belongs to trader ``i % USERS``.  Their CPU is
  measured (this process's ``process_time``) and printed per frame;
- **the publisher**: ``oco_placed`` envelopes to the ``ORDERS`` stream at
  ``RATE`` per second (paced, PubAcks in flight), owners round-robin over the
  traders, so a client receives its trader's share (~RATE / USERS per second)
  and the API's ownership check sees every event for every client;
- **the baseline**: a core NATS subscriber here on the same subjects, receiving
  the same events in the same process at the same time (what the bus alone
  costs).

Latency = a client's read of the event's ``id:`` line - the publish call, one
clock.  The first ``WARMUP_S`` of each phase is not counted; every event is
checked to reach exactly the clients of its owner (``lost`` / ``extra`` in the
facts).  Phases alternate 1 client and ``CLIENTS`` clients; API CPU from
``/proc`` over the counted part.  During the many-client phase the run asks
the server how many consumers ``ORDERS`` has: the API holds one for all of
them (``api/hub.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy

from rbot.bus.connection import Bus, connect
from rbot.bus.subjects import Subjects

from . import busprofile
from .busprofile import FANOUT_STAGES
from .child import _spawn
from .common import Row, Section, median, pct, proc_cpu_s
from .natsd import servers
from .payloads import order_event


@dataclass(frozen=True)
class Plan:
    clients: int
    users: int
    rate: float  # events per second
    phase_s: float
    rounds: int
    profile_s: int = 0  # py-spy on the API during the first many-client phase
    always: bool = True  # the server's sync_interval: always (as ``rbot up``)


FULL = Plan(clients=100, users=13, rate=1000.0, phase_s=6.0, rounds=2)
QUICK = Plan(clients=100, users=13, rate=1000.0, phase_s=3.0, rounds=1)
PROFILE = Plan(clients=100, users=13, rate=1000.0, phase_s=5.0, rounds=1, profile_s=3)
SMOKE = Plan(clients=20, users=3, rate=500.0, phase_s=1.5, rounds=1)
WARMUP_S = 0.5
CONNECT_S = 30.0
DRAIN_S = 10.0  # after the last publish, until every client has every event it should


class _Payload(msgspec.Struct):
    order_id: str | None = None


class _Env(msgspec.Struct):
    payload: _Payload


_env = msgspec.json.Decoder(_Env)


@dataclass
class Client:
    """One SSE client on a raw socket: records (id, arrival time) pairs."""

    user: int
    token: str
    seen: list[tuple[int, float]] = field(default_factory=list)
    want: int | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)

    async def expect(self, n: int) -> None:
        """Wait until this client has read ``n`` ids."""
        self.want = n
        if len(self.seen) >= n:
            return
        await self.done.wait()

    async def run(self, port: int, since: int, connected: asyncio.Event, count: list[int]) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(
                f"GET /events?subjects=evt.order.%3E&since={since} HTTP/1.1\r\n"
                f"Host: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n"
                f"Authorization: Bearer {self.token}\r\n\r\n".encode()
            )
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            if status != 200:
                raise RuntimeError(f"SSE answered {status}: {head[:200]!r}")
            # ``: connected`` comes once the API has it in the shared feed
            await reader.readuntil(b": connected\n\n")
            rest = b""
            count[0] += 1
            if count[0] == count[1]:
                connected.set()
            pc = time.perf_counter
            seen = self.seen
            while chunk := await reader.read(1 << 16):
                now = pc()
                lines = (rest + chunk).split(b"\n")
                rest = lines.pop()
                for line in lines:
                    if line.startswith(b"id: "):
                        seen.append((int(line[4:]), now))
                if self.want is not None and len(seen) >= self.want:
                    self.done.set()
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


@dataclass
class Phase:
    clients: int
    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    base_p50: list[float] = field(default_factory=list)  # a JetStream consumer here
    base_p99: list[float] = field(default_factory=list)
    core_p50: list[float] = field(default_factory=list)  # a core NATS subscriber here
    core_p99: list[float] = field(default_factory=list)
    api_cpu_per_event: list[float] = field(default_factory=list)  # us
    api_cpu_per_frame: list[float] = field(default_factory=list)
    load_cpu_per_frame: list[float] = field(default_factory=list)
    frames: list[int] = field(default_factory=list)
    events: list[int] = field(default_factory=list)
    rate: list[float] = field(default_factory=list)  # events/s achieved
    lost: int = 0
    extra: int = 0
    consumers: list[int] = field(default_factory=list)
    profile: list[str] = field(default_factory=list)


async def phase(
    bus: Bus, port: int, pid: int, users: list[dict[str, str]], plan: Plan, m: int, out: Phase,
    prof: Path | None = None,
) -> None:  # fmt: skip
    js = bus.js
    stream = bus.subjects.stream("ORDERS")
    subject = bus.subjects.order_event("oanda", "EUR_USD", "oco_placed")
    since = (await js.stream_info(stream)).state.last_seq
    clients = [Client(i % len(users), users[i % len(users)]["token"]) for i in range(m)]
    connected = asyncio.Event()
    count = [0, m]
    sent: dict[int, float] = {}  # seq -> publish time
    sent_n: dict[str, float] = {}  # order id -> publish time (the NATS baseline's key)
    owner_of: dict[int, int] = {}  # seq -> trader index
    base: list[float] = []
    core: list[float] = []

    def timer(into: list[float]) -> Callable[[Msg], Awaitable[None]]:
        async def on_msg(msg: Msg) -> None:
            now = time.perf_counter()
            t0 = sent_n.get(_env.decode(msg.data).payload.order_id or "")
            if t0 is not None:
                into.append((now - t0) * 1e6)

        return on_msg

    async def publish(n: int, who: int) -> None:
        data = order_event(n, users[who]["sub"])
        t0 = time.perf_counter()
        sent_n[f"paper-oanda-{n}"] = t0
        ack = await js.publish(subject, data, timeout=30.0)
        sent[ack.seq] = t0
        owner_of[ack.seq] = who

    core_sub = await bus.nc.subscribe(subject, cb=timer(core))
    base_sub = await js.subscribe(
        subject, stream=stream, cb=timer(base), ordered_consumer=True,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.NEW), idle_heartbeat=5.0,
    )  # fmt: skip
    try:
        async with asyncio.TaskGroup() as tg:
            readers = [tg.create_task(c.run(port, since, connected, count)) for c in clients]
            async with asyncio.timeout(CONNECT_S):
                await connected.wait()
            n_events = int(plan.rate * plan.phase_s)
            warm = int(plan.rate * WARMUP_S)
            cpu0 = load0 = 0.0
            rec: asyncio.Task[list[str]] | None = None
            t_warm = t_start = time.perf_counter()
            async with asyncio.TaskGroup() as pubs:
                for i in range(n_events):
                    if i == warm:
                        cpu0, load0 = proc_cpu_s(pid), time.process_time()
                        t_warm = time.perf_counter()
                        if prof is not None:
                            what = f"the API with {m} SSE clients"
                            rec = tg.create_task(
                                busprofile.facts(pid, plan.profile_s, prof, FANOUT_STAGES, what)
                            )
                    delay = t_start + i / plan.rate - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)  # pacing the load, not waiting for a result
                    pubs.create_task(publish(i, i % len(users)))
            t_end = time.perf_counter()
            if rec is not None:
                out.profile += await rec
            if m > 1:
                info = await js.stream_info(stream)
                out.consumers.append(int(info.state.consumer_count or 0))
            # until each client has every event of its owner (or the drain time is up)
            want: defaultdict[int, int] = defaultdict(int)
            for who in owner_of.values():
                want[who] += 1
            with contextlib.suppress(TimeoutError):  # what is missing is counted as lost
                async with asyncio.timeout(DRAIN_S):
                    for c in clients:
                        await c.expect(want[c.user])
            cpu1, load1 = proc_cpu_s(pid), time.process_time()
            for r in readers:
                r.cancel()
    finally:
        await base_sub.unsubscribe()
        await core_sub.unsubscribe()
    # counted events: published after the warm-up
    counted = {seq for seq, t0 in sent.items() if t0 >= t_warm}
    lat: list[float] = []
    frames = 0
    for c in clients:
        got = {seq for seq, _ in c.seen}
        mine = {seq for seq, who in owner_of.items() if who == c.user}
        out.lost += len(mine - got)
        out.extra += len(got - mine) + (len(c.seen) - len(got))
        for seq, t in c.seen:
            if seq in counted:
                lat.append((t - sent[seq]) * 1e6)
                frames += 1
    events = len(counted)
    out.p50.append(pct(lat, 50))
    out.p99.append(pct(lat, 99))
    out.base_p50.append(pct(base, 50))
    out.base_p99.append(pct(base, 99))
    out.core_p50.append(pct(core, 50))
    out.core_p99.append(pct(core, 99))
    out.api_cpu_per_event.append((cpu1 - cpu0) / max(events, 1) * 1e6)
    out.api_cpu_per_frame.append((cpu1 - cpu0) / max(frames, 1) * 1e6)
    out.load_cpu_per_frame.append((load1 - load0) / max(frames, 1) * 1e6)
    out.frames.append(frames)
    out.events.append(events)
    out.rate.append(n_events / (t_end - t_start))


async def run(workdir: Path, plan: Plan) -> Section:
    sec = Section(
        f"4. SSE fan-out: {plan.clients} clients of {plan.users} traders at "
        f"{plan.rate:,.0f} events/s"
    )
    one, many = Phase(1), Phase(plan.clients)
    async with servers(workdir, bench=plan.always) as srv:
        nats = srv["bench"]
        prefix = "sf" + uuid.uuid4().hex[:8]
        log = workdir / "api.log"
        args = [nats.url, prefix, str(plan.users)]
        async with _spawn("bench.fanout_proc", args, log, 120) as (info, pid):
            bus = await connect(nats.url, Subjects(prefix=prefix), "bench-fanout")
            try:
                for r in range(plan.rounds):
                    order = (one, many) if r % 2 == 0 else (many, one)
                    for ph in order:
                        prof = None
                        if plan.profile_s and r == 0 and ph is many:
                            prof = workdir / "api.prof"
                        await phase(
                            bus, info["port"], pid, info["users"], plan, ph.clients, ph, prof
                        )
            finally:
                await bus.close()
        sync = nats.sync_label

    def span(xs: list[float], f: str = "{:,.0f}") -> str:
        lo, hi = min(xs), max(xs)
        return f.format(lo) if lo == hi else f"{f.format(lo)}-{f.format(hi)}"

    sec.facts.append(
        f"{plan.rounds} round(s) of two phases (1 client, {plan.clients} clients), each "
        f"{plan.phase_s:g} s of events (first {WARMUP_S:g} s not counted), server sync={sync}; "
        f"publish rate achieved {span(many.rate)}/s; {span(many.events)} events counted, "
        f"{span(many.frames)} SSE frames delivered per {plan.clients}-client phase"
    )
    sec.facts.append(
        f"every event reached exactly its owner's clients: lost {many.lost + one.lost}, "
        f"extra {many.extra + one.extra}; ORDERS consumers during the {plan.clients}-client "
        f"phase: {span([float(c) for c in many.consumers])} (the API's one shared feed)"
    )
    p99 = median(many.p99)
    sec.facts.append(
        f"target p99 < 50 ms with {plan.clients} clients at {plan.rate:,.0f} events/s: "
        f"{'met' if p99 < 50_000 else 'MISSED'} ({p99 / 1000:,.1f} ms)"
    )
    per_client = median(many.api_cpu_per_event) / plan.clients
    sec.facts.append(
        f"API CPU per event per client: {per_client:,.1f} us (per event with "
        f"{plan.clients} clients {median(many.api_cpu_per_event):,.0f} us, per frame written "
        f"{median(many.api_cpu_per_frame):,.0f} us); the load client (raw sockets, this "
        f"process, publisher included) costs {median(many.load_cpu_per_frame):,.1f} us per frame"
    )
    sec.facts += many.profile
    sec.facts.append(
        f"the same events to a core NATS subscriber here: p50 {median(many.core_p50):,.0f} us, "
        f"p99 {median(many.core_p99):,.0f} us (no stream store on its path)"
    )
    base = "JetStream consumer"
    sec.rows += [
        Row("4 sse", f"delivery p50, {plan.clients} clients", median(many.p50),
            median(many.base_p50), "us", base + " p50"),
        Row("4 sse", f"delivery p99, {plan.clients} clients", p99, median(many.base_p99), "us",
            base + " p99"),
        Row("4 sse", f"delivery p99, {plan.clients} vs 1 client", p99, median(one.p99), "us",
            "1 client"),
        Row("4 sse", f"API CPU per event, {plan.clients} clients",
            median(many.api_cpu_per_event), median(one.api_cpu_per_event), "us", "1 client"),
    ]  # fmt: skip
    return sec


if __name__ == "__main__":
    import json
    import sys
    import tempfile

    with tempfile.TemporaryDirectory(prefix="rbot-fanout-") as d:
        p = {"smoke": SMOKE, "quick": QUICK, "profile": PROFILE}.get(
            sys.argv[1] if len(sys.argv) > 1 else "", FULL
        )
        if "nosync" in sys.argv[2:]:
            p = dataclasses.replace(p, always=False)
        sec = asyncio.run(run(Path(d), p))
        print(json.dumps({"facts": sec.facts, "rows": [r.__dict__ for r in sec.rows]}, indent=1))
