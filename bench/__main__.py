"""``python -m bench``: run the benchmarks, print every figure as a ratio to its baseline.

Options: ``--only book,js,entry,history,tickfill,fanout``, ``--smoke`` (~30 s, tiny sizes), ``--quick`` (fewer rounds, smaller
counts), ``--nodelay`` (what-if for the HTTP benchmarks: the API's sockets with
``TCP_NODELAY``), ``--results [PATH]`` (also write a Markdown table, by default
``bench/results.md``).  Everything listens on 127.0.0.1 and is bounded in count
and time; tickfill seeds and rebuilds 100,000 orders, so a full run takes several minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rbot.actors.natsd import server_binary as nats_server_bin

from . import book, entry, fanout, history, jetstream, tickfill
from .common import Row, Section, cheap_failed_sniffio_import, fmt, fmt_ratio, machine, table

ALL = ("book", "js", "entry", "history", "fanout", "tickfill")
OPTIONAL: tuple[str, ...] = ()
SMOKE = ("entry", "fanout", "tickfill")
BUDGET_S = 900.0  # the async benchmarks together (tickfill ~4 min); book adds ~10 s before


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10,
            cwd=Path(__file__).resolve().parent,
        )  # fmt: skip
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
            text=True, timeout=10, cwd=Path(__file__).resolve().parent,
        ).stdout.strip()  # fmt: skip
        return (out.stdout.strip() or "?") + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"? ({exc})"


def _nats_version() -> str:
    try:
        out = subprocess.run(
            [nats_server_bin(), "--version"], capture_output=True, text=True, timeout=10
        )
        return out.stdout.strip() or out.stderr.strip()
    except (OSError, RuntimeError, subprocess.TimeoutExpired) as exc:
        return f"? ({exc})"


def _show(sec: Section, took: float) -> None:
    print(f"\n== {sec.title}  ({took:.1f} s)")
    for f in sec.facts:
        print(f"   {f}")
    for r in sec.rows:
        print(
            f"   {r.name:<44} {fmt(r.figure, r.unit):>12}  vs {fmt(r.baseline, r.unit):>12}"
            f"  {r.baseline_name:<20} {fmt_ratio(r.ratio):>8}"
        )
    sys.stdout.flush()


async def _async_benches(
    which: list[str], workdir: Path, quick: bool, smoke: bool, nodelay: bool, out: list[Section]
) -> None:
    async with asyncio.timeout(BUDGET_S):
        for name in which:
            t0 = time.perf_counter()
            sub = workdir / name
            if name == "js":
                sec = await jetstream.run(sub, quick)
            elif name == "entry":
                plan = entry.SMOKE if smoke else entry.QUICK if quick else entry.FULL
                sec = await entry.run(sub, plan, nodelay)
            elif name == "fanout":
                plan_f = fanout.SMOKE if smoke else fanout.QUICK if quick else fanout.FULL
                sec = await fanout.run(sub, plan_f)
            elif name == "tickfill":
                plan_t = tickfill.SMOKE if smoke else tickfill.QUICK if quick else tickfill.FULL
                sec = await tickfill.run(sub, plan_t)
            elif name == "history":
                sec = await history.run(sub, quick)
            else:
                continue
            _show(sec, time.perf_counter() - t0)
            out.append(sec)


def _markdown(header: list[str], sections: list[Section]) -> str:
    lines = ["# Benchmark results (last recorded run)", ""]
    lines += [f"- {h}" for h in header]
    lines += [
        "",
        "Every figure is a ratio to a baseline measured in the same run "
        "(`ratio = figure / baseline`). Regenerate: `bash bench/run.sh` (writes this file).",
        "",
    ]
    for sec in sections:
        lines += [f"## {sec.title}", ""]
        lines += [f"- {f}" for f in sec.facts]
        lines += ["", "| name | figure | baseline | ratio |", "|---|---:|---|---:|"]
        for r in sec.rows:
            lines.append(
                f"| {r.name} | {fmt(r.figure, r.unit)} | {fmt(r.baseline, r.unit)} "
                f"({r.baseline_name}) | {fmt_ratio(r.ratio)} |"
            )
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    ap.add_argument("--only", default=",".join(ALL), help=f"comma list of {', '.join(ALL)}")
    ap.add_argument("--quick", action="store_true", help="fewer rounds and smaller counts")
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="~30 s: the wrk/floor/profile path with tiny sizes (run by the test suite)",
    )
    ap.add_argument(
        "--nodelay",
        action="store_true",
        help="what-if: run the API with TCP_NODELAY on its sockets (orders)",
    )
    ap.add_argument(
        "--results",
        nargs="?",
        const=str(Path(__file__).resolve().parent / "results.md"),
        default=None,
        help="write the Markdown results here (a full run of everything writes "
        "bench/results.md by default)",
    )
    args = ap.parse_args(argv)
    which = [w.strip() for w in args.only.split(",") if w.strip()]
    unknown = set(which) - set(ALL) - set(OPTIONAL)
    if unknown:
        ap.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    which = [w for w in (*ALL, *OPTIONAL) if w in which]
    if args.smoke:
        which = [w for w in SMOKE if w in which] if args.only != ",".join(ALL) else list(SMOKE)
    full = not (args.smoke or args.quick) and which == list(ALL)
    if args.results is None and full:
        args.results = str(Path(__file__).resolve().parent / "results.md")

    patched = cheap_failed_sniffio_import()
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    header = [
        f"run: {started}; machine: {machine()}; Python {platform.python_version()}; "
        f"{_nats_version()}",
        f"commit: {_commit()}",
        f"load average at start: {_load()} (other work on these cores shows up here)",
        f"temp dirs under {os.environ.get('BENCH_TMPDIR') or tempfile.gettempdir()}",
        "mode: "
        + ", ".join(
            x
            for x in (
                "smoke" if args.smoke else "quick" if args.quick else "full",
                "what-if TCP_NODELAY on the API" if args.nodelay else "",
                "load client: failed sniffio import made cheap" if patched else "",
            )
            if x
        ),
    ]
    print("RBOT Arena benchmarks: every figure / a baseline measured in the same run")
    for h in header:
        print(f"   {h}")
    sections: list[Section] = []
    failed = False
    t_all = time.perf_counter()
    if "book" in which:
        t0 = time.perf_counter()
        sec = book.run(args.quick)
        _show(sec, time.perf_counter() - t0)
        sections.append(sec)
    rest = [w for w in which if w != "book"]
    if rest:
        base = os.environ.get("BENCH_TMPDIR") or None
        with tempfile.TemporaryDirectory(prefix="rbot-bench-", dir=base) as d:
            try:
                asyncio.run(
                    _async_benches(rest, Path(d), args.quick, args.smoke, args.nodelay, sections)
                )
            except TimeoutError:
                print(f"\n!! time budget of {BUDGET_S:g} s exceeded: the machine is too busy; "
                      "the table shows what finished", file=sys.stderr)  # fmt: skip
                failed = True
    header.append(f"load average at end: {_load()}; total {time.perf_counter() - t_all:.0f} s")
    rows: list[Row] = [r for s in sections for r in s.rows]
    print(f"\n== Summary (ratio = figure / baseline)   {header[-1]}\n")
    print(table(rows))
    if args.results and not failed:
        Path(args.results).write_text(_markdown(header, sections))
        print(f"\nwrote {args.results}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
