"""The event loop every ``rbot`` process runs on: uvloop when installed, else asyncio's.

uvloop (libuv) does the loop's own work (sockets, timers, callbacks) in C; with
uvicorn on httptools it cut the API's CPU per request (issue 12, bench/).  It
is a dependency, but a missing or broken install falls back to the standard
loop, and ``RBOT_EVENT_LOOP=asyncio`` chooses the standard loop on purpose
(to compare, or to rule uvloop out while chasing a bug).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

log = logging.getLogger("rbot.bus")

ENV = "RBOT_EVENT_LOOP"
T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop factory, or ``None`` for asyncio's default."""
    if os.environ.get(ENV, "").strip().lower() == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        log.debug("uvloop is not installed: the standard asyncio loop runs")
        return None
    return uvloop.new_event_loop


def loop_name() -> str:
    return "asyncio" if loop_factory() is None else "uvloop"


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on the chosen loop."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)
