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


def raise_if_cancelled() -> None:
    """Re-raise a cancellation that a JetStream request swallowed.

    On Python 3.11 ``asyncio.wait_for`` (inside nats-py's request, so inside
    every KV put) returns the reply and drops the ``CancelledError`` when both
    arrive in the same loop iteration; a publishing loop would then carry on
    for ever and its TaskGroup could never finish.  ``Task.cancelling()`` still
    counts the request, so: call this after each KV write in a loop.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
