"""A 3-node NATS cluster on 127.0.0.1, from the configs ``rbot cluster-config`` renders.

The same renderer as ``deploy/nats/node*.conf`` (actors/clusterconf.py), with free
ports, store dirs under the test's tmp dir, a throwaway CA (mutual TLS on routes,
TLS for clients) and the generated identities (``auth.conf``: bcrypt hashes and
permissions).  Waits are on log lines of the servers, never on time.

* ``ClusterNode``: one nats-server; ``kill`` / ``start`` (same port and store),
  ``pause`` / ``resume`` (SIGSTOP / SIGCONT).
* ``NatsCluster``: the three, their client URLs (``url(i)`` seeds at node ``i``),
  the env for children (``NATS_CREDS_DIR``, ``RBOT_REPLICAS=3``, ``SSL_CERT_FILE``),
  an operator connection, and who leads a stream (``stream_leader``).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import threading
from pathlib import Path

from rbot.actors.clustercli import free_ports, write_cluster
from rbot.actors.clusterconf import Cluster, loopback_cluster
from rbot.actors.clustertls import make_tls
from rbot.bus.config import Settings
from rbot.bus.connection import Bus, connect
from rbot.bus.credentials import CREDS_DIR, load
from rbot.bus.subjects import Subjects
from tests.natsd import nats_server_bin

META_LEADER = re.compile(r"metadata leader|JetStream cluster new metadata leader")


class ClusterNode:
    """One nats-server of the cluster, restartable on the same port and store."""

    def __init__(self, name: str, config: Path, client_port: int) -> None:
        self.name = name
        self.config = config
        self.client_port = client_port
        self.proc: subprocess.Popen[str] | None = None
        self.log: list[str] = []
        self._cond = threading.Condition()
        self.paused = False

    def start(self, timeout: float = 30.0) -> None:
        args = [nats_server_bin(), "-c", str(self.config)]
        self.proc = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        mark = len(self.log)
        assert self.proc.stderr is not None
        stream = self.proc.stderr

        def pump() -> None:
            for line in stream:
                with self._cond:
                    self.log.append(line)
                    self._cond.notify_all()
            with self._cond:
                self.log.append("<exit>\n")
                self._cond.notify_all()

        threading.Thread(target=pump, daemon=True, name=f"nats-{self.name}").start()
        self.wait_log("Server is ready", timeout, since=mark)

    def wait_log(self, pattern: str | re.Pattern[str], timeout: float, since: int = 0) -> str:
        rx = re.compile(pattern) if isinstance(pattern, str) else pattern
        pos = since
        with self._cond:
            while True:
                while pos < len(self.log):
                    line = self.log[pos]
                    pos += 1
                    if rx.search(line):
                        return line
                    if line == "<exit>\n":
                        raise RuntimeError(f"{self.name} exited:\n{''.join(self.log[-20:])}")
                if not self._cond.wait(timeout):
                    raise TimeoutError(f"{self.name}: no {rx.pattern!r} in {timeout}s")

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            if self.paused:
                os.kill(self.proc.pid, signal.SIGCONT)
                self.paused = False
            os.kill(self.proc.pid, sig)
            self.proc.wait(timeout=20)

    def pause(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)
        self.paused = False


class NatsCluster:
    def __init__(self, root: Path, prefix: str, partitions: int = 2, client_tls: bool = True):
        self.root = root
        self.settings = Settings(  # type: ignore[call-arg]
            _env_file=None, rbot_prefix=prefix, rbot_partitions=partitions
        )
        self.subjects: Subjects = self.settings.subjects()
        self.spec: Cluster = loopback_cluster(str(root), free_ports(9), client_tls=client_tls)
        make_tls(Path(self.spec.tls_dir), {n.name: n.host for n in self.spec.nodes})
        self.configs = write_cluster(root, self.spec, self.settings)
        self.nodes = [
            ClusterNode(n.name, conf, n.client_port)
            for n, conf in zip(self.spec.nodes, self.configs, strict=True)
        ]

    @property
    def creds(self) -> Path:
        return self.root / CREDS_DIR

    @property
    def ca_file(self) -> str:
        return f"{self.spec.tls_dir}/ca.pem"

    def url(self, first: int = 0) -> str:
        return self.spec.client_urls(first)

    def env(self) -> dict[str, str]:
        """What every rbot child needs on top of its own settings."""
        out = {"NATS_CREDS_DIR": str(self.creds), "RBOT_REPLICAS": "3"}
        if self.spec.client_tls:
            out["SSL_CERT_FILE"] = self.ca_file
        return out

    def start(self) -> None:
        marks = [len(n.log) for n in self.nodes]
        threads = [threading.Thread(target=n.start) for n in self.nodes]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for n, mark in zip(self.nodes, marks, strict=True):
            if not n.alive:
                raise RuntimeError(f"{n.name} did not start:\n{''.join(n.log[-20:])}")
            n.wait_log(META_LEADER, 30.0, since=mark)

    def stop(self) -> None:
        for n in self.nodes:
            n.kill(signal.SIGTERM)

    async def connect(self, identity: str = "operator", first: int = 0, name: str = "test") -> Bus:
        return await connect(
            self.url(first), self.subjects, name, auth=load(self.creds, identity)
        )  # fmt: skip

    async def connect_except(self, name: str, identity: str = "operator") -> Bus:
        """An observer connected to the other nodes (a paused node would stall it)."""
        scheme = "tls" if self.spec.client_tls else "nats"
        url = ",".join(
            f"{scheme}://{n.host}:{n.client_port}" for n in self.spec.nodes if n.name != name
        )
        return await connect(
            url, self.subjects, f"observer-{name}", auth=load(self.creds, identity)
        )

    async def stream_leader(self, bus: Bus, stream: str) -> str | None:
        """``cluster.leader`` of a stream, from ``$JS.API.STREAM.INFO.<stream>``."""
        name = self.subjects.stream(stream) if stream.isupper() else stream
        msg = await bus.nc.request(f"$JS.API.STREAM.INFO.{name}", b"", timeout=3.0)
        info = json.loads(msg.data)
        leader = info.get("cluster", {}).get("leader")
        return leader if isinstance(leader, str) else None

    def index(self, name: str) -> int:
        return [n.name for n in self.nodes].index(name)

    async def wait_meta(self, node: ClusterNode, since: int, timeout: float = 30.0) -> None:
        await asyncio.to_thread(node.wait_log, META_LEADER, timeout, since)
