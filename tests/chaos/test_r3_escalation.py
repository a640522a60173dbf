"""R3 end to end: a real ``rbot actors`` process whose children keep crashing
escalates through the real path: trading HALTED in KV ``control`` (the
escalation hook ``halt_trading``, with the ``reporter`` identity), every child
stopped, exit code 1.

The crashes come from the test-only fault hook ``RBOT_FAULT=crash:ACTOR``
(``actors/base.py``): the actor raises right after it says ready, every time.

* default run: every actor crashes (``crash:*``): the supervisor's 10 restarts in
  30 s are used up within a few seconds, each child still early in its backoff;
* ``-m chaos``: one actor alone crashes.  Its backoff grows to 10 s, so 11
  restarts never fit in 30 s of wall time: it escalates only because backoff
  time is kept off the intensity's clock (``actors/supervisor.py``), ~20-45 s.
"""

from __future__ import annotations

import asyncio
import re
import time

import pytest

from rbot.bus import codec, keys
from rbot.bus.connection import Bus
from rbot.bus.messages import TradingState, TradingStateRecord
from tests.chaos.conftest import BANNER_ACTORS, Spawn, figures, rbot_env
from tests.natsd import NatsServer

_CRASHED = re.compile(r"rbot\.supervisor: (\S+) crashed InjectedFault")


async def _escalates(
    nats_server: NatsServer, prefix: str, bus: Bus, spawn: Spawn, fault: str, only: list[str],
    timeout: float,
) -> dict[str, object]:  # fmt: skip
    control = await bus.kv("control")
    active = TradingStateRecord(state=TradingState.ACTIVE, reason="r3 test", by="test")
    await control.put(keys.TRADING, codec.encode(active))
    env = rbot_env(nats_server.url, prefix, RBOT_FAULT=fault)
    proc = spawn("actors", ["actors", *(["--only", *only] if only else [])], env, BANNER_ACTORS)
    t0 = time.monotonic()
    await proc.start()
    assert proc.proc is not None
    try:
        async with asyncio.timeout(timeout):
            code = await proc.proc.wait()
    except TimeoutError:
        raise AssertionError(f"no exit within {timeout} s:\n{proc.tail()}") from None
    took = time.monotonic() - t0
    await proc.kill()  # collects the rest of its output
    rec = codec.decode((await control.get(keys.TRADING)).value or b"", TradingStateRecord)
    text = proc.text
    crashes = _CRASHED.findall(text)

    assert code == 1, proc.tail()
    assert "rbot: supervisor gave up: 11 restarts within 30.0s (max 10)" in text
    assert rec.state is TradingState.HALTED, rec
    assert rec.by == "supervisor" and (rec.reason or "").startswith("supervisor escalation: 11")
    assert len(crashes) == 11
    # every child stopped before the exit (reverse order), none abandoned
    started = {m for m in re.findall(r"rbot\.supervisor: (\S+) started", text)}
    stopped = {m for m in re.findall(r"rbot\.supervisor: (\S+) stopped", text)}
    assert started and started <= stopped | set(crashes), (started, stopped)
    assert " abandoned" not in text
    return {
        "fault": fault,
        "crashes (restarts + the last)": len(crashes),
        "children crashing": len(set(crashes)),
        "start -> exit": f"{took:.1f} s",
        "exit code": code,
        "trading state": f"{rec.state} ({rec.reason})",
    }


async def test_r3_crashing_children_halt_trading_and_exit_1(
    nats_server: NatsServer, prefix: str, bus: Bus, spawn: Spawn
) -> None:
    figs = await _escalates(nats_server, prefix, bus, spawn, "crash:*", [], timeout=60)
    figures("R3 escalation end to end (every actor crashes after ready)", figs)


@pytest.mark.chaos
async def test_r3_one_crash_looping_child_escalates_despite_its_backoff(
    nats_server: NatsServer, prefix: str, bus: Bus, spawn: Spawn
) -> None:
    figs = await _escalates(
        nats_server, prefix, bus, spawn, "crash:ttl_reaper", ["ttl_reaper"], timeout=120
    )
    assert figs["children crashing"] == 1
    figures("R3 escalation end to end (one actor crash-looping, backoff to 10 s)", figs)
