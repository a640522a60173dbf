"""py-spy summaries for the bus benchmarks (tick -> fill, SSE fan-out).

The same recording as ``bench.profile`` (``py-spy record -f raw``, busy samples
only), with stages named for these paths: the inclusive share of busy samples
whose stack passes through each (stages nest, so shares do not add up).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

from . import profile

Stages = tuple[tuple[str, tuple[str, ...]], ...]

NATS = ("nats/aio/", "nats/js/", "nats/protocol")
TICK_STAGES: Stages = (
    ("tick callback + routing (executor)", ("actors/paper/executor",)),
    ("partition apply loop", ("actors/paper/partition",)),
    ("engine + book (fill model, ladders)", ("actors/paper/engine", "actors/paper/book",
                                             "actors/paper/fills")),
    ("fenced KV write of the order", ("bus/fence",)),
    ("ledger (position, P&L CAS)", ("actors/paper/ledger", "bus/kvcas")),
    ("codec (msgspec)", ("bus/codec",)),
    ("NATS client", NATS),
    ("asyncio machinery", ("asyncio/",)),
)  # fmt: skip
FANOUT_STAGES: Stages = (
    ("HTTP server (uvicorn)", ("uvicorn/", "h11/", "httptools")),
    ("Starlette/FastAPI (streaming response, middleware)", ("starlette/", "fastapi/")),
    ("rbot middleware", ("api/middleware",)),
    ("SSE writer per client (api/relay: queue, frames)", ("api/relay",)),
    ("shared feed per event (api/hub: owner, fan-out)", ("api/hub",)),
    ("NATS client", NATS),
    ("asyncio machinery", ("asyncio/",)),
)


def leaves(raw: str, n: int = 8) -> list[tuple[str, float]]:
    """The functions the samples were *in* (self time), by share."""
    hits: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            leaf = stack.split(";")[-1]
            hits[profile._label(leaf)] += int(count)
            total += int(count)
    return [(name, c / total) for name, c in hits.most_common(n)] if total else []


def shares(raw: str, stages: Stages) -> tuple[int, list[tuple[str, float]]]:
    stacks: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, n = line.rpartition(" ")
        if stack and n.isdigit():
            stacks[stack] += int(n)
    total = sum(stacks.values())
    hits: Counter[str] = Counter()
    for stack, count in stacks.items():
        for name, needles in stages:
            if any(nd in stack for nd in needles):
                hits[name] += count
    return total, [(name, hits[name] / total if total else 0.0) for name, _ in stages]


async def facts(pid: int, seconds: int, out: Path, stages: Stages, what: str) -> list[str]:
    """Record ``pid`` for ``seconds``; the summary as printable lines."""
    try:
        await profile.record(pid, seconds, out)
    except (RuntimeError, OSError) as exc:
        return [f"profile of {what}: not recorded ({exc})"]
    raw = await asyncio.to_thread(out.read_text, errors="replace")
    total, got = shares(raw, stages)
    top = profile.summarize(raw, top_n=6).top
    return [
        f"profile of {what} (py-spy, {total} busy samples, inclusive): "
        + "; ".join(f"{name} {share:.0%}" for name, share in got if share >= 0.005),
        "  top project functions: " + "; ".join(f"{n} {s:.0%}" for n, s in top),
        "  top self time: " + "; ".join(f"{n} {s:.0%}" for n, s in leaves(raw)),
    ]
