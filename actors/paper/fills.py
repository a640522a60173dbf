"""The paper fill model: pure functions from (order, tick) to a ``Fill`` or ``None``.

A *long* is a ``BUY`` order, a *short* a ``SELL`` order.  Buying takes the ask,
selling hits the bid:

=============  =====================  ============================  ========
what           triggers when          fills at                      slippage
=============  =====================  ============================  ========
MARKET entry   the needed side is     ask (long) / bid (short)      yes
               present
LIMIT entry    the limit is crossed:  the ask / bid itself (the     no
               ask <= L (long),       limit or better)
               bid >= L (short)
stop-loss      bid <= SL (long),      the first price through the   yes
               ask >= SL (short)      level, NOT the level: gaps
                                      hurt
take-profit    bid >= TP (long),      the bid / ask itself (the     no
               ask <= TP (short)      limit or better)
close          always (a side is      bid (long) / ask (short)      yes
               needed)
=============  =====================  ============================  ========

Slippage is ``price * bps / 10000`` and always goes against the trader (a buy
pays more, a sell gets less).  ``Fill.slippage`` is that absolute amount and
``Fill.gap`` is how far the touch already was through the order's own level
(``>= 0``): for a stop that is the loss a gap costs; for a limit or a
take-profit it is the price improvement.

A tick fills nothing on a side that is missing (``None``), not a finite
positive number, or when the tick is ``tradeable=False`` (``usable_bid`` /
``usable_ask`` say which sides count; the book uses the same two functions,
so a trigger from the book always yields a fill here).

If a stop and a take-profit would both trigger on one tick, the stop wins
(``exit_fill``): the conservative reading.  Both legs of a bracket watch the
same side of the book, so this takes an inverted bracket (a long's SL at or
above its TP), which the guard refuses; the rule is here for records that
slipped past it.

Arithmetic is exact: every operation runs in a context that traps
``Inexact``, so nothing is ever rounded or quantized silently; a result that
would need rounding raises ``decimal.Inexact`` instead.  The functions do not
look at ``order.status``: whether a fill is due is the state machine's call.

Not modelled: queue position (a limit fills as soon as the touch reaches it,
as if first in the queue), liquidity and partial fills (the whole quantity
fills at one price, whatever the size), commissions, financing and swaps, the
venue's price increments, and last-look or requotes.
"""

from __future__ import annotations

from decimal import (
    Decimal,
    localcontext,
)
from typing import Final, Literal

from rbot.bus.messages import Fill, Order, Side, Tick
from rbot.bus.pnl import EXACT

from .errors import BadInput, InvalidOrder

ZERO: Final = Decimal(0)
BPS: Final = Decimal(10_000)

Trigger = Literal["MARKET", "LIMIT", "STOP_LOSS", "TAKE_PROFIT", "CLOSE"]


# -- the two sides of a tick -------------------------------------------------


def _usable(price: Decimal | None, tick: Tick) -> Decimal | None:
    if price is None or not tick.tradeable or not price.is_finite() or price <= 0:
        return None
    return price


def usable_bid(tick: Tick) -> Decimal | None:
    """The bid if it can be traded on: present, finite, positive, tick tradeable."""
    return _usable(tick.bid, tick)


def usable_ask(tick: Tick) -> Decimal | None:
    """The ask if it can be traded on: present, finite, positive, tick tradeable."""
    return _usable(tick.ask, tick)


# -- helpers -------------------------------------------------------------------


def check_bps(slippage_bps: Decimal) -> Decimal:
    """``slippage_bps`` if it is in ``[0, 10000)``, else ``BadInput``."""
    if not slippage_bps.is_finite() or not ZERO <= slippage_bps < BPS:
        raise BadInput(f"slippage_bps must be in [0, 10000), got {slippage_bps}")
    return slippage_bps


def slippage_amount(price: Decimal, slippage_bps: Decimal) -> Decimal:
    """``price * bps / 10000``, exactly; ``bps`` must be in ``[0, 10000)``."""
    check_bps(slippage_bps)
    with localcontext(EXACT):
        return price * slippage_bps / BPS


def _against(price: Decimal, trade: Side, slippage: Decimal) -> Decimal:
    """Move ``price`` against whoever trades: a buy pays more, a sell gets less."""
    with localcontext(EXACT):
        return price + slippage if trade == "BUY" else price - slippage


def _through(a: Decimal, b: Decimal) -> Decimal:
    """``a - b`` exactly (callers pass ``a >= b``)."""
    with localcontext(EXACT):
        return a - b


def _spread(tick: Tick) -> Decimal | None:
    if tick.bid is None or tick.ask is None:
        return None
    return _through(tick.ask, tick.bid)


def _fill(
    tick: Tick,
    price: Decimal,
    trigger: Trigger,
    *,
    level: Decimal | None = None,
    slippage: Decimal = ZERO,
    gap: Decimal = ZERO,
) -> Fill:
    return Fill(
        price=price,
        trigger=trigger,
        level=level,
        tick_bid=tick.bid,
        tick_ask=tick.ask,
        tick_time=tick.time,
        tick_seq=tick.seq,
        spread=_spread(tick),
        slippage=slippage,
        gap=gap,
        time=tick.time,
    )


def _slipped(tick: Tick, price: Decimal, trade: Side, bps: Decimal, trigger: Trigger) -> Fill:
    """A fill at ``price`` moved against a ``trade`` by ``bps``."""
    slip = slippage_amount(price, bps)
    return _fill(tick, _against(price, trade, slip), trigger, slippage=slip)


def entry_level(order: Order) -> Decimal | None:
    """A LIMIT order's limit (``limit_price``, else ``entry_price``); ``None`` for MARKET."""
    if order.order_type == "MARKET":
        return None
    level = order.limit_price if order.limit_price is not None else order.entry_price
    if level is None:
        raise InvalidOrder(f"LIMIT order {order.id} has neither limit_price nor entry_price")
    return level


def _opposite(side: Side) -> Side:
    return "SELL" if side == "BUY" else "BUY"


# -- entries -----------------------------------------------------------------


def market_entry_fill(order: Order, tick: Tick, slippage_bps: Decimal) -> Fill | None:
    """A market entry: the far side (ask to buy, bid to sell) plus slippage."""
    check_bps(slippage_bps)
    price = usable_ask(tick) if order.side == "BUY" else usable_bid(tick)
    if price is None:
        return None
    return _slipped(tick, price, order.side, slippage_bps, "MARKET")


def limit_entry_fill(order: Order, tick: Tick) -> Fill | None:
    """A limit entry, only once crossed, at the touch (the limit or better)."""
    level = entry_level(order)
    if level is None:
        raise InvalidOrder(f"order {order.id} is not a LIMIT order")
    if order.side == "BUY":
        ask = usable_ask(tick)
        if ask is None or ask > level:
            return None
        return _fill(tick, ask, "LIMIT", level=level, gap=_through(level, ask))
    bid = usable_bid(tick)
    if bid is None or bid < level:
        return None
    return _fill(tick, bid, "LIMIT", level=level, gap=_through(bid, level))


def entry_fill(order: Order, tick: Tick, slippage_bps: Decimal) -> Fill | None:
    """The entry fill of a pending order on this tick, by its ``order_type``."""
    check_bps(slippage_bps)
    if order.order_type == "MARKET":
        return market_entry_fill(order, tick, slippage_bps)
    return limit_entry_fill(order, tick)


# -- exits -----------------------------------------------------------------


def stop_loss_fill(order: Order, tick: Tick, slippage_bps: Decimal) -> Fill | None:
    """The stop: long on the bid (``bid <= SL``), short on the ask (``ask >= SL``).

    Fills at the tick's own price, already through the level by ``gap``, then
    slips further against the trader.
    """
    check_bps(slippage_bps)
    level = order.stop_loss
    if order.side == "BUY":
        bid = usable_bid(tick)
        if bid is None or bid > level:
            return None
        price, gap = bid, _through(level, bid)
    else:
        ask = usable_ask(tick)
        if ask is None or ask < level:
            return None
        price, gap = ask, _through(ask, level)
    slip = slippage_amount(price, slippage_bps)
    exit_price = _against(price, _opposite(order.side), slip)
    return _fill(tick, exit_price, "STOP_LOSS", level=level, slippage=slip, gap=gap)


def take_profit_fill(order: Order, tick: Tick) -> Fill | None:
    """The take-profit: long when ``bid >= TP`` at the bid, short when ``ask <= TP``
    at the ask (the limit or better; no slippage)."""
    level = order.take_profit
    if order.side == "BUY":
        bid = usable_bid(tick)
        if bid is None or bid < level:
            return None
        return _fill(tick, bid, "TAKE_PROFIT", level=level, gap=_through(bid, level))
    ask = usable_ask(tick)
    if ask is None or ask > level:
        return None
    return _fill(tick, ask, "TAKE_PROFIT", level=level, gap=_through(level, ask))


def exit_fill(order: Order, tick: Tick, slippage_bps: Decimal) -> Fill | None:
    """The bracket's exit on this tick, if any; the stop wins if both legs trigger."""
    stop = stop_loss_fill(order, tick, slippage_bps)
    return stop if stop is not None else take_profit_fill(order, tick)


def close_fill(order: Order, tick: Tick, slippage_bps: Decimal) -> Fill | None:
    """A close at market (``CLIENT_REQUEST``, ``TIME_IN_FORCE_EXPIRED``): a long
    sells at the bid, a short buys at the ask, both with slippage."""
    check_bps(slippage_bps)
    exit_side = _opposite(order.side)
    price = usable_bid(tick) if exit_side == "SELL" else usable_ask(tick)
    if price is None:
        return None
    return _slipped(tick, price, exit_side, slippage_bps, "CLOSE")
