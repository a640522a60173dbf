"""``Bus.close`` against a stalled server (R16: an actor's connection to the node
SIGSTOPped under it): it returns within its bound.

nats-py's ``drain`` swallows a cancel and then flushes for up to 10 s; the old
``wait_for(drain, 2)`` waited for that cancelled drain, so an actor being stopped
sat in ``close`` for ~12 s and its supervisor abandoned it.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rbot.bus.connection import CLOSE_S, connect
from tests.conftest import make_settings
from tests.natsd import NatsServer, running_server


@pytest.fixture
def server(tmp_path: Path) -> Iterator[NatsServer]:
    with running_server(tmp_path / "js") as srv:
        yield srv


def _signal(server: NatsServer, sig: int) -> None:
    assert server.proc is not None
    os.kill(server.proc.pid, sig)


@pytest.mark.timeout(60)
async def test_close_returns_in_its_bound_while_the_server_is_stopped(
    server: NatsServer, prefix: str
) -> None:
    settings = make_settings(server.url, prefix)
    bus = await connect(server.url, settings.subjects(), "test-close")
    await bus.nc.subscribe("x.>")  # something to drain (an unsubscribe and a flush)
    _signal(server, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        await bus.close()
        took = time.monotonic() - t0
    finally:
        _signal(server, signal.SIGCONT)
    assert bus.closed.is_set()
    assert took < 2 * CLOSE_S + 1.0, f"close took {took:.1f} s"
