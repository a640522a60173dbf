"""4. SSE fan-out: 100 authenticated clients of several traders at 1,000 events/s.

The API runs alone in a child process (``bench.fanout_proc``: API + heartbeat
actor, ``users`` traders with a session each); the per-user stream cap
(``relay.MAX_STREAMS_PER_USER``) is why there are several.  The figures come
from a server with the default ``sync_interval`` (the fan-out's own cost); the
full run adds one round on ``sync_interval: always`` (as ``rbot up``), where an
fsync per stored event bounds what the stream itself delivers at this rate
(its JetStream-consumer baseline shows it).  This process holds the load:

- **clients**: raw sockets in ``LOADERS`` processes of their own
  (``bench.fanout_load``: ``asyncio.Protocol``, ``GET /events?subjects=evt.order.>
  &since=N`` with a bearer header; each read is timed and scanned for ``id:``
  lines, nothing else is parsed), so the load is not one busy event loop;
  client i belongs to trader ``i % USERS``.  Their CPU is measured (``/proc``)
  and printed per frame;
- **the publisher** (this process): ``oco_placed`` envelopes, core publishes
  that the ``ORDERS`` stream stores, at ``RATE`` per second (paced), owners
  round-robin over the traders, so a client receives its trader's share
  (~RATE / USERS per second);
- **the baselines**, here: a JetStream ordered consumer on the same subjects
  (the stream's own delivery, what every SSE event goes through) and a core
  NATS subscriber (no store on its path).  The consumer also maps each stream
  sequence (the SSE ``id``) to the event's number.

Latency = a client's read of the event's ``id:`` line - the publish call
(``time.monotonic``: one clock for every process).  The first ``warmup_s`` of
each phase is not counted; every event is checked to reach exactly the clients
of its owner (``lost`` / ``extra`` in the facts).  Phases alternate 1 client
and ``clients`` clients; API CPU from
``/proc`` over the counted part.  During the many-client phase the run asks
the server how many consumers of ``ORDERS`` have a subscriber (less the
bench's own baseline): the API holds one for all of them (``api/hub.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    warmup_s: float = 0.5  # not counted
    profile_s: int = 0  # py-spy on the API during the first many-client phase
    always: bool = False  # also one round on a sync_interval: always server (as ``rbot up``)


FULL = Plan(clients=100, users=13, rate=1000.0, phase_s=6.0, rounds=2, always=True)
QUICK = Plan(clients=100, users=13, rate=1000.0, phase_s=3.0, rounds=1)
PROFILE = Plan(clients=100, users=13, rate=1000.0, phase_s=5.0, rounds=1, profile_s=3)
SMOKE = Plan(clients=20, users=3, rate=500.0, phase_s=0.8, rounds=1, warmup_s=0.2)
CONNECT_S = 30.0
LOADERS = 2  # client processes (one per core)
ROOT = Path(__file__).resolve().parent.parent


class _Payload(msgspec.Struct):
    order_id: str | None = None


class _Env(msgspec.Struct):
    payload: _Payload


_env = msgspec.json.Decoder(_Env)


class Loader:
    """One ``bench.fanout_load`` process and its share of the clients."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    @contextlib.asynccontextmanager
    async def start(cls, log: Path) -> AsyncIterator[Loader]:
        with log.open("ab") as errf:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.fanout_load", cwd=ROOT,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=errf,
                limit=1 << 26,
            )  # fmt: skip
        try:
            yield cls(proc)
        finally:
            if proc.stdin is not None:
                proc.stdin.close()
            try:
                async with asyncio.timeout(10):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()

    async def say(self, obj: object) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(obj).encode() + b"\n")
        await self.proc.stdin.drain()

    async def hear(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = await self.proc.stdout.readline()
        if not line:
            raise RuntimeError("a load process ended early (see its log)")
        answer: dict[str, Any] = json.loads(line)
        return answer


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
    workdir: Path, prof: Path | None = None,
) -> None:  # fmt: skip
    js = bus.js
    stream = bus.subjects.stream("ORDERS")
    subject = bus.subjects.order_event("oanda", "EUR_USD", "oco_placed")
    since = (await js.stream_info(stream)).state.last_seq
    sent: dict[int, float] = {}  # event number -> publish time
    seq_of: dict[int, int] = {}  # event number -> stream sequence (from the JS consumer)
    base: list[tuple[int, float]] = []  # (event number, arrival) at the JetStream consumer
    core: list[tuple[int, float]] = []  # (event number, arrival) at the core subscriber

    def number(data: bytes) -> int:
        return int((_env.decode(data).payload.order_id or "-1").rsplit("-", 1)[1])

    async def on_core(msg: Msg) -> None:
        core.append((number(msg.data), time.monotonic()))

    async def on_js(msg: Msg) -> None:
        now = time.monotonic()
        n = number(msg.data)
        seq_of[n] = msg.metadata.sequence.stream
        base.append((n, now))

    core_sub = await bus.nc.subscribe(subject, cb=on_core)
    base_sub = await js.subscribe(
        subject, stream=stream, cb=on_js, ordered_consumer=True,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.NEW), idle_heartbeat=5.0,
    )  # fmt: skip
    loaders_n = min(LOADERS, m)
    owner = [i % len(users) for i in range(m)]
    try:
        async with contextlib.AsyncExitStack() as stack:
            loaders = [
                await stack.enter_async_context(Loader.start(workdir / f"load-{k}.log"))
                for k in range(loaders_n)
            ]
            for k, ld in enumerate(loaders):
                mine = [[owner[i], users[owner[i]]["token"]] for i in range(k, m, loaders_n)]
                await ld.say({"port": port, "since": since, "clients": mine})
            async with asyncio.timeout(CONNECT_S):
                for ld in loaders:
                    ready = await ld.hear()
                    if ready.get("errors"):
                        raise RuntimeError(f"SSE refused: {ready['errors'][:3]}")
            n_events = int(plan.rate * plan.phase_s)
            warm = int(plan.rate * plan.warmup_s)
            cpu0 = 0.0
            rec: asyncio.Task[list[str]] | None = None
            async with asyncio.TaskGroup() as tg:
                t_start = time.monotonic()
                for i in range(n_events):
                    if i == warm:
                        cpu0 = proc_cpu_s(pid)
                        if prof is not None:
                            what = f"the API with {m} SSE clients"
                            rec = tg.create_task(
                                busprofile.facts(pid, plan.profile_s, prof, FANOUT_STAGES, what)
                            )
                    delay = t_start + i / plan.rate - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)  # pacing the load, not waiting for a result
                    data = order_event(i, users[i % len(users)]["sub"])
                    sent[i] = time.monotonic()
                    await bus.nc.publish(subject, data)  # JetStream stores it (no PubAck asked)
                t_end = time.monotonic()
            if rec is not None:
                out.profile += rec.result()
            if m > 1:  # consumers with a subscriber now (unsubscribed ones linger a while)
                bound = [c for c in await js.consumers_info(stream) if c.push_bound]
                out.consumers.append(len(bound) - 1)  # less this process's baseline
            want: defaultdict[int, int] = defaultdict(int)
            for i in range(n_events):
                want[i % len(users)] += 1
            for ld in loaders:
                await ld.say({"want": want})
            results = [await ld.hear() for ld in loaders]
            cpu1 = proc_cpu_s(pid)
    finally:
        await base_sub.unsubscribe()
        await core_sub.unsubscribe()
    n_of = {seq: n for n, seq in seq_of.items()}
    counted = {n for n in range(warm, n_events)}
    lat: list[float] = []
    frames = 0
    for res in results:
        for user, seen in res["seen"]:
            got = [n_of.get(seq, -1) for seq, _ in seen]
            theirs = {n for n in range(n_events) if n % len(users) == user}
            out.lost += len(theirs - set(got))
            out.extra += len(got) - len(set(got) & theirs)
            for (_, t), n in zip(seen, got, strict=True):
                if n in counted:
                    lat.append((t - sent[n]) * 1e6)
                    frames += 1
    events = len(counted)
    out.p50.append(pct(lat, 50))
    out.p99.append(pct(lat, 99))
    js_lat = [(t - sent[n]) * 1e6 for n, t in base if n in counted]
    core_lat = [(t - sent[n]) * 1e6 for n, t in core if n in counted]
    out.base_p50.append(pct(js_lat, 50))
    out.base_p99.append(pct(js_lat, 99))
    out.core_p50.append(pct(core_lat, 50))
    out.core_p99.append(pct(core_lat, 99))
    out.api_cpu_per_event.append((cpu1 - cpu0) / max(events, 1) * 1e6)
    out.api_cpu_per_frame.append((cpu1 - cpu0) / max(frames, 1) * 1e6)
    # the load processes' own CPU from their first stream open to the last read, per frame
    all_frames = sum(len(seen) for res in results for _, seen in res["seen"])
    load_cpu = sum(float(res["cpu_s"]) for res in results)
    out.load_cpu_per_frame.append(load_cpu / max(all_frames, 1) * 1e6)
    out.frames.append(frames)
    out.events.append(events)
    out.rate.append(n_events / (t_end - t_start))


async def _flavour(
    workdir: Path, plan: Plan, always: bool, rounds: int
) -> tuple[Phase, Phase, str]:
    """Both phases, ``rounds`` times, on a server with or without ``sync_interval: always``."""
    one, many = Phase(1), Phase(plan.clients)
    name = "always" if always else "default"
    async with servers(workdir / name, bench=always) as srv:
        nats = srv["bench"]
        prefix = "sf" + uuid.uuid4().hex[:8]
        args = [nats.url, prefix, str(plan.users)]
        async with _spawn("bench.fanout_proc", args, workdir / f"api-{name}.log", 120) as (
            info,
            pid,
        ):
            bus = await connect(nats.url, Subjects(prefix=prefix), "bench-fanout")
            try:
                for r in range(rounds):
                    order = (one, many) if r % 2 == 0 else (many, one)
                    for ph in order:
                        prof = None
                        if plan.profile_s and r == 0 and ph is many and not always:
                            prof = workdir / "api.prof"
                        await phase(
                            bus, info["port"], pid, info["users"], plan, ph.clients, ph,
                            workdir, prof,
                        )  # fmt: skip
            finally:
                await bus.close()
        return one, many, nats.sync_label


def _span(xs: Sequence[float], f: str = "{:,.0f}") -> str:
    lo, hi = min(xs), max(xs)
    return f.format(lo) if lo == hi else f"{f.format(lo)}-{f.format(hi)}"


async def run(workdir: Path, plan: Plan) -> Section:
    sec = Section(
        f"4. SSE fan-out: {plan.clients} clients of {plan.users} traders at "
        f"{plan.rate:,.0f} events/s"
    )
    one, many, sync = await _flavour(workdir, plan, False, plan.rounds)
    always: Phase | None = None
    if plan.always:  # the same on sync always (as ``rbot up``): the store's own bound
        _, always, _ = await _flavour(workdir, plan, True, 1)
    c = plan.clients
    sec.facts.append(
        f"{plan.rounds} round(s) of two phases (1 client, {c} clients), each "
        f"{plan.phase_s:g} s of events (first {plan.warmup_s:g} s not counted), server "
        f"sync={sync}; publish rate achieved {_span(many.rate)}/s; {_span(many.events)} events "
        f"counted, {_span(many.frames)} SSE frames delivered per {c}-client phase"
    )
    sec.facts.append(
        f"every event reached exactly its owner's clients: lost {many.lost + one.lost}, "
        f"extra {many.extra + one.extra}; ORDERS consumers the API held for its {c} clients: "
        f"{_span([float(x) for x in many.consumers])} (one per client would be {c})"
    )
    p99 = median(many.p99)
    sec.facts.append(
        f"target p99 < 50 ms with {c} clients at {plan.rate:,.0f} events/s: "
        f"{'met' if p99 < 50_000 else 'MISSED'} ({p99 / 1000:,.1f} ms, sync={sync})"
    )
    per_client = median(many.api_cpu_per_event) / c
    sec.facts.append(
        f"API CPU per event per client: {per_client:,.1f} us (per event with {c} clients "
        f"{median(many.api_cpu_per_event):,.0f} us, per frame written "
        f"{median(many.api_cpu_per_frame):,.0f} us); the load client ({LOADERS} processes of "
        f"raw sockets) costs {median(many.load_cpu_per_frame):,.1f} us per frame"
    )
    sec.facts += many.profile
    sec.facts.append(
        f"the same events to a core NATS subscriber here: p50 {median(many.core_p50):,.0f} us, "
        f"p99 {median(many.core_p99):,.0f} us (no stream store on its path)"
    )
    if always is not None:
        sec.facts.append(
            f"on a sync_interval: always server ({c} clients, 1 round): SSE p50 "
            f"{median(always.p50) / 1000:,.1f} ms, p99 {median(always.p99) / 1000:,.1f} ms; the "
            f"stream's own delivery (JetStream consumer) p50 {median(always.base_p50) / 1000:,.1f}"
            f" ms, p99 {median(always.base_p99) / 1000:,.1f} ms: an fsync per stored event "
            f"bounds it, not the fan-out; lost {always.lost}, extra {always.extra}"
        )
    base = "JetStream consumer"
    sec.rows += [
        Row("4 sse", f"delivery p50, {c} clients", median(many.p50),
            median(many.base_p50), "us", base + " p50"),
        Row("4 sse", f"delivery p99, {c} clients (target < 50 ms)", p99, median(many.base_p99),
            "us", base + " p99"),
        Row("4 sse", f"delivery p99, {c} vs 1 client", p99, median(one.p99), "us", "1 client"),
        Row("4 sse", f"API CPU per event, {c} clients",
            median(many.api_cpu_per_event), median(one.api_cpu_per_event), "us", "1 client"),
    ]  # fmt: skip
    if always is not None:
        sec.rows.append(
            Row("4 sse", f"delivery p99, {c} clients, sync always", median(always.p99),
                median(always.base_p99), "us", base + " p99, always")
        )  # fmt: skip
    return sec


if __name__ == "__main__":
    import json
    import sys
    import tempfile

    with tempfile.TemporaryDirectory(prefix="rbot-fanout-") as d:
        p = {"smoke": SMOKE, "quick": QUICK, "profile": PROFILE}.get(
            sys.argv[1] if len(sys.argv) > 1 else "", FULL
        )
        if "always" in sys.argv[2:]:
            p = dataclasses.replace(p, always=True)
        sec = asyncio.run(run(Path(d), p))
        print(json.dumps({"facts": sec.facts, "rows": [r.__dict__ for r in sec.rows]}, indent=1))
