"""The bench cannot rot: ``bash bench/run.sh --smoke`` runs (wrk, the floor, the real
stack, the py-spy profile) and prints its table, in well under a minute."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_smoke_runs_and_prints_its_table() -> None:
    out = subprocess.run(
        ["bash", str(ROOT / "bench" / "run.sh"), "--smoke"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "== Summary (ratio = figure / baseline)" in out.stdout
    for row in ("POST order req/s c=64", "POST order p50 c=1", "GET /auth/me p50 c=1",
                "GET /orders/{id} p50 c=1", "GET /health req/s c=64", "sync always"):  # fmt: skip
        assert row in out.stdout, out.stdout[-3000:]
    assert "where the time goes" in out.stdout
    for row in ("4 sse: delivery p99", "4 sse: API CPU per event", "5 tick: tick->fill p50",
                "5 tick: tick->fill p99"):  # fmt: skip
        assert row in out.stdout, out.stdout[-3000:]
    assert "lost 0, extra 0" in out.stdout  # every SSE event reached exactly its owner's clients
