"""SSE hardening (issue 11): the session is re-checked while streaming (KV watches),
patterns and streams are capped, slow clients are dropped and resume.  Real uvicorn,
real nats-server, real HTTP."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from rbot.api.app import create_app
from rbot.api.principal import Role
from rbot.api.relay import MAX_PATTERNS, MAX_STREAMS_PER_USER, Relay
from rbot.api.routers.events import slots_of
from rbot.api.users import UserStore
from rbot.bus.config import Settings
from rbot.bus.connection import Bus
from tests.integration import test_auth as kit
from tests.integration.test_auth import Leaks, assert_error, bearer, serving

leaks = kit.leaks  # the auth tests' autouse fixtures: R7 leak check, cheap argon2
fast_argon = kit.fast_argon


async def _order_event(bus: Bus, owner: str | None, n: int) -> None:
    subject = bus.subjects.order_event("oanda", "EUR_USD", "oco_placed")
    env = {"id": f"e{n}", "source": "t", "type": "oco_placed", "payload": {"user": owner}}
    await bus.js.publish(subject, json.dumps(env).encode())


class Sse:
    """One open stream, read frame by frame."""

    def __init__(self, response: httpx.Response, leaks: Leaks) -> None:
        self.r = response
        self.lines = response.aiter_lines()
        self.leaks = leaks

    async def frame(self) -> dict[str, str]:
        """The next frame with data (``id``, ``event``, ``data``); comments skipped."""
        got: dict[str, str] = {}
        async with asyncio.timeout(10):
            async for line in self.lines:
                self.leaks.bodies.append((200, line))
                if not line:
                    if "data" in got:
                        return got
                    got = {}
                    continue
                if line.startswith((":", "retry:")):
                    continue
                key, _, value = line.partition(": ")
                got[key] = value
        raise AssertionError("the stream ended")

    async def closed(self) -> bool:
        async with asyncio.timeout(10):
            async for line in self.lines:
                if line:
                    return False
        return True


@asynccontextmanager
async def sse(
    client: httpx.AsyncClient, leaks: Leaks, url: str = "/events", **kw: Any
) -> AsyncIterator[Sse]:
    async with client.stream("GET", url, **kw) as r:
        assert r.status_code == 200, (await r.aread()).decode()
        yield Sse(r, leaks)


@contextmanager
def log_event(logger: str, text: str) -> Iterator[asyncio.Event]:
    """An event set when ``logger`` logs a line containing ``text``."""
    event = asyncio.Event()
    loop = asyncio.get_running_loop()

    class Hook(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if text in record.getMessage():
                loop.call_soon_threadsafe(event.set)

    hook = Hook(logging.DEBUG)
    logging.getLogger(logger).addHandler(hook)
    try:
        yield event
    finally:
        logging.getLogger(logger).removeHandler(hook)


@asynccontextmanager
async def api(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = create_app(settings)
    async with serving(app) as base, httpx.AsyncClient(base_url=base, timeout=10) as client:
        yield app, client


async def _login(
    app: FastAPI, client: httpx.AsyncClient, leaks: Leaks, email: str, role: Role
) -> tuple[str, str]:
    """A new user of ``role``, signed in: (access token, user id)."""
    users = UserStore(app.state.ctx.bus)
    auth = app.state.ctx.extras["auth"]
    pw = leaks.password(email.split("@")[0] + " pass word 1")
    user = await users.create(email, await auth.passwords.hash(pw), role)
    r = await client.post("/auth/login", json={"email": email, "password": pw})
    leaks.token(r.json()["refresh_token"])
    return r.json()["access_token"], user.id


# -- the session is re-checked while streaming -------------------------------------------


@pytest.mark.parametrize(
    ("how", "reason"),
    [
        ("logout", "session_revoked"),
        ("disable", "account_disabled"),
        ("password", "credentials_changed"),
    ],
)
async def test_stream_ends_when_the_session_does(
    settings: Settings, bus: Bus, leaks: Leaks, how: str, reason: str
) -> None:
    await _order_event(bus, None, 1)
    async with api(settings) as (app, client):
        token, sub = await _login(app, client, leaks, "s@test", Role.TRADER)
        hdr = {"Last-Event-ID": "0", **bearer(token)}
        async with sse(client, leaks, headers=hdr) as stream:
            assert (await stream.frame())["id"] == "1"  # streaming
            t0 = time.monotonic()
            if how == "logout":
                r = await client.post("/auth/logout", headers=bearer(token))
            elif how == "disable":
                await UserStore(app.state.ctx.bus).set_disabled(sub, True)
            else:
                new = leaks.password("a new pass word 2")
                r = await client.post(
                    "/auth/password",
                    json={"old_password": "s pass word 1", "new_password": new},
                    headers=bearer(token),
                )
                leaks.token(r.json()["refresh_token"])
            end = await stream.frame()
            assert end == {"event": "end", "data": json.dumps({"code": reason})}
            took = time.monotonic() - t0
            assert await stream.closed()
            assert took < 3.0
            print(f"\nSSE ended {took * 1000:.0f} ms after {how} ({reason})")
        r = await client.get("/events", headers=bearer(token))  # and it cannot come back
        assert r.status_code in (401, 403)


async def test_a_demoted_admin_stops_seeing_other_users_orders(
    settings: Settings, bus: Bus, leaks: Leaks
) -> None:
    async with api(settings) as (app, client):
        token, boss = await _login(app, client, leaks, "boss@test", Role.ADMIN)
        _, other = await _login(app, client, leaks, "other@test", Role.TRADER)
        await _order_event(bus, other, 1)
        hdr = {"Last-Event-ID": "0", **bearer(token)}
        async with sse(client, leaks, headers=hdr) as stream:
            assert (await stream.frame())["id"] == "1"  # an admin sees everyone's
            with log_event("rbot.api.relay", "sse role change") as changed:
                await UserStore(app.state.ctx.bus).set_role(boss, Role.TRADER)
                async with asyncio.timeout(5):
                    await changed.wait()
            await _order_event(bus, other, 2)
            await _order_event(bus, boss, 3)
            assert (await stream.frame())["id"] == "3"  # narrowed: only its own now


# -- caps -------------------------------------------------------------------------------


async def test_patterns_are_deduplicated_and_capped(
    settings: Settings, bus: Bus, leaks: Leaks
) -> None:
    async with api(settings) as (app, client):
        token, _ = await _login(app, client, leaks, "p@test", Role.VIEWER)
        many = ",".join(f"md.tick.oanda.S{i}" for i in range(MAX_PATTERNS + 1))
        r = await client.get("/events", params={"subjects": many}, headers=bearer(token))
        assert_error(r, 422, "too_many_patterns")
        leaks.bodies.append((r.status_code, r.text))
        # 2,000 copies of one pattern are one pattern
        await _order_event(bus, None, 1)
        copies = ",".join(["evt.order.>"] * 2000)
        hdr = {"Last-Event-ID": "0", **bearer(token)}
        async with sse(client, leaks, params={"subjects": copies}, headers=hdr) as stream:
            assert (await stream.frame())["id"] == "1"


async def test_streams_per_user_are_capped(settings: Settings, leaks: Leaks) -> None:
    async with api(settings) as (app, client):
        token, sub = await _login(app, client, leaks, "many@test", Role.VIEWER)
        other, _ = await _login(app, client, leaks, "other@test", Role.VIEWER)
        slots = slots_of(app.state.ctx)
        async with contextlib_stack() as stack:
            for _ in range(MAX_STREAMS_PER_USER):
                await stack.enter_async_context(sse(client, leaks, headers=bearer(token)))
            r = await client.get("/events", headers=bearer(token))
            assert_error(r, 429, "too_many_streams")
            assert "retry-after" in r.headers
            leaks.bodies.append((r.status_code, r.text))
            async with sse(client, leaks, headers=bearer(other)):  # others are not affected
                pass
            slots.freed.clear()
        # all closed: every slot comes back (others' too)
        while slots.open:
            async with asyncio.timeout(10):
                await slots.freed.wait()
            slots.freed.clear()
        async with sse(client, leaks, headers=bearer(token)):
            pass


def contextlib_stack() -> Any:
    import contextlib

    return contextlib.AsyncExitStack()


# -- slow clients -----------------------------------------------------------------------


async def test_a_slow_client_is_dropped_and_resumes_without_loss(
    bus: Bus, caplog: pytest.LogCaptureFixture
) -> None:
    for n in range(1, 11):
        await _order_event(bus, None, n)
    relay = Relay(bus, None, ["evt.order.>"], 0, queue_size=4, slow_after_s=0.3)
    frames = relay.events()
    assert (await anext(frames)).startswith(b"retry:")
    assert (await anext(frames)).startswith(b"id: 1\n")
    # the client reads nothing more: the pump waits for room, then gives up on it
    async with asyncio.timeout(10):
        await relay.ended.wait()
    rest = [f async for f in frames]
    assert rest == [b'event: end\ndata: {"code": "slow_client"}\n\n']
    assert "sse client dropped" in caplog.text and "reason=slow_client" in caplog.text
    # it reconnects with Last-Event-ID: 1 and gets 2..10, nothing lost, nothing twice
    again = Relay(bus, None, ["evt.order.>"], 1, queue_size=4, slow_after_s=5)
    frames = again.events()
    await anext(frames)
    ids = []
    for _ in range(9):
        ids.append(int((await anext(frames)).split(b"\n")[0][4:]))
    await frames.aclose()
    assert ids == list(range(2, 11))
