"""A per-symbol trigger book: a tick costs O(log n + triggers), never a scan.

The book holds a symbol's *pending* entries and *open* brackets, keyed by order
id.  Every price-triggered leg sits on one of six sorted ladders; on each
ladder the legs a tick reaches are always a prefix, found with one ``bisect``:

================  ================  ==========================
ladder            watches           triggers when
================  ================  ==========================
long stop-loss    bid               bid <= level
long take-profit  bid               bid >= level
short stop-loss   ask               ask >= level
short take-profit ask               ask <= level
buy limit entry   ask               ask <= level
sell limit entry  bid               bid >= level
================  ================  ==========================

Market entries wait in two FIFOs (buys need an ask, sells a bid) and all go on
the first tick with their side.  A side counts only if ``fills.usable_bid`` /
``fills.usable_ask`` say so (present, positive, tick tradeable), so a trigger
from here always gets a fill from ``fills``.

``on_tick`` removes what it triggers and returns it, in this order: stops
(long, then short), take-profits (long, then short), entries (markets in
arrival order, then buy limits, then sell limits).  Within a ladder, legs come
in the order the market reaches them (a falling bid hits the highest long stop
first), ties by insertion.  A triggered bracket leaves the book whole (OCO):
the other leg goes with it, and if a (malformed, inverted) bracket has both
legs reached on one tick, the stop wins.

The caller computes the fill (``fills.entry_fill`` / ``stop_loss_fill`` /
``take_profit_fill``) and, for an entry, moves the order to ``OPEN`` and calls
``add_open``.  It may then call ``on_tick`` again with the same tick: whatever
that tick could trigger is already gone, so only the new brackets are checked.
"""

from __future__ import annotations

import enum
import heapq
import itertools
import sys
from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

from rbot.bus.messages import Order, OrderStatus, Side, Tick

from .errors import BadInput, DuplicateOrder, InvalidOrder
from .fills import entry_level, usable_ask, usable_bid

_LAST: Final = sys.maxsize  # above every insertion number

# (signed level, insertion number, order id)
_Key = tuple[Decimal, int, str]


class TriggerKind(enum.StrEnum):
    ENTRY = "ENTRY"
    STOP_LOSS = "STOP_LOSS"
    TAKE_PROFIT = "TAKE_PROFIT"


@dataclass(frozen=True, slots=True)
class Trigger:
    """An order a tick reached, already out of the book."""

    order_id: str
    kind: TriggerKind
    order: Order


class _Ladder:
    """Levels that trigger once the watched price reaches them from one direction.

    ``sign=+1``: triggers when ``level <= price``; ``sign=-1``: when
    ``level >= price``.  Keys hold ``sign * level`` so that, either way, the
    reached legs are a prefix in the order the market reaches them.
    """

    __slots__ = ("_keys", "_sign")

    def __init__(self, sign: int) -> None:
        self._sign = sign
        self._keys: list[_Key] = []

    def _signed(self, price: Decimal) -> Decimal:
        return price if self._sign > 0 else price.copy_negate()  # exact, no context

    def add(self, level: Decimal, seq: int, order_id: str) -> _Key:
        key = (self._signed(level), seq, order_id)
        insort(self._keys, key)
        return key

    def discard(self, key: _Key) -> None:
        i = bisect_left(self._keys, key)
        if i < len(self._keys) and self._keys[i] == key:
            del self._keys[i]

    def pop_reached(self, price: Decimal) -> list[str]:
        cut = bisect_right(self._keys, (self._signed(price), _LAST, ""))
        reached = [order_id for _, _, order_id in self._keys[:cut]]
        del self._keys[:cut]
        return reached

    def __len__(self) -> int:
        return len(self._keys)


def _price(value: Decimal, what: str, order: Order) -> Decimal:
    if not value.is_finite() or value <= 0:
        raise InvalidOrder(f"order {order.id}: {what} must be a positive price, got {value}")
    return value


class Book:
    """Pending entries and open brackets of one symbol, keyed by order id."""

    def __init__(self, venue: str, symbol: str) -> None:
        self.venue = venue
        self.symbol = symbol
        self._seq = itertools.count()
        self._orders: dict[str, Order] = {}
        # an order's legs as (ladder number, key): plain tuples of atoms, which the
        # garbage collector stops tracking, so 100k resting orders do not make every
        # full collection walk 100k containers
        self._legs: dict[str, tuple[tuple[int, _Key], ...]] = {}
        self._market: dict[Side, dict[str, int]] = {"BUY": {}, "SELL": {}}
        self._long_sl = _Ladder(-1)
        self._long_tp = _Ladder(+1)
        self._short_sl = _Ladder(+1)
        self._short_tp = _Ladder(-1)
        self._buy_limit = _Ladder(-1)
        self._sell_limit = _Ladder(+1)
        self._ladders = (
            self._long_sl, self._long_tp, self._short_sl, self._short_tp,
            self._buy_limit, self._sell_limit,
        )  # fmt: skip

    # -- inspection --------------------------------------------------------
    def __len__(self) -> int:
        return len(self._orders)

    def __contains__(self, order_id: object) -> bool:
        return order_id in self._orders

    def __iter__(self) -> Iterator[str]:
        return iter(self._orders)

    def get(self, order_id: str) -> Order | None:
        return self._orders.get(order_id)

    def orders(self) -> list[Order]:
        """Every order in the book, in the order it was (last) added."""
        return list(self._orders.values())

    def depth(self) -> Mapping[str, int]:
        """How many legs wait on each ladder and queue (for metrics and tests)."""
        return {
            "long_sl": len(self._long_sl),
            "long_tp": len(self._long_tp),
            "short_sl": len(self._short_sl),
            "short_tp": len(self._short_tp),
            "buy_limit": len(self._buy_limit),
            "sell_limit": len(self._sell_limit),
            "market_buy": len(self._market["BUY"]),
            "market_sell": len(self._market["SELL"]),
        }

    # -- changes -----------------------------------------------------------
    def _admit(self, order: Order, status: OrderStatus) -> int:
        if order.venue != self.venue or order.symbol != self.symbol:
            raise InvalidOrder(
                f"order {order.id} is for {order.venue}/{order.symbol}, "
                f"this book is {self.venue}/{self.symbol}"
            )
        if order.status != status:
            raise InvalidOrder(f"order {order.id} is {order.status}, expected {status}")
        if order.id in self._orders:
            raise DuplicateOrder(f"order {order.id} is already in the book")
        return next(self._seq)

    def add_pending(self, order: Order) -> None:
        """Book a ``PENDING`` order's entry: a market in its FIFO, a limit on a ladder."""
        seq = self._admit(order, OrderStatus.PENDING)
        level = entry_level(order)
        legs: tuple[tuple[int, _Key], ...] = ()
        if level is None:
            self._market[order.side][order.id] = seq
        else:
            ladder = self._buy_limit if order.side == "BUY" else self._sell_limit
            legs = (
                (
                    self._ladders.index(ladder),
                    ladder.add(_price(level, "limit", order), seq, order.id),
                ),
            )
        self._orders[order.id] = order
        self._legs[order.id] = legs

    def add_open(self, order: Order) -> None:
        """Arm an ``OPEN`` order's bracket: its stop-loss and take-profit legs (OCO)."""
        seq = self._admit(order, OrderStatus.OPEN)
        sl = _price(order.stop_loss, "stop_loss", order)
        tp = _price(order.take_profit, "take_profit", order)
        if order.side == "BUY":
            stop, take = self._long_sl, self._long_tp
        else:
            stop, take = self._short_sl, self._short_tp
        self._legs[order.id] = (
            (self._ladders.index(stop), stop.add(sl, seq, order.id)),
            (self._ladders.index(take), take.add(tp, seq, order.id)),
        )
        self._orders[order.id] = order

    def remove(self, order_id: str) -> Order | None:
        """Take an order out with all its legs; ``None`` if it was not here."""
        order = self._orders.pop(order_id, None)
        if order is None:
            return None
        for number, key in self._legs.pop(order_id):
            self._ladders[number].discard(key)
        self._market[order.side].pop(order_id, None)
        return order

    # -- ticks -------------------------------------------------------------
    def on_tick(self, tick: Tick) -> list[Trigger]:
        """Remove and return every order this tick triggers (see the module doc)."""
        if tick.venue != self.venue or tick.symbol != self.symbol:
            raise BadInput(
                f"tick for {tick.venue}/{tick.symbol} sent to the {self.venue}/{self.symbol} book"
            )
        bid, ask = usable_bid(tick), usable_ask(tick)
        return [*self._exits(bid, ask), *self._entries(bid, ask)]

    def _take(self, order_ids: list[str], kind: TriggerKind) -> list[Trigger]:
        taken = []
        for order_id in order_ids:
            order = self.remove(order_id)  # drops the other leg too (OCO)
            if order is not None:
                taken.append(Trigger(order_id, kind, order))
        return taken

    def _exits(self, bid: Decimal | None, ask: Decimal | None) -> list[Trigger]:
        # stops first: an order whose stop triggers loses its take-profit leg
        # before the take-profit ladders are looked at, so the stop wins.
        stops = _reached((self._long_sl, bid), (self._short_sl, ask))
        triggers = self._take(stops, TriggerKind.STOP_LOSS)
        takes = _reached((self._long_tp, bid), (self._short_tp, ask))
        return triggers + self._take(takes, TriggerKind.TAKE_PROFIT)

    def _entries(self, bid: Decimal | None, ask: Decimal | None) -> list[Trigger]:
        markets = [self._drain_market("BUY", ask), self._drain_market("SELL", bid)]
        in_arrival = [order_id for _, order_id in heapq.merge(*markets)]
        limits = _reached((self._buy_limit, ask), (self._sell_limit, bid))
        return self._take(in_arrival + limits, TriggerKind.ENTRY)

    def _drain_market(self, side: Side, price: Decimal | None) -> list[tuple[int, str]]:
        queue = self._market[side]
        if price is None or not queue:
            return []
        drained = [(seq, order_id) for order_id, seq in queue.items()]
        queue.clear()
        return drained


def _reached(*ladders: tuple[_Ladder, Decimal | None]) -> list[str]:
    reached: list[str] = []
    for ladder, price in ladders:
        if price is not None:
            reached += ladder.pop_reached(price)
    return reached
