"""Coinbase Advanced Trade wire formats as pure code: parsers, a sequence
tracker, a local L2 book and the CDP JWT.  No I/O.

Follows ../shared/docs/PROTOCOLS.md (Coinbase Advanced Trade).

WebSocket messages are ``{"channel", "client_id", "timestamp", "sequence_num",
"events": [...]}``.  Read:
- ``ticker``: events ``{"type", "tickers": [{"product_id", "price", "best_bid",
  "best_bid_quantity", "best_ask", "best_ask_quantity", ...}]}``;
- ``l2_data`` (the answer to a ``level2`` subscription): events ``{"type":
  "snapshot"|"update", "product_id", "updates": [{"side": "bid"|"offer",
  "event_time", "price_level", "new_quantity"}]}``;
- ``heartbeats``: ``{"current_time": <Go-style time>, "heartbeat_counter":
  <number or string>}``;
- ``subscriptions``: the acknowledgement ``{"subscriptions": {channel: [ids]}}``;
- ``{"type": "error", "message"}`` frames.

Ignored on purpose: every other channel (``ticker_batch`` has no best bid/ask,
``market_trades``, ``candles``, ``status``, ``user`` ...) parses to a message
with no events, so its ``sequence_num`` still counts; unknown fields
everywhere; ticker fields other than the ones above.

Numbers are strings on the wire and ``Decimal`` here; an empty string means
"absent" (``None``).  Times go onto the bus as ``codec.utc_iso`` strings.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import heapq
import re
import secrets
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Literal
from urllib.parse import urlsplit

import jwt
import msgspec
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from rbot.bus import granularity
from rbot.bus.codec import parse_iso, utc_iso
from rbot.bus.messages import Book, BookLevel, Candle, Tick

from .errors import BookNotReady, CredentialError, ProtocolError

VENUE = "coinbase"
JWT_LIFETIME_S = 120
CHANNELS = ("ticker", "ticker_batch", "level2", "heartbeats", "market_trades", "status", "candles")
CHANNEL_ANSWERS = {"level2": "l2_data"}  # subscription name -> channel it answers on
COINBASE_GRANULARITIES = granularity.COINBASE  # the one list: bus/granularity.py

# --------------------------------------------------------------------------
# public, typed results


class Ticker(msgspec.Struct, frozen=True, kw_only=True):
    product_id: str
    price: Decimal | None = None
    best_bid: Decimal | None = None
    best_bid_quantity: Decimal | None = None
    best_ask: Decimal | None = None
    best_ask_quantity: Decimal | None = None


class TickerEvent(msgspec.Struct, frozen=True, kw_only=True):
    type: str
    tickers: list[Ticker]


class L2Update(msgspec.Struct, frozen=True, kw_only=True):
    side: Literal["bid", "offer"]
    price_level: Decimal
    new_quantity: Decimal
    event_time: str = ""


class L2Event(msgspec.Struct, frozen=True, kw_only=True):
    type: Literal["snapshot", "update"]
    product_id: str
    updates: list[L2Update] = []


class Heartbeat(msgspec.Struct, frozen=True, kw_only=True):
    current_time: str
    counter: int


class Subscriptions(msgspec.Struct, frozen=True, kw_only=True):
    subscriptions: dict[str, list[str]] = {}


Event = TickerEvent | L2Event | Heartbeat | Subscriptions


class WsMessage(msgspec.Struct, frozen=True, kw_only=True):
    channel: str
    seq: int
    timestamp: str
    client_id: str = ""
    events: list[Event] = []


class WsError(msgspec.Struct, frozen=True, kw_only=True):
    message: str


class Product(msgspec.Struct, frozen=True, kw_only=True):
    product_id: str
    price: Decimal | None
    base_increment: Decimal | None
    quote_increment: Decimal | None
    base_min_size: Decimal | None
    base_max_size: Decimal | None
    status: str
    trading_disabled: bool
    product_type: str = ""


class ProductBook(msgspec.Struct, frozen=True, kw_only=True):
    product_id: str
    bids: list[BookLevel]
    asks: list[BookLevel]
    time: str
    last: Decimal | None = None
    mid_market: Decimal | None = None
    spread_bps: Decimal | None = None
    spread_absolute: Decimal | None = None

    def to_book(self, seq: int = 0) -> Book:
        return Book(
            venue=VENUE,
            symbol=self.product_id,
            bids=self.bids,
            asks=self.asks,
            time=self.time,
            seq=seq,
        )


class CbCandle(msgspec.Struct, frozen=True, kw_only=True):
    start: int  # unix seconds
    low: Decimal
    high: Decimal
    open: Decimal
    close: Decimal
    volume: Decimal


class RestError(msgspec.Struct, frozen=True, kw_only=True):
    error: str = ""
    message: str = ""
    error_details: str = ""


# --------------------------------------------------------------------------
# raw wire shapes (strings as sent)


class _Envelope(msgspec.Struct):
    channel: str = ""
    type: str = ""
    message: str = ""
    client_id: str = ""
    timestamp: str = ""
    sequence_num: int | None = None
    events: list[msgspec.Raw] = []


class _RawTicker(msgspec.Struct):
    product_id: str
    price: str = ""
    best_bid: str = ""
    best_bid_quantity: str = ""
    best_ask: str = ""
    best_ask_quantity: str = ""


class _RawTickerEvent(msgspec.Struct):
    type: str = ""
    tickers: list[_RawTicker] = []


class _RawHeartbeat(msgspec.Struct):
    current_time: str
    heartbeat_counter: int | str


class _RawProduct(msgspec.Struct):
    product_id: str
    price: str = ""
    base_increment: str = ""
    quote_increment: str = ""
    base_min_size: str = ""
    base_max_size: str = ""
    status: str = ""
    trading_disabled: bool = False
    product_type: str = ""


class _Products(msgspec.Struct):
    products: list[_RawProduct] = []


class _Level(msgspec.Struct):
    price: Decimal
    size: Decimal


class _Pricebook(msgspec.Struct):
    product_id: str
    bids: list[_Level] = []
    asks: list[_Level] = []
    time: str = ""


class _ProductBookAnswer(msgspec.Struct):
    pricebook: _Pricebook
    last: str = ""
    mid_market: str = ""
    spread_bps: str = ""
    spread_absolute: str = ""


class _RawCandle(msgspec.Struct):
    start: str
    low: Decimal
    high: Decimal
    open: Decimal
    close: Decimal
    volume: Decimal


class _Candles(msgspec.Struct):
    candles: list[_RawCandle] = []


_envelope = msgspec.json.Decoder(_Envelope)
_ticker_events = msgspec.json.Decoder(_RawTickerEvent)
_l2_event = msgspec.json.Decoder(L2Event)
_heartbeat = msgspec.json.Decoder(_RawHeartbeat)
_subscriptions = msgspec.json.Decoder(Subscriptions)
_products = msgspec.json.Decoder(_Products)
_product_book = msgspec.json.Decoder(_ProductBookAnswer)
_candles = msgspec.json.Decoder(_Candles)
_rest_error = msgspec.json.Decoder(RestError)

# --------------------------------------------------------------------------
# WebSocket


def parse_ws_message(data: bytes | str) -> WsMessage | WsError:
    """Parse one WebSocket frame; raises ``ProtocolError`` when malformed.

    Messages on channels this module does not read come back with
    ``events == []`` so that their ``sequence_num`` is still observed.
    """
    try:
        env = _envelope.decode(data)
        if env.type == "error" and not env.channel:
            return WsError(message=env.message)
        if not env.channel:
            raise ProtocolError("message without a channel")
        if env.sequence_num is None:
            raise ProtocolError(f"{env.channel} message without a sequence_num")
        _check_time(env.timestamp)
        events = [ev for raw in env.events if (ev := _event(env.channel, raw)) is not None]
    except msgspec.DecodeError as exc:
        raise ProtocolError(f"malformed message: {exc}") from exc
    return WsMessage(
        channel=env.channel,
        seq=env.sequence_num,
        timestamp=env.timestamp,
        client_id=env.client_id,
        events=events,
    )


def _event(channel: str, raw: msgspec.Raw) -> Event | None:
    match channel:
        case "ticker":
            t = _ticker_events.decode(raw)
            return TickerEvent(type=t.type, tickers=[_ticker(x) for x in t.tickers])
        case "l2_data":
            ev = _l2_event.decode(raw)
            for u in ev.updates:
                if not u.price_level.is_finite() or u.price_level <= 0:
                    raise ProtocolError(f"bad price_level {u.price_level}")
                if not u.new_quantity.is_finite() or u.new_quantity < 0:
                    raise ProtocolError(f"bad new_quantity {u.new_quantity}")
            return ev
        case "heartbeats":
            hb = _heartbeat.decode(raw)
            try:
                counter = int(hb.heartbeat_counter)
            except ValueError as exc:
                raise ProtocolError(f"bad heartbeat_counter {hb.heartbeat_counter!r}") from exc
            return Heartbeat(current_time=hb.current_time, counter=counter)
        case "subscriptions":
            return _subscriptions.decode(raw)
        case _:
            return None


def _ticker(t: _RawTicker) -> Ticker:
    return Ticker(
        product_id=t.product_id,
        price=_dec(t.price),
        best_bid=_dec(t.best_bid),
        best_bid_quantity=_dec(t.best_bid_quantity),
        best_ask=_dec(t.best_ask),
        best_ask_quantity=_dec(t.best_ask_quantity),
    )


def to_tick(ticker: Ticker, *, time: str, seq: int) -> Tick:
    """A ticker as a bus ``Tick``; ``time`` is the message ``timestamp``."""
    return Tick(
        venue=VENUE,
        symbol=ticker.product_id,
        bid=ticker.best_bid,
        ask=ticker.best_ask,
        time=normalize_time(time),
        seq=seq,
        source=VENUE,
        tradeable=ticker.best_bid is not None and ticker.best_ask is not None,
    )


_GO_TIME = re.compile(
    r"^(\d{4}-\d{2}-\d{2}) (\d{2}:\d{2}:\d{2}(?:\.\d+)?) ([+-]\d{4})(?: [A-Z]+)?(?: m=[+-][\d.]+)?$"
)


def parse_go_time(s: str) -> dt.datetime:
    """``2023-06-23 20:31:56.121961769 +0000 UTC m=+91717.525857105`` -> UTC datetime."""
    m = _GO_TIME.match(s.strip())
    if m is None:
        raise ProtocolError(f"bad Go-style time {s!r}")
    date, clock, offset = m.groups()
    return parse_iso(f"{date}T{clock}{offset[:3]}:{offset[3:]}")


@dataclass(frozen=True, slots=True)
class Gap:
    expected: int
    received: int

    @property
    def missed(self) -> int:
        return max(0, self.received - self.expected)


class SequenceTracker:
    """Checks that ``sequence_num`` goes up by one per message on a connection.

    ``first`` is the number the first message must carry (``None``: accept
    any).  A number that skips ahead or goes back is reported as a ``Gap``.
    """

    def __init__(self, first: int | None = None) -> None:
        self.first = first
        self.last: int | None = None
        self.gaps = 0

    def reset(self) -> None:
        """A new connection: numbering starts again."""
        self.last = None

    def observe(self, seq: int) -> Gap | None:
        expected = self.first if self.last is None else self.last + 1
        self.last = seq if self.last is None else max(self.last, seq)
        if expected is None or seq == expected:
            return None
        self.gaps += 1
        return Gap(expected, seq)


class OrderBook:
    """The local L2 book of one product, built from ``l2_data`` events.

    A snapshot replaces the book; an update sets a level's quantity, and
    quantity 0 removes the level.  Updates before the first snapshot (or after
    ``reset``) raise ``BookNotReady``: the caller must resubscribe.  Levels live
    in dicts; top-N uses a heap, fine for books of a few thousand levels.
    """

    def __init__(self, product_id: str) -> None:
        self.product_id = product_id
        self.bids: dict[Decimal, Decimal] = {}
        self.asks: dict[Decimal, Decimal] = {}
        self.ready = False
        self.time = ""

    def reset(self) -> None:
        self.bids.clear()
        self.asks.clear()
        self.ready = False

    def apply(self, event: L2Event) -> None:
        if event.product_id != self.product_id:
            raise ProtocolError(f"{event.product_id} event for the {self.product_id} book")
        if event.type == "snapshot":
            self.bids.clear()
            self.asks.clear()
            self.ready = True
        elif not self.ready:
            raise BookNotReady(f"update for {self.product_id} before a snapshot")
        for u in event.updates:
            levels = self.bids if u.side == "bid" else self.asks
            if u.new_quantity == 0:
                levels.pop(u.price_level, None)
            else:
                levels[u.price_level] = u.new_quantity
            if u.event_time:
                self.time = u.event_time

    @property
    def best_bid(self) -> BookLevel | None:
        p = max(self.bids, default=None)
        return None if p is None else BookLevel(p, self.bids[p])

    @property
    def best_ask(self) -> BookLevel | None:
        p = min(self.asks, default=None)
        return None if p is None else BookLevel(p, self.asks[p])

    @property
    def crossed(self) -> bool:
        bid, ask = self.best_bid, self.best_ask
        return bid is not None and ask is not None and bid.price >= ask.price

    def top(self, n: int) -> tuple[list[BookLevel], list[BookLevel]]:
        """The best ``n`` bids (highest first) and asks (lowest first)."""
        bids = [BookLevel(p, self.bids[p]) for p in heapq.nlargest(n, self.bids)]
        asks = [BookLevel(p, self.asks[p]) for p in heapq.nsmallest(n, self.asks)]
        return bids, asks

    def to_book(self, depth: int, *, time: str, seq: int) -> Book:
        bids, asks = self.top(depth)
        return Book(
            venue=VENUE,
            symbol=self.product_id,
            bids=bids,
            asks=asks,
            time=normalize_time(time),
            seq=seq,
        )


# --------------------------------------------------------------------------
# REST


def parse_products(data: bytes | str) -> list[Product]:
    try:
        raw = _products.decode(data)
    except msgspec.DecodeError as exc:
        raise ProtocolError(f"malformed products answer: {exc}") from exc
    return [
        Product(
            product_id=p.product_id,
            price=_dec(p.price),
            base_increment=_dec(p.base_increment),
            quote_increment=_dec(p.quote_increment),
            base_min_size=_dec(p.base_min_size),
            base_max_size=_dec(p.base_max_size),
            status=p.status,
            trading_disabled=p.trading_disabled,
            product_type=p.product_type,
        )
        for p in raw.products
    ]


def parse_product_book(data: bytes | str) -> ProductBook:
    try:
        raw = _product_book.decode(data)
    except msgspec.DecodeError as exc:
        raise ProtocolError(f"malformed product_book answer: {exc}") from exc
    pb = raw.pricebook
    return ProductBook(
        product_id=pb.product_id,
        bids=[BookLevel(x.price, x.size) for x in pb.bids],
        asks=[BookLevel(x.price, x.size) for x in pb.asks],
        time=normalize_time(pb.time) if pb.time else "",
        last=_dec(raw.last),
        mid_market=_dec(raw.mid_market),
        spread_bps=_dec(raw.spread_bps),
        spread_absolute=_dec(raw.spread_absolute),
    )


def parse_candles(data: bytes | str) -> list[CbCandle]:
    """Candles in the venue's order (newest first)."""
    try:
        raw = _candles.decode(data)
    except msgspec.DecodeError as exc:
        raise ProtocolError(f"malformed candles answer: {exc}") from exc
    out = []
    for c in raw.candles:
        if not c.start.isdigit():
            raise ProtocolError(f"candle start {c.start!r} is not unix seconds")
        out.append(
            CbCandle(
                start=int(c.start),
                low=c.low,
                high=c.high,
                open=c.open,
                close=c.close,
                volume=c.volume,
            )
        )
    return out


def to_candles(product_id: str, granularity: str, candles: list[CbCandle]) -> list[Candle]:
    """Bus candles, oldest first.  ``Candle.volume`` is an int (OANDA counts
    ticks): Coinbase's base-currency volume is truncated toward zero."""
    return [
        Candle(
            venue=VENUE,
            symbol=product_id,
            granularity=granularity,
            time=utc_iso(dt.datetime.fromtimestamp(c.start, dt.UTC)),
            o=c.open,
            h=c.high,
            l=c.low,
            c=c.close,
            volume=int(c.volume),
        )
        for c in sorted(candles, key=lambda c: c.start)
    ]


def parse_rest_error(data: bytes | str) -> RestError:
    """Best effort: an error body, or its raw text as the message."""
    try:
        return _rest_error.decode(data)
    except msgspec.DecodeError:
        text = data.decode(errors="replace") if isinstance(data, bytes) else data
        return RestError(message=text.strip()[:200])


# --------------------------------------------------------------------------
# CDP JWT


def cdp_uri(method: str, url: str) -> str:
    """The ``uri`` claim: method, space, host[:port] and path (no scheme, no query)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return f"{method.upper()} {host}{parts.path}"


def load_cdp_key(secret: str) -> ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey:
    """A CDP private key: PEM (EC P-256 or Ed25519) or base64 raw Ed25519.

    Literal ``\\n`` sequences (as keys are often pasted into env files) are
    turned into newlines.  Errors never include the key.
    """
    text = secret.replace("\\n", "\n").strip()
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_private_key(text.encode(), password=None)
        else:
            raw = base64.b64decode(text, validate=True)
            if len(raw) not in (32, 64):
                raise CredentialError("a base64 Ed25519 key must hold 32 or 64 bytes")
            key = ed25519.Ed25519PrivateKey.from_private_bytes(raw[:32])
    except (ValueError, TypeError, binascii.Error) as exc:
        raise CredentialError(f"unreadable CDP private key ({type(exc).__name__})") from None
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise CredentialError("ES256 needs a P-256 (secp256r1) key")
        return key
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    raise CredentialError(f"unsupported CDP key type {type(key).__name__}")


def cdp_jwt(
    key_name: str,
    private_key_pem: str,
    uri: str | None,
    now: float,
    *,
    nonce: str | None = None,
) -> str:
    """A CDP JWT: ES256 for EC keys, EdDSA for Ed25519; ``uri`` omitted for WS."""
    key = load_cdp_key(private_key_pem)
    alg = "ES256" if isinstance(key, ec.EllipticCurvePrivateKey) else "EdDSA"
    claims: dict[str, Any] = {
        "sub": key_name,
        "iss": "cdp",
        "nbf": int(now),
        "exp": int(now) + JWT_LIFETIME_S,
    }
    if uri is not None:
        claims["uri"] = uri
    headers = {"kid": key_name, "nonce": nonce or secrets.token_hex(16)}
    return jwt.encode(claims, key, algorithm=alg, headers=headers)


# --------------------------------------------------------------------------
# helpers


def normalize_time(s: str) -> str:
    return utc_iso(_check_time(s))


def _check_time(s: str) -> dt.datetime:
    try:
        return parse_iso(s)
    except ValueError as exc:
        raise ProtocolError(f"bad time {s!r}") from exc


def _dec(s: str) -> Decimal | None:
    if not s:
        return None
    try:
        d = Decimal(s)
    except InvalidOperation as exc:
        raise ProtocolError(f"bad decimal {s!r}") from exc
    if not d.is_finite():
        raise ProtocolError(f"bad decimal {s!r}")
    return d
