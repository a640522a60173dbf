"""The paper engine's pure core: books, the fill model and the state machine together.

No I/O.  Each method takes the current facts (an order, a tick, a time) and
returns ``Change`` values: the order after the change and the event that tells
it.  The executor actor persists each change (KV compare-and-set), publishes
its event and only then acknowledges the command that caused it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

import msgspec

from rbot.bus import codec
from rbot.bus.active import deadline
from rbot.bus.messages import Fill, Order, OrderStatus, Tick
from rbot.bus.pnl import Rate, convert, realized_pnl

from .book import Book, TriggerKind
from .fills import close_fill, entry_fill, stop_loss_fill, take_profit_fill
from .state import can_transition


@dataclass(frozen=True, slots=True)
class Change:
    order: Order
    event: str  # oco_placed | order_filled | order_cancelled | order_expired | position_closed
    fill: Fill | None = None
    reason: str | None = None


def _evolve(order: Order, event: str, **changes: object) -> Order:
    return msgspec.structs.replace(order, last_event=event, events=order.events + 1, **changes)


def _no_rate(src: str, dst: str) -> Decimal | None:
    return None


REDUCE_ONLY = "REDUCE_ONLY"  # the reason a reduce-only entry that would grow the position ends


class Engine:
    def __init__(self, slippage_bps: Decimal, account_currency: str, rate: Rate = _no_rate) -> None:
        self.slippage_bps = slippage_bps
        self.account_currency = account_currency
        self.rate = rate
        self.books: dict[tuple[str, str], Book] = {}
        self.orders: dict[str, Order] = {}  # active (PENDING / OPEN) orders
        self.last_tick: dict[tuple[str, str], Tick] = {}

    def book(self, venue: str, symbol: str) -> Book:
        key = (venue, symbol)
        b = self.books.get(key)
        if b is None:
            b = self.books[key] = Book(venue, symbol)
        return b

    # -- loading and placing ---------------------------------------------
    def load(self, order: Order) -> None:
        """Put an active order from KV back into its book (executor restart)."""
        if order.id in self.orders:
            return
        if order.status is OrderStatus.PENDING:
            self.book(order.venue, order.symbol).add_pending(order)
        elif order.status is OrderStatus.OPEN:
            self.book(order.venue, order.symbol).add_open(order)
        else:
            return
        self.orders[order.id] = order

    def place(self, order: Order) -> Change:
        placed = _evolve(order, "oco_placed", status=OrderStatus.PENDING)
        self.load(placed)
        self.orders[placed.id] = placed
        return Change(placed, "oco_placed")

    def update(self, order: Order) -> None:
        """Record the persisted version of an active order (or drop a finished one)."""
        if order.status in (OrderStatus.PENDING, OrderStatus.OPEN):
            self.orders[order.id] = order
        else:
            self.orders.pop(order.id, None)

    # -- ticks -------------------------------------------------------------
    def on_tick(self, tick: Tick) -> list[Change]:
        self.last_tick[(tick.venue, tick.symbol)] = tick
        book = self.books.get((tick.venue, tick.symbol))
        if book is None or not len(book):
            return []
        changes: list[Change] = []
        for _ in range(2):  # a new bracket may trigger on the tick that opened it
            triggers = book.on_tick(tick)
            if not triggers:
                break
            for trig in triggers:
                order = self.orders.get(trig.order_id, trig.order)
                if trig.kind is TriggerKind.ENTRY:
                    if order.reduce_only and not self._reduces(order):
                        changes.append(
                            self._end_pending(
                                order, OrderStatus.CANCELLED, "order_cancelled", REDUCE_ONLY,
                                in_book=False,
                            )
                        )  # fmt: skip
                        continue
                    fill = entry_fill(order, tick, self.slippage_bps)
                    if fill is None:  # the book said yes, the fill model no: keep it
                        book.add_pending(order)
                        continue
                    opened = _evolve(
                        order,
                        "order_filled",
                        status=OrderStatus.OPEN,
                        entry_fill=fill,
                        opened_at=fill.time,
                    )
                    book.add_open(opened)
                    self.orders[opened.id] = opened
                    changes.append(Change(opened, "order_filled", fill))
                else:
                    if trig.kind is TriggerKind.STOP_LOSS:
                        fill = stop_loss_fill(order, tick, self.slippage_bps)
                        reason = "STOP_LOSS_ORDER"
                    else:
                        fill = take_profit_fill(order, tick)
                        reason = "TAKE_PROFIT_ORDER"
                    if fill is None:
                        book.add_open(order)
                        continue
                    changes.append(self._close(order, fill, reason))
        return changes

    def net_position(self, user: str, venue: str, symbol: str) -> Decimal:
        """The user's net open quantity on a symbol (signed), from this partition's books."""
        net = Decimal(0)
        for o in self.orders.values():
            if (o.user, o.venue, o.symbol) == (
                user,
                venue,
                symbol,
            ) and o.status is OrderStatus.OPEN:
                net += o.qty if o.side == "BUY" else -o.qty
        return net

    def _reduces(self, order: Order) -> bool:
        """A reduce-only entry may only shrink the net position, never grow or flip it."""
        net = self.net_position(order.user, order.venue, order.symbol)
        signed = order.qty if order.side == "BUY" else -order.qty
        return net != 0 and (net > 0) != (signed > 0) and abs(signed) <= abs(net)

    def _close(self, order: Order, fill: Fill, reason: str) -> Change:
        closing = msgspec.structs.replace(order, exit_fill=fill, closing=None)
        pnl = convert(
            realized_pnl(closing, self.account_currency), self.account_currency, self.rate
        )
        closed = _evolve(
            closing,
            "position_closed",
            status=OrderStatus.CLOSED,
            closed_at=fill.time,
            close_reason=reason,
            realized_pnl=pnl.amount,
            currency=pnl.currency,
        )
        self.orders.pop(order.id, None)
        return Change(closed, "position_closed", fill, reason)

    # -- commands ----------------------------------------------------------
    def cancel(self, order_id: str, reason: str = "CLIENT_REQUEST") -> Change | None:
        """Cancel a pending order or close an open position at the last tick.

        None: nothing to do (unknown, already final, or no price to close at yet).
        """
        order = self.orders.get(order_id)
        if order is None:
            return None
        if order.status is OrderStatus.PENDING:
            return self._end_pending(order, OrderStatus.CANCELLED, "order_cancelled", reason)
        tick = self.last_tick.get((order.venue, order.symbol))
        fill = None if tick is None else close_fill(order, tick, self.slippage_bps)
        if fill is None:
            return None
        self.book(order.venue, order.symbol).remove(order.id)
        return self._close(order, fill, reason)

    def expire(self, order_id: str, now: dt.datetime) -> Change | None:
        """Expire a pending order past its TTL, or close a position held too long."""
        order = self.orders.get(order_id)
        if order is None:
            return None
        when = deadline(order)  # the one definition (the reaper's markers carry it too)
        if order.status is OrderStatus.PENDING:
            if when is not None and now < when:
                return None
            return self._end_pending(
                order, OrderStatus.EXPIRED, "order_expired", "TIME_IN_FORCE_EXPIRED"
            )
        if when is None or now < when:
            return None
        return self.cancel(order_id, "TIME_IN_FORCE_EXPIRED")

    def _end_pending(
        self, order: Order, to: OrderStatus, event: str, reason: str, *, in_book: bool = True
    ) -> Change:
        assert can_transition(order.status, to)
        if in_book:
            self.book(order.venue, order.symbol).remove(order.id)
        self.orders.pop(order.id, None)
        done = _evolve(order, event, status=to, closed_at=codec.now_iso(), close_reason=reason)
        return Change(done, event, None, reason)
