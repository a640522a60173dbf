"""The embedded nats-server's restarts, as ``rbot up`` keeps them in KV ``actors``."""

from __future__ import annotations

from nats.js.errors import KeyNotFoundError

from rbot.bus import codec, keys
from rbot.bus.connection import Bus
from rbot.bus.messages import ActorStatus


async def nats_server_status(bus: Bus) -> ActorStatus | None:
    """``None`` without an embedded server (``NATS_URL`` given) or while the bus is down."""
    if not bus.connected:
        return None
    kv = await bus.kv("actors")
    try:
        entry = await kv.get(keys.NATS_SERVER)
    except KeyNotFoundError:
        return None
    return None if not entry.value else codec.decode(entry.value, ActorStatus)


def describe(status: ActorStatus | None) -> dict[str, object] | None:
    if status is None:
        return None
    info = status.info or {}
    return {
        "restarts": status.restarts,
        "last_exit": info.get("last_exit"),
        "since": status.last_beat,
    }
