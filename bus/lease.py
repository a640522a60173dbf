"""Leases in KV ``leases``: one owner per key (a leader, a partition).

The bucket has a max age (``LEASE_TTL_S``): a lease not renewed within it
disappears, so a dead owner's lease frees itself.  Acquire is a KV ``create``
(fails if held); renewal is a compare-and-set ``update`` on the revision we
wrote, so two owners can never both believe they hold it: the one whose
revision is stale learns it on its next renewal and steps down.

``lead()`` is the loop around it: stand by, lead, step down on a lost lease or
a bus outage, stand by again, never crashing on either (issue 17).
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
from .outage import LeaseLost, is_outage
from .provision import LEASE_TTL_S
from .subjects import check_token
from .timing import every, raise_if_cancelled

log = logging.getLogger("rbot.lease")


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
    on_lead: Callable[[], None] | None = None,
) -> None:
    """Run ``body`` while holding the lease; stand by while another owner holds it.

    Losing the lease is a state change, not a crash: when a renewal is refused
    (another owner), when none got through for a whole ``ttl`` (the bus is down:
    it may have expired), or when ``body`` ends on a bus outage (``is_outage``),
    ``body`` is cancelled, ``on_standby(None)`` is called, we wait for the
    connection and queue up for the lease again.  Returns when ``body`` returns
    (the lease is released); a fault in ``body`` (any other exception) propagates.
    """
    period = ttl / 3
    lease: Lease | None = None
    while True:
        lease = await _acquire(bus, lease, key, owner, period, on_standby)
        log.info("%s leads %s", owner, key)
        if on_lead is not None:
            on_lead()
        try:
            finished = await _hold(lease, body, period, ttl)
        finally:
            await _release(bus, lease, period)
        if finished:
            return
        raise_if_cancelled()  # the release's request may have swallowed a cancel
        if on_standby is not None:
            on_standby(None)
        await bus.wait_online()


async def _acquire(
    bus: Bus,
    lease: Lease | None,
    key: str,
    owner: str,
    period: float,
    on_standby: Callable[[str | None], None] | None,
) -> Lease:
    """Queue for the lease until we hold it; a bus outage only delays the next try."""
    while True:
        raise_if_cancelled()  # a lease request below may have swallowed a cancel
        await bus.wait_online()
        holder: str | None = None
        try:
            async with asyncio.timeout(period):
                if lease is None:
                    lease = Lease(await bus.kv("leases"), key, owner)
                if await lease.try_acquire():
                    return lease
                holder = await lease.holder()
        except Exception as exc:  # TimeoutError: our deadline on a bus call
            if not (isinstance(exc, TimeoutError) or is_outage(exc)):
                raise
            log.info("lease %s: bus unavailable (%s)", key, type(exc).__name__)
        if on_standby is not None:
            on_standby(holder)
        await asyncio.sleep(period)  # lease retry timer (expiry emits no KV event)


async def _hold(
    lease: Lease, body: Callable[[], Awaitable[None]], period: float, ttl: float
) -> bool:
    """Run ``body`` while renewing: True if it returned, False if we lost the lead."""
    loop = asyncio.get_running_loop()

    async def keep() -> None:
        renewed = loop.time()
        async for n in every(period):
            if not n:
                continue
            try:
                async with asyncio.timeout(period):
                    held = await lease.renew()
            except Exception as exc:  # TimeoutError: our deadline on the renewal
                if not (isinstance(exc, TimeoutError) or is_outage(exc)):
                    raise
                if loop.time() - renewed >= ttl:
                    raise LeaseLost(
                        f"{lease.owner}: lease {lease.key} not renewed for {ttl}s"
                    ) from exc
                continue
            if not held:
                raise LeaseLost(f"{lease.owner} lost lease {lease.key}")
            renewed = loop.time()

    try:
        async with asyncio.TaskGroup() as tg:
            keeper = tg.create_task(keep())
            await body()
            keeper.cancel()
    except BaseExceptionGroup as eg:
        if not is_outage(eg):
            raise
        log.warning("%s steps down from %s: %s", lease.owner, lease.key, _describe(eg))
        return False
    return True


async def _release(bus: Bus, lease: Lease, period: float) -> None:
    """Best effort: the TTL frees the lease anyway, and we reclaim our own."""
    if not bus.connected:
        lease.revision = None
        return
    try:
        async with asyncio.timeout(period):
            await asyncio.shield(lease.release())
    except Exception as exc:  # boundary: releasing is best effort
        log.info("lease %s not released: %s", lease.key, type(exc).__name__)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        return _describe(exc.exceptions[0])
    return f"{type(exc).__name__}: {exc}"
