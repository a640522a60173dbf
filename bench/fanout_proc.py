"""The API alone, in a process of its own: ``python -m bench.fanout_proc URL PREFIX USERS``.

``tests.stack.running_stack`` with the API and only the ``heartbeat`` actor
(nothing else publishes or consumes order events).  It registers ``USERS``
traders through HTTP (open registration, as a new user would) and prints one
JSON line (API port, each trader's token and user id) once they are signed in;
it stops when its stdin closes.  The tokens travel on the stdout pipe, never on
a command line.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys

from tests.stack import running_stack

from .stack_proc import bench_settings


async def main(url: str, prefix: str, users: int) -> None:
    settings = bench_settings(url, prefix)
    async with running_stack(settings, only=["heartbeat"]) as stack:
        people = []
        for i in range(users):
            token = await stack.user(f"fan{i}@test")
            async with stack.client(token) as c:
                me = (await c.get("/auth/me")).json()
            people.append({"token": token, "sub": me["sub"]})
        print(json.dumps({"port": stack.api.port, "users": people}), flush=True)
        await asyncio.to_thread(sys.stdin.buffer.read)  # until the parent closes it


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
