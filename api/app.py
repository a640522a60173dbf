"""The FastAPI app factory.  The lifespan owns the NATS connection."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI

from rbot.bus.config import Settings
from rbot.bus.connection import connect
from rbot.bus.provision import provision

from . import errors, middleware
from .context import ApiContext
from .routers import events, health

log = logging.getLogger("rbot.api")


def create_app(settings: Settings | None = None, *, instance: str = "api") -> FastAPI:
    settings = settings or Settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        url = settings.nats_url or "nats://127.0.0.1:4222"
        bus = await connect(url, settings.subjects(), f"rbot-api-{instance}")
        await provision(bus)
        ctx = ApiContext(settings=settings, bus=bus)
        app.state.ctx = ctx
        try:
            async with asyncio.TaskGroup() as tg:
                watcher = tg.create_task(ctx.watch_pulse())
                yield
                watcher.cancel()
        finally:
            await bus.close()

    app = FastAPI(
        title="RBOT Arena",
        version="0.1.0",
        description="Paper-first trading backend for OANDA and Coinbase Advanced.",
        lifespan=lifespan,
    )
    errors.install(app)
    middleware.install(app, settings)
    # routers: one per resource, auth declared on each router
    app.include_router(health.router)
    app.include_router(events.router)
    return app
