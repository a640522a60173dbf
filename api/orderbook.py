"""Reads of order state for the API, each O(page) or O(the user's active orders).

Never a scan of the history: an order by id is one KV get; a user's orders come
from their history index (``bus.userindex``: the head and one or two chunks,
then the orders of the page); open positions and active orders from the user's
active-set markers (``a.*.<user>.*``); order counts from the partitions'
counters (``n.<part>``), kept by the executors as orders change.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from nats.js.errors import KeyNotFoundError

from rbot.bus import codec, keys, userindex
from rbot.bus.connection import Bus
from rbot.bus.kvscan import scan
from rbot.bus.messages import Account, Order, OrderStatus, PartitionCounts, Tick
from rbot.bus.subjects import is_token

SCAN_BUDGET = 2000  # orders a filtered page may look at before it returns a cursor
STEP = 128


async def get_order(bus: Bus, order_id: str) -> Order | None:
    if not is_token(order_id):
        return None
    kv = await bus.kv("orders")
    try:
        entry = await kv.get(keys.order(order_id))
    except KeyNotFoundError:
        return None
    return None if entry.value is None else codec.decode(entry.value, Order)


async def get_orders(bus: Bus, ids: Iterable[str]) -> list[Order]:
    found = await asyncio.gather(*(get_order(bus, oid) for oid in ids))
    return [o for o in found if o is not None]


async def active_orders(bus: Bus, user: str) -> list[Order]:
    """The user's PENDING and OPEN orders, newest first (O(the user's active orders))."""
    kv = await bus.kv("orders")
    ids = [keys.parse_active(e.key)[2] for e in await scan(kv, keys.active_of_user(user))]
    orders = [o for o in await get_orders(bus, ids) if o.status in _ACTIVE]
    orders.sort(key=lambda o: (o.created_at, o.id), reverse=True)
    return orders


_ACTIVE = (OrderStatus.PENDING, OrderStatus.OPEN)


@dataclass(frozen=True, slots=True)
class OrderPage:
    orders: list[Order]
    total: int | None  # None when a filter makes it unknown without a scan
    next_cursor: int | None


async def user_orders(
    bus: Bus,
    user: str,
    *,
    limit: int,
    offset: int = 0,
    cursor: int | None = None,
    status: OrderStatus | None = None,
    venue: str | None = None,
    symbol: str | None = None,
) -> OrderPage:
    """A page of the user's orders, newest first."""
    if status in _ACTIVE:
        rows = [
            o for o in await active_orders(bus, user)
            if o.status is status and _match(o, venue, symbol)
        ]  # fmt: skip
        return OrderPage(rows[offset : offset + limit], len(rows), None)
    kv = await bus.kv("orders")
    if status is None and venue is None and symbol is None:
        top = await userindex.count(kv, user) if cursor is None else cursor
        page = await userindex.page(kv, user, max(top - offset, 0), limit)
        return OrderPage(await get_orders(bus, page.ids), page.total, page.next_cursor)
    # filtered: walk back through the history within a budget; the cursor goes on
    out: list[Order] = []
    before: int | None = cursor
    skipped = looked = 0
    while len(out) < limit and looked < SCAN_BUDGET:
        page = await userindex.page(kv, user, before, STEP)
        for order in await get_orders(bus, page.ids):
            looked += 1
            if (status is None or order.status is status) and _match(order, venue, symbol):
                if skipped < offset:
                    skipped += 1
                elif len(out) < limit:
                    out.append(order)
        before = page.next_cursor
        if before is None:
            break
    return OrderPage(out, None, before)


def _match(order: Order, venue: str | None, symbol: str | None) -> bool:
    return (venue is None or order.venue == venue) and (symbol is None or order.symbol == symbol)


async def last_ticks(bus: Bus) -> dict[tuple[str, str], Tick]:
    """The last tick of every symbol (O(symbols))."""
    ticks = [
        codec.decode(e.value, Tick) for e in await scan(await bus.kv("prices"), ">") if e.value
    ]
    return {(t.venue, t.symbol): t for t in ticks}


async def last_tick(bus: Bus, venue: str, symbol: str) -> Tick | None:
    if not (is_token(venue) and is_token(symbol)):
        return None
    kv = await bus.kv("prices")
    try:
        entry = await kv.get(keys.price(venue, symbol))
    except KeyNotFoundError:
        return None
    return None if entry.value is None else codec.decode(entry.value, Tick)


async def account(bus: Bus, user: str, currency: str, start: Decimal) -> Account:
    kv = await bus.kv("orders")
    try:
        entry = await kv.get(keys.account(user))
    except KeyNotFoundError:
        return Account(currency=currency, balance=start)
    assert entry.value is not None
    return codec.decode(entry.value, Account)


async def order_counts(bus: Bus) -> dict[str, int]:
    """Orders by status, from the partitions' counters (P reads, never a scan)."""
    kv = await bus.kv("orders")
    totals: dict[str, int] = {str(s): 0 for s in OrderStatus}
    for part in range(bus.subjects.partitions):
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


def order_json(order: Order) -> dict[str, Any]:
    data: dict[str, Any] = codec.to_builtins(order)
    for internal in ("last_event", "events"):
        data.pop(internal, None)
    return data
