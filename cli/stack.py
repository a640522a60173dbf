"""The whole system in one process: actors and the API under one supervisor.

``running_stack`` is what the integration tests and the bench (``bench/stack_proc.py``)
run: every part is the real one (supervisor, actors, uvicorn, a real nats-server the
caller started); only the API's port is random.  ``publish_tick`` feeds it a price
the way a feed does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from decimal import Decimal

import httpx

from rbot.actors.cli import build_actors
from rbot.actors.feeds.output import publish_tick as feed_tick
from rbot.actors.supervisor import ChildSpec, Supervisor
from rbot.api.server import ApiServer
from rbot.bus import codec
from rbot.bus.config import Settings
from rbot.bus.connection import Bus
from rbot.bus.messages import Tick
from rbot.bus.timing import cancel_and_wait


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
        await cancel_and_wait(task)


async def publish_tick(
    bus: Bus, venue: str, symbol: str, bid: str, ask: str, seq: int = 0, source: str = "test"
) -> None:
    """A tick exactly as a feed sends it: core subject and KV ``prices``."""
    tick = Tick(
        venue=venue, symbol=symbol, bid=Decimal(bid), ask=Decimal(ask),
        time=codec.now_iso(), seq=seq, source=source,
    )  # fmt: skip
    await feed_tick(bus, await bus.kv("prices"), tick)
