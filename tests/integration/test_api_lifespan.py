"""The API as a supervised child (``api/server.py``): a background task that ends
its lifespan while it serves ends the child too.

uvicorn only logs a lifespan that fails after startup and serves on; the
lifespan has closed the API's NATS connection by then, so every request would
answer ``503 bus_unavailable`` until someone restarts the process by hand (R16:
the auth cache's watch timing out after a node loss did exactly that).
``ApiServer.main`` now stops and raises the failure, so its supervisor starts a
fresh API (an outage does not count toward its restart intensity).
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
from nats.js import api

from rbot.api.server import ApiServer
from rbot.bus.connection import connect
from rbot.bus.outage import is_outage
from tests.conftest import make_settings
from tests.natsd import NatsServer


@pytest.mark.timeout(90)
async def test_a_background_task_that_ends_the_lifespan_ends_the_api(
    own_nats_server: NatsServer, prefix: str
) -> None:
    settings = make_settings(own_nats_server.url, prefix, rbot_api_port=0)
    server = ApiServer(settings)
    started = asyncio.Event()
    main = asyncio.create_task(server.main(started.set))
    try:
        async with asyncio.timeout(30):
            await started.wait()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
            assert (await client.get("/health")).status_code == 200
        # a real failure for a lifespan task: the SYSTEM stream re-made with a
        # retention the API's provisioning may not change back (not an outage), then
        # a reconnect, after which the API provisions again (``keep_provisioned``)
        other = await connect(own_nats_server.url, settings.subjects(), "test-other")
        try:
            stream = settings.subjects().stream("SYSTEM")
            info = await other.js.stream_info(stream)
            await other.js.delete_stream(stream)
            info.config.retention = api.RetentionPolicy.WORK_QUEUE
            await other.js.add_stream(info.config)
        finally:
            await other.close()
        own_nats_server.restart()
        await asyncio.wait({main}, timeout=30)
        assert main.done(), "the API serves on after its lifespan ended"
        failure = main.exception()
        assert failure is not None and not is_outage(failure)  # a fault: the supervisor counts it
    finally:
        if not main.done():
            main.cancel()
            with pytest.raises(asyncio.CancelledError):
                await main
