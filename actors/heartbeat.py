"""The heartbeat actor: aggregates beats, flags the silent, publishes the pulse.

Every actor beats on ``rbot.hb.<actor>.<instance>`` each ``interval`` seconds.
An instance whose last beat is older than two of its own intervals is flagged
silent (an ``rbot.evt.actor.<actor>.silent`` event, once per silence); it is
forgotten after a minute of silence, or at once when its supervisor reports it
stopped.  Every ``RBOT_PULSE_INTERVAL_S`` (5 s) the system pulse goes out on
``rbot.evt.heartbeat`` and the snapshot into KV ``actors``.  One leader (KV
lease ``heartbeat``) so several ``rbot actors`` processes publish one pulse;
the others stand by (``standby``), and a bus outage makes the leader step
down and lead again, never crash.  Beats missed during our own outage are
not held against anyone.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from nats.aio.msg import Msg

from rbot.bus import codec, keys
from rbot.bus.config import Settings
from rbot.bus.connection import Bus
from rbot.bus.control import trading_state
from rbot.bus.lifecycle import GONE
from rbot.bus.messages import (
    ActorEvent,
    ActorStatus,
    Beat,
    Pulse,
)
from rbot.bus.timing import every, raise_if_cancelled

from .base import Actor, Ready

FORGET_AFTER_S = 60.0


@dataclass
class _Seen:
    actor: str
    instance: str
    state: str
    interval: float
    last: float  # monotonic
    last_iso: str
    restarts: int = 0
    silent: bool = False


class Registry:
    """Pure bookkeeping of beats; ``time`` comes from the caller."""

    def __init__(self) -> None:
        self.seen: dict[tuple[str, str], _Seen] = {}

    def beat(self, b: Beat, now: float) -> bool:
        """Record a beat; True if the instance was silent before (it came back)."""
        key = (b.actor, b.instance)
        s = self.seen.get(key)
        if s is None:
            self.seen[key] = _Seen(b.actor, b.instance, b.state, b.interval, now, b.ts)
            return False
        back = s.silent
        s.state, s.interval, s.last, s.last_iso, s.silent = b.state, b.interval, now, b.ts, False
        return back

    def lifecycle(self, ev: ActorEvent) -> None:
        """A supervisor's report about one instance of an actor.  It names the
        process's instance; only when no beat came from that instance (an older
        reporter, another naming) does it apply to every instance of the actor."""
        mine = [k for k in self.seen if k == (ev.actor, ev.instance)]
        keys = mine or [k for k in self.seen if k[0] == ev.actor]
        for key in keys:
            s = self.seen[key]
            s.restarts = max(s.restarts, ev.restarts)
            if ev.state in GONE:
                del self.seen[key]

    def forgive(self, now: float) -> None:
        """After our own bus outage: no beat could reach us, so none counts as missed."""
        for s in self.seen.values():
            s.last = max(s.last, now)

    def sweep(self, now: float) -> list[_Seen]:
        """Mark newly silent instances (returned); forget long-silent ones."""
        newly: list[_Seen] = []
        for key, s in list(self.seen.items()):
            age = now - s.last
            if age > FORGET_AFTER_S:
                del self.seen[key]
            elif age > 2 * s.interval and not s.silent:
                s.silent = True
                newly.append(s)
        return newly

    def statuses(self) -> list[ActorStatus]:
        return [
            ActorStatus(
                actor=s.actor,
                instance=s.instance,
                state="silent" if s.silent else s.state,
                last_beat=s.last_iso,
                silent=s.silent,
                restarts=s.restarts,
            )
            for s in sorted(self.seen.values(), key=lambda s: (s.actor, s.instance))
        ]


read_trading_state = trading_state  # the one read: rbot.bus.control


class HeartbeatActor(Actor):
    name = "heartbeat"

    def __init__(
        self, settings: Settings, url: str | Callable[[], str], instance: str | None = None
    ) -> None:
        super().__init__(settings, url, instance)
        # what it heard; kept across a restart (the silent are forgotten by the sweep)
        self.registry = Registry()

    async def run(self, bus: Bus, ready: Ready) -> None:
        reg = self.registry

        async def on_beat(msg: Msg) -> None:
            try:
                beat = codec.payload(codec.decode_envelope(msg.data), Beat)
            except codec.DecodeError:
                self.log.warning("malformed beat on %s", msg.subject)
                return
            if reg.beat(beat, time.monotonic()):
                self.log.info("%s.%s beats again", beat.actor, beat.instance)

        async def on_lifecycle(msg: Msg) -> None:
            try:
                env = codec.decode_envelope(msg.data)
                reg.lifecycle(codec.payload(env, ActorEvent))
            except codec.DecodeError:
                self.log.warning("malformed actor event on %s", msg.subject)

        ready()

        async def pulse_loop() -> None:
            subs = [
                await bus.nc.subscribe(bus.subjects.heartbeats, cb=on_beat),
                await bus.nc.subscribe(bus.subjects.actor_events, cb=on_lifecycle),
            ]
            try:
                await self._pulse(bus, reg)
            finally:
                for sub in subs:
                    await sub.unsubscribe()

        await self.lead(bus, "heartbeat", pulse_loop)

    async def _pulse(self, bus: Bus, reg: Registry) -> None:
        sweep = min(self.settings.rbot_beat_interval_s, self.settings.rbot_pulse_interval_s)
        per_pulse = max(1, round(self.settings.rbot_pulse_interval_s / sweep))
        actors_kv = await bus.kv("actors")
        reconnects = bus.reconnects
        async for n in every(sweep):
            if not bus.connected:
                continue  # a bus outage: nothing to hear, nowhere to publish
            if bus.reconnects != reconnects:
                reconnects = bus.reconnects
                reg.forgive(time.monotonic())
            for s in reg.sweep(time.monotonic()):
                self.log.warning("%s.%s is silent", s.actor, s.instance)
                ev = ActorEvent(
                    actor=s.actor,
                    instance=s.instance,
                    state="silent",
                    reason=f"no beat for {2 * s.interval:g}s",
                )
                await bus.nc.publish(
                    bus.subjects.actor_event(s.actor, "silent"),
                    codec.encode_envelope("silent", s.actor, ev),
                )
            if n % per_pulse:
                continue
            statuses = reg.statuses()
            silent = sorted({f"{s.actor}.{s.instance}" for s in statuses if s.silent})
            pulse = Pulse(
                status="degraded" if silent else "ok",
                trading_state=str(await read_trading_state(bus)),
                actors=statuses,
                silent=silent,
            )
            await bus.nc.publish(
                bus.subjects.pulse, codec.encode_envelope("heartbeat", "heartbeat", pulse)
            )
            for st in statuses:
                await actors_kv.put(keys.actor_status(st.actor, st.instance), codec.encode(st))
                raise_if_cancelled()
