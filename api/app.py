"""The FastAPI app factory.  The lifespan owns the NATS connection."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from fastapi import FastAPI

from rbot.bus.config import DEFAULT_NATS_URL, Settings
from rbot.bus.connection import connect
from rbot.bus.credentials import auth_for
from rbot.bus.identities import OPERATOR
from rbot.bus.provision import provision

from . import errors, marketcache, middleware
from .authcache import AuthCache
from .candles import watch_ticks
from .context import ApiContext
from .routers import admin, auth, dashboard, events, health, market, meta, orders, system
from .security import EXTRAS_KEY as AUTH_KEY
from .security import Auth

log = logging.getLogger("rbot.api")


def create_app(
    settings: Settings | None = None,
    *,
    instance: str = "api",
    on_failure: Callable[[BaseException], None] | None = None,
) -> FastAPI:
    """The app; ``on_failure`` hears of a background task that ended the lifespan
    while serving (uvicorn only logs it and serves on, without a NATS connection:
    ``ApiServer`` stops and raises it, so its supervisor starts a fresh one)."""
    settings = settings or Settings()
    # the signing key is checked here: a missing or short ARENA_SECRET_KEY fails fast
    auth_services = Auth.build(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        url = settings.nats_url or DEFAULT_NATS_URL
        bus = await connect(
            url, settings.subjects(), f"rbot-api-{instance}", auth=auth_for(settings, "api")
        )
        if bus.identity in (None, OPERATOR):  # the api identity may not create streams
            await provision(bus, settings.rbot_replicas)
        ctx = ApiContext(settings=settings, bus=bus)
        ctx.extras[AUTH_KEY] = auth_services
        auth_cache = auth_services.cache = AuthCache(bus)
        await auth_services.passwords.warm()
        app.state.ctx = ctx
        await marketcache.start(ctx)
        serving = False
        try:
            async with asyncio.TaskGroup() as tg:
                watchers = [
                    tg.create_task(ctx.watch_pulse()),
                    tg.create_task(watch_ticks(bus, ctx.candles)),
                    tg.create_task(auth_cache.run()),
                ]
                if bus.identity in (None, OPERATOR):  # a locked API may not; rbot up's server does
                    watchers.append(tg.create_task(ctx.keep_provisioned()))
                serving = True
                yield
                serving = False
                for w in watchers:
                    w.cancel()
        except Exception as exc:
            if serving and on_failure is not None:
                on_failure(exc)
            raise
        finally:
            await bus.close()

    app = FastAPI(
        title="RBOT Arena",
        version="0.1.0",
        description="Paper-first trading backend for OANDA and Coinbase Advanced.",
        lifespan=lifespan,
        responses=errors.ERROR_RESPONSES,
    )
    errors.install(app)
    middleware.install(app, settings)
    # routers: one per resource, auth declared on each router
    app.include_router(health.router)
    app.include_router(events.router)
    app.include_router(auth.router)
    app.include_router(admin.router)
    app.include_router(orders.router)
    app.include_router(market.router)
    app.include_router(system.router)
    app.include_router(meta.router)
    app.include_router(dashboard.router)
    return app
