"""The API's edges in one pure-ASGI layer: request ids, security headers, Host check,
body limit (413), curl's JSON; and CORS."""

from __future__ import annotations

import json
import logging
import re
import uuid

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rbot.bus.config import Settings

log = logging.getLogger("rbot.api.access")

_RID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        b"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    ),
    (b"cross-origin-opener-policy", b"same-origin"),
]


async def _send_error(send: Send, status: int, code: str, message: str) -> None:
    body = json.dumps({"code": code, "message": message, "detail": None}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class Edges:
    """The API's edges in one pure-ASGI layer (one ``send`` wrapper per request).

    In order, as the four separate layers did before (issue 12: each wrapped
    every call, ~13 % of an order's CPU each, inclusive):

    1. a request id (``X-Request-ID`` kept only when it is a sane token, 1-64 of
       ``A-Za-z0-9._-``; anything else is replaced by a fresh id, so no header,
       log line or error body echoes an unvalidated value), on every response
       with the security headers, and in the access log;
    2. with ``allowed_hosts``: only requests whose ``Host`` names this server
       (DNS rebinding: a page on ``evil.example`` that re-points its name to
       127.0.0.1 makes the browser send ``Host: evil.example`` to our loopback
       port); installed in loopback open-registration mode (``rbot up``);
    3. with ``body_limit``: request bodies over it get a JSON 413, both a declared
       ``Content-Length`` and a body that grows past it while streaming
       (``Transfer-Encoding: chunked``);
    4. with ``curl_json``: bodies read as JSON whatever ``curl -d`` claims (the
       seed's curl commands send JSON as ``application/x-www-form-urlencoded`` or
       with no content type; this API has no form endpoints, and bad JSON still
       gets a clean 422 ``invalid_json``).
    """

    FORMISH = (b"", b"application/x-www-form-urlencoded")
    BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

    def __init__(
        self,
        app: ASGIApp,
        *,
        body_limit: int | None = None,
        allowed_hosts: frozenset[str] | None = None,
        curl_json: bool = False,
    ) -> None:
        self.app = app
        self.body_limit = body_limit
        self.allowed_hosts = allowed_hosts
        self.curl_json = curl_json

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = host = ctype = b""
        too_big = chunked = False
        limit = self.body_limit
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                if _RID_RE.match(value.decode("latin-1")):
                    rid = value
            elif name == b"host":
                host = host or value
            elif name == b"content-length" and limit is not None:
                too_big = too_big or _over(value, limit)
            elif name == b"content-type":
                ctype = ctype or value
            elif name == b"transfer-encoding":
                chunked = True
        rid_text = rid.decode("latin-1") if rid else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid_text
        extra = [(b"x-request-id", rid_text.encode()), *SECURITY_HEADERS]
        status = 0
        refused = False  # the streamed body passed the limit
        started = False

        async def send_edges(msg: Message) -> None:
            nonlocal status, started
            if refused:
                # the app caught the overflow while reading (FastAPI turns any body
                # error into a 400): its answer is replaced by the 413
                if msg["type"] == "http.response.start" and not started:
                    started = True
                    await self._refuse_body(send_edges_raw)
                return
            if msg["type"] == "http.response.start":
                started = True
                status = msg["status"]
                msg = {**msg, "headers": [*msg.get("headers", ()), *extra]}
            await send(msg)

        async def send_edges_raw(msg: Message) -> None:
            nonlocal status
            if msg["type"] == "http.response.start":
                status = msg["status"]
                msg = {**msg, "headers": [*msg["headers"], *extra]}
            await send(msg)

        try:
            if self.allowed_hosts is not None and (
                host_name(host.decode("latin-1")) not in self.allowed_hosts
            ):
                await _send_error(
                    send_edges_raw,
                    400,
                    "host_not_allowed",
                    "this server answers only to a loopback Host header",
                )
                return
            if too_big:
                await self._refuse_body(send_edges_raw)
                return
            if (
                self.curl_json
                and scope["method"] in self.BODY_METHODS
                and ctype.split(b";")[0].strip().lower() in self.FORMISH
            ):
                headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
                headers.append((b"content-type", b"application/json"))
                scope = {**scope, "headers": headers}
            if limit is None or not chunked:
                # a declared length within the limit is enforced by the HTTP server
                # itself (a longer body is a protocol error); no length, no body
                await self.app(scope, receive, send_edges)
                return
            seen = 0

            async def limited() -> Message:
                nonlocal seen, refused
                msg = await receive()
                if msg["type"] == "http.request":
                    seen += len(msg.get("body", b""))
                    if seen > limit:
                        refused = True
                        raise _TooLarge
                return msg

            try:
                await self.app(scope, limited, send_edges)
            except _TooLarge:
                if not started:
                    started = True
                    await self._refuse_body(send_edges_raw)
            except BaseExceptionGroup as eg:
                if refused and not started and eg.subgroup(_TooLarge) is not None:
                    started = True
                    await self._refuse_body(send_edges_raw)
                else:
                    raise
        finally:
            # path only: never the query string, headers or body (they may carry secrets)
            log.info("%s %s %s rid=%s", scope.get("method"), scope.get("path"), status, rid_text)

    async def _refuse_body(self, send: Send) -> None:
        await _send_error(
            send, 413, "payload_too_large", f"request body over {self.body_limit} bytes"
        )


class RequestIdAndHeaders(Edges):
    """Only the request id and the security headers (for apps built in tests)."""

    def __init__(self, app: ASGIApp) -> None:
        super().__init__(app)


class _TooLarge(Exception):
    pass


def _over(length: bytes, limit: int) -> bool:
    try:
        return int(length) > limit
    except ValueError:
        return True


LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def host_name(value: str) -> str:
    """``Host`` without its port, lower-cased; brackets off an IPv6 literal."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        return value[1:end] if end > 0 else ""
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def loopback_open(settings: Settings) -> bool:
    """Open trader registration on a loopback listener: ``rbot up``'s local mode."""
    open_trader = settings.rbot_open_registration.strip().lower() == "trader"
    return open_trader and settings.rbot_api_host in LOOPBACK_HOSTS


def install(app: FastAPI, settings: Settings) -> None:
    origins = [o.strip() for o in settings.rbot_cors_origins.split(",") if o.strip()]
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_credentials=True,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=[
                "Authorization",
                "Content-Type",
                "Idempotency-Key",
                "X-PIN",
                "Last-Event-ID",
            ],
        )
    app.add_middleware(
        Edges,
        body_limit=settings.rbot_max_body_bytes,
        allowed_hosts=LOOPBACK_HOSTS if loopback_open(settings) else None,
        curl_json=True,
    )
