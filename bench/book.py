"""3. The paper book (pure Python, no I/O).

* A tick that triggers nothing on a book of 10k orders (2.5k pending buy
  limits, 2.5k pending sell limits, 2.5k open longs, 2.5k open shorts, levels
  seeded-random around the market) vs a linear scan over the same orders that
  checks every trigger condition (what an executor without the ladders does),
  both with ``timeit``.  Also the 10k book against a 1k book: a flat ratio is
  the O(log n) claim.
* ``Engine.on_tick`` with a tick that fills k pending limit entries (k = 1, 10,
  100) on the same 10k book, vs the same engine's quiet tick: the fill model,
  the state change and arming each new bracket, per tick.  The k orders are put
  back (untimed) before every repetition.
"""

from __future__ import annotations

import gc
import random
import statistics
import time
import timeit
from collections.abc import Callable
from decimal import Decimal

from rbot.actors.paper.book import Book
from rbot.actors.paper.engine import Engine
from rbot.bus.messages import Order, OrderStatus, Side, Tick

from .common import Row, Section

VENUE, SYMBOL = "oanda", "EUR_USD"
BID, ASK = Decimal("1.10000"), Decimal("1.10002")
PIP = Decimal("0.00001")
QUIET = Tick(venue=VENUE, symbol=SYMBOL, bid=BID, ask=ASK, time="2026-01-01T00:00:00Z", seq=1)
SIZE = 10_000
KS = (1, 10, 100)


def _order(oid: str, side: Side, status: OrderStatus, sl: Decimal, tp: Decimal,
           limit: Decimal | None) -> Order:  # fmt: skip
    return Order(
        id=oid,
        user="bench",
        venue=VENUE,
        symbol=SYMBOL,
        side=side,
        order_type="LIMIT" if limit is not None else "MARKET",
        qty=Decimal(1000),
        stop_loss=sl,
        take_profit=tp,
        limit_price=limit,
        status=status,
        created_at="2026-01-01T00:00:00Z",
    )


def make_orders(n: int, seed: int = 7) -> list[Order]:
    """n orders, none of which the QUIET tick reaches: every level is 5..5000 pips away."""
    rnd = random.Random(seed)

    def away() -> Decimal:
        return PIP * rnd.randint(5, 5000)

    out: list[Order] = []
    for i in range(n):
        kind = i % 4
        if kind == 0:  # pending buy limit below the ask
            lim = ASK - away()
            out.append(_order(f"b{i}", "BUY", OrderStatus.PENDING, lim - away(), lim + away(), lim))
        elif kind == 1:  # pending sell limit above the bid
            lim = BID + away()
            out.append(
                _order(f"s{i}", "SELL", OrderStatus.PENDING, lim + away(), lim - away(), lim)
            )
        elif kind == 2:  # open long: SL below the bid, TP above
            out.append(_order(f"l{i}", "BUY", OrderStatus.OPEN, BID - away(), BID + away(), None))
        else:  # open short: SL above the ask, TP below
            out.append(_order(f"h{i}", "SELL", OrderStatus.OPEN, ASK + away(), ASK - away(), None))
    return out


def make_book(orders: list[Order]) -> Book:
    book = Book(VENUE, SYMBOL)
    for o in orders:
        (book.add_pending if o.status is OrderStatus.PENDING else book.add_open)(o)
    return book


def linear_scan(orders: list[Order], tick: Tick) -> list[str]:
    """The baseline: look at every order and test its trigger conditions."""
    bid, ask = tick.bid, tick.ask
    hit = []
    for o in orders:
        if o.status is OrderStatus.PENDING:
            if o.limit_price is None:
                if (ask if o.side == "BUY" else bid) is not None:
                    hit.append(o.id)
            elif o.side == "BUY":
                if ask is not None and ask <= o.limit_price:
                    hit.append(o.id)
            elif bid is not None and bid >= o.limit_price:
                hit.append(o.id)
        elif o.side == "BUY":
            if bid is not None and (bid <= o.stop_loss or bid >= o.take_profit):
                hit.append(o.id)
        elif ask is not None and (ask >= o.stop_loss or ask <= o.take_profit):
            hit.append(o.id)
    return hit


def _per_call_us(
    fns: list[Callable[[], object]], repeat: int, budget_s: float = 0.1
) -> list[float]:
    """Median us per call of each of ``fns``, timed with ``timeit`` in interleaved
    rounds (a, b, c, a, b, c ...) so that drift on a shared machine hits all alike."""
    timers = [timeit.Timer(fn) for fn in fns]
    numbers = []
    for t in timers:
        number, _ = t.autorange()  # also the warm-up
        numbers.append(max(1, int(number * budget_s / 0.2)))
    runs: list[list[float]] = [[] for _ in fns]
    for _ in range(repeat):
        for k, (t, number) in enumerate(zip(timers, numbers, strict=True)):
            runs[k].append(t.timeit(number) / number * 1e6)
    return [statistics.median(r) for r in runs]


def _fills_tick_us(engine: Engine, fresh: list[Order], reps: int) -> tuple[float, float]:
    """Median times of ``engine.on_tick(QUIET)`` filling ``fresh``, and of the same
    tick again right after (it fills nothing: the same book, the same method).
    ``fresh`` is put back (untimed) before every repetition."""
    book = engine.book(VENUE, SYMBOL)
    fills, quiet = [], []
    pc = time.perf_counter
    gc.collect()
    gc.disable()
    try:
        for i in range(reps + 3):
            for o in fresh:  # restore: untimed
                if book.remove(o.id) is not None:
                    engine.orders.pop(o.id, None)
                engine.load(o)
            t0 = pc()
            changes = engine.on_tick(QUIET)
            t1 = pc()
            again = engine.on_tick(QUIET)
            t2 = pc()
            if len(changes) != len(fresh) or again:
                raise AssertionError(f"expected {len(fresh)} fills, got {len(changes)}, {again}")
            if i >= 3:  # the first three are warm-up
                fills.append(t1 - t0)
                quiet.append(t2 - t1)
    finally:
        gc.enable()
    return statistics.median(fills) * 1e6, statistics.median(quiet) * 1e6


def run(quick: bool = False) -> Section:
    repeat = 5 if quick else 9
    sec = Section("3. Paper book: quiet tick and fills")
    orders = make_orders(SIZE)
    book = make_book(orders)
    small = make_book(make_orders(SIZE // 10))
    assert not book.on_tick(QUIET) and not linear_scan(orders, QUIET)
    assert len(book) == SIZE

    engine = Engine(Decimal(0), "USD")
    for o in orders:
        engine.load(o)
    book_us, scan_us, small_us = _per_call_us(
        [
            lambda: book.on_tick(QUIET),
            lambda: linear_scan(orders, QUIET),
            lambda: small.on_tick(QUIET),
        ],
        repeat,
    )
    b = "3 book"
    sec.rows += [
        Row(b, "quiet tick, 10k book", book_us, scan_us, "us", "linear scan 10k"),
        Row(b, "quiet tick, 10k book", book_us, small_us, "us", "same, 1k book"),
    ]
    per_fill: list[str] = []

    def reps_of(k: int) -> int:
        return 60 if quick else (200 if k < 100 else 100)

    for k in KS:
        # buy limits at or above the ask: the QUIET tick fills all k, and their
        # brackets (100 pips away) stay armed through the engine's second pass
        fresh = [
            _order(
                f"k{k}-{j}",
                "BUY",
                OrderStatus.PENDING,
                ASK - 100 * PIP,
                ASK + 100 * PIP,
                ASK + PIP * (j % 5),
            )
            for j in range(k)
        ]
        fill_us, after_us = _fills_tick_us(engine, fresh, reps_of(k))
        for o in fresh:  # leave the engine as it was
            engine.book(VENUE, SYMBOL).remove(o.id)
            engine.orders.pop(o.id, None)
        sec.rows.append(
            Row(
                b,
                f"engine tick, {k} fill{'s' if k > 1 else ''}",
                fill_us,
                after_us,
                "us",
                "same tick, 0 fills",
            )
        )
        per_fill.append(f"k={k} {(fill_us - after_us) / k:.1f} us")
    sec.facts.append(
        f"book: {SIZE} orders (2.5k each: buy limits, sell limits, open longs, open shorts); "
        f"timeit, median of {repeat} interleaved rounds; engine ticks: median of "
        f"{reps_of(1)} single ticks ({reps_of(100)} at k=100); cost per fill: "
        + ", ".join(per_fill)
    )
    return sec
