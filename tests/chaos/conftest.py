"""The chaos harness: real ``rbot`` processes, a real nats-server, real signals.

Everything listens on 127.0.0.1; every loop is bounded in count and time.

* ``RbotProc``: one ``rbot actors|api|up`` command as a subprocess that can be
  SIGKILLed, SIGSTOPped and started again; its output (all runs) is kept, and
  waits are on its log lines (``wait_for``), never on time.
* ``spawn``: makes ``RbotProc`` objects and stops every one at teardown (their
  logs land in the test's tmp dir).
* ``chaos_bus``: the test's own connection to the test's own nats-server
  (``own_nats_server``), with the streams and buckets provisioned.
* Facts from the bus: ``read_stream`` (every message of a stream),
  ``kv_values`` (every current KV entry under a pattern), ``wait_exec_drained``
  (the executor's work queue is empty and nothing is unacknowledged), ``Waker``
  (wake up on a message, re-check a condition).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import statistics
import sys
from collections.abc import AsyncIterator, Callable, Iterable
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from nats.aio.msg import Msg
from nats.js.api import ConsumerInfo, StreamState
from nats.js.errors import NotFoundError

from rbot.bus import codec
from rbot.bus.connection import Bus, connect
from rbot.bus.kvscan import scan
from rbot.bus.messages import FenceRecord, Order, OrderStatus, Tick
from rbot.bus.provision import provision
from tests.conftest import make_settings
from tests.natsd import NatsServer

T = TypeVar("T")

RBOT = Path(sys.executable).parent / "rbot"
SECRET = "chaos-secret-key-0123456789abcdef-0123456789abcdef"
PASSWORD = "chaos-pass-1234"

# the environment of every child: nothing of the developer's broker or bus settings
_DROP = ("RBOT_", "NATS_", "ARENA_", "OANDA_", "COINBASE_", "EXECUTION_", "LIVE_", "PAPER_")

BANNER_ACTORS = r"actors running \("
BANNER_API = r"API on http://127\.0\.0\.1:(\d+)/"


def rbot_env(nats_url: str, prefix: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_DROP)}
    env.update(
        NATS_URL=nats_url,
        RBOT_PREFIX=prefix,
        RBOT_PARTITIONS="2",
        ARENA_SECRET_KEY=SECRET,
        RBOT_ARGON2_FAST="1",
        RBOT_OPEN_REGISTRATION="trader",
        RBOT_API_PORT="0",
        RBOT_SIM="on",
        RBOT_LOG_LEVEL="INFO",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


class ProcExited(AssertionError):
    """The process ended (or timed out) before printing what we waited for."""


class RbotProc:
    """One ``rbot`` command as a restartable subprocess; output kept across runs."""

    def __init__(
        self, name: str, args: list[str], env: dict[str, str], cwd: Path, ready: str
    ) -> None:
        self.name = name
        self.args = args
        self.env = env
        self.cwd = cwd
        self.ready = re.compile(ready)
        self.proc: asyncio.subprocess.Process | None = None
        self.lines: list[str] = []
        self.run_start = 0
        self.runs = 0
        self._ended: set[int] = set()
        self._pumps: list[asyncio.Task[None]] = []
        self._changed = asyncio.Event()

    # -- running -----------------------------------------------------------
    async def start(self, timeout: float = 30.0, **env: str) -> re.Match[str]:
        """Start a new run and wait for its ready line (the match is returned)."""
        run = self.runs
        self.runs += 1
        self.run_start = len(self.lines)
        self.lines.append(f"=== {self.name} run {run} {' '.join(env) or ''}\n")
        self.proc = await asyncio.create_subprocess_exec(
            str(RBOT),
            *self.args,
            env={**self.env, **env},
            cwd=str(self.cwd),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C of the test run does not reach it first
        )
        self._pumps.append(asyncio.create_task(self._read(self.proc, run)))
        return await self.wait_for(self.ready, timeout)

    async def _read(self, proc: asyncio.subprocess.Process, run: int) -> None:
        assert proc.stdout is not None
        while raw := await proc.stdout.readline():
            self.lines.append(raw.decode(errors="replace"))
            self._changed.set()
        self._ended.add(run)
        self._changed.set()

    def mark(self) -> int:
        """A position in the output: ``wait_for(..., since=mark)`` sees only what follows."""
        return len(self.lines)

    async def wait_for(
        self, pattern: str | re.Pattern[str], timeout: float = 30.0, since: int | None = None
    ) -> re.Match[str]:
        rx = re.compile(pattern) if isinstance(pattern, str) else pattern
        pos = self.run_start if since is None else since
        run = self.runs - 1
        try:
            async with asyncio.timeout(timeout):
                while True:
                    while pos < len(self.lines):
                        m = rx.search(self.lines[pos])
                        pos += 1
                        if m:
                            return m
                    if run in self._ended:
                        raise ProcExited(
                            f"{self.name} exited before {rx.pattern!r}:\n{self.tail()}"
                        )
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise ProcExited(
                f"{self.name}: no {rx.pattern!r} within {timeout}s:\n{self.tail()}"
            ) from None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def send(self, sig: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    async def kill(self, sig: int = signal.SIGKILL, timeout: float = 20.0) -> int:
        """Send ``sig`` and wait for the process (and its output) to end."""
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        try:
            async with asyncio.timeout(timeout):
                code = await self.proc.wait()
        except TimeoutError:
            self.proc.kill()
            code = await self.proc.wait()
        await asyncio.gather(*self._pumps)
        return code

    async def stop(self, timeout: float = 20.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGCONT)  # a stopped process cannot stop
        return await self.kill(signal.SIGTERM, timeout)

    # -- what it said --------------------------------------------------------
    @property
    def text(self) -> str:
        return "".join(self.lines)

    def tail(self, n: int = 40) -> str:
        return "".join(self.lines[-n:])

    def count(self, needle: str) -> int:
        return sum(needle in line for line in self.lines)

    def save(self, folder: Path) -> Path:
        path = folder / f"{self.name}.log"
        path.write_text(self.text)
        return path


Spawn = Callable[..., RbotProc]


@pytest.fixture
async def spawn(tmp_path: Path) -> AsyncIterator[Spawn]:
    made: list[RbotProc] = []

    def make(name: str, args: list[str], env: dict[str, str], ready: str) -> RbotProc:
        proc = RbotProc(name, args, env, tmp_path, ready)
        made.append(proc)
        return proc

    try:
        yield make
    finally:
        for proc in reversed(made):
            await proc.stop()
            proc.save(tmp_path)


@pytest.fixture
async def chaos_bus(own_nats_server: NatsServer, prefix: str) -> AsyncIterator[Bus]:
    settings = make_settings(own_nats_server.url, prefix)
    bus = await connect(own_nats_server.url, settings.subjects(), "chaos-test")
    await provision(bus)
    try:
        yield bus
    finally:
        await bus.close()


# -- facts from the bus --------------------------------------------------------


class Waker:
    """Wakes a waiter on any message on some subjects; ``wait`` re-checks at least
    every ``recheck`` seconds (some changes, like a lease expiring, send nothing)."""

    def __init__(self, bus: Bus, *subjects: str) -> None:
        self.bus = bus
        self.subjects = subjects
        self.event = asyncio.Event()
        self.seen = 0
        self.subs: list[Any] = []

    async def __aenter__(self) -> Waker:
        async def cb(msg: Msg) -> None:
            self.seen += 1
            self.event.set()

        self.subs = [await self.bus.nc.subscribe(s, cb=cb) for s in self.subjects]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for sub in self.subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def wait(self, recheck: float = 1.0) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(recheck):
                await self.event.wait()
        self.event.clear()


async def read_stream(bus: Bus, name: str) -> list[tuple[int, str, dict[str, Any]]]:
    """Every message now in stream ``name`` (``ORDERS`` ...): (sequence, subject, JSON)."""
    stream = bus.subjects.stream(name)
    info = await bus.js.stream_info(stream)
    if not info.state.messages:
        return []
    last = info.state.last_seq
    out: list[tuple[int, str, dict[str, Any]]] = []
    sub = await bus.js.subscribe(
        bus.subjects.stream_subjects(name)[0], stream=stream, ordered_consumer=True
    )
    try:
        while True:
            msg = await sub.next_msg(timeout=10)
            seq = msg.metadata.sequence.stream
            out.append((seq, msg.subject, json.loads(msg.data)))
            if seq >= last:
                return out
    finally:
        await sub.unsubscribe()


async def kv_values(bus: Bus, bucket: str, pattern: str, kind: type[T]) -> dict[str, T]:
    kv = await bus.kv(bucket)
    return {e.key: codec.decode(e.value or b"", kind) for e in await scan(kv, pattern)}


async def active_left(bus: Bus, oids: Iterable[str]) -> tuple[list[str], dict[str, Order]]:
    """Which of ``oids`` are still active (or not written yet), and every order record."""
    orders = await kv_values(bus, "orders", "o.*", Order)
    left = [o for o in oids if (rec := orders.get(f"o.{o}")) is None
            or rec.status in (OrderStatus.PENDING, OrderStatus.OPEN)]  # fmt: skip
    return left, orders


async def exec_state(bus: Bus) -> tuple[list[ConsumerInfo], StreamState]:
    """The partitions' consumers on EXEC (those that exist) and the stream's state."""
    stream = bus.subjects.stream("EXEC")
    infos = []
    for part in range(bus.subjects.partitions):
        with contextlib.suppress(NotFoundError):
            infos.append(await bus.js.consumer_info(stream, bus.subjects.exec_consumer(part)))
    si = await bus.js.stream_info(stream)
    return infos, si.state


async def wait_exec_drained(bus: Bus, timeout: float) -> tuple[list[ConsumerInfo], StreamState]:
    """Until the executors' consumers have nothing pending and nothing unacknowledged,
    and the work queue holds no message (a message past MaxDeliver would stay)."""
    ack_subject = f"$JS.ACK.{bus.subjects.stream('EXEC')}.*.>"
    async with (
        Waker(bus, ack_subject, bus.subjects.order_events) as waker,
        asyncio.timeout(timeout),
    ):
        while True:
            infos, state = await exec_state(bus)
            if state.messages == 0 and all(
                ci.num_pending == 0 and ci.num_ack_pending == 0 for ci in infos
            ):
                return infos, state
            await waker.wait()


async def publish_tick(
    bus: Bus, venue: str, symbol: str, bid: Decimal, ask: Decimal, *, store: bool = True
) -> None:
    """A tick on the core subject, and (``store``) in KV ``prices`` as a feed does.
    ``store=False`` moves only the executor's market, not the guard's reference."""
    tick = Tick(venue=venue, symbol=symbol, bid=bid, ask=ask, time=codec.now_iso(), source="chaos")
    await bus.nc.publish(
        bus.subjects.tick(venue, symbol), codec.encode_envelope("tick", venue, tick)
    )
    if store:
        kv = await bus.kv("prices")
        await kv.put(f"{venue}.{symbol}", codec.encode(tick))


async def holders(bus: Bus) -> dict[int, str]:
    """Partition -> the instance holding its lease (``fence.<N>`` in KV ``orders``)."""
    fences = await kv_values(bus, "orders", "fence.*", FenceRecord)
    return {int(k.split(".")[1]): rec.owner for k, rec in fences.items()}


async def wait_holders(
    bus: Bus, ok: Callable[[dict[int, str]], bool], timeout: float = 30.0
) -> dict[int, str]:
    """Until the partition holders satisfy ``ok`` (woken by any lease change)."""
    kv = await bus.kv("orders")
    watcher = await kv.watch("fence.*")
    try:
        async with asyncio.timeout(timeout):
            while True:
                now = await holders(bus)
                if ok(now):
                    return now
                await watcher.updates(timeout=timeout)
    finally:
        await watcher.stop()  # type: ignore[no-untyped-call]


# -- HTTP ----------------------------------------------------------------------


async def trader_token(client: httpx.AsyncClient, email: str) -> str:
    creds = {"email": email, "password": PASSWORD}
    r = await client.post("/auth/register", json=creds)
    assert r.status_code in (200, 201, 409), r.text
    r = await client.post("/auth/login", json=creds)
    assert r.status_code == 200, r.text
    token: str = r.json()["access_token"]
    return token


def json_code(r: httpx.Response) -> str | None:
    try:
        body = r.json()
    except ValueError:
        return None
    code = body.get("code") if isinstance(body, dict) else None
    return code if isinstance(code, str) else None


# -- processes from the outside --------------------------------------------------


def proc_stats(pid: int) -> dict[str, int]:
    """RSS (KiB), threads and open file descriptors of a live process."""
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {
        "rss_kib": int(fields["VmRSS"].split()[0]),
        "threads": int(fields["Threads"]),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
    }


# -- figures ---------------------------------------------------------------------


def sized(name: str, floor: int, default: int) -> int:
    """A chaos size from the environment (``default`` when unset), never below ``floor``:
    the floors are what the promises are shown with, an env var can only raise them."""
    return max(floor, int(os.environ.get(name, default)))


RESULTS_ENV = "RBOT_CHAOS_RESULTS"  # scripts/chaos.sh collects the tables there


def figures(title: str, values: dict[str, object]) -> None:
    """Print a test's measured figures; with ``RBOT_CHAOS_RESULTS`` set, append them
    to that file as a Markdown table too (``scripts/chaos.sh`` -> tests/chaos/RESULTS.md)."""
    print(f"\n== {title}")
    width = max(len(k) for k in values)
    for key, value in values.items():
        print(f"   {key:<{width}}  {value}")
    out = os.environ.get(RESULTS_ENV)
    if out:
        rows = "".join(f"| {k} | {str(v).replace('|', '/')} |\n" for k, v in values.items())
        with open(out, "a", encoding="utf-8") as fh:
            fh.write(f"\n### {title}\n\n| figure | value |\n|---|---|\n{rows}")


def spread(xs: Iterable[float], unit: str = "s") -> str:
    """min / median / p95 / max of some durations, for the printed figures."""
    v = sorted(xs)
    if not v:
        return "-"
    p95 = v[min(len(v) - 1, int(round(0.95 * (len(v) - 1))))]
    return (
        f"min {v[0]:.3f}{unit}  median {statistics.median(v):.3f}{unit}  "
        f"p95 {p95:.3f}{unit}  max {v[-1]:.3f}{unit}  (n={len(v)})"
    )
