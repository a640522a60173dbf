"""The event loop every ``rbot`` process runs on: asyncio's, or uvloop on request.

uvloop (libuv) does the loop's own work (sockets, timers, callbacks) in C; with
uvicorn on httptools it cut the API's CPU per request (issue 12, bench/).  It
is installed (a dependency) but opt-in: ``RBOT_EVENT_LOOP=uvloop``.  Not the
default yet because ``rbot up`` under uvloop failed 3 of 4 runs of
tests/integration/test_rbot_up_flapping.py on a loaded machine (an executor
restart during the server kills; the /ready restart count lagging), against 3
of 3 passed on asyncio's loop: cause not found yet.  A missing uvloop falls
back to the standard loop.
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
    """uvloop's loop factory when asked for (``RBOT_EVENT_LOOP=uvloop``), else ``None``
    (asyncio's default)."""
    if os.environ.get(ENV, "").strip().lower() != "uvloop":
        return None
    try:
        import uvloop
    except ImportError:
        log.warning("RBOT_EVENT_LOOP=uvloop but uvloop is not installed: asyncio's loop runs")
        return None
    return uvloop.new_event_loop


def loop_name() -> str:
    return "asyncio" if loop_factory() is None else "uvloop"


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on the chosen loop."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)
