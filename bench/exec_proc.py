"""The paper executor alone, in a process of its own: ``python -m bench.exec_proc URL PREFIX``.

The split deployment (``rbot api`` + ``rbot actors`` on one box) for the order
bench: ``bench.stack_proc --split`` runs the API and the guard, this runs the
executor on the same prefix, so the two use both cores as two processes would.
It prints one JSON line once its partitions are held and stops when stdin closes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys

from rbot.bus import eventloop
from rbot.bus.connection import connect
from rbot.bus.provision import provision
from rbot.cli.stack import running_stack

from .stack_proc import bench_settings


async def main(url: str, prefix: str) -> None:
    settings = bench_settings(url, prefix)
    bus = await connect(url, settings.subjects(), "bench-exec-setup")
    await provision(bus)
    await bus.close()
    async with running_stack(settings, only=["paper_executor"], api=False):
        print(json.dumps({"prefix": prefix}), flush=True)
        await asyncio.to_thread(sys.stdin.buffer.read)  # until the parent closes it


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    eventloop.run(main(sys.argv[1], sys.argv[2]))
