"""Which actors exist, in start order (and so stop in reverse)."""

from __future__ import annotations

from rbot.bus.config import Settings

from .base import Actor


def actor_classes(settings: Settings) -> list[type[Actor]]:
    from .heartbeat import HeartbeatActor

    return [HeartbeatActor]
