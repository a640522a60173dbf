"""A NATS client that is not nats-py: the text protocol over a plain socket.

Proves the promise "tap events with any NATS client".
"""

from __future__ import annotations

import asyncio
import json
from urllib.parse import urlparse


class ForeignNats:
    def __init__(self, url: str) -> None:
        u = urlparse(url)
        self.host = u.hostname or "127.0.0.1"
        self.port = u.port or 4222
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.errors: list[str] = []

    async def connect(self, user: str | None = None, password: str | None = None) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        info = await self.reader.readline()
        assert info.startswith(b"INFO "), info
        opts: dict[str, object] = {"verbose": False, "pedantic": False, "name": "foreign"}
        if user is not None:
            opts |= {"user": user, "pass": password}
        self.writer.write(b"CONNECT " + json.dumps(opts).encode() + b"\r\n")
        await self.writer.drain()

    async def subscribe(self, subject: str, sid: int = 1) -> None:
        assert self.writer is not None
        self.writer.write(f"SUB {subject} {sid}\r\nPING\r\n".encode())
        await self.writer.drain()

    async def refusal(self) -> str:
        """After a CONNECT the server refuses: its -ERR, read until it hangs up.

        Nothing more is written first (a write racing the server's close is
        answered with a reset that can swallow the -ERR).
        """
        assert self.reader is not None
        while line := await self.reader.readline():
            if line.startswith(b"-ERR"):
                return line.decode(errors="replace").strip()
        raise ConnectionError("closed without an error")

    async def flush(self) -> None:
        """PING and wait for the PONG: everything sent before is processed by the server."""
        assert self.reader is not None and self.writer is not None
        self.writer.write(b"PING\r\n")
        await self.writer.drain()
        while True:
            line = await self.reader.readline()
            if not line:
                raise ConnectionError(f"server closed the connection {self.errors}")
            if line.startswith(b"-ERR"):
                self.errors.append(line.decode(errors="replace").strip())
            elif line.startswith(b"PONG"):
                return

    async def next_msg(self) -> tuple[str, bytes]:
        """The next MSG (answering server PINGs on the way)."""
        assert self.reader is not None and self.writer is not None
        while True:
            line = await self.reader.readline()
            if not line:
                raise ConnectionError(f"server closed the connection {self.errors}")
            if line.startswith(b"-ERR"):
                self.errors.append(line.decode(errors="replace").strip())
                continue
            if line.startswith(b"PING"):
                self.writer.write(b"PONG\r\n")
                await self.writer.drain()
                continue
            if line.startswith(b"MSG "):
                parts = line.split()
                size = int(parts[-1])
                payload = await self.reader.readexactly(size + 2)
                return parts[1].decode(), payload[:-2]

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            await self.writer.wait_closed()
