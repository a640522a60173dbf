"""What the API process owns while it runs: settings, the bus, the pulse watcher.

Created by the lifespan (no module globals) and handed to routes through the
``Ctx`` dependency.
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

from .candles import CandleBook

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

    def pulse_fresh(self) -> bool:
        if self.last_pulse is None:
            return False
        return time.monotonic() - self.last_pulse <= 2.5 * self.settings.rbot_pulse_interval_s


async def get_ctx(request: Request) -> ApiContext:  # async: no thread-pool hop per request
    ctx: ApiContext = request.app.state.ctx
    return ctx


Ctx = Annotated[ApiContext, Depends(get_ctx)]
