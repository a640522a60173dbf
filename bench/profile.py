"""Where an order's time goes: ``py-spy record -f raw`` of a process under load, summarised.

``py-spy`` comes from PyPI into the venv (``bench/run.sh`` installs it); it
needs ptrace rights on the target (root, or ``kernel.yama.ptrace_scope=0``).
The raw format is one collapsed stack per line (``frame;frame;...;leaf N``,
root first).  The summary gives, for a few stages named by where their code
lives, the *inclusive* share: the fraction of CPU samples whose stack passes
through that stage (stages nest, so shares do not add up to 100 %), and the
top functions of the project's own code by inclusive share.  Idle time (the
event loop waiting in epoll) is not sampled: shares are of busy time.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

# stage -> substrings of a frame's "function (file:line)" text; first match wins per stage
STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("HTTP server (uvicorn, httptools/h11)", ("uvicorn/", "h11/", "httptools")),
    ("framework (Starlette/FastAPI routing, middleware)", ("starlette/", "fastapi/")),
    ("pydantic (validation, serialisation)", ("pydantic/", "pydantic_core")),
    ("API middleware (rbot)", ("api/middleware",)),
    (
        "API auth (token, principal, user/session reads)",
        ("api/security", "api/principal", "api/tokens", "api/users", "api/sessionwatch"),
    ),
    ("API order route (incl. its guard request)", ("api/routers/orders",)),
    ("order guard (actor)", ("actors/guard/",)),
    ("paper executor (actor)", ("actors/paper/",)),
    ("NATS client (nats-py: requests, KV, JetStream)", ("nats/aio/", "nats/js/", "nats/protocol")),
    ("bus codec (msgspec encode/decode)", ("bus/codec",)),
    ("logging", ("logging/",)),
    ("asyncio machinery (loop, tasks, streams)", ("asyncio/",)),
)

_OURS = re.compile(r"[( /](rbot/)?(api|actors|bus)/[\w/]+\.py")
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


@dataclass
class Summary:
    samples: int = 0
    stages: list[tuple[str, float]] = field(default_factory=list)
    top: list[tuple[str, float]] = field(default_factory=list)

    def lines(self) -> list[str]:
        if not self.samples:
            return ["profile: no samples"]
        out = [
            "where the time goes (inclusive share of busy samples): "
            + "; ".join(f"{name} {share:.0%}" for name, share in self.stages if share >= 0.005)
        ]
        out.append(
            "top project functions (inclusive): "
            + "; ".join(f"{name} {share:.0%}" for name, share in self.top)
        )
        return out


def binary() -> str:
    near = Path(sys.executable).parent / "py-spy"
    found = str(near) if near.exists() else shutil.which("py-spy")
    if found is None:
        raise RuntimeError("py-spy is not installed: .venv/bin/pip install py-spy")
    return found


async def record(pid: int, seconds: int, out: Path) -> Path:
    """``py-spy record -p PID -d SECONDS -f raw -o OUT`` (bounded: seconds + 30 s)."""
    proc = await asyncio.create_subprocess_exec(
        binary(), "record", "-p", str(pid), "-d", str(seconds), "-f", "raw", "-o", str(out),
        "--nonblocking",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    async with asyncio.timeout(seconds + 30):
        text, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"py-spy failed (rc {proc.returncode}): {text.decode()[-1000:]}")
    return out


def _label(frame: str) -> str:
    m = _FRAME.match(frame.strip())
    if m is None:
        return frame.strip()
    f = m.group("file")
    return f"{m.group('func')} ({f.split('site-packages/')[-1]})"


def summarize(raw: str, top_n: int = 10) -> Summary:
    stacks: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, n = line.rpartition(" ")
        if stack and n.isdigit():
            stacks[stack] += int(n)
    total = sum(stacks.values())
    s = Summary(samples=total)
    if not total:
        return s
    stage_hits: Counter[str] = Counter()
    func_hits: Counter[str] = Counter()
    for stack, count in stacks.items():
        frames = stack.split(";")
        for name, needles in STAGES:
            if any(nd in fr for fr in frames for nd in needles):
                stage_hits[name] += count
        seen = set()
        for fr in frames:
            if _OURS.search(fr) and "site-packages" not in fr:
                label = _label(fr)
                if label not in seen:
                    seen.add(label)
                    func_hits[label] += count
    s.stages = [(name, stage_hits[name] / total) for name, _ in STAGES]
    # leave out frames on (nearly) every stack: the process's entry points
    s.top = [(name, hits / total) for name, hits in func_hits.most_common() if hits / total < 0.9][
        :top_n
    ]
    return s
