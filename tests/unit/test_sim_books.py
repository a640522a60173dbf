"""The sim's level-2 books: consistent with its ticks, plausible, deterministic."""

from __future__ import annotations

from decimal import Decimal

from rbot.actors.feeds.sim import BOOK_DEPTH, SIZE_STEP, SimMarket
from rbot.api.routers.market import _book_json


def test_each_coinbase_tick_has_a_book_whose_touch_is_the_tick() -> None:
    market = SimMarket("coinbase", ["BTC-USD", "ETH-USD"], seed=7, books=True)
    for _ in range(50):
        for tick in market.step():
            book = market.book(tick)
            assert book is not None
            assert (book.venue, book.symbol, book.time, book.seq) == (
                tick.venue,
                tick.symbol,
                tick.time,
                tick.seq,
            )
            assert book.bids[0].price == tick.bid and book.asks[0].price == tick.ask
            assert len(book.bids) == len(book.asks) == BOOK_DEPTH
            bid_prices = [lv.price for lv in book.bids]
            ask_prices = [lv.price for lv in book.asks]
            assert bid_prices == sorted(bid_prices, reverse=True) and len(set(bid_prices)) == 25
            assert ask_prices == sorted(ask_prices) and len(set(ask_prices)) == 25
            for lv in book.bids + book.asks:
                assert lv.size >= SIZE_STEP and lv.size == lv.size.quantize(SIZE_STEP)


def test_sizes_are_plausible_for_the_symbol() -> None:
    market = SimMarket("coinbase", ["BTC-USD"], seed=1, books=True)
    tick = market.step()[0]
    book = market.book(tick)
    assert book is not None
    notional = [lv.size * lv.price for lv in book.bids]
    # about 25,000 USD a level: never dust, never the whole market
    assert all(Decimal(1000) < n < Decimal(1_000_000) for n in notional)


def test_books_do_not_change_the_price_walk_of_a_seed() -> None:
    plain = SimMarket("coinbase", ["BTC-USD"], seed=3)
    booked = SimMarket("coinbase", ["BTC-USD"], seed=3, books=True)
    for _ in range(20):
        a, b = plain.step()[0], booked.step()[0]
        booked.book(b)
        assert (a.bid, a.ask) == (b.bid, b.ask)
    assert plain.book(a) is None  # no books unless asked (OANDA)


def test_a_sim_book_in_coinbase_product_book_shape() -> None:
    market = SimMarket("coinbase", ["BTC-USD"], seed=5, books=True)
    tick = market.step()[0]
    book = market.book(tick)
    assert book is not None
    out = _book_json(book, 10)
    assert out["pricebook"]["product_id"] == "BTC-USD"
    assert len(out["pricebook"]["bids"]) == len(out["pricebook"]["asks"]) == 10
    assert out["pricebook"]["bids"][0] == {"price": str(tick.bid), "size": str(book.bids[0].size)}
    assert Decimal(out["spread_absolute"]) == tick.ask - tick.bid  # type: ignore[operator]
    assert Decimal(out["mid_market"]) == tick.mid
