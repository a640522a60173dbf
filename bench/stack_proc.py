"""The system under test, in a process of its own: ``python -m bench.stack_proc URL PREFIX``.

``rbot.cli.stack.running_stack`` (the real supervisor, actors and uvicorn) with
the API and the ``order_guard`` only: an order's path is HTTP -> API -> NATS
request -> guard (KV reads, idempotency ``create``) -> JetStream PubAck -> reply.
Beside it, a bare NATS echo responder on its own connection (the baseline a
request/reply costs without any of that).

``--nodelay`` is a what-if, off by default: it sets ``TCP_NODELAY`` on the
API's listening socket (Linux passes it on to accepted connections), which
``api/server.py`` does not do today (see ``bench/README.md``).

``--split`` leaves the executor out: ``bench.exec_proc`` runs it beside (the
``rbot api`` + ``rbot actors`` shape).

It prints one JSON line (API port, a trader's token and user id, the echo
subject) once everything is up, and stops when its stdin closes.  The load
generator runs in the parent process, so client and server do not share an
event loop (on 2 cores they still share the CPUs, as they would on one box).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import socket
import sys
from typing import Any

import nats
from nats.aio.msg import Msg

from rbot.api import server as api_server
from rbot.bus import eventloop, keys
from rbot.bus.config import Settings
from rbot.bus.connection import connect
from rbot.bus.provision import provision
from rbot.cli.stack import publish_tick, running_stack

from .payloads import SEED_OANDA

ACTORS = ["order_guard", "paper_executor"]
# the one login's hash at the tests' cost, as when this stack came from tests/stack.py
os.environ.setdefault("RBOT_ARGON2_FAST", "1")


def bench_settings(url: str, prefix: str) -> Settings:
    return Settings(
        _env_file=None,
        nats_url=url,
        rbot_prefix=prefix,
        arena_secret_key=secrets.token_hex(32),
        rbot_sim="off",
        # the load is one user placing thousands of orders: lift the per-user
        # limit (the limiter itself still runs on every order) and keep the one
        # price we publish fresh for the whole run
        rbot_orders_per_minute=10**9,
        rbot_price_max_age_s=3600.0,
    )


def patch_nodelay() -> None:
    """What-if: the API's listening socket with TCP_NODELAY (inherited by accepted ones)."""
    original = api_server._Server.startup

    async def startup(self: Any, sockets: list[socket.socket] | None = None) -> None:
        for s in sockets or []:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await original(self, sockets)

    api_server._Server.startup = startup  # type: ignore[method-assign]


async def first_order(stack: Any, bus: Any, token: str) -> str:
    """Place one order and wait (a KV watch on its record) until the executor wrote it,
    so ``GET /orders/{id}`` has something to read."""
    async with stack.client(token) as c:
        r = await c.post("/brokers/oanda/orders", json=SEED_OANDA)
    r.raise_for_status()
    order_id = str(r.json()["order_id"])
    kv = await bus.kv("orders")
    watcher = await kv.watch(keys.order(order_id))
    try:
        async with asyncio.timeout(30):
            while True:
                entry = await watcher.updates(timeout=30)
                if entry is not None and entry.value:
                    return order_id
    finally:
        await watcher.stop()


async def main(url: str, prefix: str, actors: list[str]) -> None:
    settings = bench_settings(url, prefix)
    bus = await connect(url, settings.subjects(), "bench-setup")
    await provision(bus)
    echo_nc = await nats.connect(url, name="bench-echo")
    echo_subject = f"{prefix}.bench.echo"

    async def echo(msg: Msg) -> None:
        await msg.respond(msg.data)

    await echo_nc.subscribe(echo_subject, queue="echo", cb=echo)
    try:
        async with running_stack(settings, only=actors) as stack:
            token = await stack.user("bench@test")
            async with stack.client(token) as c:
                me = (await c.get("/auth/me")).json()
            await publish_tick(bus, "oanda", "EUR_USD", "1.16500", "1.16514", seq=1)
            order_id = await first_order(stack, bus, token)
            info = {
                "port": stack.api.port,
                "token": token,
                "sub": me["sub"],
                "echo": echo_subject,
                "prefix": prefix,
                "order_id": order_id,
            }
            print(json.dumps(info), flush=True)
            await asyncio.to_thread(sys.stdin.buffer.read)  # until the parent closes it
    finally:
        await echo_nc.close()
        await bus.close()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if "--nodelay" in sys.argv[3:]:
        patch_nodelay()
    # --split: the executor runs in its own process (bench.exec_proc, same prefix)
    actors = ["order_guard"] if "--split" in sys.argv[3:] else ACTORS
    eventloop.run(
        main(sys.argv[1], sys.argv[2], actors)
    )  # the loop `rbot` runs on (RBOT_EVENT_LOOP)
