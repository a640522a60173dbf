"""Killing an actor's task shows a restart on the bus; NATS_URL may list servers."""

from __future__ import annotations

import asyncio
import json

from rbot.actors.heartbeat import HeartbeatActor
from rbot.actors.reporter import Reporter
from rbot.actors.supervisor import Supervisor
from rbot.bus.config import Settings
from rbot.bus.connection import Bus, connect


async def test_killed_heartbeat_task_is_restarted_and_reported(
    settings: Settings, bus: Bus
) -> None:
    url = settings.nats_url or ""
    reporter = Reporter(settings, lambda: url, "it")
    reporter.nats_up.set()
    actor = HeartbeatActor(settings, url, "it")
    sup = Supervisor([actor.spec()], name="t", report=reporter.report)
    events = await bus.nc.subscribe(f"{bus.subjects.prefix}.evt.actor.heartbeat.*")
    pulses = await bus.nc.subscribe(bus.subjects.pulse)
    started = asyncio.Event()
    async with asyncio.TaskGroup() as tg:
        rep = tg.create_task(reporter.run())
        run = tg.create_task(sup.run(started.set))
        async with asyncio.timeout(20):
            await started.wait()
            await pulses.next_msg(timeout=20)
            task = sup.task("heartbeat")
            assert task is not None
            task.cancel()  # kill the actor's task from outside
            seen: list[str] = []
            while not ("restarting" in seen and "started" in seen[seen.index("restarting") :]):
                msg = await events.next_msg(timeout=20)
                seen.append(json.loads(msg.data)["type"])
            assert "crashed" in seen and "restarting" in seen
            await pulses.next_msg(timeout=20)  # the restarted actor pulses again
        assert sup.restarts("heartbeat") == 1
        run.cancel()
        rep.cancel()


async def test_nats_url_may_list_several_servers(settings: Settings) -> None:
    dead = "nats://127.0.0.1:1"
    b = await connect(f"{dead}, {settings.nats_url}", settings.subjects(), "multi")
    try:
        assert b.connected
    finally:
        await b.close()
