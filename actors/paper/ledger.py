"""Booking an event's effect on the user's position and account, at most once.

Each record keeps the ORDERS sequence of the last event booked into it (per
symbol for accounts: one partition writes each symbol, in order), so a booking
repeated after a crash is a no-op and one a crash cut off is done once.
"""

from __future__ import annotations

from decimal import Decimal

from nats.js.kv import KeyValue

from rbot.bus import keys, kvcas
from rbot.bus.messages import Account, Order, Position


async def book(
    kv: KeyValue, order: Order, event: str, seq: int, currency: str, start: Decimal
) -> None:
    """The effect of ``event`` (published as ORDERS ``seq``) for ``order``."""
    if event == "order_filled":
        await _position(kv, order, +1, seq)
    elif event == "position_closed":
        await _position(kv, order, -1, seq)
        await _pnl(kv, order, seq, currency, start)


async def _position(kv: KeyValue, order: Order, direction: int, seq: int) -> None:
    signed = order.qty if order.side == "BUY" else -order.qty
    delta = signed * direction

    def apply(pos: Position) -> Position | None:
        if seq <= pos.last_seq:
            return None  # booked before a crash
        pos.qty += delta
        pos.last_seq = seq
        return pos

    await kvcas.update(
        kv, keys.position(order.user, order.venue, order.symbol), Position, apply, Position
    )


async def _pnl(kv: KeyValue, order: Order, seq: int, currency: str, start: Decimal) -> None:
    pnl = order.realized_pnl or Decimal(0)
    market = f"{order.venue}.{order.symbol}"

    def apply(acct: Account) -> Account | None:
        if seq <= acct.booked.get(market, 0):
            return None  # booked before a crash
        if order.currency == acct.currency:
            acct.balance += pnl
            acct.realized_pnl += pnl
        else:  # no rate at close: kept, by currency, never dropped
            acct.unconverted[order.currency] = (
                acct.unconverted.get(order.currency, Decimal(0)) + pnl
            )
        acct.trades += 1
        acct.booked[market] = seq
        return acct

    await kvcas.update(
        kv, keys.account(order.user), Account, apply,
        lambda: Account(currency=currency, balance=start),
    )  # fmt: skip
