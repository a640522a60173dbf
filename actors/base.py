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

Liveness (R4): each tick of the beat loop is the actor's sign of life
(``last_tick``); its supervisor's watchdog restarts an actor whose beat loop
has not ticked for two beat intervals while running (``ChildSpec.alive``).
A tick does not need the bus: an outage is not a hang.

Fault hooks, for tests only (never set in production): ``RBOT_FAULT`` =
``KIND:ACTOR[:N]`` (several separated by commas; ``ACTOR`` may be ``*``)
makes the first ``N`` incarnations (default: every one) of that actor in this
process misbehave once it has said ready:

* ``crash``: raise ``InjectedFault`` (a fault of ours, not an outage);
* ``hang``: the beat loop blocks on an await that never returns: the task
  stays alive, the beats stop, ``run()`` carries on.
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
from rbot.bus.connection import CLOSE_BOUND_S, Bus, connect
from rbot.bus.credentials import actor_auth
from rbot.bus.lease import lead
from rbot.bus.messages import Beat
from rbot.bus.timing import every

from .supervisor import ChildSpec, Restart

Ready = Callable[[], None]


FAULT_ENV = "RBOT_FAULT"


class Fault(enum.StrEnum):
    CRASH = "crash"
    HANG = "hang"


class InjectedFault(RuntimeError):
    """Raised by the ``crash`` fault hook (``RBOT_FAULT``): a test's fault, not an outage."""


def injected_fault(actor: str, incarnation: int, spec: str | None) -> Fault | None:
    """Which fault ``spec`` (the ``RBOT_FAULT`` value) asks of this incarnation (1, 2 ...)."""
    for item in (spec or "").split(","):
        parts = item.strip().split(":")
        if len(parts) not in (2, 3) or parts[1] not in (actor, "*"):
            continue
        kind = Fault(parts[0])
        if len(parts) == 2 or incarnation <= int(parts[2]):
            return kind
    return None


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
        self.last_tick = 0.0  # event-loop time of the beat loop's last tick (liveness)
        self.incarnations = 0
        self._fault: Fault | None = None

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
            self.name,
            self.main,
            restart=self.restart,
            shutdown_timeout=self.shutdown_timeout,
            alive=lambda: self.last_tick,
            hang_after=2 * self.settings.rbot_beat_interval_s,
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
        self.incarnations += 1
        self._fault = injected_fault(self.name, self.incarnations, os.environ.get(FAULT_ENV))
        self.last_tick = asyncio.get_running_loop().time()
        said_ready = asyncio.Event()

        def say_ready() -> None:
            if self._state is ActorState.STARTING:
                self._state = ActorState.RUNNING
            said_ready.set()
            ready()

        try:
            async with asyncio.TaskGroup() as tg:
                side = [tg.create_task(bus.watch()), tg.create_task(self._beat(bus, said_ready))]
                if self._fault is Fault.CRASH:
                    side.append(tg.create_task(self._crash(said_ready)))
                await self.run(bus, say_ready)
                for t in side:
                    t.cancel()
        finally:
            # ending, not hung: the beat loop is gone while the bus closes, which is
            # bounded (Bus.close); the watchdog would take a close against a stalled
            # server for a hang and report that instead of why run() ended (R16)
            self.last_tick = asyncio.get_running_loop().time() + CLOSE_BOUND_S
            await bus.close()

    async def _crash(self, said_ready: asyncio.Event) -> None:
        await said_ready.wait()
        raise InjectedFault(
            f"{self.name}: crash injected by {FAULT_ENV} (incarnation {self.incarnations})"
        )

    async def _beat(self, bus: Bus, said_ready: asyncio.Event) -> None:
        subject = bus.subjects.heartbeat(self.name, self.instance)
        interval = self.settings.rbot_beat_interval_s
        loop = asyncio.get_running_loop()
        async for _ in every(interval):
            if self._fault is Fault.HANG and said_ready.is_set():
                self.log.warning("%s: hang injected by %s", self.name, FAULT_ENV)
                await asyncio.Event().wait()  # an await that never returns
            self.last_tick = loop.time()
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
