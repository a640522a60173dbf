"""The Actor base: one ``run()`` coroutine, a ready signal, heartbeats.

An actor owns its NATS connection and its state; it talks to others only
through subjects.  ``Actor.main`` is the supervisor child: it connects, starts
the heartbeat and the connection watch in one TaskGroup beside ``run()``, and
turns a closed connection into an exit the supervisor sees (an outage: it
waits and starts the actor again, without counting a restart).

What an actor says about itself (``Beat.state``) is an ``ActorState``:
``starting`` until ready, then ``running``; ``standby`` while another instance
holds the lease it queues for (``Actor.lead``); ``waiting_for_bus`` while its
connection is down (no beat can leave then: the state shows in the
supervisor's ``waiting_for_bus`` report and in the first beat after).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import re
import socket
from collections.abc import Awaitable, Callable
from typing import ClassVar

from rbot.bus import codec
from rbot.bus.config import Settings
from rbot.bus.connection import Bus, connect
from rbot.bus.credentials import actor_auth
from rbot.bus.lease import lead
from rbot.bus.messages import Beat
from rbot.bus.timing import every

from .supervisor import ChildSpec, Restart

Ready = Callable[[], None]


class ActorState(enum.StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    STANDBY = "standby"
    WAITING_FOR_BUS = "waiting_for_bus"


def default_instance() -> str:
    host = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())[:40] or "host"
    return f"{host}-{os.getpid()}"


class Actor:
    """Subclasses set ``name`` and implement ``run(bus, ready)``."""

    name: ClassVar[str] = "actor"
    restart: ClassVar[Restart] = Restart.PERMANENT
    shutdown_timeout: ClassVar[float] = 5.0

    def __init__(
        self, settings: Settings, url: str | Callable[[], str], instance: str | None = None
    ) -> None:
        self.settings = settings
        self._url = url
        self.instance = instance or settings.rbot_instance or default_instance()
        self.log = logging.getLogger(f"rbot.actor.{self.name}")
        self._state = ActorState.STARTING
        self._bus: Bus | None = None

    @property
    def state(self) -> ActorState:
        """What the actor is doing; ``waiting_for_bus`` whenever its connection is down."""
        if self._bus is not None and not self._bus.connected:
            return ActorState.WAITING_FOR_BUS
        return self._state

    async def lead(self, bus: Bus, key: str, body: Callable[[], Awaitable[None]]) -> None:
        """``bus.lease.lead`` with this actor's state kept: ``standby`` while it waits."""

        def standby(holder: str | None) -> None:
            self._state = ActorState.STANDBY
            self.on_standby(holder)

        def leading() -> None:
            self._state = ActorState.RUNNING

        await lead(bus, key, self.instance, body, on_standby=standby, on_lead=leading)

    def on_standby(self, holder: str | None) -> None:
        """Called each time the lease poll finds another holder (``None``: unknown)."""

    @property
    def url(self) -> str:
        """The NATS URL, resolved at start (the embedded server picks its port late)."""
        return self._url if isinstance(self._url, str) else self._url()

    async def run(self, bus: Bus, ready: Ready) -> None:
        raise NotImplementedError

    def spec(self) -> ChildSpec:
        return ChildSpec(
            self.name, self.main, restart=self.restart, shutdown_timeout=self.shutdown_timeout
        )

    async def main(self, ready: Ready) -> None:
        subjects = self.settings.subjects()
        bus = await connect(
            self.url,
            subjects,
            f"rbot-{self.name}-{self.instance}",
            auth=actor_auth(self.settings, self.name),
        )
        self._bus = bus
        self._state = ActorState.STARTING

        def say_ready() -> None:
            if self._state is ActorState.STARTING:
                self._state = ActorState.RUNNING
            ready()

        try:
            async with asyncio.TaskGroup() as tg:
                side = [tg.create_task(bus.watch()), tg.create_task(self._beat(bus))]
                await self.run(bus, say_ready)
                for t in side:
                    t.cancel()
        finally:
            await bus.close()

    async def _beat(self, bus: Bus) -> None:
        subject = bus.subjects.heartbeat(self.name, self.instance)
        interval = self.settings.rbot_beat_interval_s
        async for _ in every(interval):
            if not bus.connected:
                continue  # it would leave late, from nats-py's buffer, after the reconnect
            beat = Beat(
                actor=self.name,
                instance=self.instance,
                state=self.state,
                interval=interval,
                ts=codec.now_iso(),
            )
            await bus.nc.publish(subject, codec.encode_envelope("beat", self.name, beat))
