"""The pure Coinbase order protocol: bodies out, outcomes and facts in."""

from __future__ import annotations

from decimal import Decimal

from rbot.actors.live.coinbase_proto import (
    close_body,
    create_outcome,
    order_body,
    order_facts,
    user_facts,
)
from rbot.bus.messages import Order


def _order(**over: object) -> Order:
    base: dict[str, object] = {
        "id": "paper-coinbase-7", "user": "u", "venue": "coinbase", "symbol": "BTC-USD",
        "side": "BUY", "qty": Decimal("0.010"), "stop_loss": Decimal("21500"),
        "take_profit": Decimal("22500.0"), "order_type": "MARKET",
        "expires_at": "2026-11-30T12:00:00+00:00",
    }  # fmt: skip
    base.update(over)
    return Order(**base)  # type: ignore[arg-type]


def test_market_body_with_attached_bracket() -> None:
    body = order_body(_order())
    assert body["client_order_id"] == "paper-coinbase-7"
    assert body["order_configuration"] == {"market_market_ioc": {"base_size": "0.01"}}
    assert body["attached_order_configuration"] == {
        "trigger_bracket_gtc": {"limit_price": "22500", "stop_trigger_price": "21500"}
    }


def test_limit_body_is_gtd_at_the_ttl() -> None:
    body = order_body(_order(order_type="LIMIT", limit_price=Decimal("21800")))
    cfg = body["order_configuration"]["limit_limit_gtd"]
    assert cfg["limit_price"] == "21800" and cfg["end_time"] == "2026-11-30T12:00:00Z"


def test_close_body_is_the_other_side() -> None:
    body = close_body(_order())
    assert body["side"] == "SELL" and body["client_order_id"] == "paper-coinbase-7-close"


def test_outcomes() -> None:
    ok = create_outcome(200, {"success": True, "success_response": {"order_id": "x"}})
    assert ok.kind == "pending" and ok.broker_order_id == "x"
    bad = create_outcome(
        200,
        {"success": False, "error_response": {"error": "INSUFFICIENT_FUND", "message": "m"}},
    )
    assert (bad.kind, bad.reason, bad.message) == ("rejected", "INSUFFICIENT_FUND", "m")
    http = create_outcome(400, {"error": "INVALID_ARGUMENT", "message": "no"})
    assert http.reason == "INVALID_ARGUMENT"
    assert create_outcome(401, {}).reason == "HTTP_401"


def test_facts_from_rest_and_user_channel() -> None:
    rest = {"order_id": "b1", "client_order_id": "c1", "status": "FILLED",
            "average_filled_price": "100.5", "created_time": "t"}  # fmt: skip
    (f,) = order_facts(rest)
    assert (f.kind, f.client_id, f.trade_id, f.price) == ("filled", "c1", "b1", Decimal("100.5"))
    child = {"order_id": "k", "client_order_id": "", "status": "FILLED", "avg_price": "90",
             "originating_order_id": "b1", "trigger_status": "STOP_TRIGGERED"}  # fmt: skip
    msg = {"channel": "user", "sequence_num": 4, "events": [{"type": "update", "orders": [child]}]}
    (c,) = user_facts(msg)
    assert (c.kind, c.trade_id, c.reason, c.txn_id) == ("closed", "b1", "STOP_LOSS_ORDER", 4)
    expired = {"order_id": "b2", "client_order_id": "c2", "status": "EXPIRED", "avg_price": "0"}
    assert order_facts(expired)[0].reason == "TIME_IN_FORCE_EXPIRED"
    assert order_facts({"status": "OPEN", "client_order_id": "c3", "avg_price": "0"}) == []
    closing = {"client_order_id": "c1-close", "status": "FILLED", "avg_price": "101"}
    (x,) = order_facts(closing)
    assert (x.kind, x.client_id, x.reason) == ("closed", "c1", "CLIENT_REQUEST")
