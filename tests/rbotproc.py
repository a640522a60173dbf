"""Run ``rbot up`` as a real subprocess for end-to-end tests."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

from rbot.actors.process import stop_process

_API = re.compile(r"dashboard\s+http://127\.0\.0\.1:(\d+)/")
_NATS = re.compile(r"NATS\s+(nats://\S+)")
_ADMIN = re.compile(r"created admin (\S+) with password (\S+)")

SECRET = "e2e-secret-key-0123456789abcdef-0123456789abcdef"


class RbotUp:
    def __init__(self, data_dir: Path, **env: str) -> None:
        self.data_dir = data_dir
        self.env = env
        self.proc: asyncio.subprocess.Process | None = None
        self.api_port = 0
        self.nats_url = ""
        self.admin: tuple[str, str] | None = None
        self.output: list[str] = []
        self._pump: asyncio.Task[None] | None = None
        self.lines: asyncio.Queue[str] = asyncio.Queue()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    async def start(self, timeout: float = 60.0) -> None:
        env = {
            **os.environ,
            "RBOT_DATA_DIR": str(self.data_dir),
            "RBOT_NATS_PORT": "-1",
            "RBOT_NATS_MONITOR_PORT": "-1",
            "RBOT_API_PORT": "0",
            "ARENA_SECRET_KEY": SECRET,
            "RBOT_SIM": "on",
            "PYTHONUNBUFFERED": "1",
            **self.env,
        }
        env.pop("NATS_URL", None)
        rbot = Path(sys.executable).parent / "rbot"
        self.proc = await asyncio.create_subprocess_exec(
            str(rbot),
            "up",
            cwd=str(Path(__file__).resolve().parent.parent),
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        self._pump = asyncio.create_task(self._read())
        async with asyncio.timeout(timeout):
            while not (self.api_port and self.nats_url):
                line = await self.lines.get()
                if m := _API.search(line):
                    self.api_port = int(m.group(1))
                if m := _NATS.search(line):
                    self.nats_url = m.group(1)
                if m := _ADMIN.search(line):
                    self.admin = (m.group(1), m.group(2))
                if line == "":
                    raise RuntimeError("rbot up exited:\n" + "".join(self.output[-40:]))
        # the admin line comes after the NATS line in the banner
        async with asyncio.timeout(5):
            while self.admin is None:
                line = await self.lines.get()
                if m := _ADMIN.search(line):
                    self.admin = (m.group(1), m.group(2))
                if "Ctrl-C stops everything" in line or line == "":
                    break

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while raw := await self.proc.stdout.readline():
            line = raw.decode(errors="replace")
            self.output.append(line)
            self.lines.put_nowait(line)
        self.lines.put_nowait("")

    def children(self) -> list[int]:
        assert self.proc is not None
        pids: list[int] = []
        for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
            text = (task / "children").read_text().split()
            pids += [int(p) for p in text]
        return pids

    def nats_pid(self) -> int:
        for pid in self.children():
            try:
                exe = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
            except FileNotFoundError:
                continue
            if exe.endswith(b"nats-server"):
                return pid
        raise LookupError("no nats-server child")

    async def stop(self, sig: int = signal.SIGINT, timeout: float = 30.0) -> int:
        assert self.proc is not None
        code = await stop_process(self.proc, sig, grace=timeout)
        if self._pump is not None:
            await self._pump
        return code

    @property
    def text(self) -> str:
        return "".join(self.output)
