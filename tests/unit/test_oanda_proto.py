"""OANDA v20 parsers against the recorded lines of PROTOCOLS.md."""

from __future__ import annotations

from decimal import Decimal

import pytest

from rbot.actors.feeds.errors import ProtocolError
from rbot.actors.feeds.oanda_proto import (
    OANDA_GRANULARITIES,
    HeartbeatMsg,
    PriceMsg,
    parse_candles,
    parse_error,
    parse_line,
    to_tick,
)

# verbatim from PROTOCOLS.md
PRICE = (
    b'{"type":"PRICE","time":"2016-10-27T08:38:43.094548890Z","bids":[{"price":"1.09148",'
    b'"liquidity":10000000}],"asks":[{"price":"1.09162","liquidity":10000000}],'
    b'"closeoutBid":"1.09133","closeoutAsk":"1.09177","status":"tradeable","tradeable":true,'
    b'"instrument":"EUR_USD"}'
)
CANDLES = (
    b'{"instrument":"EUR_USD","granularity":"M15","candles":[{"complete":true,"volume":481,'
    b'"time":"2017-01-03T00:00:00.000000000Z","mid":{"o":"1.04577","h":"1.04712",'
    b'"l":"1.04572","c":"1.04662"}}]}'
)


def test_price_line_from_the_protocol_document() -> None:
    msg = parse_line(PRICE)
    assert isinstance(msg, PriceMsg)
    assert msg.instrument == "EUR_USD"
    assert msg.bids[0].price == Decimal("1.09148")
    assert msg.bids[0].liquidity == 10000000
    assert msg.closeout_ask == Decimal("1.09177")
    tick = to_tick(msg, seq=7)
    assert tick.venue == "oanda" and tick.symbol == "EUR_USD" and tick.source == "oanda"
    assert tick.bid == Decimal("1.09148") and tick.ask == Decimal("1.09162")
    assert tick.mid == Decimal("1.09155")
    assert tick.seq == 7 and tick.tradeable


def test_nanoseconds_are_parsed_and_truncated_to_microseconds() -> None:
    msg = parse_line(PRICE)
    assert isinstance(msg, PriceMsg)
    assert to_tick(msg, 0).time == "2016-10-27T08:38:43.094548Z"


def test_heartbeat() -> None:
    msg = parse_line(b'{"type":"HEARTBEAT","time":"2016-10-27T08:38:43.094548890Z"}')
    assert msg == HeartbeatMsg(time="2016-10-27T08:38:43.094548890Z")


def test_prices_are_exact_decimals_not_floats() -> None:
    line = PRICE.replace(b'"1.09148"', b'"0.1"').replace(b'"1.09162"', b'"0.3"')
    msg = parse_line(line)
    assert isinstance(msg, PriceMsg)
    tick = to_tick(msg, 0)
    assert tick.spread == Decimal("0.2")  # 0.3 - 0.1 in binary floats is 0.19999999999999998


def test_unknown_fields_are_ignored() -> None:
    line = PRICE.replace(
        b'"instrument"',
        b'"unitsAvailable":{"default":{"long":"2291","short":"2291"}},'
        b'"quoteHomeConversionFactors":{"positiveUnits":"1.0","negativeUnits":"1.0"},'
        b'"brandNewField":[1,2,3],"instrument"',
    )
    assert isinstance(parse_line(line), PriceMsg)


def test_empty_sides_mean_no_price_not_a_crash() -> None:
    line = PRICE.replace(b'[{"price":"1.09148","liquidity":10000000}]', b"[]")
    msg = parse_line(line)
    assert isinstance(msg, PriceMsg)
    tick = to_tick(msg, 0)
    assert tick.bid is None and tick.ask == Decimal("1.09162")
    assert tick.mid is None and not tick.tradeable

    both = (
        b'{"type":"PRICE","instrument":"EUR_USD","time":"2016-10-27T08:38:43Z","bids":[],"asks":[]}'
    )
    msg = parse_line(both)
    assert isinstance(msg, PriceMsg)
    tick = to_tick(msg, 0)
    assert tick.bid is None and tick.ask is None and not tick.tradeable


def test_tradeable_false_is_reported() -> None:
    line = PRICE.replace(b'"tradeable":true', b'"tradeable":false').replace(
        b'"status":"tradeable"', b'"status":"non-tradeable"'
    )
    msg = parse_line(line)
    assert isinstance(msg, PriceMsg)
    tick = to_tick(msg, 0)
    assert not tick.tradeable
    assert tick.bid == Decimal("1.09148")  # the quote is kept, flagged untradeable


def test_first_bucket_is_the_best_price() -> None:
    line = PRICE.replace(
        b'[{"price":"1.09148","liquidity":10000000}]',
        b'[{"price":"1.09148","liquidity":1000000},{"price":"1.09140","liquidity":5000000}]',
    )
    msg = parse_line(line)
    assert isinstance(msg, PriceMsg)
    assert to_tick(msg, 0).bid == Decimal("1.09148")


@pytest.mark.parametrize(
    "line",
    [
        b'{"type":"PRICE","instrument":"EUR_USD","ti',  # cut mid-line
        b"not json at all",
        b'["PRICE"]',
        b'{"time":"2016-10-27T08:38:43Z"}',  # no type
        b'{"type":"PRICE","time":"2016-10-27T08:38:43Z","bids":[],"asks":[]}',  # no instrument
        b'{"type":"HEARTBEAT"}',  # no time
        b'{"type":"HEARTBEAT","time":"yesterday"}',
        PRICE.replace(b'"1.09148"', b'"abc"'),
        PRICE.replace(b'"1.09148"', b'"NaN"'),
        PRICE.replace(b'"1.09148"', b'"-1"'),
        PRICE.replace(b'"liquidity":10000000}],"asks"', b'"liquidity":"lots"}],"asks"'),
        PRICE.replace(b'"tradeable":true', b'"tradeable":"yes"'),
    ],
)
def test_malformed_lines_raise_protocol_error(line: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_line(line)


def test_unknown_types_and_blank_lines_are_ignored() -> None:
    assert parse_line(b'{"type":"SOMETHING_NEW","time":"2016-10-27T08:38:43Z"}') is None
    assert parse_line(b"") is None
    assert parse_line("  \r\n") is None


def test_candles_from_the_protocol_document() -> None:
    (c,) = parse_candles(CANDLES)
    assert c.venue == "oanda" and c.symbol == "EUR_USD" and c.granularity == "M15"
    assert c.time == "2017-01-03T00:00:00.000000Z"
    assert (c.o, c.h, c.l, c.c) == tuple(
        Decimal(x) for x in ("1.04577", "1.04712", "1.04572", "1.04662")
    )
    assert c.volume == 481 and c.complete


def test_last_candle_may_be_incomplete_and_components_are_chosen() -> None:
    data = (
        b'{"instrument":"USD_JPY","granularity":"S5","candles":['
        b'{"complete":true,"volume":3,"time":"2024-01-02T10:00:00.000000000Z",'
        b'"bid":{"o":"141.001","h":"141.010","l":"141.000","c":"141.005"},'
        b'"ask":{"o":"141.011","h":"141.020","l":"141.010","c":"141.015"}},'
        b'{"complete":false,"volume":1,"time":"2024-01-02T10:00:05.000000000Z",'
        b'"bid":{"o":"141.005","h":"141.005","l":"141.005","c":"141.005"},'
        b'"ask":{"o":"141.015","h":"141.015","l":"141.015","c":"141.015"}}]}'
    )
    asks = parse_candles(data, "ask")
    assert [c.complete for c in asks] == [True, False]
    assert asks[0].h == Decimal("141.020")
    assert parse_candles(data, "bid")[1].c == Decimal("141.005")
    with pytest.raises(ProtocolError):
        parse_candles(data, "mid")


@pytest.mark.parametrize(
    "data",
    [
        b"{",
        b'{"granularity":"M15","candles":[]}',
        CANDLES.replace(b'"1.04577"', b'"x"'),
        CANDLES.replace(b'"2017-01-03T00:00:00.000000000Z"', b'"Jan 3rd"'),
    ],
)
def test_malformed_candles(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_candles(data)


def test_granularities_follow_the_document() -> None:
    assert OANDA_GRANULARITIES[0] == "S5" and OANDA_GRANULARITIES[-1] == "M"
    assert len(OANDA_GRANULARITIES) == 21
    assert "H1" in OANDA_GRANULARITIES and "H5" not in OANDA_GRANULARITIES


def test_error_bodies() -> None:
    err = parse_error(b'{"errorCode":"X","errorMessage":"Insufficient authorization"}')
    assert (err.error_code, err.error_message) == ("X", "Insufficient authorization")
    assert parse_error(b'{"errorMessage":"no code"}').error_code is None
    assert parse_error(b"<html>bad gateway</html>").error_message == "<html>bad gateway</html>"
