"""The floor, in a process of its own: ``python -m bench.floor_proc NATS_URL PREFIX``.

What an order entry cannot do without, and nothing else (issue 12's baseline):

* ``POST /orders``: FastAPI validates the same body with the same pydantic
  model as the real route (``OandaOrderIn``), then makes one NATS
  request/reply to a responder;
* the responder (its own connection, in this process) handles requests
  concurrently (one task per request, in a TaskGroup) and makes the same
  durable calls as the order guard's minimum: one KV ``create`` (the
  idempotency record, keyed by ``client_order_id``) and one JetStream publish
  that waits for its PubAck, then answers;
* ``GET /get``: a bare FastAPI GET returning a small JSON object (the baseline
  for the authenticated reads and for ``/health``).

Served by uvicorn as the real API is (same defaults, a TCP socket with
TCP_NODELAY on accepted connections), on 127.0.0.1 and a port the kernel
picks.  Prints one JSON line (``port``) when ready; stops when stdin closes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import sys

import msgspec
import nats
import uvicorn
from fastapi import FastAPI
from fastapi.responses import Response
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import StreamConfig

from rbot.api.models import OandaOrderIn
from rbot.bus import eventloop


class _Server(uvicorn.Server):
    """uvicorn's server, with an event set once it listens."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = asyncio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self.listening.set()


def make_app(nc: NATS, subject: str) -> FastAPI:
    app = FastAPI()

    @app.post("/orders")
    async def orders(body: OandaOrderIn) -> Response:
        msg = await nc.request(subject, body.model_dump_json().encode(), timeout=8.0)
        return Response(msg.data, media_type="application/json")

    @app.get("/get")
    async def get() -> dict[str, object]:
        return {"ok": True, "sub": "u-0123456789abcdef", "role": "trader"}

    return app


async def responder(url: str, prefix: str, subject: str, ready: asyncio.Event) -> None:
    nc = await nats.connect(url, name="bench-floor-responder")
    try:
        js = nc.jetstream()
        exec_subject = f"{prefix}.floor.exec"
        await js.add_stream(StreamConfig(name=f"{prefix}_FLOOR", subjects=[exec_subject]))
        kv = await js.create_key_value(bucket=f"{prefix}_floor_idem")
        sub = await nc.subscribe(subject, queue="floor")

        async def handle(msg: Msg) -> None:
            coid = msgspec.json.decode(msg.data)["client_order_id"]
            await kv.create(f"idem.{coid}", msg.data)
            ack = await js.publish(exec_subject, msg.data, headers={"Nats-Msg-Id": coid})
            await msg.respond(b'{"ok":true,"order_id":"%s","seq":%d}' % (coid.encode(), ack.seq))

        ready.set()
        async with asyncio.TaskGroup() as tg:
            async for msg in sub.messages:
                tg.create_task(handle(msg))
    finally:
        await nc.close()


async def main(url: str, prefix: str) -> None:
    subject = f"{prefix}.floor.place"
    nc = await nats.connect(url, name="bench-floor-api")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(make_app(nc, subject), log_config=None, access_log=False)
    server = _Server(config)
    ready = asyncio.Event()
    try:
        async with asyncio.TaskGroup() as tg:
            resp = tg.create_task(responder(url, prefix, subject, ready))
            serve = tg.create_task(server.serve(sockets=[sock]))
            await ready.wait()
            await server.listening.wait()
            print(json.dumps({"port": port}), flush=True)
            await asyncio.to_thread(sys.stdin.buffer.read)  # until the parent closes it
            server.should_exit = True
            await serve
            resp.cancel()
    finally:
        sock.close()
        await nc.close()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    eventloop.run(main(sys.argv[1], sys.argv[2]))  # the loop `rbot` runs on (RBOT_EVENT_LOOP)
