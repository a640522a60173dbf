"""Profit and loss (the one place for mark and P&L maths, executor and API alike): exact in the quote currency, converted to the account's when possible.

A position's P&L is earned in the symbol's *quote* currency (USD for
``EUR_USD`` and ``BTC-USD``, JPY for ``USD_JPY``)::

    long   (exit - entry) * qty
    short  (entry - exit) * qty

That part is exact (no rounding, no quantizing; an operation that would need
rounding raises ``decimal.Inexact``).  To the account currency:

- quote == account: as is (``EUR_USD`` with a USD account);
- base == account: divided by the exit price (``USD_JPY`` with a USD account:
  JPY / (JPY per USD) = USD).  This is the one inexact step; it is rounded to
  ``CONVERSION.prec`` (34) significant digits and never quantized to cents;
- otherwise (``EUR_GBP`` with a USD account): left in the quote currency, and
  the returned ``Money.currency`` says so; ``convert`` then takes it to the
  account currency through a third rate (``GBP_USD`` or ``USD_GBP`` at mid),
  found by ``rate_from_ticks`` in the last ticks of every symbol.

Unrealized P&L marks a long at the bid and a short at the ask: the price it
could be closed at now, before slippage.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from decimal import (
    Context,
    Decimal,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
    localcontext,
)
from typing import Final, NamedTuple

from .messages import Order, OrderStatus, Side, Tick

# exact decimal arithmetic: an operation that would round raises instead
EXACT: Final = Context(prec=60, traps=[Inexact, InvalidOperation, DivisionByZero, Overflow])


class PnlError(ValueError):
    """An input the P&L maths cannot handle (a symbol, a price, an order without fills)."""


BadInput = InvalidOrder = PnlError

CONVERSION: Final = Context(prec=34)
_SYMBOL_RE: Final = re.compile(r"^([A-Za-z0-9]+)[_-]([A-Za-z0-9]+)$")


class Money(NamedTuple):
    amount: Decimal
    currency: str


def split_symbol(symbol: str) -> tuple[str, str]:
    """``"EUR_USD"`` / ``"BTC-USD"`` -> ``("EUR", "USD")`` (upper case)."""
    m = _SYMBOL_RE.match(symbol)
    if m is None:
        raise BadInput(f"cannot split symbol {symbol!r} into base and quote")
    return m.group(1).upper(), m.group(2).upper()


def quote_pnl(side: Side, entry_price: Decimal, exit_price: Decimal, qty: Decimal) -> Decimal:
    """The P&L of ``qty`` bought (``BUY``) or sold (``SELL``) at ``entry_price``
    and closed at ``exit_price``, in the quote currency, exactly."""
    with localcontext(EXACT):
        move = exit_price - entry_price if side == "BUY" else entry_price - exit_price
        return move * qty


def to_account(amount: Decimal, symbol: str, price: Decimal, account_currency: str) -> Money:
    """Convert a quote-currency ``amount`` of ``symbol`` with the rate ``price``."""
    base, quote = split_symbol(symbol)
    account = account_currency.upper()
    if quote == account:
        return Money(amount, account)
    if base == account:
        if not price.is_finite() or price <= 0:
            raise BadInput(f"cannot convert at price {price}")
        with localcontext(CONVERSION):
            return Money(amount / price, account)
    return Money(amount, quote)


def realized_pnl(order: Order, account_currency: str | None = None) -> Money:
    """A closed order's P&L from its entry and exit fills, in the account currency
    (``order.currency`` unless given) where the symbol allows it."""
    if order.entry_fill is None or order.exit_fill is None:
        raise InvalidOrder(f"order {order.id} has no entry and exit fill")
    exit_price = order.exit_fill.price
    amount = quote_pnl(order.side, order.entry_fill.price, exit_price, order.qty)
    return to_account(amount, order.symbol, exit_price, account_currency or order.currency)


def mark_price(order: Order, tick: Tick) -> Decimal | None:
    """What an open position could close at: a long's bid, a short's ask."""
    return tick.bid if order.side == "BUY" else tick.ask


def unrealized_pnl(order: Order, tick: Tick, account_currency: str | None = None) -> Money | None:
    """An open order's P&L marked at this tick; ``None`` unless it is ``OPEN``
    with an entry fill and the tick has the side it marks at."""
    mark = mark_price(order, tick)
    if order.status != OrderStatus.OPEN or order.entry_fill is None or mark is None:
        return None
    amount = quote_pnl(order.side, order.entry_fill.price, mark, order.qty)
    return to_account(amount, order.symbol, mark, account_currency or order.currency)


Rate = Callable[[str, str], Decimal | None]  # (from, to) -> units of ``to`` per ``from``


def rate_from_ticks(ticks: Mapping[tuple[str, str], Tick], src: str, dst: str) -> Decimal | None:
    """``dst`` per ``src`` at mid, from a direct (``SRC_DST``) or inverse pair's last tick."""
    src, dst = src.upper(), dst.upper()
    if src == dst:
        return Decimal(1)
    for (_venue, symbol), tick in ticks.items():
        mid = tick.mid
        if mid is None or mid <= 0:
            continue
        try:
            base, quote = split_symbol(symbol)
        except BadInput:
            continue
        if (base, quote) == (src, dst):
            return mid
        if (base, quote) == (dst, src):
            with localcontext(CONVERSION):
                return Decimal(1) / mid
    return None


def convert(money: Money, account_currency: str, rate: Rate) -> Money:
    """``money`` in the account currency where a rate is known (else unchanged)."""
    account = account_currency.upper()
    if money.currency.upper() == account:
        return money
    factor = rate(money.currency, account)
    if factor is None:
        return money
    with localcontext(CONVERSION):
        return Money(money.amount * factor, account)
