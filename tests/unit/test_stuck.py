"""actors/stuck.py: the await chain the supervisor logs for an abandoned child."""

from __future__ import annotations

import asyncio

from rbot.actors.stuck import await_chain


async def _inner(ev: asyncio.Event, started: asyncio.Event) -> None:
    started.set()
    await ev.wait()


async def _outer(ev: asyncio.Event, started: asyncio.Event) -> None:
    await _inner(ev, started)


async def test_the_chain_names_every_coroutine_down_to_the_future() -> None:
    ev, started = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(_outer(ev, started))
    await started.wait()  # it runs on to its await before this resumes
    names = [name for _, _, name in await_chain(task)]
    assert names[:3] == ["_outer", "_inner", "wait"]
    assert all(line > 0 for path, line, _ in await_chain(task) if path)
    ev.set()
    await task
