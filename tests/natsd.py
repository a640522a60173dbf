"""A real nats-server for tests: random port, temp store, port read from its log."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

from rbot.actors.natsd import config_file, server_binary

# one lookup of the binary for the project, the tests and the bench: actors/natsd.py
nats_server_bin = server_binary

_LISTEN = re.compile(r"Listening for client connections on [\d.]+:(\d+)")


_FIXED_PORTS = re.compile(r"^\s*(listen|http|port|http_port)\s*[:=]", re.M)


def production_config(folder: Path, extra: Path | None = None) -> Path:
    """The project's ``nats.conf`` as the tests can run it: every setting kept
    (``jetstream { sync_interval: always }``, limits, ``max_payload``) except its
    fixed ports (the test server listens on a random one, monitoring off), plus
    ``extra`` (e.g. an authorization block) appended."""
    text = "".join(
        line for line in config_file().read_text().splitlines(keepends=True)
        if not _FIXED_PORTS.match(line)
    )  # fmt: skip
    if extra is not None:
        text += "\n" + extra.read_text()
    path = folder / "nats-production.conf"
    path.write_text(text)
    return path


class NatsServer:
    """One nats-server process; ``restart()`` keeps its port and store.

    ``production=True``: the project's ``nats.conf`` settings (fsync before every
    acknowledgement): the flavour for every test where durability is under test."""

    def __init__(
        self, store: Path, port: int = -1, config: Path | None = None, production: bool = False
    ) -> None:
        self.store = store
        self.port = port
        if production:
            store.parent.mkdir(parents=True, exist_ok=True)
            config = production_config(store.parent, config)
        self.production = production
        self.config = config  # e.g. a generated authorization block (tests of identities)
        self.proc: subprocess.Popen[str] | None = None
        self.log: list[str] = []
        self.jetstream = True  # False: the next start() is core NATS only (no $JS.API)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> None:
        args = [nats_server_bin(), "-a", "127.0.0.1", "-p", str(self.port)]
        if self.jetstream:
            args += ["-js", "-sd", str(self.store)]
        if self.config is not None:
            args += ["-c", str(self.config)]
        self.proc = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        ready = threading.Event()
        assert self.proc.stderr is not None
        stream = self.proc.stderr

        def pump() -> None:
            for line in stream:
                self.log.append(line)
                m = _LISTEN.search(line)
                if m:
                    self.port = int(m.group(1))
                if "Server is ready" in line:
                    ready.set()
            ready.set()

        threading.Thread(target=pump, daemon=True).start()
        if not ready.wait(timeout) or self.proc.poll() is not None:
            raise RuntimeError("nats-server did not start:\n" + "".join(self.log[-20:]))

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            self.proc.wait(timeout=20)

    def restart(self, sig: int = signal.SIGKILL) -> None:
        self.kill(sig)
        self.start()

    def stop(self) -> None:
        self.kill(signal.SIGTERM)


@contextlib.contextmanager
def running_server(
    store: Path, config: Path | None = None, production: bool = False
) -> Iterator[NatsServer]:
    srv = NatsServer(store, config=config, production=production)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def free_port() -> int:
    """Only for processes that cannot report their own port (uvicorn in a child)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
