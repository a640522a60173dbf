"""Serve a fake venue's ASGI app with uvicorn: in-process for tests, or as a CLI.

``serving(app)`` binds 127.0.0.1 on a random port and yields the base URL once
the socket listens (an event, not a sleep).  ``main(...)`` is the body of
``python -m tests.fakes.<venue> --port 0``: it prints ``LISTENING <url>`` on
stdout and runs until SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from typing import Any

import uvicorn

ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]


class DroppedByScript(Exception):
    """Raised inside a handler to cut its connection (the transport closes)."""


class _HideScriptedDrops(logging.Filter):
    """Keeps uvicorn quiet about faults the fakes inject on purpose: a handler
    raising ``DroppedByScript``, and a WebSocket refused with an HTTP denial
    response (uvicorn's sans-I/O protocol logs that as "returned without
    completing handshake" although the denial was sent)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, DroppedByScript):
            return False
        return record.msg != "ASGI callable returned without completing handshake."


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.up = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the owner (test or CLI) handles signals

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets)
        self.up.set()


@contextlib.asynccontextmanager
async def serving(
    app: ASGIApp,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    before_stop: Callable[[], object] | None = None,
) -> AsyncIterator[str]:
    """Run ``app`` until the block ends; yields ``http://host:port``."""
    logging.getLogger("uvicorn.error").addFilter(_HIDE)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="off",
        ws="websockets-sansio",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=2,
    )
    server = _Server(config)
    async with asyncio.TaskGroup() as tg:
        serve = tg.create_task(server.serve())
        up = tg.create_task(server.up.wait())
        await asyncio.wait({serve, up}, return_when=asyncio.FIRST_COMPLETED)
        if not up.done():
            up.cancel()
            raise RuntimeError("fake server did not start")
        bound = server.servers[0].sockets[0].getsockname()[1]
        try:
            yield f"http://{host}:{bound}"
        finally:
            if before_stop is not None:
                before_stop()
            server.should_exit = True


_HIDE = _HideScriptedDrops()


def cli_args(
    prog: str,
    argv: list[str] | None,
    extra: Callable[[argparse.ArgumentParser], None] | None = None,
) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument(
        "--tick-interval",
        type=float,
        default=1.0,
        help="move and push prices every N seconds (0: only on /_control/price)",
    )
    p.add_argument("--heartbeat", type=float, default=None, help="heartbeat interval, seconds")
    if extra is not None:
        extra(p)
    return p.parse_args(argv)


async def run_cli(
    app: ASGIApp,
    *,
    host: str,
    port: int,
    background: Callable[[], Coroutine[Any, Any, None]] | None,
    before_stop: Callable[[], object],
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with serving(app, host=host, port=port, before_stop=before_stop) as url:
        print(f"LISTENING {url}", flush=True)
        async with asyncio.TaskGroup() as tg:
            side = tg.create_task(background()) if background else None
            await stop.wait()
            if side is not None:
                side.cancel()


class Counter:
    """A count that tests can await (``await c.reach(3)``) instead of polling."""

    def __init__(self) -> None:
        self.value = 0
        self._waiters: list[tuple[int, asyncio.Event]] = []

    def incr(self) -> int:
        self.value += 1
        for n, ev in self._waiters:
            if self.value >= n:
                ev.set()
        self._waiters = [(n, ev) for n, ev in self._waiters if not ev.is_set()]
        return self.value

    async def reach(self, n: int) -> int:
        if self.value < n:
            ev = asyncio.Event()
            self._waiters.append((n, ev))
            await ev.wait()
        return self.value


async def first_done(*coros: Awaitable[str]) -> str:
    """Run coroutines side by side; the first to finish wins, the rest are cancelled."""
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(_wrap(c)) for c in coros]
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for t in tasks:
            if t not in done:
                t.cancel()
    return next(iter(done)).result()


async def _wrap(c: Awaitable[str]) -> str:
    return await c


def ns_time(t_ns: int | None = None) -> str:
    """RFC 3339 with nanoseconds, as the venues send it."""
    t_ns = time.time_ns() if t_ns is None else t_ns
    sec, frac = divmod(t_ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + f".{frac:09d}Z"
