"""Which actors exist, in start order (and so stop in reverse)."""

from __future__ import annotations

from rbot.bus.config import Settings

from .base import Actor


def actor_classes(settings: Settings) -> list[type[Actor]]:
    from .feeds.actor import CoinbaseFeed, OandaFeed
    from .guard.service import OrderGuard
    from .heartbeat import HeartbeatActor
    from .live.executor import LiveExecutor
    from .paper.executor import PaperExecutor
    from .reaper import TtlReaper

    return [
        HeartbeatActor, OandaFeed, CoinbaseFeed, OrderGuard, PaperExecutor, LiveExecutor, TtlReaper,
    ]  # fmt: skip
