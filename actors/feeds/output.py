"""What a feed leader publishes, and how often: ``FeedOutput`` (ticks, books,
candles on their subjects, the last tick in KV ``prices``), the book throttle
and the leader's timings (``FeedTuning``).  See ``live.py`` for the sources.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from nats.js.kv import KeyValue

from rbot.actors.backoff import Backoff
from rbot.bus import codec, keys
from rbot.bus.connection import Bus
from rbot.bus.messages import Book, Candle, Tick
from rbot.bus.timing import raise_if_cancelled


@dataclass(frozen=True)
class FeedTuning:
    """Timings of a feed leader; the defaults are for real venues, tests shrink them."""

    silence_timeout: float = 10.0  # no line/frame (heartbeats included) for this long: dead
    healthy_after: float = 10.0  # a connection this old restarts the backoff
    backoff: Backoff = Backoff(initial=0.5, factor=2.0, cap=30.0)
    rate_limit_backoff: Backoff = Backoff(initial=2.0, factor=2.0, cap=60.0)  # after a 429
    rest_backoff: Backoff = Backoff(initial=0.5, factor=2.0, cap=10.0)
    max_connects_per_s: float = 2.0  # OANDA's published connection rate
    status_interval: float = 2.0
    book_interval: float = 0.25  # at most 4 books/s per product
    book_keepalive: float = 5.0
    book_depth: int = 25
    candle_interval: float = 60.0
    candle_count: int = 120  # every round: late subscribers get history too (Coinbase: <= 350)
    products_every: int = 10  # Coinbase products (venue status) every N candle rounds
    fatal_retry: float = 60.0


class BookThrottle:
    """At most one book per ``interval`` per product; pure, the clock is the caller's.

    ``offer`` says whether a book may go now; one that may not waits (the
    newest replaces an older one) until ``due`` hands it out.  ``due`` also
    repeats a product's last book once ``keepalive`` seconds passed without one.
    """

    def __init__(self, interval: float, keepalive: float) -> None:
        self.interval = interval
        self.keepalive = keepalive
        self.sent_at: dict[str, float] = {}
        self.latest: dict[str, Book] = {}
        self.waiting: dict[str, Book] = {}

    def offer(self, book: Book, now: float) -> bool:
        self.latest[book.symbol] = book
        last = self.sent_at.get(book.symbol)
        if last is None or now - last >= self.interval:
            self.sent_at[book.symbol] = now
            self.waiting.pop(book.symbol, None)
            return True
        self.waiting[book.symbol] = book
        return False

    def due(self, now: float) -> list[Book]:
        out: list[Book] = []
        for symbol, book in self.latest.items():
            age = now - self.sent_at.get(symbol, now)
            if (symbol in self.waiting and age >= self.interval) or age >= self.keepalive:
                out.append(self.waiting.pop(symbol, book))
                self.sent_at[symbol] = now
        return out


async def publish_tick(bus: Bus, prices: KeyValue, tick: Tick) -> None:
    """A tick as every feed sends it: the envelope on its core subject, then the
    last tick in KV ``prices`` (what the guard and the API read)."""
    subject = bus.subjects.tick(tick.venue, tick.symbol)
    await bus.nc.publish(subject, codec.encode_envelope("tick", tick.venue, tick))
    await prices.put(keys.price(tick.venue, tick.symbol), codec.encode(tick))


class FeedOutput:
    """Publishes what a source produces, and counts it."""

    def __init__(
        self,
        bus: Bus,
        venue: str,
        prices: KeyValue,
        tuning: FeedTuning,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bus = bus
        self.venue = venue
        self.prices = prices
        self.throttle = BookThrottle(tuning.book_interval, tuning.book_keepalive)
        self.clock = clock
        self.ticks = 0
        self.books = 0
        self.candles = 0

    async def tick(self, tick: Tick) -> None:
        await publish_tick(self.bus, self.prices, tick)
        self.ticks += 1
        raise_if_cancelled()

    async def book(self, book: Book) -> None:
        if self.throttle.offer(book, self.clock()):
            await self._send_book(book)

    async def flush_books(self) -> None:
        for book in self.throttle.due(self.clock()):
            await self._send_book(book)

    async def candle(self, candle: Candle) -> None:
        subject = self.bus.subjects.candle(candle.venue, candle.symbol, candle.granularity)
        await self.bus.nc.publish(subject, codec.encode_envelope("candle", self.venue, candle))
        self.candles += 1

    async def _send_book(self, book: Book) -> None:
        subject = self.bus.subjects.book(book.venue, book.symbol)
        await self.bus.nc.publish(subject, codec.encode_envelope("book", self.venue, book))
        self.books += 1
