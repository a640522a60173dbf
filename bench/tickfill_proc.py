"""The paper executor alone, in a process of its own: ``python -m bench.tickfill_proc URL PREFIX``.

``tests.stack.running_stack`` with only ``paper_executor`` (no API): it claims
every partition and rebuilds each from its active-set markers, which the parent
(``bench.tickfill``) has seeded.  Beside it, on its own connection, a bare
relay: every message on ``<prefix>.bench.ping`` is published again on
``<prefix>.bench.pong`` (the baseline: a core publish -> subscriber -> publish
-> subscriber round trip, the shape of tick -> ``order_filled`` without the
executor's work).

It prints one JSON line once the partition of ``PARTITION_OF`` (venue, symbol)
has been rebuilt (its log line) and stops when its stdin closes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import sys

import nats
from nats.aio.msg import Msg

from rbot.bus.config import Settings
from rbot.cli.stack import running_stack

VENUE, SYMBOL = "oanda", "EUR_USD"


def executor_settings(url: str, prefix: str) -> Settings:
    return Settings(
        _env_file=None,
        nats_url=url,
        rbot_prefix=prefix,
        arena_secret_key=secrets.token_hex(32),
        rbot_sim="off",
        rbot_price_max_age_s=3600.0,
        # ownership waits two beats of silence before it claims: keep that short here
        rbot_beat_interval_s=0.25,
    )


async def main(url: str, prefix: str) -> None:
    settings = executor_settings(url, prefix)
    part = settings.subjects().partition(VENUE, SYMBOL)
    loop = asyncio.get_running_loop()
    rebuilt = asyncio.Event()
    found: list[str] = []

    class Rebuilt(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            msg = record.getMessage()
            if msg.startswith(f"partition {part} rebuilt"):
                found.append(msg)
                loop.call_soon_threadsafe(rebuilt.set)

    exec_log = logging.getLogger("rbot.actor.paper_executor")
    exec_log.setLevel(logging.INFO)
    exec_log.addHandler(Rebuilt(logging.INFO))

    relay = await nats.connect(url, name="bench-relay")
    ping, pong = f"{prefix}.bench.ping", f"{prefix}.bench.pong"

    async def echo(msg: Msg) -> None:
        await relay.publish(pong, msg.data)

    await relay.subscribe(ping, cb=echo)
    try:
        async with running_stack(settings, only=["paper_executor"], api=False):
            async with asyncio.timeout(600):
                await rebuilt.wait()
            print(json.dumps({"ping": ping, "pong": pong, "rebuilt": found[0]}), flush=True)
            await asyncio.to_thread(sys.stdin.buffer.read)  # until the parent closes it
    finally:
        await relay.close()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    asyncio.run(main(sys.argv[1], sys.argv[2]))
