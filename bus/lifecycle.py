"""Actor lifecycle event names, in one place: the ``<type>`` of
``<p>.evt.actor.<actor>.<type>`` (``subjects.actor_event``).

The supervisor emits all but ``silent``, which the heartbeat actor emits for an
actor that stopped beating.  The dashboard gets this list from ``GET /meta``.
"""

from __future__ import annotations

import enum
from typing import Final


class LifecycleEvent(enum.StrEnum):
    STARTING = "starting"
    STARTED = "started"
    EXITED = "exited"
    CRASHED = "crashed"
    RESTARTING = "restarting"
    STOPPING = "stopping"
    STOPPED = "stopped"
    ABANDONED = "abandoned"
    HUNG = "hung"  # its watchdog saw no sign of life: cancelled, then restarted (R4)
    ESCALATED = "escalated"
    SILENT = "silent"


LIFECYCLE_EVENT_TYPES: Final[tuple[str, ...]] = tuple(e.value for e in LifecycleEvent)
# after one of these an actor instance is gone (the pulse forgets it)
GONE: Final = frozenset({LifecycleEvent.STOPPED, LifecycleEvent.ABANDONED})
