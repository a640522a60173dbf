"""bus.timing: a periodic loop ends when cancelled, even if its body ate the cancel.

On Python 3.11 a JetStream request (``asyncio.wait_for`` inside nats-py) may
return its reply and drop the ``CancelledError`` that arrived in the same loop
iteration.  A loop over ``every`` must still end: this once kept a test's tick
loop alive for ever, and its test hit the 120 s timeout in CI.
"""

from __future__ import annotations

import asyncio

import pytest

from rbot.bus.timing import cancel_and_wait, every, raise_if_cancelled


async def _swallowing_body(reached: asyncio.Event) -> None:
    """What 3.11's ``wait_for`` does when the reply and the cancel meet."""
    reached.set()
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        pass  # the swallow under test, on purpose


async def test_a_loop_over_every_ends_when_its_body_swallowed_the_cancel() -> None:
    reached = asyncio.Event()
    steps: list[int] = []

    async def loop() -> None:
        async for n in every(0.001):
            steps.append(n)
            await _swallowing_body(reached)

    task = asyncio.create_task(loop())
    await reached.wait()
    task.cancel()
    async with asyncio.timeout(5):
        with pytest.raises(asyncio.CancelledError):
            await task
    assert steps == [0]  # it never started another step


async def test_raise_if_cancelled_is_quiet_in_a_task_not_being_cancelled() -> None:
    raise_if_cancelled()  # nothing to re-raise


async def test_every_counts_up() -> None:
    seen = []
    async for n in every(0.0):
        seen.append(n)
        if n == 3:
            break
    assert seen == [0, 1, 2, 3]


async def test_cancel_and_wait_ends_the_task() -> None:
    task = asyncio.create_task(asyncio.sleep(3600))
    await cancel_and_wait(task)
    assert task.cancelled()


async def test_cancel_and_wait_lets_the_callers_own_cancel_through() -> None:
    """A timeout around the wait still fires (``suppress`` would have eaten it)."""
    stopping = asyncio.Event()

    async def slow_to_stop() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            stopping.set()
            await asyncio.sleep(3600)  # a cleanup that never ends

    task = asyncio.create_task(slow_to_stop())
    await asyncio.sleep(0)  # it starts
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await cancel_and_wait(task)
    assert stopping.is_set()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
