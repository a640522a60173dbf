"""Where a task is stuck: its chain of awaits, for the log line of a child that
ignored cancellation (the supervisor abandons it; without this nothing says why).

``Task.get_stack()`` shows only the outermost coroutine's frame; this follows
``cr_await`` down to the innermost awaitable, for every task of our own code.
"""

from __future__ import annotations

import asyncio
from typing import Any

OWN = ("/actors/", "/bus/", "/api/")  # frames of our package (the rest is context)
DEPTH = 64  # a chain is short; this only bounds a malformed one


def await_chain(task: asyncio.Task[Any]) -> list[tuple[str, int, str]]:
    """(file, line, function) for each coroutine the task awaits, outermost first;
    the innermost non-coroutine awaitable (a future) as ``("", 0, its type)``."""
    out: list[tuple[str, int, str]] = []
    step: Any = task.get_coro()
    for _ in range(DEPTH):
        frame = getattr(step, "cr_frame", None) or getattr(step, "ag_frame", None)
        if frame is None:
            if step is not None:
                out.append(("", 0, type(step).__name__))
            break
        out.append((frame.f_code.co_filename, frame.f_lineno, frame.f_code.co_name))
        step = getattr(step, "cr_await", None) or getattr(step, "ag_await", None)
    return out


def _fmt(step: tuple[str, int, str]) -> str:
    path, line, name = step
    return name if not path else f"{'/'.join(path.rsplit('/', 2)[-2:])}:{line} {name}"


def stuck_tasks(limit: int = 40) -> list[str]:
    """One line per pending task running our code: its name and await chain."""
    lines = []
    for task in asyncio.all_tasks():
        if task.done():
            continue
        chain = await_chain(task)
        if not any(own in path for path, _, _ in chain for own in OWN):
            continue
        lines.append(f"{task.get_name()}: {' > '.join(_fmt(s) for s in chain)}")
        if len(lines) >= limit:
            break
    return sorted(lines)
