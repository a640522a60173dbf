"""The API alone, in a process of its own: ``python -m bench.fanout_proc URL PREFIX USERS``.

``tests.stack.running_stack`` with the API and only the ``heartbeat`` actor
(nothing else publishes or consumes order events).  It creates ``USERS``
traders and a session for each the way ``/auth/login`` does (user record,
refresh family, access token, with the app's own key), not through HTTP: the
per-address registration and login limits would refuse a dozen in a row.  It
prints one JSON line (API port, each trader's token and user id) and stops
when its stdin closes.  The tokens travel on the stdout pipe, never on
a command line.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import sys

from rbot.api.principal import Role
from rbot.api.security import Auth
from rbot.api.users import UserStore
from rbot.bus.connection import connect
from rbot.cli.stack import running_stack

from .stack_proc import bench_settings


async def main(url: str, prefix: str, users: int) -> None:
    settings = bench_settings(url, prefix)
    async with running_stack(settings, only=["heartbeat"]) as stack:
        auth = Auth.build(settings)
        bus = await connect(url, settings.subjects(), "bench-fanout-users")
        try:
            store = UserStore(bus)
            people = []
            for i in range(users):
                pw = secrets.token_urlsafe(16)
                user = await store.create(
                    f"fan{i}@test", await auth.passwords.hash(pw), Role.TRADER
                )
                _, family = await auth.refresh(bus).start(user.id, user.token_gen)
                token = auth.tokens.issue_access(user.id, user.role, family, user.token_gen)
                async with stack.client(token) as c:
                    me = (await c.get("/auth/me")).json()
                people.append({"token": token, "sub": me["sub"]})
            print(json.dumps({"port": stack.api.port, "users": people}), flush=True)
            await asyncio.to_thread(sys.stdin.buffer.read)  # until the parent closes it
        finally:
            await bus.close()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
