"""The active set's markers (KV ``orders`` ``a.<part>.<user>.<id>``) and the order counters.

One definition for the executor, which writes them, and the one-time upgrade.
"""

from __future__ import annotations

import datetime as dt

from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from . import codec, keys
from .messages import ActiveMark, Order, OrderStatus, PartitionCounts


def deadline(order: Order) -> dt.datetime | None:
    """When an active order must be expired (PENDING, its TTL) or closed (OPEN held
    longer than ``max_hold_min``); None for an ended order."""
    if order.status is OrderStatus.PENDING and order.expires_at:
        return codec.parse_iso(order.expires_at)
    if order.status is OrderStatus.OPEN and order.opened_at:
        return codec.parse_iso(order.opened_at) + dt.timedelta(minutes=order.max_hold_min)
    return None


def mark_of(order: Order, seq: int) -> ActiveMark:
    """The marker of ``order`` whose last event (number ``order.events``) is ``seq``."""
    when = deadline(order)
    return ActiveMark(
        status=str(order.status),
        venue=order.venue,
        symbol=order.symbol,
        side=order.side,
        qty=order.qty,
        deadline=None if when is None else codec.utc_iso(when),
        n=order.events,
        seq=seq,
        reduce_only=order.reduce_only,
    )


async def order_counts(kv: KeyValue, partitions: int) -> dict[str, int]:
    """Orders by status, from the partitions' counters (P reads, never a scan)."""
    totals: dict[str, int] = {str(s): 0 for s in OrderStatus}
    for part in range(partitions):
        try:
            entry = await kv.get(keys.counters(part))
        except KeyNotFoundError:
            continue
        if entry.value:
            counts = codec.decode(entry.value, PartitionCounts)
            for table in (counts.ended, counts.active):
                for status, n in table.items():
                    totals[status] = totals.get(status, 0) + n
    return totals
