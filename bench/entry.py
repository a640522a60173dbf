"""2. Order entry and authenticated reads with wrk, against a floor in the same run (issue 12).

Processes (all on 127.0.0.1):

* two nats-servers: ``sync_interval: always`` (as ``rbot up``) and the default;
* the floor (``bench.floor_proc``) on the always server: FastAPI validating the
  same body with the same pydantic model, one NATS request/reply to a
  concurrent responder that does one KV ``create`` and one JetStream publish
  with PubAck; plus a bare FastAPI ``GET``;
* the split stack (``bench.stack_proc --split`` + ``bench.exec_proc``: API and
  guard in one process, the executor in another, as ``rbot api`` + ``rbot actors``);
* the real stack (``bench.stack_proc``: API, ``order_guard``,
  ``paper_executor`` under the supervisor) on each server.

Load: ``wrk`` (``bench/wrk.py``), a fresh ``client_order_id`` per POST, each
run bounded in time (``-d``) and count.  At 1 client the figure is p50; at
64 clients req/s (and p50/p99).  Rounds alternate the order of the targets;
medians of the rounds are reported.  Then a profile: ``py-spy record`` of the
stack process while wrk sends orders at 64 clients (``bench/profile.py``).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
from dataclasses import dataclass, field
from pathlib import Path

from rbot.bus import eventloop

from . import profile, wrk
from .child import floor_child, split_stack_child, stack_child
from .common import Row, Section, median, proc_cpu_s
from .natsd import servers
from .payloads import SEED_OANDA

MANY = 64


@dataclass(frozen=True)
class Plan:
    seconds: float  # per wrk run
    rounds: int
    profile_s: int  # 0: no profile


FULL = Plan(seconds=5, rounds=2, profile_s=10)
QUICK = Plan(seconds=3, rounds=1, profile_s=5)
SMOKE = Plan(seconds=1, rounds=1, profile_s=2)


@dataclass
class Stats:
    rate: list[float] = field(default_factory=list)  # at MANY
    p50_many: list[float] = field(default_factory=list)
    p99_many: list[float] = field(default_factory=list)
    p50_one: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)  # us of server-process CPU per request
    capped: bool = False


def order_body() -> str:
    """The seed's body with ``"client_order_id": "%s"`` (filled in by wrk's Lua)."""
    return json.dumps({**SEED_OANDA, "client_order_id": "COID"}).replace('"COID"', '"%s"')


async def measure(
    t: wrk.Target, st: Stats, workdir: Path, seconds: float, pids: tuple[int, ...]
) -> None:
    one = await wrk.run(t, workdir, clients=1, seconds=seconds)
    cpu0 = sum(proc_cpu_s(p) for p in pids)
    many = await wrk.run(t, workdir, clients=MANY, seconds=seconds)
    cpu1 = sum(proc_cpu_s(p) for p in pids)
    for r in (one, many):
        if r.errors or not r.requests:
            raise RuntimeError(f"{t.name}: {r.errors} errors in {r.requests} requests")
        st.capped |= r.capped
    st.p50_one.append(one.p50_us)
    st.rate.append(many.rate)
    st.p50_many.append(many.p50_us)
    st.p99_many.append(many.p99_us)
    st.cpu.append((cpu1 - cpu0) / many.requests * 1e6)


def _http_parser() -> str:
    """What uvicorn's ``http="auto"`` picks in the children (same venv)."""
    return "httptools" if importlib.util.find_spec("httptools") else "h11"


async def run(workdir: Path, plan: Plan = FULL, nodelay: bool = False) -> Section:
    sec = Section("2. Order entry and reads (wrk) vs a floor in the same run")
    body = order_body()
    st: dict[str, Stats] = {}
    async with (
        servers(workdir, always=True, default=False) as srv,
        floor_child(srv["always"].url, workdir / "floor.log") as fl,
        stack_child(srv["always"].url, workdir / "stack-always.log", nodelay=nodelay) as a,
        stack_child(srv["default"].url, workdir / "stack-default.log", nodelay=nodelay) as d,
        split_stack_child(srv["always"].url, workdir / "stack-split.log") as (sp, exec_pid),
    ):
        sa, sd = srv["always"].pid, srv["default"].pid
        targets: dict[str, tuple[wrk.Target, tuple[int, ...]]] = {
            "floor_post": (
                wrk.Target("floor POST", fl.port, "/orders", "POST", body),
                (fl.pid, sa),
            ),
            "order": (
                wrk.Target("order", a.port, "/brokers/oanda/orders", "POST", body, a.token),
                (a.pid, sa),
            ),
            "order_default": (
                wrk.Target(
                    "order (default sync)", d.port, "/brokers/oanda/orders", "POST", body, d.token
                ),  # fmt: skip
                (d.pid, sd),
            ),
            "order_split": (
                wrk.Target(
                    "order (executor apart)",
                    sp.port,
                    "/brokers/oanda/orders",
                    "POST",
                    body,
                    sp.token,
                ),  # fmt: skip
                (sp.pid, exec_pid, sa),
            ),
            "bare_get": (wrk.Target("bare GET", fl.port, "/get"), (fl.pid,)),
            "me": (wrk.Target("/auth/me", a.port, "/auth/me", token=a.token), (a.pid, sa)),
            "order_get": (
                wrk.Target("/orders/{id}", a.port, f"/orders/{a.order_id}", token=a.token),
                (a.pid, sa),
            ),
            "health": (wrk.Target("/health", a.port, "/health"), (a.pid,)),
        }
        st = {k: Stats() for k in targets}
        # warm-up: connections, imports, stream files
        for t, _ in targets.values():
            await wrk.run(t, workdir, clients=4, seconds=1)
        names = list(targets)
        for r in range(plan.rounds):
            for name in names if r % 2 == 0 else reversed(names):
                t, pids = targets[name]
                await measure(t, st[name], workdir, plan.seconds, pids)
        if plan.profile_s:
            raw = workdir / "profile-stack.txt"
            load = asyncio.create_task(
                wrk.run(targets["order"][0], workdir, clients=MANY, seconds=plan.profile_s + 2)
            )
            try:
                await profile.record(a.pid, plan.profile_s, raw)
            finally:
                await load
            summary = profile.summarize(raw.read_text())
            sec.facts.append(
                f"profile: py-spy record -f raw of the stack process (API + guard + executor "
                f"in one process) for {plan.profile_s} s under wrk orders at {MANY} clients: "
                f"{summary.samples} busy samples"
            )
            sec.facts += summary.lines()
        sec.facts.insert(
            0,
            f"floor and stack 'always' on nats-server sync={srv['always'].sync_label}, stack "
            f"'default' on sync={srv['default'].sync_label} (from /varz); load: wrk, 1 and "
            f"{MANY} keep-alive clients, {plan.seconds:g} s each, {plan.rounds} round(s), "
            "a fresh client_order_id per POST, every answer 2xx; floor and stack alike on "
            f"the {eventloop.loop_name()} loop, uvicorn on {_http_parser()}",
        )
    if any(s.capped for s in st.values()):
        sec.facts.append("WARNING: a wrk run hit its count bound before its time bound")
    m = {k: {f: median(getattr(s, f)) for f in ("rate", "p50_many", "p99_many", "p50_one", "cpu")}
         for k, s in st.items()}  # fmt: skip
    sec.facts.append(
        f"server CPU per request at c={MANY} (us, server process + its nats-server): "
        + ", ".join(f"{k} {v['cpu']:.0f}" for k, v in m.items())
    )

    def row(name: str, key: str, f: str, base: str, base_name: str, unit: str) -> Row:
        return Row("2 entry", name, m[key][f], m[base][f], unit, base_name)

    c = f"c={MANY}"
    sec.rows += [
        row(f"POST order req/s {c} (target >= 0.5x)", "order", "rate", "floor_post", "floor POST", "/s"),
        row("POST order p50 c=1 (target <= 2x)", "order", "p50_one", "floor_post", "floor POST", "us"),
        row(f"POST order req/s {c}, executor in its own process", "order_split", "rate",
            "floor_post", "floor POST", "/s"),
        row("POST order p50 c=1, executor in its own process", "order_split", "p50_one",
            "floor_post", "floor POST", "us"),
        row(f"POST order p50 {c}", "order", "p50_many", "floor_post", "floor POST", "us"),
        row(f"POST order p99 {c}", "order", "p99_many", "floor_post", "floor POST", "us"),
        row("stack CPU per order", "order", "cpu", "floor_post", "floor per POST", "us"),
        row("GET /auth/me p50 c=1 (target <= 2x)", "me", "p50_one", "bare_get", "bare GET", "us"),
        row("GET /orders/{id} p50 c=1 (target <= 2x)", "order_get", "p50_one", "bare_get",
            "bare GET", "us"),
        row(f"GET /health req/s {c}", "health", "rate", "bare_get", "bare GET", "/s"),
        row(f"GET /health p50 {c}", "health", "p50_many", "bare_get", "bare GET", "us"),
        row(f"floor POST req/s {c}", "floor_post", "rate", "bare_get", "bare GET", "/s"),
        row(f"POST order req/s {c}, sync always", "order", "rate", "order_default", "sync default",
            "/s"),
        row("POST order p50 c=1, sync always", "order", "p50_one", "order_default",
            "sync default", "us"),
    ]  # fmt: skip
    return sec
