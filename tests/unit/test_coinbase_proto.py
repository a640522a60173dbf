"""Coinbase Advanced parsers, sequence tracking, the local book and the CDP JWT."""

from __future__ import annotations

import base64
import datetime as dt
import json
import time
from decimal import Decimal
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from rbot.actors.feeds.coinbase_proto import (
    Gap,
    Heartbeat,
    L2Event,
    L2Update,
    OrderBook,
    SequenceTracker,
    Subscriptions,
    TickerEvent,
    WsError,
    WsMessage,
    cdp_jwt,
    cdp_uri,
    load_cdp_key,
    parse_candles,
    parse_go_time,
    parse_product_book,
    parse_products,
    parse_rest_error,
    parse_ws_message,
    to_candles,
    to_tick,
)
from rbot.actors.feeds.errors import BookNotReady, CredentialError, ProtocolError
from rbot.bus.messages import BookLevel

D = Decimal
TS = "2023-02-09T20:30:37.167359596Z"


def msg(channel: str, seq: int, events: list[Any], **extra: Any) -> bytes:
    body = {"channel": channel, "client_id": "", "timestamp": TS, "sequence_num": seq}
    body["events"] = events
    body.update(extra)
    return json.dumps(body).encode()


def ws(data: bytes) -> WsMessage:
    m = parse_ws_message(data)
    assert isinstance(m, WsMessage)
    return m


TICKER = {
    "type": "ticker",
    "product_id": "BTC-USD",
    "price": "21932.98",
    "volume_24_h": "16038.28770938",
    "low_24_h": "21835.29",
    "high_24_h": "23011.18",
    "low_52_w": "15460",
    "high_52_w": "48240",
    "price_percent_chg_24_h": "-4.15775596190603",
    "best_bid": "21931.98",
    "best_bid_quantity": "8000.21",
    "best_ask": "21933.98",
    "best_ask_quantity": "8038.07770147",
}


def l2(kind: str, *updates: tuple[str, str, str], product: str = "BTC-USD") -> L2Event:
    return L2Event(
        type=kind,  # type: ignore[arg-type]
        product_id=product,
        updates=[
            L2Update(side=s, price_level=D(p), new_quantity=D(q))  # type: ignore[arg-type]
            for s, p, q in updates
        ],
    )


# --------------------------------------------------------------------------
# WebSocket messages


def test_ticker_snapshot_to_tick() -> None:
    m = ws(msg("ticker", 0, [{"type": "snapshot", "tickers": [TICKER]}]))
    (ev,) = m.events
    assert isinstance(ev, TickerEvent) and ev.type == "snapshot"
    (t,) = ev.tickers
    assert t.best_bid == D("21931.98") and t.best_ask_quantity == D("8038.07770147")
    tick = to_tick(t, time=m.timestamp, seq=m.seq)
    assert (tick.venue, tick.symbol, tick.source) == ("coinbase", "BTC-USD", "coinbase")
    assert tick.bid == D("21931.98") and tick.ask == D("21933.98") and tick.tradeable
    assert tick.time == "2023-02-09T20:30:37.167359Z"


def test_ticker_without_best_prices_is_not_tradeable() -> None:
    raw = {**TICKER, "best_bid": "", "best_ask": ""}
    m = ws(msg("ticker", 3, [{"type": "update", "tickers": [raw]}]))
    ev = m.events[0]
    assert isinstance(ev, TickerEvent)
    tick = to_tick(ev.tickers[0], time=m.timestamp, seq=m.seq)
    assert tick.bid is None and tick.ask is None and not tick.tradeable


def test_level2_answers_on_l2_data_with_offer_side() -> None:
    updates = [
        {"side": "bid", "event_time": TS, "price_level": "21921.73", "new_quantity": "0.06317902"},
        {"side": "offer", "event_time": TS, "price_level": "21921.74", "new_quantity": "0.1"},
    ]
    m = ws(msg("l2_data", 5, [{"type": "snapshot", "product_id": "BTC-USD", "updates": updates}]))
    (ev,) = m.events
    assert isinstance(ev, L2Event)
    assert [u.side for u in ev.updates] == ["bid", "offer"]
    assert ev.updates[0].price_level == D("21921.73")


def test_heartbeats_counter_as_number_or_string_and_go_time() -> None:
    go = "2023-06-23 20:31:56.121961769 +0000 UTC m=+91717.525857105"
    for counter in (3049, "3049"):
        m = ws(msg("heartbeats", 1, [{"current_time": go, "heartbeat_counter": counter}]))
        assert m.events == [Heartbeat(current_time=go, counter=3049)]
    assert parse_go_time(go) == dt.datetime(2023, 6, 23, 20, 31, 56, 121961, tzinfo=dt.UTC)
    assert parse_go_time("2023-06-23 22:31:56 +0200 CEST") == dt.datetime(
        2023, 6, 23, 20, 31, 56, tzinfo=dt.UTC
    )
    with pytest.raises(ProtocolError):
        parse_go_time("2023-06-23T20:31:56Z")


def test_subscriptions_ack() -> None:
    m = ws(msg("subscriptions", 2, [{"subscriptions": {"level2": ["BTC-USD"]}}]))
    assert m.events == [Subscriptions(subscriptions={"level2": ["BTC-USD"]})]


def test_unknown_channels_keep_their_sequence_number() -> None:
    m = ws(msg("market_trades", 9, [{"type": "update", "trades": [{"trade_id": "1"}]}]))
    assert m.channel == "market_trades" and m.seq == 9 and m.events == []
    m = ws(msg("ticker_batch", 10, [{"type": "update", "tickers": [TICKER]}]))
    assert m.events == []


def test_unknown_fields_are_ignored() -> None:
    m = ws(msg("ticker", 0, [{"type": "update", "tickers": [TICKER], "x": 1}], brand_new={}))
    assert isinstance(m.events[0], TickerEvent)


def test_error_frame() -> None:
    assert parse_ws_message(b'{"type":"error","message":"Failure to subscribe"}') == WsError(
        message="Failure to subscribe"
    )


@pytest.mark.parametrize(
    "data",
    [
        b'{"channel":"ticker","sequence_num":',
        b"[]",
        b'{"sequence_num":1,"events":[]}',  # no channel
        msg("ticker", 0, []).replace(b'"sequence_num": 0, ', b""),
        msg("ticker", 0, []).replace(TS.encode(), b"not a time"),
        msg("l2_data", 0, [{"type": "update", "product_id": "BTC-USD", "updates": [
            {"side": "ask", "event_time": TS, "price_level": "1", "new_quantity": "1"}]}]),
        msg("l2_data", 0, [{"type": "update", "product_id": "BTC-USD", "updates": [
            {"side": "bid", "event_time": TS, "price_level": "1", "new_quantity": "-1"}]}]),
        msg("l2_data", 0, [{"type": "update", "product_id": "BTC-USD", "updates": [
            {"side": "bid", "event_time": TS, "price_level": "x", "new_quantity": "1"}]}]),
        msg("l2_data", 0, [{"type": "delta", "product_id": "BTC-USD", "updates": []}]),
        msg("ticker", 0, [{"type": "update", "tickers": [{**TICKER, "best_bid": "1,5"}]}]),
        msg("heartbeats", 0, [{"current_time": "x", "heartbeat_counter": "many"}]),
    ],
)  # fmt: skip
def test_malformed_messages_raise_protocol_error(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_ws_message(data)


# --------------------------------------------------------------------------
# sequence numbers


def test_sequence_tracker_reports_gaps_and_resets() -> None:
    t = SequenceTracker()
    assert [t.observe(n) for n in (4, 5, 6)] == [None, None, None]
    gap = t.observe(8)
    assert gap == Gap(expected=7, received=8) and gap.missed == 1
    assert t.observe(9) is None
    assert t.observe(9) == Gap(expected=10, received=9)  # a repeat is out of order too
    assert t.observe(10) is None
    assert t.gaps == 2
    t.reset()
    assert t.observe(0) is None  # a new connection counts from scratch


def test_sequence_tracker_with_a_known_first_number() -> None:
    t = SequenceTracker(first=0)
    assert t.observe(2) == Gap(expected=0, received=2)
    assert t.observe(3) is None


# --------------------------------------------------------------------------
# the local book


def test_book_snapshot_updates_and_removals() -> None:
    book = OrderBook("BTC-USD")
    book.apply(l2("snapshot", ("bid", "100", "1"), ("bid", "99", "2"), ("offer", "101", "3")))
    assert book.best_bid == BookLevel(D("100"), D("1"))
    assert book.best_ask == BookLevel(D("101"), D("3"))
    book.apply(l2("update", ("bid", "100", "0"), ("offer", "100.5", "4"), ("bid", "99", "5")))
    assert book.best_bid == BookLevel(D("99"), D("5"))
    assert book.best_ask == BookLevel(D("100.5"), D("4"))
    book.apply(l2("update", ("offer", "42", "0")))  # removing a missing level is harmless
    assert not book.crossed
    book.apply(l2("snapshot", ("bid", "50", "1")))  # a snapshot replaces everything
    assert len(book.bids) == 1 and not book.asks


def test_book_top_n_order() -> None:
    book = OrderBook("ETH-USD")
    book.apply(
        l2(
            "snapshot",
            *[("bid", str(p), "1") for p in (10, 12, 11, 9)],
            *[("offer", str(p), "1") for p in (15, 13, 14, 16)],
            product="ETH-USD",
        )
    )
    bids, asks = book.top(3)
    assert [b.price for b in bids] == [D(12), D(11), D(10)]
    assert [a.price for a in asks] == [D(13), D(14), D(15)]
    snap = book.to_book(2, time=TS, seq=4)
    assert snap.venue == "coinbase" and snap.symbol == "ETH-USD" and snap.seq == 4
    assert len(snap.bids) == 2 and snap.asks[0].price == D(13)


def test_book_needs_a_snapshot_first_and_after_reset() -> None:
    book = OrderBook("BTC-USD")
    with pytest.raises(BookNotReady):
        book.apply(l2("update", ("bid", "1", "1")))
    book.apply(l2("snapshot", ("bid", "1", "1")))
    book.reset()
    assert not book.ready and book.best_bid is None
    with pytest.raises(BookNotReady):
        book.apply(l2("update", ("bid", "1", "1")))
    with pytest.raises(ProtocolError):
        book.apply(l2("snapshot", product="ETH-USD"))


# --------------------------------------------------------------------------
# REST


def test_products() -> None:
    data = json.dumps(
        {
            "products": [
                {
                    "product_id": "BTC-USD",
                    "price": "37000.01",
                    "base_increment": "0.00000001",
                    "quote_increment": "0.01",
                    "base_min_size": "0.00000001",
                    "base_max_size": "3400",
                    "status": "online",
                    "trading_disabled": False,
                    "product_type": "SPOT",
                    "view_only": False,
                },
                {"product_id": "NEW-USD", "price": "", "status": "offline"},
            ],
            "num_products": 2,
        }
    )
    btc, new = parse_products(data)
    assert btc.price == D("37000.01") and btc.quote_increment == D("0.01")
    assert btc.status == "online" and not btc.trading_disabled
    assert new.price is None and new.status == "offline"
    with pytest.raises(ProtocolError):
        parse_products(b'{"products":[{"price":"1"}]}')


def test_product_book() -> None:
    data = json.dumps(
        {
            "pricebook": {
                "product_id": "BTC-USD",
                "bids": [{"price": "100.0", "size": "1.5"}],
                "asks": [{"price": "100.5", "size": "2"}],
                "time": TS,
            },
            "last": "100.2",
            "mid_market": "100.25",
            "spread_bps": "49.87",
            "spread_absolute": "0.5",
        }
    )
    pb = parse_product_book(data)
    assert pb.bids == [BookLevel(D("100.0"), D("1.5"))]
    assert pb.mid_market == D("100.25") and pb.spread_absolute == D("0.5")
    book = pb.to_book(seq=3)
    assert book.asks[0].price == D("100.5") and book.time == "2023-02-09T20:30:37.167359Z"
    with pytest.raises(ProtocolError):
        parse_product_book(b'{"last":"1"}')


def test_candles_newest_first_and_bus_candles_oldest_first() -> None:
    data = json.dumps(
        {
            "candles": [
                {"start": "1700000060", "low": "1", "high": "3", "open": "2", "close": "2.5",
                 "volume": "10.75"},
                {"start": "1700000000", "low": "1", "high": "2", "open": "1.5", "close": "2",
                 "volume": "3"},
            ]
        }
    )  # fmt: skip
    raw = parse_candles(data)
    assert [c.start for c in raw] == [1700000060, 1700000000]
    bus = to_candles("BTC-USD", "ONE_MINUTE", raw)
    assert [c.time for c in bus] == ["2023-11-14T22:13:20.000000Z", "2023-11-14T22:14:20.000000Z"]
    assert bus[1].c == D("2.5") and bus[1].volume == 10
    with pytest.raises(ProtocolError):
        parse_candles(data.replace('"1700000000"', '"2023-11-14"'))


def test_rest_errors() -> None:
    err = parse_rest_error(b'{"error":"NOT_FOUND","message":"ProductID is invalid"}')
    assert (err.error, err.message) == ("NOT_FOUND", "ProductID is invalid")
    assert parse_rest_error(b"Unauthorized\n").message == "Unauthorized"


# --------------------------------------------------------------------------
# CDP JWT

KEY_NAME = "organizations/org-1/apiKeys/key-1"


def _pem(key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey, sec1: bool = False) -> str:
    fmt = (
        serialization.PrivateFormat.TraditionalOpenSSL
        if sec1
        else serialization.PrivateFormat.PKCS8
    )
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption()).decode()


def test_es256_jwt_claims_verify_with_the_public_key() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    now = time.time()
    uri = "POST api.coinbase.com/api/v3/brokerage/orders"
    token = cdp_jwt(KEY_NAME, _pem(key, sec1=True), uri, now)
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "ES256" and header["kid"] == KEY_NAME
    assert len(header["nonce"]) == 32 and int(header["nonce"], 16) >= 0
    claims = jwt.decode(token, key.public_key(), algorithms=["ES256"])
    assert claims == {
        "sub": KEY_NAME,
        "iss": "cdp",
        "nbf": int(now),
        "exp": int(now) + 120,
        "uri": uri,
    }
    other = cdp_jwt(KEY_NAME, _pem(key), uri, now)
    assert jwt.get_unverified_header(other)["nonce"] != header["nonce"]


def test_eddsa_jwt_without_uri_for_websocket() -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    now = time.time()
    token = cdp_jwt(KEY_NAME, _pem(key), None, now, nonce="abc123")
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "EdDSA" and header["nonce"] == "abc123"
    claims = jwt.decode(token, key.public_key(), algorithms=["EdDSA"])
    assert "uri" not in claims and claims["iss"] == "cdp" and claims["sub"] == KEY_NAME


def test_base64_ed25519_and_escaped_newlines() -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    seed = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    pub = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    token = cdp_jwt(KEY_NAME, base64.b64encode(seed + pub).decode(), None, time.time())
    jwt.decode(token, key.public_key(), algorithms=["EdDSA"])
    ec_key = ec.generate_private_key(ec.SECP256R1())
    escaped = _pem(ec_key, sec1=True).replace("\n", "\\n")
    assert isinstance(load_cdp_key(escaped), ec.EllipticCurvePrivateKey)


def test_bad_keys_raise_without_leaking_the_secret() -> None:
    secret = "-----BEGIN EC PRIVATE KEY-----\nTOPSECRETTOPSECRET\n-----END EC PRIVATE KEY-----"
    with pytest.raises(CredentialError) as info:
        load_cdp_key(secret)
    assert "TOPSECRET" not in str(info.value) and info.value.__cause__ is None
    with pytest.raises(CredentialError):
        load_cdp_key("bm90IGEga2V5")  # base64, wrong length
    p384 = _pem(ec.generate_private_key(ec.SECP384R1()))
    with pytest.raises(CredentialError):
        load_cdp_key(p384)


def test_uri_claim_has_no_scheme_and_no_query() -> None:
    assert (
        cdp_uri("get", "https://api.coinbase.com/api/v3/brokerage/products?product_type=SPOT")
        == "GET api.coinbase.com/api/v3/brokerage/products"
    )
    assert cdp_uri("POST", "http://127.0.0.1:8123/api/v3/brokerage/orders") == (
        "POST 127.0.0.1:8123/api/v3/brokerage/orders"
    )
