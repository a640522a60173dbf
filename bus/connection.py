"""The NATS connection every actor and API process holds.

nats-py gives up after ~60 reconnect attempts by default; here it reconnects
forever.  If the connection does close (a fatal protocol error, an explicit
close), ``Bus.closed`` is set and ``Bus.watch()`` raises, so the supervisor sees
a crash instead of an actor sitting on a dead socket.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import nats
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from .credentials import NatsAuth
from .subjects import Subjects

log = logging.getLogger("rbot.bus")


# the longest Bus.close takes: the drain's 2 s, then, against a stalled server,
# nats-py's drain swallows that cancel and flushes for up to its 10 s
CLOSE_BOUND_S = 2.0 + 10.0


class BusClosed(ConnectionError):
    """The NATS connection closed for good."""


class AuthRefused(BusClosed):
    """The server refused our credentials (retrying cannot help)."""


class Bus:
    """One NATS connection with its JetStream context, subjects and KV handles."""

    def __init__(
        self, nc: NATS, subjects: Subjects, name: str, identity: str | None = None
    ) -> None:
        self.nc = nc
        self.identity = identity  # the NATS user it connected as (None: no credentials)
        self.js: JetStreamContext = nc.jetstream(timeout=5.0)
        self.subjects = subjects
        self.name = name
        self.closed = asyncio.Event()
        self.reconnected = asyncio.Event()
        self.online = asyncio.Event()  # set while connected: wait on it to ride out an outage
        if nc.is_connected:
            self.online.set()
        self.reconnects = 0
        self._kv: dict[str, KeyValue] = {}
        self._reconnect_hooks: list[Callable[[], Awaitable[None]]] = []
        self._reconnect_cond = asyncio.Condition()

    async def reconnected_after(self, seen: int) -> None:
        """Return once ``reconnects`` has moved past ``seen`` (at once if it has).

        For any number of waiters: unlike the ``reconnected`` event, nobody clears
        it, so one waiter cannot make another miss a reconnect."""
        async with self._reconnect_cond:
            await self._reconnect_cond.wait_for(lambda: self.reconnects != seen)

    async def _notify_reconnected(self) -> None:
        async with self._reconnect_cond:
            self._reconnect_cond.notify_all()

    async def kv(self, name: str) -> KeyValue:
        bucket = self.subjects.bucket(name)
        kv = self._kv.get(bucket)
        if kv is None:
            kv = self._kv[bucket] = await self.js.key_value(bucket)
        return kv

    async def close(self) -> None:
        if not self.nc.is_closed:
            try:
                await asyncio.wait_for(self.nc.drain(), timeout=2.0)
            except (TimeoutError, nats.errors.Error, OSError) as exc:
                log.debug("drain of %s failed (%s); closing", self.name, exc)
                try:
                    await self.nc.close()
                except OSError as lost:  # nats-py flushes buffered publishes into a dead socket
                    log.debug("close of %s: %s", self.name, lost)
        self.closed.set()

    async def wait_online(self) -> None:
        """Return at once while connected, else when the connection is back."""
        await self.online.wait()

    async def watch(self) -> None:
        """Return never; raise ``BusClosed`` when the connection closes."""
        await self.closed.wait()
        raise BusClosed(f"NATS connection {self.name} closed")

    @property
    def connected(self) -> bool:
        return bool(self.nc.is_connected)


async def connect(
    url: str,
    subjects: Subjects,
    name: str,
    *,
    connect_timeout: float = 5.0,
    first_attempts: int = 60,
    auth: NatsAuth | None = None,
) -> Bus:
    """Connect, retrying the first connection, then reconnect forever.

    ``auth``: user and password (never in the URL, so never in a log line) and
    the identity's own inbox prefix; ``None`` connects without credentials.
    """
    holder: dict[str, Bus] = {}
    refused = asyncio.Event()  # the server refused our credentials on the first connect

    async def on_error(exc: Exception) -> None:
        log.warning("nats %s: %s", name, exc)
        if "Authorization Violation" in str(exc) and "bus" not in holder:
            refused.set()

    async def on_disconnect() -> None:
        log.info("nats %s: disconnected", name)
        bus = holder.get("bus")
        if bus is not None:
            bus.online.clear()

    async def on_reconnect() -> None:
        bus = holder.get("bus")
        log.info("nats %s: reconnected", name)
        if bus is not None:
            bus.reconnects += 1
            bus.online.set()
            bus.reconnected.set()
            await bus._notify_reconnected()

    async def on_closed() -> None:
        bus = holder.get("bus")
        if bus is not None:
            bus.closed.set()

    opts: dict[str, Any] = dict(
        servers=[u.strip() for u in url.split(",") if u.strip()],  # a cluster: a,b,c
        name=name,
        allow_reconnect=True,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.25,
        connect_timeout=connect_timeout,
        ping_interval=5,
        max_outstanding_pings=3,
        error_cb=on_error,
        disconnected_cb=on_disconnect,
        reconnected_cb=on_reconnect,
        closed_cb=on_closed,
    )
    if auth is not None:
        opts["user"] = auth.user
        opts["password"] = auth.password.get_secret_value()
        if auth.inbox_prefix is not None:
            opts["inbox_prefix"] = auth.inbox_prefix
    delay = 0.05
    for attempt in range(first_attempts):
        try:
            nc = await _first_connect(opts, refused)
            break
        except AuthRefused:
            raise
        except (nats.errors.NoServersError, OSError, TimeoutError) as exc:
            if attempt == first_attempts - 1:
                raise BusClosed(f"cannot connect to NATS: {exc}") from exc
            await asyncio.sleep(delay)  # back off before the next first-connect attempt
            delay = min(delay * 2, 1.0)
    bus = Bus(nc, subjects, name, auth.user if auth is not None else None)
    holder["bus"] = bus
    return bus


async def _first_connect(opts: dict[str, Any], refused: asyncio.Event) -> NATS:
    """``nats.connect``, but give up at once when the server refuses the credentials.

    With ``max_reconnect_attempts=-1`` nats-py retries a refused CONNECT forever
    (logging each time); wrong credentials are a configuration error, not an outage.
    """

    async def refusal() -> None:
        await refused.wait()
        raise AuthRefused(f"NATS refused {opts['name']}: authorization violation")

    nc = NATS()
    try:
        async with asyncio.TaskGroup() as tg:
            watch = tg.create_task(refusal())
            await nc.connect(**opts)
            watch.cancel()
    except* AuthRefused as group:
        await nc.close()
        raise group.exceptions[0] from None
    return nc
