"""The API as a supervised child: uvicorn serving the app on a socket we bind.

We bind the socket ourselves (so a busy port is an ``OSError`` the supervisor
sees, not uvicorn's ``sys.exit``), leave signal handling to our own process,
and say ready once uvicorn has started.  Port 0 picks a free port; ``port``
then holds the real one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Generator

import uvicorn

from rbot.bus.config import Settings

from .app import create_app

log = logging.getLogger("rbot.api")

# How long an idle keep-alive connection stays open.  Longer than the client
# pools that expire idle connections (httpx: 5 s), so the client closes first:
# with equal timeouts a request sent as the server hangs up is lost with
# "Server disconnected without sending a response" (seen in CI).
KEEP_ALIVE_S = 30


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_started = on_started

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # the rbot process owns SIGINT/SIGTERM

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self._on_started()


class ApiServer:
    def __init__(self, settings: Settings, url: Callable[[], str] | None = None) -> None:
        self.settings = settings
        self._url = url
        self.port = settings.rbot_api_port

    async def main(self, ready: Callable[[], None]) -> None:
        settings = self.settings
        if self._url is not None:
            settings = settings.model_copy(update={"nats_url": self._url()})
        # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted connections only
        # for TCP-protocol listeners; without it every keep-alive reply waited ~40 ms
        # for the client's delayed ACK (found by bench/)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((settings.rbot_api_host, self.port))
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        failed: list[BaseException] = []
        server: _Server | None = None

        def on_failure(exc: BaseException) -> None:
            failed.append(exc)
            if server is not None:
                server.should_exit = True

        config = uvicorn.Config(
            create_app(settings, on_failure=on_failure),
            log_config=None,
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=3,
            timeout_keep_alive=KEEP_ALIVE_S,
            proxy_headers=False,
        )
        server = _Server(config, ready)
        serve = asyncio.ensure_future(server.serve(sockets=[sock]))
        try:
            await asyncio.shield(serve)
        finally:
            server.should_exit = True
            await serve
            sock.close()
        if failed:  # a background task ended the lifespan: not an API to keep serving
            log.error("the API's background tasks ended; stopping it")
            raise failed[0]
        if server.lifespan is not None and getattr(server.lifespan, "should_exit", False):
            raise RuntimeError("the API failed to start (lifespan error)")
