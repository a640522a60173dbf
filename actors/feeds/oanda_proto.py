"""OANDA v20 wire formats as pure functions: bytes in, typed values out, no I/O.

Follows ../shared/docs/PROTOCOLS.md (OANDA v20).

Read:
- pricing-stream lines of type ``PRICE`` (instrument, time, bids, asks,
  closeoutBid, closeoutAsk, status, tradeable) and ``HEARTBEAT`` (time);
- candles answers (instrument, granularity, candles[time, volume, complete,
  mid/bid/ask{o,h,l,c}]);
- error bodies ``{"errorCode"?, "errorMessage"}``.

Ignored on purpose:
- lines whose ``type`` is neither ``PRICE`` nor ``HEARTBEAT`` (``parse_line``
  returns ``None``) and blank keep-alive lines;
- every field not listed above (``unitsAvailable``,
  ``quoteHomeConversionFactors``, ...): unknown fields never fail a parse;
- price buckets below the first: a tick carries the best bid and best ask only.

Times keep their nanoseconds on the wire; ticks and candles carry them as
``codec.utc_iso`` (microseconds, ``Z``), the one time format on the bus.
Prices are decoded straight into ``Decimal`` from their strings, never through
a binary float.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Literal

import msgspec

from rbot.bus import granularity
from rbot.bus.codec import parse_iso, utc_iso
from rbot.bus.messages import Candle, Tick

from .errors import ProtocolError

VENUE = "oanda"

OANDA_GRANULARITIES = granularity.OANDA  # the one list: bus/granularity.py
DEFAULT_GRANULARITY = granularity.DEFAULT_OANDA
CANDLE_COUNT_DEFAULT = 500
CANDLE_COUNT_MAX = 5000

CandleComponent = Literal["mid", "bid", "ask"]
# the ``price`` query letters and the candle field each one fills
PRICE_COMPONENTS: dict[str, CandleComponent] = {"M": "mid", "B": "bid", "A": "ask"}


class PriceBucket(msgspec.Struct, frozen=True):
    price: Decimal
    liquidity: int | None = None  # absent: OANDA said nothing


class PriceMsg(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """One ``PRICE`` line.  Empty ``bids``/``asks`` mean no liquidity on that side."""

    instrument: str
    time: str
    bids: list[PriceBucket] = []
    asks: list[PriceBucket] = []
    closeout_bid: Decimal | None = None
    closeout_ask: Decimal | None = None
    status: str | None = None
    tradeable: bool = True


class HeartbeatMsg(msgspec.Struct, frozen=True):
    time: str


class ApiError(msgspec.Struct, frozen=True, rename="camel"):
    error_message: str = ""
    error_code: str | None = None


class _Head(msgspec.Struct):
    type: str = ""


class _OHLC(msgspec.Struct, frozen=True):
    o: Decimal
    h: Decimal
    l: Decimal  # noqa: E741 - OANDA's field name
    c: Decimal


class _RawCandle(msgspec.Struct, frozen=True):
    time: str
    volume: int = 0
    complete: bool = True
    mid: _OHLC | None = None
    bid: _OHLC | None = None
    ask: _OHLC | None = None


class _CandlesAnswer(msgspec.Struct, frozen=True):
    instrument: str
    granularity: str
    candles: list[_RawCandle] = []


_head = msgspec.json.Decoder(_Head)
_price = msgspec.json.Decoder(PriceMsg)
_heartbeat = msgspec.json.Decoder(HeartbeatMsg)
_candles = msgspec.json.Decoder(_CandlesAnswer)
_error = msgspec.json.Decoder(ApiError)


def parse_line(line: bytes | str) -> PriceMsg | HeartbeatMsg | None:
    """Parse one NDJSON line of the pricing stream.

    Returns ``None`` for blank lines and for types other than PRICE/HEARTBEAT;
    raises ``ProtocolError`` when the line is not a JSON object with a ``type``,
    a required field is missing or mistyped, a price is not a finite positive
    decimal, or a time is not RFC 3339.
    """
    if not line.strip():
        return None
    try:
        kind = _head.decode(line).type
        if kind == "PRICE":
            msg: PriceMsg | HeartbeatMsg = _price.decode(line)
        elif kind == "HEARTBEAT":
            msg = _heartbeat.decode(line)
        elif not kind:
            raise ProtocolError("pricing line without a type")
        else:
            return None
    except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
        raise ProtocolError(f"malformed pricing line: {exc}") from exc
    _check_time(msg.time)
    if isinstance(msg, PriceMsg):
        for bucket in (*msg.bids, *msg.asks):
            _check_price(bucket.price)
    return msg


def to_tick(msg: PriceMsg, seq: int) -> Tick:
    """The best bid and ask of a PRICE line as a bus ``Tick``.

    An empty side gives ``None`` for that side.  ``tradeable`` is false when
    OANDA says so or when either side is empty; the prices OANDA still quotes
    while untradeable are kept, so consumers must check ``tradeable`` (and
    ``None`` sides) before acting on a tick.  OANDA has no sequence numbers:
    ``seq`` is the caller's own per-stream counter.  The best buckets'
    ``liquidity`` goes along where OANDA sent it.
    """
    bid = msg.bids[0].price if msg.bids else None
    ask = msg.asks[0].price if msg.asks else None
    return Tick(
        venue=VENUE,
        symbol=msg.instrument,
        bid=bid,
        ask=ask,
        time=normalize_time(msg.time),
        seq=seq,
        source=VENUE,
        tradeable=msg.tradeable and bid is not None and ask is not None,
        bid_liquidity=msg.bids[0].liquidity if msg.bids else None,
        ask_liquidity=msg.asks[0].liquidity if msg.asks else None,
    )


def parse_candles(data: bytes | str, component: CandleComponent = "mid") -> list[Candle]:
    """Parse a candles answer; ``component`` picks mid, bid or ask prices.

    Raises ``ProtocolError`` if the answer is malformed or a candle lacks the
    requested component (ask for it with the ``price`` query parameter).
    """
    try:
        answer = _candles.decode(data)
    except msgspec.DecodeError as exc:
        raise ProtocolError(f"malformed candles answer: {exc}") from exc
    out: list[Candle] = []
    for raw in answer.candles:
        ohlc: _OHLC | None = getattr(raw, component)
        if ohlc is None:
            raise ProtocolError(f"candle at {raw.time} has no {component!r} prices")
        _check_time(raw.time)
        for p in (ohlc.o, ohlc.h, ohlc.l, ohlc.c):
            _check_price(p)
        out.append(
            Candle(
                venue=VENUE,
                symbol=answer.instrument,
                granularity=answer.granularity,
                time=normalize_time(raw.time),
                o=ohlc.o,
                h=ohlc.h,
                l=ohlc.l,
                c=ohlc.c,
                volume=raw.volume,
                complete=raw.complete,
            )
        )
    return out


def parse_error(data: bytes | str) -> ApiError:
    """Best effort: an error body, or its raw text as the message."""
    try:
        return _error.decode(data)
    except msgspec.DecodeError:
        text = data.decode(errors="replace") if isinstance(data, bytes) else data
        return ApiError(error_message=text.strip()[:200])


def normalize_time(s: str) -> str:
    """An RFC 3339 time (nanoseconds allowed) as the bus's ``utc_iso`` string."""
    return utc_iso(_check_time(s))


def _check_time(s: str) -> dt.datetime:
    try:
        return parse_iso(s)
    except ValueError as exc:
        raise ProtocolError(f"bad time {s!r}") from exc


def _check_price(p: Decimal) -> None:
    if not p.is_finite() or p <= 0:
        raise ProtocolError(f"bad price {p}")
