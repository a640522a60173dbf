"""The candle aggregator: mid prices into OHLC buckets, exact decimals."""

from __future__ import annotations

from decimal import Decimal

from rbot.api.candles import CandleBook
from rbot.bus.messages import Tick
from tests.helpers import tick


def test_ticks_make_ohlc_candles() -> None:
    book = CandleBook()
    book.add(tick("1.0", "1.2", time="2026-01-01T00:00:01.000Z"))  # mid 1.1
    book.add(tick("1.3", "1.5", time="2026-01-01T00:00:30.5Z"))  # mid 1.4
    book.add(tick("0.9", "1.1", time="2026-01-01T00:00:59.9Z"))  # mid 1.0
    book.add(tick("1.1", "1.1", time="2026-01-01T00:01:00.000000001Z"))  # next minute
    c = book.get("oanda", "EUR_USD", "M1", 10)
    assert [x["time"] for x in c] == ["2026-01-01T00:00:00.000000Z", "2026-01-01T00:01:00.000000Z"]
    first = c[0]
    assert (first["o"], first["h"], first["l"], first["c"]) == ("1.1", "1.4", "1.0", "1.0")
    assert first["volume"] == 3 and first["complete"] is True
    assert c[1]["complete"] is False


def test_empty_sides_and_unknown_series() -> None:
    book = CandleBook()
    book.add(
        Tick(venue="oanda", symbol="EUR_USD", bid=None, ask=Decimal(1), time="2026-01-01T00:00:00Z")
    )
    assert book.get("oanda", "EUR_USD", "M1", 5) == []
    assert book.get("coinbase", "BTC-USD", "H1", 5) == []


def test_retention_is_bounded() -> None:
    book = CandleBook(keep=3)
    for minute in range(10):
        book.add(tick("1", "1", time=f"2026-01-01T00:{minute:02d}:00Z"))
    assert len(book.get("oanda", "EUR_USD", "M1", 100)) == 3
