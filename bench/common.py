"""Shared pieces: results rows, percentiles, medians, the table."""

from __future__ import annotations

import os
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Row:
    """One line of the final table: ``ratio = figure / baseline``."""

    bench: str
    name: str
    figure: float
    baseline: float
    unit: str  # "us", "ms", "/s"
    baseline_name: str = ""
    note: str = ""

    @property
    def ratio(self) -> float:
        return self.figure / self.baseline if self.baseline else float("nan")


@dataclass
class Section:
    """What one benchmark returns: its rows and a few facts worth printing with them."""

    title: str
    rows: list[Row] = field(default_factory=list)
    facts: list[str] = field(default_factory=list)


def pct(samples: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear between closest ranks."""
    if not samples:
        return float("nan")
    s = sorted(samples)
    k = (len(s) - 1) * q / 100.0
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def fmt(value: float, unit: str) -> str:
    if value != value:  # NaN
        return "n/a"
    if unit == "/s":
        return f"{value:,.0f}/s"
    if unit == "us":
        if value >= 10_000:
            return f"{value / 1000:,.1f} ms"
        if value >= 100:
            return f"{value:,.0f} us"
        return f"{value:,.2f} us"
    return f"{value:,.3g} {unit}"


def fmt_ratio(r: float) -> str:
    if r != r:
        return "n/a"
    if r >= 100:
        return f"{r:,.0f}x"
    if r >= 0.1:
        return f"{r:.2f}x"
    return f"{r:.4f}x"


def table(rows: Sequence[Row]) -> str:
    head = ("name", "figure", "baseline", "ratio")
    body = [
        (
            f"{r.bench}: {r.name}",
            fmt(r.figure, r.unit),
            f"{fmt(r.baseline, r.unit)}  ({r.baseline_name})"
            if r.baseline_name
            else fmt(r.baseline, r.unit),
            fmt_ratio(r.ratio),
        )
        for r in rows
    ]
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(head, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for b in body:
        lines.append(
            "  ".join(
                c.rjust(w) if i in (1, 3) else c.ljust(w)
                for i, (c, w) in enumerate(zip(b, widths, strict=True))
            )
        )
    return "\n".join(lines)


def fs_type(path: Path) -> str:
    """The file system type holding ``path`` (fsync on tmpfs is a no-op, so say it)."""
    best, kind = "", "unknown"
    real = str(path.resolve())
    try:
        with open("/proc/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) < 3:
                    continue
                mnt = parts[1].replace("\\040", " ")
                if (real == mnt or real.startswith(mnt.rstrip("/") + "/")) and len(mnt) > len(best):
                    best, kind = mnt, parts[2]
    except OSError:
        pass
    return kind


def machine() -> str:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {cpu}"


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (from /proc; 0.0 where unavailable).

    CPU per request barely moves when other work shares the cores, unlike wall
    time, so it is the steadier figure on a noisy machine (resolution 10 ms:
    use it over hundreds of requests)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICK
    except (OSError, IndexError, ValueError):
        return 0.0


def cheap_failed_sniffio_import() -> bool:
    """Make the load generator's httpx cheaper; True if it was needed.

    httpcore 1.0 runs ``import sniffio`` inside every request (to tell asyncio
    from trio) and falls back to asyncio on ImportError.  anyio 4.16 no longer
    pulls sniffio in, so here that import fails each time, and a failed import
    searches every path entry: it was the largest single cost of the client.
    ``sys.modules["sniffio"] = None`` makes it fail at once, with the same
    outcome (asyncio).  Only this process (the load generator) is affected."""
    import importlib.util
    import sys

    if "sniffio" in sys.modules or importlib.util.find_spec("sniffio") is not None:
        return False
    sys.modules["sniffio"] = None  # type: ignore[assignment]
    return True
