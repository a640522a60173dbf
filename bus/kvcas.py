"""Read-modify-write of one KV entry with compare-and-set, and retried publishes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from nats.errors import TimeoutError as NatsTimeout
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from . import codec

T = TypeVar("T")


class Contention(RuntimeError):
    """Too many concurrent writers of one key."""


async def update(
    kv: KeyValue,
    key: str,
    kind: type[T],
    apply: Callable[[T], T | None],
    fresh: Callable[[], T],
    attempts: int = 20,
) -> T | None:
    """Apply ``apply`` to the entry (``fresh()`` if missing) and write it with CAS.

    ``apply`` returns None when there is nothing to change (nothing is written).
    Returns what was written, or None."""
    for _ in range(attempts):
        try:
            entry = await kv.get(key)
        except KeyNotFoundError:
            created = apply(fresh())
            if created is None:
                return None
            try:
                await kv.create(key, codec.encode(created))
                return created
            except KeyWrongLastSequenceError:
                continue
        assert entry.value is not None
        changed = apply(codec.decode(entry.value, kind))
        if changed is None:
            return None
        try:
            await kv.update(key, codec.encode(changed), last=entry.revision)
            return changed
        except KeyWrongLastSequenceError:
            continue
    raise Contention(f"could not update {key}: too much contention")


async def retry(op: Callable[[], Awaitable[T]], attempts: int = 5) -> T:
    """Retry a JetStream request whose outcome is unknown (PubAck timeout)."""
    for attempt in range(attempts):
        try:
            return await op()
        except NatsTimeout:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")
