"""Publishes supervisor lifecycle changes on the bus.

The supervisor calls ``report(actor, type, info)`` synchronously; this queues
the change, and ``run()`` sends each one on ``rbot.evt.actor.<actor>.<type>``
and into KV ``actors`` (key ``lifecycle.<actor>.<instance>``).  While NATS is
down (it may be our own child, restarting) changes wait in a bounded queue;
the oldest are dropped, and counted, if it overflows.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from nats.errors import Error as NatsError

from rbot.bus import codec, keys
from rbot.bus.config import Settings
from rbot.bus.connection import connect
from rbot.bus.credentials import auth_for
from rbot.bus.messages import ActorEvent
from rbot.bus.subjects import is_token
from rbot.bus.timing import raise_if_cancelled

log = logging.getLogger("rbot.reporter")


class Reporter:
    def __init__(self, settings: Settings, url: Callable[[], str], instance: str) -> None:
        self.settings = settings
        self.url = url
        self.instance = instance
        self.queue: asyncio.Queue[ActorEvent] = asyncio.Queue(maxsize=10_000)
        self.dropped = 0
        self.nats_up = asyncio.Event()

    def report(self, actor: str, type_: str, info: dict[str, str]) -> None:
        ev = ActorEvent(
            actor=actor,
            instance=self.instance,
            state=type_,
            restarts=int(info.get("restarts", "0")),
            reason=info.get("reason"),
        )
        if actor == "nats_server" and type_ == "started":
            self.nats_up.set()
        if self.queue.full():
            self.queue.get_nowait()
            self.dropped += 1
        self.queue.put_nowait(ev)

    async def run(self) -> None:
        await self.nats_up.wait()
        bus = await connect(
            self.url(),
            self.settings.subjects(),
            f"rbot-reporter-{self.instance}",
            auth=auth_for(self.settings, "reporter"),
        )
        try:
            while True:
                ev = await self.queue.get()
                if not (is_token(ev.actor) and is_token(ev.state)):
                    log.warning("unreportable lifecycle change %r", ev)
                    continue
                data = codec.encode_envelope(ev.state, ev.actor, ev)
                await bus.nc.publish(bus.subjects.actor_event(ev.actor, ev.state), data)
                try:
                    # looked up per change: the bucket may not be provisioned yet
                    kv = await bus.kv("actors")
                    await kv.put(keys.lifecycle(ev.actor, self.instance), codec.encode(ev))
                except (NatsError, TimeoutError) as exc:
                    log.info(
                        "lifecycle snapshot of %s not stored: %s", ev.actor, type(exc).__name__
                    )
                raise_if_cancelled()  # the put's request may have swallowed a cancel
        finally:
            await bus.close()
