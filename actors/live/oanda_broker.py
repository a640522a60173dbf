"""The thin async shell around OANDA v20 orders: HTTP only, no NATS, no state.

``create`` never sends an order twice: after a timeout, a transport error or a
5xx (the broker may have accepted it) it looks the order up by
``@<clientExtensions.id>`` first, and resends only when the broker says it does
not exist (and then the same client id makes a duplicate impossible anyway).
429 is retried after ``Retry-After`` or the backoff.  Every request and answer
goes to ``audit`` (method, path, status, the broker's codes; never the token).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx

from rbot.bus.messages import Order

from ..backoff import Backoff
from ..feeds.link import Secret
from .brokerhttp import Audit, BrokerHttp, no_audit
from .facts import BrokerUnavailable, OutcomeUnknown, StreamLost
from .oanda_proto import Outcome, create_outcome, order_body, order_state_facts

__all__ = ["BrokerUnavailable", "OandaOrders", "OutcomeUnknown", "StreamLost"]


class OandaOrders(BrokerHttp):
    def __init__(
        self,
        *,
        base_url: str,
        stream_url: str,
        account_id: str,
        token: Secret,
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
        self.acct = f"/v3/accounts/{account_id}"
        self.stream_base = stream_url.rstrip("/")
        self._token = token

    def _headers(self, method: str = "GET", url: str = "") -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self._token.get_secret_value()}",
            "Content-Type": "application/json",
            "Accept-Datetime-Format": "RFC3339",
        }

    def _answer_fields(self, data: dict[str, Any], resp: httpx.Response) -> dict[str, Any]:
        return {
            "errorCode": data.get("errorCode"),
            "lastTransactionID": data.get("lastTransactionID"),
            "request_id": resp.headers.get("requestid"),
        }

    # -- orders ------------------------------------------------------------------
    async def create(self, order: Order) -> Outcome:
        body = order_body(order)
        for attempt in range(self.max_retries + 1):
            self.stats["sends"] += 1
            try:
                status, data = await self._call("POST", f"{self.acct}/orders", body)
            except httpx.TransportError as exc:  # a timeout after sending: did it arrive?
                await self.audit("error", {"order_id": order.id, "error": type(exc).__name__})
                status, data = 0, {}
            if status == 429:
                await self._wait(attempt, data)
                continue
            if status and status < 500:
                if data.get("errorCode") == "CLIENT_ORDER_ID_ALREADY_EXISTS":
                    found = await self.resolve(order.id)
                    if found is not None:
                        return found
                return create_outcome(status, data)
            found = await self.resolve(order.id)  # 5xx or no answer: look before resending
            if found is not None:
                return found
            self.stats["resends"] += 1
            await self._wait(attempt)
        raise OutcomeUnknown(f"order {order.id}: outcome unknown after {self.max_retries} tries")

    async def lookup(self, client_id: str) -> tuple[dict[str, Any], dict[str, Any] | None] | None:
        """The broker's order ``@client_id`` and its trade; None if it does not exist."""
        self.stats["lookups"] += 1
        status, data = await self.call("GET", f"{self.acct}/orders/@{client_id}")
        if status == 404:
            return None
        if status != 200 or not isinstance(data.get("order"), dict):
            raise BrokerUnavailable(f"lookup of {client_id}: HTTP {status}")
        order: dict[str, Any] = data["order"]
        trade = None
        if order.get("tradeOpenedID"):
            status, tdata = await self.call("GET", f"{self.acct}/trades/{order['tradeOpenedID']}")
            if status == 200 and isinstance(tdata.get("trade"), dict):
                trade = tdata["trade"]
        return order, trade

    async def resolve(self, client_id: str) -> Outcome | None:
        """A create's outcome learnt by lookup (None: the broker does not have it)."""
        found = await self.lookup(client_id)
        if found is None:
            return None
        order, trade = found
        fs = tuple(order_state_facts(order, trade))
        state = order.get("state")
        boid = str(order.get("id", "")) or None
        if state == "CANCELLED":
            reason = fs[0].reason if fs else "CANCELLED"
            return Outcome("cancelled", boid, reason, f"cancelled by the broker: {reason}", fs)
        if state == "FILLED":
            return Outcome("filled", boid, facts=fs)
        return Outcome("pending", boid)

    async def cancel(self, client_id: str) -> tuple[int, dict[str, Any]]:
        return await self.call("PUT", f"{self.acct}/orders/@{client_id}/cancel")

    async def close(self, trade_id: str) -> tuple[int, dict[str, Any]]:
        return await self.call("PUT", f"{self.acct}/trades/{trade_id}/close", {"units": "ALL"})

    async def changes(self, since: int) -> tuple[list[dict[str, Any]], int]:
        status, data = await self.call(
            "GET", f"{self.acct}/changes", params={"sinceTransactionID": str(since)}
        )
        if status != 200:
            raise BrokerUnavailable(f"changes since {since}: HTTP {status}")
        txns = (data.get("changes") or {}).get("transactions") or []
        return [t for t in txns if isinstance(t, dict)], int(data.get("lastTransactionID") or 0)

    # -- the transaction stream -------------------------------------------------------
    async def transactions(
        self, on_open: Callable[[], Awaitable[None]]
    ) -> AsyncIterator[dict[str, Any]]:
        """Lines of the transaction stream (heartbeats too) until it is lost.

        ``on_open`` runs once the stream answered 200, before any line is read:
        the place to catch up with ``/changes`` without a gap."""
        url = f"{self.stream_base}{self.acct}/transactions/stream"
        timeout = httpx.Timeout(self.timeout, read=self.silence_s)
        try:
            async with self.client.stream(
                "GET", url, headers=self._headers(), timeout=timeout
            ) as resp:
                if resp.status_code != 200:
                    raise StreamLost(f"transaction stream: HTTP {resp.status_code}")
                await on_open()
                async for line in resp.aiter_lines():
                    if not line.strip():
                        continue
                    try:
                        item = json.loads(line)
                    except ValueError:
                        continue  # a malformed line: skipped (the catch-up covers gaps)
                    if isinstance(item, dict):
                        yield item
        except httpx.HTTPError as exc:
            raise StreamLost(f"transaction stream: {type(exc).__name__}") from exc
        raise StreamLost("transaction stream ended")
