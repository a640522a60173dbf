"""R4 local: a hung actor (its task alive, its beat stopped) is restarted by its
own supervisor within two heartbeat intervals, and beats again.

One real ``rbot actors --only order_guard`` process, beats every 0.5 s, with
the test-only fault hook ``RBOT_FAULT=hang:order_guard:1`` (``actors/base.py``):
once its first incarnation has said ready, its beat loop blocks on an await
that never returns.  The supervisor's watchdog (``ChildSpec.alive``) sees no
tick for 2 x 0.5 s, reports ``hung``, cancels it and starts it again; the
second incarnation is healthy.  The test follows the beats and the lifecycle
events on the bus, and the guard answers a request after the restart.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from nats.aio.msg import Msg

from rbot.bus.connection import Bus
from tests.chaos.conftest import BANNER_ACTORS, Spawn, figures, rbot_env
from tests.natsd import NatsServer

BEAT = 0.5
INSTANCE = "guard-r4-hang"
SLACK = 0.3  # scheduling on a loaded 2-core machine


class Watch:
    def __init__(self) -> None:
        self.beats: list[float] = []
        self.events: asyncio.Queue[tuple[float, str, dict[str, Any]]] = asyncio.Queue()
        self.beat_after: asyncio.Event = asyncio.Event()
        self.since = float("inf")

    async def on_beat(self, msg: Msg) -> None:
        now = time.monotonic()
        self.beats.append(now)
        if now > self.since:
            self.beat_after.set()

    async def on_event(self, msg: Msg) -> None:
        body = json.loads(msg.data)
        if body["payload"]["actor"] != "order_guard":
            return
        self.events.put_nowait((time.monotonic(), body["type"], body["payload"]))

    async def event(self, type_: str, timeout: float) -> tuple[float, dict[str, Any]]:
        async with asyncio.timeout(timeout):
            while True:
                at, t, payload = await self.events.get()
                if t == type_:
                    return at, payload


async def test_r4_hung_local_actor_is_restarted_by_its_supervisor(
    nats_server: NatsServer, prefix: str, bus: Bus, spawn: Spawn
) -> None:
    env = rbot_env(
        nats_server.url,
        prefix,
        RBOT_BEAT_INTERVAL_S=str(BEAT),
        RBOT_INSTANCE=INSTANCE,
        RBOT_FAULT="hang:order_guard:1",
    )
    w = Watch()
    s = bus.subjects
    subs = [
        await bus.nc.subscribe(s.heartbeat("order_guard", INSTANCE), cb=w.on_beat),
        await bus.nc.subscribe(s.actor_events, cb=w.on_event),
    ]
    guard = spawn("order_guard", ["actors", "--only", "order_guard"], env, BANNER_ACTORS)
    try:
        await guard.start()
        hung_at, hung = await w.event("hung", timeout=10 * BEAT)
        hang_logged = await guard.wait_for("hang injected by RBOT_FAULT", timeout=1)
        crashed_at, crashed = await w.event("crashed", timeout=10 * BEAT)
        started_at, started = await w.event("started", timeout=10 * BEAT)
        w.since = started_at
        async with asyncio.timeout(4 * BEAT):
            await w.beat_after.wait()  # the new incarnation beats
        # and works: the guard answers a (malformed) cancel request with an error
        reply = await bus.nc.request(s.order_cancel, b"{}", timeout=5)
        assert reply.data
    finally:
        for sub in subs:
            await sub.unsubscribe()

    before = [b for b in w.beats if b < hung_at]
    assert before, "the guard beat before it hung"
    last = before[-1]
    first_missed = last + BEAT
    figures(
        "R4 hung local actor (order_guard's beat loop blocked, beat 0.5 s)",
        {
            "last beat -> hung": f"{hung_at - last:.3f} s (bound {2 * BEAT:g} s + {SLACK} s)",
            "first missed beat -> hung": f"{hung_at - first_missed:.3f} s",
            "hung -> started again": f"{started_at - hung_at:.3f} s",
            "reason": hung["reason"],
            "restarts": started.get("restarts", 0),
        },
    )
    assert hang_logged
    assert hung["reason"].startswith("hung: no sign of life for 1.0")
    assert crashed["reason"] == hung["reason"] and crashed.get("restarts", 0) == 0
    assert started.get("restarts", 0) == 1
    # the watchdog fires two intervals after the last tick; the last beat left at
    # that tick (give or take the publish): no later than 2 intervals + slack
    assert hung_at - last <= 2 * BEAT + SLACK
    assert crashed_at >= hung_at
    assert "Traceback" not in guard.text
