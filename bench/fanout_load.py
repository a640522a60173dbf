"""SSE clients for ``bench.fanout``, in a process of their own: ``python -m bench.fanout_load``.

Several of these share the clients, so the load is not one busy event loop.
The conversation is JSON lines:

- stdin ``{"port", "since", "clients": [[user index, token], ...]}``: open the
  streams (raw sockets, ``asyncio.Protocol``: each read is timed, then scanned
  for ``id: N`` lines; nothing else is parsed);
- stdout ``{"connected": n}`` once every stream has sent ``: connected`` (the
  API has it in its shared feed);
- stdin ``{"want": {user index: events}}`` after the last publish: wait until
  every client has read that many ids (bounded), then stdout
  ``{"seen": [[user, [[id, t], ...]], ...], "cpu_s": ...}`` and exit.

Times are ``time.monotonic()`` (CLOCK_MONOTONIC: one clock for every process).
Tokens come on stdin, never on a command line.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

CONNECT_S = 30.0
DRAIN_S = 10.0


class SseClient(asyncio.Protocol):
    def __init__(self, user: int, request: bytes) -> None:
        self.user = user
        self.request = request
        self.seen: list[tuple[int, float]] = []
        self.connected = asyncio.Event()
        self.done = asyncio.Event()
        self.want: int | None = None
        self.head = b""
        self.rest = b""
        self.error: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        if not self.connected.is_set():
            self.head += data
            at = self.head.find(b": connected\n\n")
            if at < 0:
                if self.head.startswith(b"HTTP/1.1 ") and not self.head.startswith(b"HTTP/1.1 200"):
                    self.error = self.head[:200].decode(errors="replace")
                    self.connected.set()
                return
            data, self.head = self.head[at + 14 :], b""
            self.connected.set()
        buf = self.rest + data
        pos = 0
        i = buf.find(b"id: ")
        while i >= 0:
            j = buf.find(b"\n", i)
            if j < 0:
                break
            self.seen.append((int(buf[i + 4 : j]), now))
            pos = j + 1
            i = buf.find(b"id: ", pos)
        # an unfinished id line, or up to 3 bytes that may begin one
        self.rest = buf[i:] if i >= 0 else buf[max(pos, len(buf) - 3) :]
        if self.want is not None and len(self.seen) >= self.want:
            self.done.set()

    def expect(self, n: int) -> None:
        self.want = n
        if len(self.seen) >= n:
            self.done.set()


async def main() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    cfg = json.loads(await reader.readline())
    port, since = int(cfg["port"]), int(cfg["since"])
    clients: list[SseClient] = []
    transports: list[asyncio.BaseTransport] = []
    for user, token in cfg["clients"]:
        req = (
            f"GET /events?subjects=evt.order.%3E&since={since} HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n"
            f"Authorization: Bearer {token}\r\n\r\n"
        ).encode()
        c = SseClient(int(user), req)
        t, _ = await loop.create_connection(lambda c=c: c, "127.0.0.1", port)  # type: ignore[misc]
        clients.append(c)
        transports.append(t)
    cpu0 = time.process_time()
    async with asyncio.timeout(CONNECT_S):
        for c in clients:
            await c.connected.wait()
    errors = [c.error for c in clients if c.error]
    print(json.dumps({"connected": len(clients), "errors": errors}), flush=True)
    want = json.loads(await reader.readline())["want"]
    try:
        async with asyncio.timeout(DRAIN_S):
            for c in clients:
                c.expect(int(want.get(str(c.user), 0)))
                await c.done.wait()
    except TimeoutError:
        pass  # what is missing is reported as lost
    cpu = time.process_time() - cpu0
    for tr in transports:
        tr.close()
    out = {"seen": [[c.user, c.seen] for c in clients], "cpu_s": cpu}
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    asyncio.run(main())
