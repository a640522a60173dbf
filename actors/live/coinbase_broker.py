"""The thin async shell around Coinbase Advanced orders: HTTP and the ``user``
WebSocket only, no NATS, no state.

Every REST request carries a fresh CDP JWT (``uri`` = "METHOD host/path").
``create`` never sends an order twice: after a timeout, a transport error or a
5xx (the broker may have accepted it) it looks the order up by its
``client_order_id`` (``GET /orders/historical/batch`` for the product) first,
and resends only when the broker does not have it (a duplicate
``client_order_id`` returns the existing order anyway).  429 waits
(``Retry-After`` or the backoff) and retries.  Every request and answer goes
to ``audit`` (method, path, status, the broker's error; never a JWT).

``transactions`` is the ``user`` channel (subscribed with a JWT, plus
``heartbeats`` to keep it open): it yields every message, and ends with
``StreamLost`` when the socket closes, goes silent or skips a ``sequence_num``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import WebSocketException

from rbot.bus.messages import Order

from ..backoff import Backoff
from ..feeds.coinbase_client import CdpCredentials
from .brokerhttp import Audit, BrokerHttp, no_audit
from .coinbase_proto import API, CLOSE_SUFFIX, close_body, create_outcome, order_body, order_facts
from .facts import BrokerUnavailable, Fact, Outcome, OutcomeUnknown, StreamLost

USER_WS_URL = "wss://advanced-trade-ws-user.coinbase.com"
MARKET_WS_URL = "wss://advanced-trade-ws.coinbase.com"


def user_ws_url(market_ws_url: str) -> str:
    """The user channel's host: Coinbase's own next to its market data, else the
    configured one (a fake serves both on one socket)."""
    return USER_WS_URL if market_ws_url.rstrip("/") == MARKET_WS_URL else market_ws_url


class CoinbaseOrders(BrokerHttp):
    def __init__(
        self,
        *,
        base_url: str,
        ws_url: str,
        credentials: CdpCredentials,
        products: Sequence[str],
        timeout: float = 5.0,
        max_retries: int = 5,
        backoff: Backoff = Backoff(initial=0.05, cap=2.0),
        audit: Audit = no_audit,
        silence_s: float = 15.0,
    ) -> None:
        super().__init__(
            base_url=base_url, timeout=timeout, max_retries=max_retries, backoff=backoff,
            audit=audit, silence_s=silence_s,
        )  # fmt: skip
        self.ws_url = ws_url
        self._cdp = credentials
        self.products = list(products)

    def _target(self, path: str) -> tuple[str, str]:
        return self.base + API + path, API + path

    def _headers(self, method: str, url: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._cdp.jwt(method, url)}"}  # a fresh JWT each

    def _answer_fields(self, data: dict[str, Any], resp: httpx.Response) -> dict[str, Any]:
        nested = data.get("error_response")
        err: dict[str, Any] = nested if isinstance(nested, dict) else data
        return {
            "success": data.get("success"), "error": err.get("error"),
            "remaining": resp.headers.get("x-ratelimit-remaining"),
        }  # fmt: skip

    # -- orders ------------------------------------------------------------------
    async def create(self, order: Order) -> Outcome:
        return await self._create(order, order_body(order))

    async def _create(self, order: Order, body: dict[str, Any]) -> Outcome:
        coid = str(body["client_order_id"])
        for attempt in range(self.max_retries + 1):
            self.stats["sends"] += 1
            try:
                status, data = await self._call("POST", "/orders", body)
            except httpx.TransportError as exc:  # a timeout after sending: did it arrive?
                await self.audit("error", {"order_id": coid, "error": type(exc).__name__})
                status, data = 0, {}
            if status == 429:
                await self._wait(attempt, data)
                continue
            if status and status < 500:
                return create_outcome(status, data)
            found = await self.resolve(coid, order.symbol)  # look before resending
            if found is not None:
                return found
            self.stats["resends"] += 1
            await self._wait(attempt)
        raise OutcomeUnknown(f"order {coid}: outcome unknown after {self.max_retries} tries")

    async def lookup(self, client_order_id: str, product_id: str) -> dict[str, Any] | None:
        """The broker's order with ``client_order_id`` (newest first, every page)."""
        self.stats["lookups"] += 1
        cursor = ""
        while True:
            params: dict[str, Any] = {"product_ids": [product_id], "limit": 250}
            if cursor:
                params["cursor"] = cursor
            status, data = await self.call("GET", "/orders/historical/batch", params=params)
            if status != 200:
                raise BrokerUnavailable(f"lookup of {client_order_id}: HTTP {status}")
            for o in data.get("orders") or []:
                if isinstance(o, dict) and o.get("client_order_id") == client_order_id:
                    return o
            cursor = str(data.get("cursor") or "")
            if not data.get("has_next") or not cursor:
                return None

    async def get(self, order_id: str) -> dict[str, Any] | None:
        status, data = await self.call("GET", f"/orders/historical/{order_id}")
        if status == 404:
            return None
        if status != 200 or not isinstance(data.get("order"), dict):
            raise BrokerUnavailable(f"order {order_id}: HTTP {status}")
        order: dict[str, Any] = data["order"]
        return order

    async def state_facts(self, order: dict[str, Any]) -> list[Fact]:
        """Facts of a looked-up order and, once it filled, of its bracket child."""
        fs = order_facts(order)
        child = str(order.get("attached_order_id") or "")
        if order.get("status") == "FILLED" and child:
            found = await self.get(child)
            if found is not None:
                fs += order_facts(found)
        return fs

    async def resolve(self, client_order_id: str, product_id: str) -> Outcome | None:
        """A create's outcome learnt by lookup (None: the broker does not have it)."""
        found = await self.lookup(client_order_id, product_id)
        if found is None:
            return None
        boid = str(found.get("order_id", "")) or None
        fs = tuple(await self.state_facts(found))
        if found.get("status") in ("CANCELLED", "EXPIRED", "FAILED"):
            reason = fs[0].reason if fs else str(found.get("status"))
            return Outcome("cancelled", boid, reason, f"cancelled by the broker: {reason}", fs)
        return Outcome("pending", boid, facts=fs)

    async def cancel(self, order_ids: list[str]) -> dict[str, str | None]:
        """``batch_cancel``: order id -> None (cancelled) or the broker's failure reason."""
        status, data = await self.call("POST", "/orders/batch_cancel", {"order_ids": order_ids})
        if status != 200:
            raise BrokerUnavailable(f"batch_cancel: HTTP {status}")
        out: dict[str, str | None] = {oid: "NO_RESULT" for oid in order_ids}
        for r in data.get("results") or []:
            if isinstance(r, dict) and r.get("order_id") in out:
                out[str(r["order_id"])] = None if r.get("success") else str(r.get("failure_reason"))
        return out

    async def close(self, order: Order) -> list[Fact]:
        """Close a filled order's position: cancel its bracket, then a market order
        for the other side (``<id>-close``, idempotent too).  The facts of the close."""
        assert order.broker_order_id is not None
        parent = await self.get(order.broker_order_id)
        child = str((parent or {}).get("attached_order_id") or "")
        if child:
            why = (await self.cancel([child]))[child]
            if why is not None:  # filled meanwhile: that is the close
                found = await self.get(child)
                return order_facts(found) if found is not None else []
        outcome = await self._create(order, close_body(order))
        if outcome.kind == "rejected" or outcome.broker_order_id is None:
            await self.audit(
                "error", {"order_id": order.id + CLOSE_SUFFIX, "error": outcome.reason}
            )
            return []
        closing = await self.get(outcome.broker_order_id)
        return order_facts(closing) if closing is not None else []

    # -- the user channel ---------------------------------------------------------------
    async def transactions(
        self, on_open: Callable[[], Awaitable[None]]
    ) -> AsyncIterator[dict[str, Any]]:
        """Messages of the ``user`` channel until it is lost.  ``on_open`` runs once
        the subscription is acknowledged: the place to catch up without a gap."""
        try:
            async with connect(self.ws_url, open_timeout=self.timeout, close_timeout=1) as ws:
                for channel in ("user", "heartbeats"):
                    sub = {"type": "subscribe", "channel": channel, "product_ids": self.products,
                           "jwt": self._cdp.jwt()}  # fmt: skip
                    await ws.send(json.dumps(sub))
                seq: int | None = None
                opened = False
                while True:
                    try:
                        async with asyncio.timeout(self.silence_s):
                            raw = await ws.recv()
                    except TimeoutError:
                        raise StreamLost("user channel: silent") from None
                    try:
                        msg = json.loads(raw)
                    except ValueError:
                        continue  # a malformed frame: skipped (a gap shows in sequence_num)
                    if not isinstance(msg, dict):
                        continue
                    if msg.get("type") == "error":
                        raise StreamLost(f"user channel: {msg.get('message')}")
                    n = msg.get("sequence_num")
                    if isinstance(n, int):
                        if seq is not None and n != seq + 1:
                            raise StreamLost(f"user channel: sequence {seq} -> {n}")
                        seq = n
                    if not opened and msg.get("channel") == "subscriptions":
                        opened = True
                        await on_open()
                    yield msg
        except (OSError, WebSocketException) as exc:
            raise StreamLost(f"user channel: {type(exc).__name__}") from exc
