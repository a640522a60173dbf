"""The active set's markers (KV ``orders`` ``a.<part>.<user>.<id>``): what goes in one.

One definition for the executor, which writes them, and the one-time upgrade.
"""

from __future__ import annotations

import datetime as dt

from . import codec
from .messages import ActiveMark, Order, OrderStatus


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
