"""The whole system in-process for integration tests: actors + the API over real HTTP.

Every part is the real one (supervisor, actors, uvicorn, nats-server); only the
ports are random and the subject prefix is unique per test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx

from rbot.actors.cli import build_actors
from rbot.actors.supervisor import ChildSpec, Supervisor
from rbot.api.server import ApiServer
from rbot.bus import codec, keys
from rbot.bus.config import Settings
from rbot.bus.connection import Bus
from rbot.bus.messages import Tick

os.environ.setdefault("RBOT_ARGON2_FAST", "1")


class Stack:
    def __init__(self, settings: Settings, api: ApiServer, sup: Supervisor) -> None:
        self.settings = settings
        self.api = api
        self.sup = sup
        self.events: list[tuple[str, str]] = []

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.api.port}"

    def client(self, token: str | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(base_url=self.base, headers=headers, timeout=15)

    async def user(self, email: str, password: str = "correct-horse-9") -> str:
        """Register (open registration: trader) and log in; returns an access token."""
        async with self.client() as c:
            r = await c.post("/auth/register", json={"email": email, "password": password})
            assert r.status_code in (200, 201, 409), r.text
            r = await c.post("/auth/login", json={"email": email, "password": password})
            assert r.status_code == 200, r.text
            token: str = r.json()["access_token"]
            return token


@contextlib.asynccontextmanager
async def running_stack(
    settings: Settings, only: list[str] | None = None, api: bool = True
) -> AsyncIterator[Stack]:
    settings = settings.model_copy(update={"rbot_api_port": 0, "rbot_open_registration": "trader"})
    url = settings.nats_url or ""
    actors = build_actors(settings, url, only or [])
    server = ApiServer(settings)
    specs = [a.spec() for a in actors]
    if api:
        specs.append(ChildSpec("api", server.main, shutdown_timeout=10))
    stack_events: list[tuple[str, str]] = []
    sup = Supervisor(
        specs, name="test", report=lambda a, t, i: stack_events.append((a, t)), max_restarts=50
    )
    started = asyncio.Event()
    task = asyncio.create_task(sup.run(started.set))
    try:
        async with asyncio.timeout(30):
            await started.wait()
        stack = Stack(settings, server, sup)
        stack.events = stack_events
        yield stack
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def publish_tick(bus: Bus, venue: str, symbol: str, bid: str, ask: str, seq: int = 0) -> None:
    """A tick exactly as a feed sends it: core subject and KV ``prices``."""
    tick = Tick(
        venue=venue, symbol=symbol, bid=Decimal(bid), ask=Decimal(ask),
        time=codec.now_iso(), seq=seq, source="test",
    )  # fmt: skip
    await bus.nc.publish(
        bus.subjects.tick(venue, symbol), codec.encode_envelope("tick", venue, tick)
    )
    kv = await bus.kv("prices")
    await kv.put(keys.price(venue, symbol), codec.encode(tick))


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
