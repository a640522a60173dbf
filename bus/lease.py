"""Leases in KV ``leases``: one owner per key (a leader, a partition).

The bucket has a max age (``LEASE_TTL_S``): a lease not renewed within it
disappears, so a dead owner's lease frees itself.  Acquire is a KV ``create``
(fails if held); renewal is a compare-and-set ``update`` on the revision we
wrote, so two owners can never both believe they hold it: the one whose
revision is stale learns it on its next renewal and steps down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from . import codec
from .connection import Bus
from .messages import Lease as LeaseRecord
from .provision import LEASE_TTL_S
from .subjects import check_token
from .timing import every

log = logging.getLogger("rbot.lease")


class LeaseLost(RuntimeError):
    """Another owner holds the lease now: stop acting on its behalf."""


class Lease:
    def __init__(self, kv: KeyValue, key: str, owner: str) -> None:
        for part in key.split("."):
            check_token(part, "lease key")
        self.kv = kv
        self.key = key
        self.owner = owner
        self.revision: int | None = None

    def _value(self) -> bytes:
        return codec.encode(LeaseRecord(owner=self.owner, ts=codec.now_iso()))

    async def try_acquire(self) -> bool:
        try:
            self.revision = await self.kv.create(self.key, self._value())
            return True
        except KeyWrongLastSequenceError:
            return await self._reclaim()

    async def _reclaim(self) -> bool:
        """The key exists: ours from before a restart (renew it) or another owner's."""
        try:
            entry = await self.kv.get(self.key)
        except KeyNotFoundError:
            return False  # expired between the two calls: try again next round
        assert entry.value is not None
        if codec.decode(entry.value, LeaseRecord).owner == self.owner:
            self.revision = entry.revision  # our own lease from before a restart
            return await self.renew()
        return False

    async def renew(self) -> bool:
        try:
            self.revision = await self.kv.update(self.key, self._value(), last=self.revision)
            return True
        except (KeyWrongLastSequenceError, KeyNotFoundError):
            self.revision = None
            return False

    async def release(self) -> None:
        if self.revision is not None:
            with contextlib.suppress(KeyWrongLastSequenceError):  # someone else holds it now
                await self.kv.delete(self.key, last=self.revision)
            self.revision = None

    async def holder(self) -> str | None:
        try:
            entry = await self.kv.get(self.key)
        except KeyNotFoundError:
            return None
        return None if entry.value is None else codec.decode(entry.value, LeaseRecord).owner


async def lead(
    bus: Bus,
    key: str,
    owner: str,
    body: Callable[[], Awaitable[None]],
    *,
    ttl: float = LEASE_TTL_S,
    on_standby: Callable[[str | None], None] | None = None,
) -> None:
    """Wait for the lease, then run ``body`` while renewing it.

    Raises ``LeaseLost`` if a renewal fails (the supervisor restarts us and we
    queue up as a standby again).  The lease is released when ``body`` ends.
    """
    lease = Lease(await bus.kv("leases"), key, owner)
    period = ttl / 3
    while not await lease.try_acquire():
        if on_standby is not None:
            on_standby(await lease.holder())
        await asyncio.sleep(period)  # lease retry timer (expiry emits no KV event)
    log.info("%s leads %s", owner, key)

    async def keep() -> None:
        async for n in every(period):
            if n and not await lease.renew():
                raise LeaseLost(f"{owner} lost lease {key}")

    try:
        async with asyncio.TaskGroup() as tg:
            keeper = tg.create_task(keep())
            await body()
            keeper.cancel()
    finally:
        try:
            await asyncio.shield(lease.release())
        except Exception as exc:  # boundary: releasing is best effort; the TTL frees it anyway
            log.info("lease %s not released: %s", key, type(exc).__name__)
