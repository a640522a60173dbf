"""Periodic timers for the few things that are truly periodic (beats, pulses)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator


async def every(interval: float) -> AsyncIterator[int]:
    """Yield 0, 1, 2 ... every ``interval`` seconds, without drift."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    for n in itertools.count():
        yield n
        await asyncio.sleep(max(0.0, start + (n + 1) * interval - loop.time()))
