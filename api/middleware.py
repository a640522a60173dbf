"""The API's edges: body limit (413), request ids, security headers, Host check, CORS."""

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


def _json_error(status: int, code: str, message: str) -> tuple[Message, Message]:
    body = json.dumps({"code": code, "message": message, "detail": None}).encode()
    start: Message = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
    }
    return start, {"type": "http.response.body", "body": body}


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes with a JSON 413.

    Both a declared ``Content-Length`` over the limit and a body that grows past
    it while streaming (``Transfer-Encoding: chunked``) are refused.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.limit
                except ValueError:
                    too_big = True
                if too_big:
                    await self._refuse(send)
                    return
        seen = 0
        refused = False

        async def limited() -> Message:
            nonlocal seen, refused
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit:
                    refused = True
                    raise _TooLarge
            return msg

        started = False

        async def watch(msg: Message) -> None:
            nonlocal started
            if refused:
                # the app caught the overflow while reading (FastAPI turns any body
                # error into a 400): its answer is replaced by the 413
                if msg["type"] == "http.response.start" and not started:
                    started = True
                    await self._refuse(send)
                return
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, limited, watch)
        except _TooLarge:
            if not started:
                await self._refuse(send)
        except BaseExceptionGroup as eg:
            if refused and not started and eg.subgroup(_TooLarge) is not None:
                await self._refuse(send)
            else:
                raise

    async def _refuse(self, send: Send) -> None:
        start, body = _json_error(413, "payload_too_large", f"request body over {self.limit} bytes")
        await send(start)
        await send(body)


class _TooLarge(Exception):
    pass


class CurlJson:
    """Read bodies as JSON whatever ``curl -d`` claims.

    The seed's curl commands send JSON with curl's default content type
    (``application/x-www-form-urlencoded``) or none at all.  This API has no form
    endpoints, so such a body is treated as the JSON it is (bad JSON still gets a
    clean 422 ``invalid_json``).
    """

    FORMISH = (b"", b"application/x-www-form-urlencoded")

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("method") in ("POST", "PUT", "PATCH", "DELETE"):
            headers = [(k, v) for k, v in scope.get("headers", []) if k != b"content-type"]
            ctype = next((v for k, v in scope.get("headers", []) if k == b"content-type"), b"")
            if ctype.split(b";")[0].strip().lower() in self.FORMISH:
                headers.append((b"content-type", b"application/json"))
                scope = {**scope, "headers": headers}
        await self.app(scope, receive, send)


class RequestIdAndHeaders:
    """A request id on every response (and in the access log); security headers.

    A client's ``X-Request-ID`` is kept only when it is a sane token (1-64 of
    ``A-Za-z0-9._-``); anything else is replaced by a fresh id, so no header,
    log line or error body ever echoes an unvalidated value.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = ""
        for name, value in scope.get("headers", []):
            if name == b"x-request-id":
                candidate = value.decode("latin-1")
                if _RID_RE.match(candidate):
                    rid = candidate
        rid = rid or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        status = 0

        async def send_with_headers(msg: Message) -> None:
            nonlocal status
            if msg["type"] == "http.response.start":
                status = msg["status"]
                headers = list(msg.get("headers", []))
                headers.append((b"x-request-id", rid.encode()))
                headers.extend(SECURITY_HEADERS)
                msg = {**msg, "headers": headers}
            await send(msg)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            # path only: never the query string, headers or body (they may carry secrets)
            log.info("%s %s %s rid=%s", scope.get("method"), scope.get("path"), status, rid)


LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def host_name(value: str) -> str:
    """``Host`` without its port, lower-cased; brackets off an IPv6 literal."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        return value[1:end] if end > 0 else ""
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class HostAllowList:
    """Answer only requests whose ``Host`` names this server (DNS rebinding).

    A page on ``evil.example`` that re-points its name to 127.0.0.1 makes the
    browser send ``Host: evil.example`` to our loopback port, same-origin in the
    browser's eyes; refusing foreign ``Host`` values stops it.  Installed when
    the API listens on loopback with open trader registration (``rbot up``'s
    default), where such a page could otherwise register a trader and trade.
    """

    def __init__(self, app: ASGIApp, allowed: frozenset[str]) -> None:
        self.app = app
        self.allowed = allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = next((v for k, v in scope.get("headers", []) if k == b"host"), b"")
        if host_name(host.decode("latin-1")) not in self.allowed:
            start, body = _json_error(
                400, "host_not_allowed", "this server answers only to a loopback Host header"
            )
            await send(start)
            await send(body)
            return
        await self.app(scope, receive, send)


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
    app.add_middleware(CurlJson)
    app.add_middleware(BodyLimit, limit=settings.rbot_max_body_bytes)
    if loopback_open(settings):
        app.add_middleware(HostAllowList, allowed=LOOPBACK_HOSTS)
    app.add_middleware(RequestIdAndHeaders)
