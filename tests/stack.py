"""The whole system in-process for integration tests: actors + the API over real HTTP.

``running_stack`` and ``publish_tick`` live in ``rbot.cli.stack`` (the bench runs
the same stack); this module adds what only tests need: the cheap password hash,
``EventTap`` and ``tick_until``.  Every part is the real one (supervisor, actors,
uvicorn, nats-server); only the ports are random and the subject prefix is unique
per test.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from typing import Any

from rbot.bus.connection import Bus
from rbot.cli.stack import Stack, publish_tick, running_stack

__all__ = ["EventTap", "Stack", "kv_until", "publish_tick", "running_stack", "tick_until"]

os.environ.setdefault("RBOT_ARGON2_FAST", "1")


class EventTap:
    """Order events from the ORDERS stream, as a queue (waits on messages, not time)."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def __aenter__(self) -> EventTap:
        async def cb(msg: Any) -> None:
            env = json.loads(msg.data)
            env["_seq"] = msg.metadata.sequence.stream
            self.queue.put_nowait(env)

        self.sub = await self.bus.js.subscribe(
            self.bus.subjects.order_events, cb=cb, ordered_consumer=True
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.sub.unsubscribe()

    async def next(
        self, type_: str, order_id: str | None = None, timeout: float = 15
    ) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                env = await self.queue.get()
                if env["type"] == type_ and (
                    order_id is None or env["payload"].get("order_id") == order_id
                ):
                    return env


async def tick_until(
    tap: EventTap,
    type_: str,
    order_id: str,
    bus: Bus,
    venue: str,
    symbol: str,
    bid: str,
    ask: str,
    attempts: int = 40,
) -> dict[str, Any]:
    """Publish the same tick until ``type_`` arrives: a feed keeps ticking, and an
    executor that is still taking its lease would miss a single core message."""
    for _ in range(attempts):
        await publish_tick(bus, venue, symbol, bid, ask)
        try:
            return await tap.next(type_, order_id, timeout=0.5)
        except TimeoutError:
            continue
    raise AssertionError(f"no {type_} for {order_id}")


async def kv_until(
    bus: Bus, bucket: str, key: str, done: Callable[[bytes], bool], timeout: float = 15
) -> bytes:
    """The value of ``key`` once ``done`` holds for it (a KV watch, not a poll).

    The executor books the ledger and the user's history index right *after* an
    order's event (they carry its ORDERS sequence), so a test that read them the
    moment the event arrived would race."""
    watcher = await (await bus.kv(bucket)).watch(key)
    try:
        async with asyncio.timeout(timeout):
            while True:
                entry = await watcher.updates(timeout=timeout)
                if entry is not None and entry.value and done(entry.value):
                    return entry.value
    finally:
        await watcher.stop()  # type: ignore[no-untyped-call]
