"""Coinbase Advanced order routing, pure: request bodies out, broker facts in.  No I/O.

``order_body`` builds ``POST /api/v3/brokerage/orders`` from our ``Order``:
``market_market_ioc`` (``base_size``) or ``limit_limit_gtd`` (``end_time`` =
the order's TTL), ``client_order_id`` = our order id (a duplicate returns the
existing order: a resend cannot open a second position), and the bracket as
``attached_order_configuration.trigger_bracket_gtc`` (take-profit as
``limit_price``, stop as ``stop_trigger_price``).

``create_outcome`` maps the answer (``success_response`` or
``error_response``; 4xx bodies ``{"error", "message"}``) to an ``Outcome``;
``order_facts`` maps one order record, from the REST order endpoints or the
``user`` WebSocket channel (whose field names differ), to ``Fact`` values:

- our order FILLED -> ``filled`` (its ``order_id`` is the "trade": the bracket
  child names it as ``originating_order_id``);
- the bracket child FILLED -> ``closed``: ``STOP_LOSS_ORDER`` when its stop
  triggered (``trigger_status: STOP_TRIGGERED``), else ``TAKE_PROFIT_ORDER``;
- our closing market order (``<id>-close``) FILLED -> ``closed``, ``CLIENT_REQUEST``;
- CANCELLED / EXPIRED / FAILED -> ``cancelled`` (``CLIENT_REQUEST``,
  ``TIME_IN_FORCE_EXPIRED``, the ``reject_reason``).

``key_algorithm`` gives the JWT algorithm of a CDP key (ES256 for EC P-256,
EdDSA for Ed25519) and checks ``COINBASE_API_ALGO`` against it.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal, InvalidOperation
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from rbot.bus import codec
from rbot.bus.messages import Order

from ..feeds.coinbase_proto import load_cdp_key
from ..feeds.errors import CredentialError
from .facts import Fact, Outcome

API = "/api/v3/brokerage"
CLOSE_SUFFIX = "-close"
ALGORITHMS = {"ES256": "ES256", "EDDSA": "EdDSA", "ED25519": "EdDSA"}


def key_algorithm(private_key: str, configured: str | None) -> str:
    """The key's JWT algorithm; ``COINBASE_API_ALGO`` must name it (or be unset).

    Raises ``CredentialError`` (never showing the key) when it is unknown or
    disagrees with the key."""
    key = load_cdp_key(private_key)
    alg = "ES256" if isinstance(key, ec.EllipticCurvePrivateKey) else "EdDSA"
    if configured is None or not configured.strip():
        return alg
    want = ALGORITHMS.get(configured.strip().upper())
    if want is None:
        raise CredentialError(
            f"COINBASE_API_ALGO={configured.strip()!r} is unknown: use ES256 or EdDSA"
        )
    if want != alg:
        kind = "an EC P-256" if alg == "ES256" else "an Ed25519"
        raise CredentialError(
            f"COINBASE_API_ALGO={configured.strip()} disagrees with the key: "
            f"COINBASE_API_KEY_SECRET holds {kind} key, which signs {alg}"
        )
    return alg


def _num(value: Decimal) -> str:
    return format(value.normalize(), "f")


def _rfc3339(iso: str) -> str:
    t = codec.parse_iso(iso).astimezone(dt.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def order_body(order: Order) -> dict[str, Any]:
    """The JSON body of ``POST /orders`` for ``order``, its bracket attached."""
    size = _num(order.qty)
    config: dict[str, Any]
    if order.order_type == "MARKET":
        config = {"market_market_ioc": {"base_size": size}}
    else:
        price = order.limit_price or order.entry_price
        if price is None:
            raise ValueError(f"LIMIT order {order.id} has no price")
        gtd = {"base_size": size, "limit_price": _num(price), "post_only": False}
        config = {"limit_limit_gtd": {**gtd, "end_time": _rfc3339(order.expires_at)}}
    return {
        "client_order_id": order.id,
        "product_id": order.symbol,
        "side": order.side,
        "order_configuration": config,
        "attached_order_configuration": {
            "trigger_bracket_gtc": {
                "limit_price": _num(order.take_profit),
                "stop_trigger_price": _num(order.stop_loss),
            }
        },
    }


def close_body(order: Order) -> dict[str, Any]:
    """A market order for the other side, closing ``order``'s position."""
    return {
        "client_order_id": order.id + CLOSE_SUFFIX,
        "product_id": order.symbol,
        "side": "SELL" if order.side == "BUY" else "BUY",
        "order_configuration": {"market_market_ioc": {"base_size": _num(order.qty)}},
    }


def create_outcome(status: int, body: dict[str, Any]) -> Outcome:
    """The answer to a create: accepted (``pending``: fills come from the user
    channel or a lookup) or rejected with the broker's code.  429 and 5xx are
    the shell's to retry; they never reach here."""
    if status == 200 and body.get("success") is True:
        ok = body.get("success_response") or {}
        return Outcome("pending", str(ok.get("order_id", "")) or None)
    err = body.get("error_response")
    if isinstance(err, dict):
        code = (
            err.get("error")
            or err.get("new_order_failure_reason")
            or err.get("preview_failure_reason")
            or body.get("failure_reason")
        )
        message = err.get("message") or err.get("error_details") or code
    else:
        code, message = body.get("error"), body.get("message") or body.get("error_details")
    code = str(code or f"HTTP_{status}")
    return Outcome("rejected", None, code, str(message or code))


def _dec(value: Any) -> Decimal | None:
    try:
        d = None if value in (None, "") else Decimal(str(value))
    except InvalidOperation:
        return None
    return d if d is not None and d.is_finite() and d > 0 else None


def order_facts(o: dict[str, Any], seq: int = 0) -> list[Fact]:
    """The facts one order record carries (REST ``order`` or a user-channel order)."""
    status = o.get("status")
    boid = str(o.get("order_id", "")) or None
    coid = str(o.get("client_order_id") or "") or None
    origin = str(o.get("originating_order_id") or "") or None
    price = _dec(o.get("avg_price", o.get("average_filled_price")))
    time = str(o.get("last_fill_time") or o.get("creation_time") or o.get("created_time") or "")
    if origin is not None:  # the bracket's child: it closes the position
        if status != "FILLED" or price is None:
            return []
        stopped = o.get("trigger_status") == "STOP_TRIGGERED"
        leg = "STOP_LOSS_ORDER" if stopped else "TAKE_PROFIT_ORDER"
        return [Fact("closed", seq, time, trade_id=origin, price=price, reason=leg)]
    if coid is not None and coid.endswith(CLOSE_SUFFIX):
        if status != "FILLED" or price is None:
            return []
        ours = coid.removesuffix(CLOSE_SUFFIX)
        return [Fact("closed", seq, time, client_id=ours, price=price, reason="CLIENT_REQUEST")]
    if status == "FILLED" and price is not None:
        return [
            Fact("filled", seq, time, client_id=coid, broker_order_id=boid, trade_id=boid,
                 price=price, reason="FILLED")
        ]  # fmt: skip
    reason: str | None = {"CANCELLED": "CLIENT_REQUEST", "EXPIRED": "TIME_IN_FORCE_EXPIRED"}.get(
        str(status)
    )
    if status == "FAILED":
        reason = str(o.get("reject_reason") or "FAILED")
    if reason is None:
        return []
    return [Fact("cancelled", seq, time, client_id=coid, broker_order_id=boid, reason=reason)]


def user_facts(msg: dict[str, Any]) -> list[Fact]:
    """The facts of one ``user`` channel message (snapshot or update)."""
    if msg.get("channel") != "user":
        return []
    seq = msg.get("sequence_num")
    seq = seq if isinstance(seq, int) else 0
    out: list[Fact] = []
    for event in msg.get("events") or []:
        if isinstance(event, dict):
            for o in event.get("orders") or []:
                if isinstance(o, dict):
                    out.extend(order_facts(o, seq))
    return out
