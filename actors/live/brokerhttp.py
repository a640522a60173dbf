"""What both live brokers' HTTP shells share: one audited request, and the retried one.

A venue says how a path becomes a URL (and what the audit shows of it), how a
request is signed, and which fields of an answer the audit keeps; the rest —
the send record before the request, the answer record after it, 429 with
``Retry-After``, the backoff between attempts — is written once, here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from ..backoff import Backoff
from ..feeds.link import retry_after
from .facts import BrokerUnavailable

Audit = Callable[[str, dict[str, Any]], Awaitable[None]]


async def no_audit(kind: str, data: dict[str, Any]) -> None:
    return None


class BrokerHttp:
    def __init__(
        self,
        *,
        base_url: str,
        timeout: float,
        max_retries: int,
        backoff: Backoff,
        audit: Audit,
        silence_s: float,
    ) -> None:
        self.base = base_url.rstrip("/")
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.audit = audit
        self.silence_s = silence_s
        self.client = httpx.AsyncClient(timeout=timeout)
        self.stats = {"sends": 0, "lookups": 0, "retries": 0, "rate_limited": 0, "resends": 0}

    async def aclose(self) -> None:
        await self.client.aclose()

    # -- what a venue says ----------------------------------------------------------
    def _target(self, path: str) -> tuple[str, str]:
        """The URL for ``path``, and the path as the audit records it."""
        return self.base + path, path

    def _headers(self, method: str, url: str) -> dict[str, str]:
        raise NotImplementedError

    def _answer_fields(self, data: dict[str, Any], resp: httpx.Response) -> dict[str, Any]:
        raise NotImplementedError

    # -- shared -------------------------------------------------------------------------
    async def _call(
        self, method: str, path: str, body: object = None, params: Any = None
    ) -> tuple[int, dict[str, Any]]:
        """One request (no retry), audited before and after; transport errors propagate."""
        url, shown = self._target(path)
        await self.audit("send", {"method": method, "path": shown, "body": body})
        resp = await self.client.request(
            method, url, json=body, params=params, headers=self._headers(method, url)
        )
        try:
            data = resp.json()
        except ValueError:
            data = {}
        data = data if isinstance(data, dict) else {}
        answer = {"method": method, "path": shown, "status": resp.status_code}
        await self.audit("answer", {**answer, **self._answer_fields(data, resp)})
        if resp.status_code == 429:
            self.stats["rate_limited"] += 1
            data["_retry_after"] = retry_after(resp.headers)
        return resp.status_code, data

    async def _wait(self, attempt: int, data: dict[str, Any] | None = None) -> None:
        self.stats["retries"] += 1
        hinted = (data or {}).get("_retry_after")
        await asyncio.sleep(hinted if hinted is not None else self.backoff.delay(attempt))

    async def call(
        self, method: str, path: str, body: object = None, params: Any = None
    ) -> tuple[int, dict[str, Any]]:
        """A request that is safe to repeat (reads, cancels, closes), retried on
        429, 5xx and transport errors."""
        for attempt in range(self.max_retries + 1):
            data: dict[str, Any] | None = None
            try:
                status, data = await self._call(method, path, body, params)
            except httpx.TransportError as exc:
                await self.audit(
                    "error", {"method": method, "path": path, "error": type(exc).__name__}
                )
            else:
                if status != 429 and status < 500:
                    return status, data
            if attempt < self.max_retries:
                await self._wait(attempt, data)
        raise BrokerUnavailable(f"{method} {path}: no answer after {self.max_retries} retries")
