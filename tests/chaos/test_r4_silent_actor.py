"""R4: a hung actor process is noticed within two heartbeat intervals, and its
return is noticed too.

Two real processes: ``rbot actors --only heartbeat`` and ``rbot actors --only
order_guard`` (beats every 0.5 s).  The guard is frozen with SIGSTOP (it keeps
its sockets, it just stops beating), then thawed with SIGCONT.  Fast enough for
the default run (a few seconds).
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Callable
from typing import Any

from nats.aio.msg import Msg

from rbot.bus.connection import Bus
from tests.chaos.conftest import BANNER_ACTORS, Spawn, figures, rbot_env
from tests.natsd import NatsServer

BEAT = 0.5
INSTANCE = "guard-r4"
SLACK = 0.3  # scheduling on a loaded 2-core machine


class Watch:
    """Guard beats, its silent events and the pulses, each with its arrival time."""

    def __init__(self) -> None:
        self.last_beat: float | None = None
        self.beats = 0
        self.silent: asyncio.Queue[tuple[float, dict[str, Any]]] = asyncio.Queue()
        self.pulses: asyncio.Queue[tuple[float, dict[str, Any]]] = asyncio.Queue()

    async def on_beat(self, msg: Msg) -> None:
        self.last_beat = time.monotonic()
        self.beats += 1

    async def on_silent(self, msg: Msg) -> None:
        self.silent.put_nowait((time.monotonic(), json.loads(msg.data)))

    async def on_pulse(self, msg: Msg) -> None:
        self.pulses.put_nowait((time.monotonic(), json.loads(msg.data)["payload"]))

    async def pulse(self, want: Callable[[dict[str, Any]], bool], timeout: float) -> float:
        async with asyncio.timeout(timeout):
            while True:
                at, pulse = await self.pulses.get()
                if want(pulse):
                    return at


def guard_state(pulse: dict[str, Any]) -> str | None:
    for a in pulse["actors"]:
        if a["actor"] == "order_guard" and a["instance"] == INSTANCE:
            return str(a["state"])
    return None


async def test_r4_stopped_actor_is_flagged_silent_then_back(
    nats_server: NatsServer, prefix: str, bus: Bus, spawn: Spawn
) -> None:
    env = rbot_env(
        nats_server.url, prefix, RBOT_BEAT_INTERVAL_S=str(BEAT), RBOT_PULSE_INTERVAL_S=str(BEAT)
    )
    w = Watch()
    s = bus.subjects
    subs = [
        await bus.nc.subscribe(s.heartbeat("order_guard", INSTANCE), cb=w.on_beat),
        await bus.nc.subscribe(s.actor_event("order_guard", "silent"), cb=w.on_silent),
        await bus.nc.subscribe(s.pulse, cb=w.on_pulse),
    ]
    hb = spawn("heartbeat", ["actors", "--only", "heartbeat"], env, BANNER_ACTORS)
    guard = spawn(
        "order_guard",
        ["actors", "--only", "order_guard"],
        {**env, "RBOT_INSTANCE": INSTANCE},
        BANNER_ACTORS,
    )
    try:
        await asyncio.gather(hb.start(), guard.start())
        key = f"order_guard.{INSTANCE}"
        await w.pulse(lambda p: guard_state(p) == "running", timeout=10)

        # freeze: no beat any more, the socket stays open
        guard.send(signal.SIGSTOP)
        stopped = time.monotonic()
        last = w.last_beat
        assert last is not None
        async with asyncio.timeout(10 * BEAT):
            flagged, ev = await w.silent.get()
        assert ev["type"] == "silent" and ev["payload"]["instance"] == INSTANCE
        in_pulse = await w.pulse(lambda p: key in p["silent"], timeout=5 * BEAT)

        # thaw: it beats again and the pulse clears it
        guard.send(signal.SIGCONT)
        thawed = time.monotonic()
        cleared = await w.pulse(
            lambda p: key not in p["silent"] and guard_state(p) == "running", timeout=10 * BEAT
        )
        await hb.wait_for("beats again", timeout=5)
    finally:
        for sub in subs:
            await sub.unsubscribe()

    first_missed = last + BEAT
    figures(
        "R4 silent actor (SIGSTOP order_guard, beat 0.5 s, sweep 0.5 s)",
        {
            "stop -> silent event": f"{flagged - stopped:.3f} s",
            "last beat -> silent event": f"{flagged - last:.3f} s",
            "first missed beat -> silent": f"{flagged - first_missed:.3f} s (bound {2 * BEAT:g} s)",
            "silent event -> pulse lists it": f"{in_pulse - flagged:.3f} s",
            "SIGCONT -> pulse clear": f"{cleared - thawed:.3f} s",
            "silent events": 1 + w.silent.qsize(),
            "guard beats seen": w.beats,
        },
    )
    # flagged once the last beat is older than two intervals: at most two intervals
    # after the first beat that did not come (the sweep runs every interval)
    assert flagged - first_missed <= 2 * BEAT + SLACK
    assert w.silent.empty(), "one silent event per silence"
    assert "Traceback" not in hb.text + guard.text
