"""Start ``bench.stack_proc`` / ``bench.floor_proc`` as child processes and wait for
their ready line (one JSON object on stdout); closing their stdin stops them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rbot.actors.process import stop_process

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class StackInfo:
    port: int
    token: str
    sub: str
    echo: str
    prefix: str
    order_id: str
    pid: int

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass(frozen=True)
class FloorInfo:
    port: int
    pid: int


@contextlib.asynccontextmanager
async def _spawn(
    module: str, args: list[str], log: Path, start_s: float
) -> AsyncIterator[tuple[dict[str, Any], int]]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as errf:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", module, *args,
            cwd=ROOT, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=errf,
        )  # fmt: skip
    try:
        assert proc.stdout is not None
        try:
            async with asyncio.timeout(start_s):
                line = await proc.stdout.readline()
        except TimeoutError:
            line = b""
        if not line:
            raise RuntimeError(f"{module} did not start; its log:\n{_tail(log)}")
        yield json.loads(line), proc.pid
    finally:
        if proc.stdin is not None and proc.returncode is None:
            proc.stdin.close()  # the child's signal to stop
        await stop_process(proc, None, grace=15)


@contextlib.asynccontextmanager
async def stack_child(
    nats_url: str, log: Path, *, nodelay: bool = False, start_s: float = 60.0
) -> AsyncIterator[StackInfo]:
    prefix = "b" + uuid.uuid4().hex[:10]
    args = [nats_url, prefix, *(["--nodelay"] if nodelay else [])]
    async with _spawn("bench.stack_proc", args, log, start_s) as (d, pid):
        yield StackInfo(d["port"], d["token"], d["sub"], d["echo"], d["prefix"], d["order_id"], pid)


@contextlib.asynccontextmanager
async def split_stack_child(
    nats_url: str, log: Path, *, start_s: float = 60.0
) -> AsyncIterator[tuple[StackInfo, int]]:
    """API + guard in one process, the executor in another (same prefix): the stack's
    info and the executor's pid."""
    prefix = "s" + uuid.uuid4().hex[:10]
    exec_log = log.with_name(log.stem + "-executor.log")
    async with (
        _spawn("bench.exec_proc", [nats_url, prefix], exec_log, start_s) as (_, exec_pid),
        _spawn("bench.stack_proc", [nats_url, prefix, "--split"], log, start_s) as (d, pid),
    ):
        info = StackInfo(d["port"], d["token"], d["sub"], d["echo"], prefix, d["order_id"], pid)
        yield info, exec_pid


@contextlib.asynccontextmanager
async def floor_child(nats_url: str, log: Path, start_s: float = 30.0) -> AsyncIterator[FloorInfo]:
    prefix = "f" + uuid.uuid4().hex[:10]
    async with _spawn("bench.floor_proc", [nats_url, prefix], log, start_s) as (d, pid):
        yield FloorInfo(d["port"], pid)


def _tail(log: Path, n: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"
