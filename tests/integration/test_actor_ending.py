"""An actor whose ``run`` ended is ending, not hung, while its bus closes (R16).

Its beat loop is gone once ``run`` returns or raises; closing the connection to a
stalled node (SIGSTOPped) takes up to ``Bus.close``'s bound.  The watchdog
(2 beat intervals) took that for a hang: the supervisor reported ``hung``,
cancelled the child (which ignored it inside nats-py's drain) and abandoned it,
and why ``run`` ended was lost.  Now the supervisor sees the actor's own exit.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from rbot.actors.base import Actor, Ready
from rbot.actors.supervisor import Restart, Supervisor
from rbot.bus.config import Settings
from rbot.bus.connection import Bus
from tests.conftest import make_settings
from tests.natsd import NatsServer, running_server


class Ends(Actor):
    """Says ready, then ends with an error once told to."""

    name = "ends"
    restart = Restart.TEMPORARY  # once is enough here

    def __init__(self, settings: Settings, url: str) -> None:
        super().__init__(settings, url, "test")
        self.go = asyncio.Event()
        self.ending = asyncio.Event()

    async def run(self, bus: Bus, ready: Ready) -> None:
        await bus.nc.subscribe("ends.>")  # something for the close to drain
        ready()
        await self.go.wait()
        self.ending.set()
        raise RuntimeError("run ended on purpose")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[NatsServer]:
    with running_server(tmp_path / "js") as srv:
        yield srv


def _signal(server: NatsServer, sig: int) -> None:
    assert server.proc is not None
    os.kill(server.proc.pid, sig)


@pytest.mark.timeout(60)
async def test_an_actor_closing_its_bus_to_a_stalled_server_is_not_hung(
    server: NatsServer, prefix: str
) -> None:
    settings = make_settings(server.url, prefix, rbot_beat_interval_s=0.1)
    actor = Ends(settings, server.url)
    events: list[tuple[str, str, str]] = []
    crashed = asyncio.Event()

    def report(child: str, kind: str, info: dict[str, str]) -> None:
        events.append((child, kind, info.get("reason", "")))
        if kind == "crashed":
            crashed.set()

    sup = Supervisor([actor.spec()], report=report)
    ready = asyncio.Event()
    task = asyncio.create_task(sup.run(ready.set))
    try:
        async with asyncio.timeout(20):
            await ready.wait()
        _signal(server, signal.SIGSTOP)
        actor.go.set()
        async with asyncio.timeout(20):
            await crashed.wait()
    finally:
        _signal(server, signal.SIGCONT)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)  # cancelled, or ended already
    kinds = [kind for child, kind, _ in events if child == "ends"]
    assert "hung" not in kinds and "abandoned" not in kinds, events
    reason = next(r for c, k, r in events if c == "ends" and k == "crashed")
    assert "run ended on purpose" in reason, events
