"""Load from ``wrk`` (C, event-driven): a Lua script per target, bounded in count and time.

The load generator must not be the bottleneck: on 2 shared cores an httpx
client costs more CPU than the server it measures.  ``wrk`` is a Debian
package (``bench/run.sh`` installs it with apt-get when missing and root).

Each run gets a generated Lua script:

* POST bodies carry a unique ``client_order_id`` per request: a per-thread
  counter in ``request()`` (thread number from ``setup()``, plus a run tag), so
  no two requests of any run are idempotent replays of each other;
* a count bound: ``response()`` stops a thread after ``limit`` answers (a
  safety cap; the time bound ``-d`` is the one normally reached; if the cap is
  reached the rate is not comparable and the run says so);
* ``done()`` prints one JSON line (requests, duration, errors, latency
  percentiles in microseconds) which :func:`run` parses.

Loopback only: the URL is always ``http://127.0.0.1:<port>``.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

_MARK = "WRKJSON "

_LUA = r"""
wrk.method = "{method}"
wrk.headers["Content-Type"] = "application/json"
{auth}
local template = {template}
local run = "{run}"
local limit = {limit}
local threads_made = 0
local n = 0
local answered = 0

function setup(thread)
  threads_made = threads_made + 1
  thread:set("tid", threads_made)
end

function request()
  n = n + 1
  if template then
    local coid = run .. "t" .. tostring(tid) .. "n" .. tostring(n)
    return wrk.format(nil, nil, nil, string.format(template, coid))
  end
  return wrk.format()
end

function response(status, headers, body)
  answered = answered + 1
  if answered >= limit then
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{mark}{{"requests":%d,"duration_us":%d,"status":%d,"connect":%d,"read":%d,' ..
    '"write":%d,"timeout":%d,"p50":%d,"p90":%d,"p99":%d,"mean":%.1f}}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean))
end
"""


@dataclass(frozen=True)
class Target:
    """What one wrk run asks: ``body`` may hold one ``%s`` for a fresh client_order_id."""

    name: str
    port: int
    path: str
    method: str = "GET"
    body: str | None = None
    token: str | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"


@dataclass(frozen=True)
class Result:
    requests: int
    duration_s: float
    errors: int  # non-2xx/3xx answers + socket errors + timeouts
    p50_us: float
    p90_us: float
    p99_us: float
    capped: bool  # the count bound stopped it before the time bound

    @property
    def rate(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0


def binary() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise RuntimeError(
            "wrk is not installed: apt-get install -y wrk (bench/run.sh does it when root)"
        )
    return path


def lua(target: Target, limit: int) -> str:
    if target.body is not None:
        if target.body.count("%s") != 1 or target.body.replace("%s", "").count("%"):
            raise ValueError("a POST body template needs exactly one %s and no other %")
        template = "[[" + target.body + "]]"
    else:
        template = "nil"
    auth = (
        f'wrk.headers["Authorization"] = "Bearer {target.token}"' if target.token else ""
    )  # the token stays in a temp file read by wrk, never on a command line
    return _LUA.format(
        method=target.method,
        auth=auth,
        template=template,
        run="r" + uuid.uuid4().hex[:10],
        limit=limit,
        mark=_MARK,
    )


def _script(workdir: Path, text: str) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    script = workdir / f"wrk-{uuid.uuid4().hex[:8]}.lua"
    script.touch(mode=0o600)  # holds a bearer token: owner only
    script.write_text(text)
    return script


def _remove(script: Path) -> None:
    script.unlink(missing_ok=True)


async def run(
    target: Target,
    workdir: Path,
    *,
    clients: int,
    seconds: float,
    limit: int = 200_000,
    timeout_s: float = 10.0,
) -> Result:
    """One wrk run: ``clients`` keep-alive connections for ``seconds`` (at most ``limit``
    answers per thread)."""
    threads = 1 if clients == 1 else 2
    script = _script(workdir, lua(target, limit))
    try:
        proc = await asyncio.create_subprocess_exec(
            binary(), "-t", str(threads), "-c", str(clients), "-d", f"{max(1, round(seconds))}s",
            "--timeout", f"{timeout_s:g}s", "--latency", "-s", str(script), target.url,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        async with asyncio.timeout(seconds + timeout_s + 30):
            out, err = await proc.communicate()
    finally:
        _remove(script)
    text = out.decode(errors="replace")
    line = next((x for x in text.splitlines() if x.startswith(_MARK)), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(
            f"wrk {target.name} failed (rc {proc.returncode}): {err.decode(errors='replace')}"
            f"{text[-2000:]}"
        )
    d = json.loads(line[len(_MARK) :])
    errors = sum(int(d[k]) for k in ("status", "connect", "read", "write", "timeout"))
    return Result(
        requests=int(d["requests"]),
        duration_s=int(d["duration_us"]) / 1e6,
        errors=errors,
        p50_us=float(d["p50"]),
        p90_us=float(d["p90"]),
        p99_us=float(d["p99"]),
        capped=int(d["requests"]) >= limit * threads,
    )
