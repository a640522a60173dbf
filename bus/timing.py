"""Periodic timers for the few things that are truly periodic (beats, pulses)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import Any


async def every(interval: float) -> AsyncIterator[int]:
    """Yield 0, 1, 2 ... every ``interval`` seconds, without drift.

    A cancellation that the loop's body swallowed (see ``raise_if_cancelled``)
    ends the loop at the next step instead of letting it run for ever.
    """
    loop = asyncio.get_running_loop()
    start = loop.time()
    for n in itertools.count():
        raise_if_cancelled()
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


async def cancel_and_wait(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and wait for it to end; a cancellation of the caller still propagates.

    ``suppress(CancelledError)`` around the wait would also eat the caller's own
    cancellation (a timeout, a shutdown) and let it carry on.
    """
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        if (me := asyncio.current_task()) is not None and me.cancelling():
            raise
