"""The fake Coinbase's orders, from ../shared/docs/PROTOCOLS.md and Coinbase's
Advanced Trade reference (Create Order, Get Order, List Orders, Cancel Orders,
the ``user`` channel), not from our client.

- ``POST /orders``: validation as documented (``success: false`` with an
  ``error_response``); a duplicate ``client_order_id`` returns the existing
  order; a BUY whose notional is above the quote balance fails with
  ``INSUFFICIENT_FUND``.  Market orders fill at once at the far side; a limit
  rests (``OPEN``) until the book crosses it, then fills at its limit.
- ``attached_order_configuration.trigger_bracket_gtc``: when the entry fills, a
  child order (``order_type: BRACKET``, the other side, ``originating_order_id``
  = the entry; the entry's ``attached_order_id`` names it) rests; the book
  reaching its ``limit_price`` fills it there (take-profit); reaching its
  ``stop_trigger_price`` sets ``trigger_status: STOP_TRIGGERED`` and fills it
  at the touch (a gap fills worse than the stop; the real venue's stop-limit
  would rest 5% away: a simplification).
- ``GET /orders/historical/{id}``, ``GET /orders/historical/batch``
  (``product_ids``, ``order_status`` repeated, ``limit``, ``cursor``; newest
  first; ``has_next`` / ``cursor``), ``POST /orders/batch_cancel``
  (``{"order_ids": [...]}`` -> ``results`` with ``success`` and
  ``failure_reason``).
- every change of an order is handed to ``listeners`` as a user-channel order
  record (``avg_price``, ``cumulative_quantity``, ``order_side``, ...).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

from tests.fakes._serve import ns_time

KNOWN_CONFIGS = {"market_market_ioc", "limit_limit_gtc", "limit_limit_gtd", "trigger_bracket_gtc"}
OPEN_STATES = ("OPEN", "PENDING")


def dec(value: Any) -> Decimal | None:
    if not isinstance(value, str):
        return None
    try:
        d = Decimal(value)
    except InvalidOperation:
        return None
    return d if d.is_finite() else None


def failure(error: str, preview: str, config: Any) -> dict[str, Any]:
    return {
        "success": False,
        "failure_reason": "UNKNOWN_FAILURE_REASON",
        "error_response": {
            "error": error,
            "message": error.replace("_", " ").lower(),
            "error_details": error.replace("_", " ").lower(),
            "preview_failure_reason": preview,
            "new_order_failure_reason": error,
        },
        "order_configuration": config,
    }


class OrderDesk:
    def __init__(self, books: dict[str, Any], quote_balance: Decimal) -> None:
        self.books = books  # product_id -> Product (best_bid, best_ask, base_increment)
        self.quote_balance = quote_balance
        self.orders: dict[str, dict[str, Any]] = {}
        self.by_client: dict[str, str] = {}
        self.creates = 0
        self.cancels = 0
        self.listeners: list[Callable[[dict[str, Any]], None]] = []

    # -- create ------------------------------------------------------------------------
    def create(self, body: Any) -> tuple[int, dict[str, Any]]:
        if not isinstance(body, dict):
            return 400, {"error": "INVALID_ARGUMENT", "message": "body must be an object"}
        coid, pid, side = body.get("client_order_id"), body.get("product_id"), body.get("side")
        config = body.get("order_configuration")
        if not coid or not pid or not side or not isinstance(config, dict):
            return 400, {
                "error": "INVALID_ARGUMENT",
                "message": "client_order_id, product_id, side and order_configuration are required",
            }
        if (existing := self.by_client.get(coid)) is not None:
            return 200, self._success(self.orders[existing])
        attached = body.get("attached_order_configuration")
        why = self._failure(pid, side, config, attached)
        if why is not None:
            return 200, failure(*why, config)
        ((kind, cfg),) = config.items()
        now = ns_time()
        order: dict[str, Any] = {
            "order_id": str(uuid.uuid4()),
            "product_id": pid,
            "side": side,
            "client_order_id": coid,
            "status": "OPEN",
            "order_configuration": config,
            "order_type": "MARKET" if kind.startswith("market") else "LIMIT",
            "average_filled_price": "0",
            "filled_size": "0",
            "created_time": now,
            "last_fill_time": None,
            "trigger_status": "INVALID_ORDER_TYPE",
            "originating_order_id": "",
            "attached_order_id": "",
            "reject_reason": "",
            "cancel_message": "",
        }
        if isinstance(attached, dict):
            order["attached_order_configuration"] = attached
        self.orders[order["order_id"]] = order
        self.by_client[coid] = order["order_id"]
        self.creates += 1
        self._changed(order)
        self._try_fill(order)
        return 200, self._success(order)

    def _failure(
        self, pid: str, side: str, config: dict[str, Any], attached: Any
    ) -> tuple[str, str] | None:
        if pid not in self.books:
            return "INVALID_PRODUCT_ID", "PREVIEW_INVALID_PRODUCT_ID"
        if side not in ("BUY", "SELL"):
            return "INVALID_SIDE", "PREVIEW_INVALID_SIDE"
        if len(config) != 1 or next(iter(config)) not in KNOWN_CONFIGS:
            return "UNSUPPORTED_ORDER_CONFIGURATION", "PREVIEW_INVALID_ORDER_CONFIG"
        ((kind, cfg),) = config.items()
        if not isinstance(cfg, dict):
            return "UNSUPPORTED_ORDER_CONFIGURATION", "PREVIEW_INVALID_ORDER_CONFIG"
        p = self.books[pid]
        best = p.best_ask if side == "BUY" else p.best_bid
        price = best
        if kind == "market_market_ioc":
            if ("quote_size" in cfg) == ("base_size" in cfg):
                return "UNSUPPORTED_ORDER_CONFIGURATION", "PREVIEW_INVALID_ORDER_CONFIG"
            size = dec(cfg.get("quote_size", cfg.get("base_size")))
        else:
            size = dec(cfg.get("base_size"))
            limit = dec(cfg.get("limit_price"))
            if limit is None or limit <= 0:
                return "INVALID_LIMIT_PRICE", "PREVIEW_INVALID_LIMIT_PRICE"
            if kind == "limit_limit_gtd" and not cfg.get("end_time"):
                return "INVALID_END_TIME", "PREVIEW_INVALID_END_TIME"
            if kind == "trigger_bracket_gtc" and dec(cfg.get("stop_trigger_price")) is None:
                return "INVALID_STOP_PRICE", "PREVIEW_INVALID_STOP_PRICE"
            crosses = best is not None and (limit >= best if side == "BUY" else limit <= best)
            if cfg.get("post_only") and crosses:
                return "INVALID_LIMIT_PRICE_POST_ONLY", "PREVIEW_INVALID_LIMIT_PRICE_POST_ONLY"
            price = limit
        if size is None or size <= 0:
            return "INVALID_SIZE_PRECISION", "PREVIEW_INVALID_BASE_SIZE_TOO_SMALL"
        if "base_size" in cfg and size < p.base_increment:
            return "INVALID_SIZE_PRECISION", "PREVIEW_INVALID_BASE_SIZE_TOO_SMALL"
        if attached is not None:
            bracket = attached.get("trigger_bracket_gtc") if isinstance(attached, dict) else None
            if not isinstance(bracket, dict) or any(
                dec(bracket.get(k)) is None for k in ("limit_price", "stop_trigger_price")
            ):
                return "UNSUPPORTED_ORDER_CONFIGURATION", "PREVIEW_INVALID_ATTACHED_ORDER"
        notional = size * (price or 0) if "base_size" in cfg else size
        if side == "BUY" and notional > self.quote_balance:
            return "INSUFFICIENT_FUND", "PREVIEW_INSUFFICIENT_FUND"
        return None

    @staticmethod
    def _success(order: dict[str, Any]) -> dict[str, Any]:
        keys = ("order_id", "product_id", "side", "client_order_id")
        return {
            "success": True,
            "success_response": {k: order[k] for k in keys},
            "order_configuration": order["order_configuration"],
        }

    # -- matching ----------------------------------------------------------------------
    def match(self, product_id: str) -> None:
        """The book moved: fill what it reaches (entries first, then brackets)."""
        for order in list(self.orders.values()):
            if order["product_id"] == product_id and order["status"] == "OPEN":
                self._try_fill(order)

    def _try_fill(self, order: dict[str, Any]) -> None:
        p = self.books[order["product_id"]]
        buy = order["side"] == "BUY"
        touch = p.best_ask if buy else p.best_bid
        if touch is None:
            return
        ((kind, cfg),) = order["order_configuration"].items()
        if kind == "market_market_ioc":
            self._fill(order, touch)
            return
        limit = Decimal(cfg["limit_price"])
        if limit >= touch if buy else limit <= touch:
            self._fill(order, limit)
            return
        if kind == "trigger_bracket_gtc":
            stop = Decimal(cfg["stop_trigger_price"])
            if touch >= stop if buy else touch <= stop:
                order["trigger_status"] = "STOP_TRIGGERED"
                self._fill(order, touch)

    def _fill(self, order: dict[str, Any], price: Decimal) -> None:
        ((_, cfg),) = order["order_configuration"].items()
        order.update(
            status="FILLED", average_filled_price=str(price),
            filled_size=cfg.get("base_size", "0"), last_fill_time=ns_time(),
        )  # fmt: skip
        self._changed(order)
        bracket = (order.get("attached_order_configuration") or {}).get("trigger_bracket_gtc")
        if bracket is not None and not order["attached_order_id"]:
            child = self._child(order, bracket)
            order["attached_order_id"] = child["order_id"]
            self._changed(child)
            self._try_fill(child)

    def _child(self, parent: dict[str, Any], bracket: dict[str, Any]) -> dict[str, Any]:
        child: dict[str, Any] = {
            **parent,
            "order_id": str(uuid.uuid4()),
            "client_order_id": "",
            "side": "SELL" if parent["side"] == "BUY" else "BUY",
            "status": "OPEN",
            "order_type": "BRACKET",
            "order_configuration": {
                "trigger_bracket_gtc": {"base_size": parent["filled_size"], **bracket}
            },
            "average_filled_price": "0",
            "filled_size": "0",
            "created_time": ns_time(),
            "last_fill_time": None,
            "trigger_status": "STOP_PENDING",
            "originating_order_id": parent["order_id"],
            "attached_order_id": "",
        }
        child.pop("attached_order_configuration", None)
        self.orders[child["order_id"]] = child
        return child

    # -- cancel, expire ---------------------------------------------------------------
    def batch_cancel(self, ids: Any) -> dict[str, Any]:
        results = []
        for oid in ids if isinstance(ids, list) else []:
            order = self.orders.get(str(oid))
            if order is None:
                results.append(_cancel_result(str(oid), "UNKNOWN_CANCEL_ORDER"))
            elif order["status"] not in OPEN_STATES:
                results.append(_cancel_result(str(oid), "INVALID_CANCEL_REQUEST"))
            else:
                order["status"] = "CANCELLED"
                self.cancels += 1
                self._changed(order)
                results.append(_cancel_result(str(oid), None))
        return {"results": results}

    def expire(self, client_order_id: str) -> bool:
        """The order's ``end_time`` passed (the broker's clock, driven by the test)."""
        order = self.find(client_order_id)
        if order is None or order["status"] != "OPEN":
            return False
        order["status"] = "EXPIRED"
        self._changed(order)
        return True

    # -- reads -------------------------------------------------------------------------
    def find(self, client_order_id: str) -> dict[str, Any] | None:
        oid = self.by_client.get(client_order_id)
        return None if oid is None else self.orders[oid]

    def listing(self, products: list[str], statuses: list[str], limit: int, cursor: int) -> Any:
        rows = [
            o for o in reversed(self.orders.values())
            if (not products or o["product_id"] in products)
            and (not statuses or o["status"] in statuses)
        ]  # fmt: skip
        page = rows[cursor : cursor + limit]
        more = cursor + limit < len(rows)
        return {
            "orders": page,
            "sequence": "0",
            "has_next": more,
            "cursor": str(cursor + limit) if more else "",
        }

    def _changed(self, order: dict[str, Any]) -> None:
        record = user_record(order)
        for listener in list(self.listeners):
            listener(record)


def _cancel_result(oid: str, why: str | None) -> dict[str, Any]:
    return {
        "success": why is None,
        "failure_reason": why or "UNKNOWN_CANCEL_FAILURE_REASON",
        "order_id": oid,
    }


def user_record(order: dict[str, Any]) -> dict[str, Any]:
    """An order as the ``user`` channel shows it (its own field names)."""
    ((_, cfg),) = order["order_configuration"].items()
    size = Decimal(cfg.get("base_size", "0") or "0")
    filled = Decimal(order["filled_size"] or "0")
    return {
        "order_id": order["order_id"],
        "client_order_id": order["client_order_id"],
        "cumulative_quantity": str(filled),
        "leaves_quantity": str(size - filled),
        "avg_price": order["average_filled_price"],
        "total_fees": "0",
        "status": order["status"],
        "product_id": order["product_id"],
        "creation_time": order["created_time"],
        "order_side": order["side"],
        "order_type": order["order_type"],
        "cancel_reason": "User requested cancel" if order["status"] == "CANCELLED" else "",
        "reject_reason": order["reject_reason"],
        "trigger_status": order["trigger_status"],
        "originating_order_id": order["originating_order_id"],
        "attached_order_id": order["attached_order_id"],
        "product_type": "SPOT",
    }
