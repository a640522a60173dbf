"""What the API process owns while it runs: settings, the bus, the pulse watcher.

Created by the lifespan (no module globals) and handed to routes through the
``Ctx`` dependency.

``Ctx`` fails fast while the bus is down: every route that needs NATS (and the
auth dependencies, which read users and sessions from KV) answers at once
``503 bus_unavailable`` with ``Retry-After``, instead of waiting for a KV
read to time out.  ``/ready`` and ``/metrics``, which report the outage
themselves, take ``AnyCtx``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request

from rbot.bus import codec
from rbot.bus.config import Settings
from rbot.bus.connection import Bus
from rbot.bus.messages import Pulse
from rbot.bus.outage import is_outage
from rbot.bus.provision import provision
from rbot.bus.timing import raise_if_cancelled

from .candles import CandleBook
from .errors import ApiError

RETRY_AFTER_S = 1
REPROVISION_ATTEMPTS = 20

log = logging.getLogger("rbot.api")


@dataclass
class ApiContext:
    settings: Settings
    bus: Bus
    started: float = field(default_factory=time.monotonic)
    last_pulse: float | None = None
    pulse: Pulse | None = None
    pulse_seen: asyncio.Event = field(default_factory=asyncio.Event)
    extras: dict[str, Any] = field(default_factory=dict)
    candles: CandleBook = field(default_factory=CandleBook)

    async def watch_pulse(self) -> None:
        """Keep the latest system pulse (for /ready and the system panel)."""
        sub = await self.bus.nc.subscribe(self.bus.subjects.pulse)
        try:
            async for msg in sub.messages:
                try:
                    env = codec.decode_envelope(msg.data)
                    self.pulse = codec.payload(env, Pulse)
                except codec.DecodeError as exc:
                    log.warning("bad pulse: %s", exc)
                    continue
                self.last_pulse = time.monotonic()
                self.pulse_seen.set()
        finally:
            await sub.unsubscribe()

    async def keep_provisioned(self) -> None:
        """Provision again after every reconnect: a restarted server has lost its
        memory-storage buckets (``limits``), and ``/ready`` waits for them.
        The API is the only user of its connection's ``reconnected`` event."""
        while True:
            await self.bus.reconnected.wait()
            self.bus.reconnected.clear()
            for attempt in range(REPROVISION_ATTEMPTS):
                try:
                    await provision(self.bus, self.settings.rbot_replicas)
                    break
                except Exception as exc:
                    if not is_outage(exc):
                        raise
                    log.info("provisioning after a reconnect (try %d): %s", attempt, exc)
                    await asyncio.sleep(0.5)  # JetStream may still be recovering its store
            raise_if_cancelled()  # provisioning's requests may have swallowed a cancel

    def pulse_fresh(self) -> bool:
        if self.last_pulse is None:
            return False
        return time.monotonic() - self.last_pulse <= 2.5 * self.settings.rbot_pulse_interval_s


def bus_unavailable() -> ApiError:
    return ApiError(
        503,
        "bus_unavailable",
        "the message bus is unavailable; retry shortly",
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


async def get_any_ctx(request: Request) -> ApiContext:  # async: no thread-pool hop
    ctx: ApiContext = request.app.state.ctx
    return ctx


async def get_ctx(request: Request) -> ApiContext:
    """The context, or ``503 bus_unavailable`` at once while NATS is disconnected."""
    ctx: ApiContext = request.app.state.ctx
    if not ctx.bus.connected:
        raise bus_unavailable()
    return ctx


Ctx = Annotated[ApiContext, Depends(get_ctx)]
AnyCtx = Annotated[ApiContext, Depends(get_any_ctx)]  # answers during an outage too
