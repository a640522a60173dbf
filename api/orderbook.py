"""Reads of order state for the API: KV ``orders`` and ``prices``, never the executor's objects."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from nats.js.errors import KeyNotFoundError

from rbot.bus import codec, keys
from rbot.bus.connection import Bus
from rbot.bus.kvscan import scan
from rbot.bus.messages import Account, Order, OrderStatus, Tick
from rbot.bus.subjects import is_token


async def get_order(bus: Bus, order_id: str) -> Order | None:
    if not is_token(order_id):
        return None
    kv = await bus.kv("orders")
    try:
        entry = await kv.get(keys.order(order_id))
    except KeyNotFoundError:
        return None
    return None if entry.value is None else codec.decode(entry.value, Order)


async def all_orders(bus: Bus) -> list[Order]:
    """Every order (a full read of ``o.*``: fine for a paper desk, indexed later)."""
    entries = await scan(await bus.kv("orders"), keys.orders_all())
    return [codec.decode(e.value, Order) for e in entries if e.value]


async def last_ticks(bus: Bus) -> dict[tuple[str, str], Tick]:
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


def order_json(order: Order) -> dict[str, Any]:
    data: dict[str, Any] = codec.to_builtins(order)
    for internal in ("last_event", "events"):
        data.pop(internal, None)
    return data


def active(orders: Iterable[Order]) -> list[Order]:
    return [o for o in orders if o.status in (OrderStatus.PENDING, OrderStatus.OPEN)]
