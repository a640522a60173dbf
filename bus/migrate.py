"""One-time upgrades of the data in KV, run after provisioning (idempotent).

Version 2 (partitioned executors): orders written before it have no active-set
marker and no entry in their user's history index.  The upgrade reads every
order once (the only O(history) pass, and only on the first start after the
upgrade), writes the markers of the active ones and the users' indexes (oldest
first), and records ``schema`` = 2 in KV ``control``.  A ``schema`` lock
(``create``) makes sure only one process runs it; one that finds the lock left
by a process that died mid-way runs it again, which is harmless (every write
is a put of the same value, or an idempotent append).
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict

import msgspec
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

from . import codec, keys, userindex
from .active import mark_of
from .connection import Bus
from .kvscan import scan
from .messages import Order, OrderStatus

log = logging.getLogger("rbot.migrate")

SCHEMA_KEY = "schema"
VERSION = 2
STALE_S = 600.0


class Schema(msgspec.Struct, kw_only=True):
    version: int
    state: str = "done"  # running | done
    owner: str = ""
    partitions: int = 0  # RBOT_PARTITIONS the data is laid out for (0: not recorded yet)
    ts: float = 0.0  # when a run started (a run older than STALE_S was cut off: redo it)


class PartitionsChanged(RuntimeError):
    """RBOT_PARTITIONS differs from the count the stored orders are partitioned by."""


async def migrate(bus: Bus, owner: str) -> bool:
    """Bring the data up to ``VERSION``; True if this call did the work."""
    control = await bus.kv("control")
    try:
        entry = await control.get(SCHEMA_KEY)
    except KeyNotFoundError:
        entry = None
    parts = bus.subjects.partitions
    if entry is not None and entry.value:
        current = codec.decode(entry.value, Schema)
        if current.partitions and current.partitions != parts:
            raise PartitionsChanged(
                f"RBOT_PARTITIONS is {parts} but the stored orders are partitioned "
                f"{current.partitions} ways: set RBOT_PARTITIONS={current.partitions} "
                "(repartitioning existing data is not supported)"
            )
        if current.state == "running" and time.time() - current.ts < STALE_S:
            return False  # another process is on it
        if current.version >= VERSION and current.state == "done":
            if not current.partitions:  # recorded from now on
                done = Schema(version=current.version, owner=current.owner, partitions=parts)
                try:
                    await control.update(SCHEMA_KEY, codec.encode(done), last=entry.revision)
                except KeyWrongLastSequenceError:  # another process recorded it first
                    log.info("schema %d: partition count recorded by another process", VERSION)
            return False
    running = codec.encode(Schema(version=VERSION, state="running", owner=owner, partitions=parts))
    try:
        if entry is None:
            rev = await control.create(SCHEMA_KEY, running)
        else:
            rev = await control.update(SCHEMA_KEY, running, last=entry.revision)
    except KeyWrongLastSequenceError:
        return False  # another process is on it
    kv = await bus.kv("orders")
    orders = [codec.decode(e.value or b"", Order) for e in await scan(kv, keys.orders_all())]
    by_user: dict[str, list[Order]] = defaultdict(list)
    for o in orders:
        by_user[o.user].append(o)
    active = 0
    for user, owned in by_user.items():
        owned.sort(key=lambda o: (o.created_at, o.id))
        for o in owned:
            await userindex.append(kv, user, o.id)
            if o.status in (OrderStatus.PENDING, OrderStatus.OPEN):
                active += 1
                part = bus.subjects.partition(o.venue, o.symbol)
                await kv.put(keys.active(part, user, o.id), codec.encode(mark_of(o, 0)))
    done = Schema(version=VERSION, owner=owner, partitions=parts)
    try:
        await control.update(SCHEMA_KEY, codec.encode(done), last=rev)
    except KeyWrongLastSequenceError:  # a process that took ours for stale redid it
        log.info("schema %d upgrade finished by another process too", VERSION)
    if orders:
        log.info("upgraded %d orders of %d users to schema %d (%d active)",
                 len(orders), len(by_user), VERSION, active)  # fmt: skip
    return True
