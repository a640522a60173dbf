"""Every error is JSON ``{"code", "message", "detail"}`` with a stable code.

Routers raise ``ApiError(status, code, message, detail)``; validation errors,
unknown routes, oversized bodies and unexpected exceptions are mapped here, so
a client never sees a bare 500 page or a traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from rbot.bus.messages import ReplyCode

log = logging.getLogger("rbot.api")

_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    503: "unavailable",
}


# the order guard's stable codes (on the bus) -> HTTP; the one place they meet.
# 409: the request is fine, the server's current state refuses it (a halt,
# reduce-only, no fresh price); 403: the live gate (R6); 422: a request that can
# never pass; 5xx only for a broken or unreachable part (see actors/guard/rules.py)
GUARD_STATUS: Final[Mapping[ReplyCode, int]] = MappingProxyType(
    {
        ReplyCode.TRADING_HALTED: 409,
        ReplyCode.LIVE_DISABLED: 403,
        ReplyCode.PIN_REQUIRED: 403,
        ReplyCode.PIN_INVALID: 403,
        ReplyCode.UNKNOWN_SYMBOL: 422,
        ReplyCode.QTY_INVALID: 422,
        ReplyCode.TRADING_REDUCING: 409,
        ReplyCode.TTL_TOO_LONG: 422,
        ReplyCode.OCO_MISSING: 422,
        ReplyCode.PRICE_INVALID: 422,
        ReplyCode.QUALITY_MISSING: 422,
        ReplyCode.QUALITY_TOO_LOW: 422,
        ReplyCode.QTY_TOO_LARGE: 422,
        ReplyCode.NO_PRICE: 409,
        ReplyCode.STALE_PRICE: 409,
        ReplyCode.OCO_WRONG_SIDE: 422,
        ReplyCode.NOTIONAL_TOO_LARGE: 422,
        ReplyCode.RATE_LIMITED: 429,
        ReplyCode.BAD_REQUEST: 400,
        ReplyCode.GUARD_ERROR: 503,
        ReplyCode.LIVE_UNAVAILABLE: 409,
        ReplyCode.IDEMPOTENCY_CONFLICT: 409,
        ReplyCode.BUS_UNAVAILABLE: 503,
        ReplyCode.ORDER_NOT_FOUND: 404,
        ReplyCode.ORDER_FINAL: 409,
    }
)


def guard_status(code: str | None) -> int:
    """The HTTP status for a guard's refusal; a code this API does not know is 503
    (a newer guard than this API: a server-side mismatch, not the client's fault)."""
    try:
        return GUARD_STATUS[ReplyCode(code or "")]
    except ValueError:
        return 503


class ErrorOut(BaseModel):
    """The body of every error response (documented as each operation's ``default``)."""

    code: str
    message: str
    detail: Any = None


# on the app: every non-2xx answer is an ErrorOut, and FastAPI then documents no
# HTTPValidationError 422 (a shape this API never sends)
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    "default": {"model": ErrorOut, "description": "an error: `{code, message, detail}`"}
}


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        detail: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.detail = detail
        self.headers = headers


def error_response(
    status: int, code: str, message: str, detail: Any = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"code": code, "message": message, "detail": detail}, status_code=status, headers=headers
    )


def _clean_validation(errors: list[Any]) -> list[dict[str, Any]]:
    out = []
    for e in errors:
        loc = [str(p) for p in e.get("loc", ())]
        # never echo the submitted value back: it may be a password
        out.append({"loc": loc, "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))})
    return out


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.detail, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _clean_validation(list(exc.errors()))
        code = "validation_error"
        if any(e["type"] == "extra_forbidden" for e in errors):
            code = "unknown_field"
        elif any(e["type"] == "json_invalid" for e in errors):
            code = "invalid_json"
        return error_response(422, code, "the request does not match the schema", errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, "http_error")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        return error_response(exc.status_code, code, message, None, getattr(exc, "headers", None))

    from nats.errors import ConnectionClosedError, NoRespondersError, TimeoutError
    from nats.js.errors import ServiceUnavailableError

    async def _bus_unavailable(request: Request, exc: Exception) -> JSONResponse:
        log.warning("bus unavailable for %s: %s", request.url.path, type(exc).__name__)
        return error_response(
            503,
            "bus_unavailable",
            "the message bus is unavailable; retry shortly",
            headers={"Retry-After": "1"},
        )

    # by class, not in the catch-all below: Starlette re-raises whatever reaches the
    # catch-all after answering, so uvicorn logs a traceback and drops the connection
    for kind in (
        ConnectionClosedError,
        NoRespondersError,
        TimeoutError,
        ServiceUnavailableError,  # JetStream still recovering after a restart
        OSError,
    ):
        app.add_exception_handler(kind, _bus_unavailable)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # the id the middleware validated (or made): never the raw header, which
        # could carry markup or a log-injection payload
        rid = str(request.scope.get("state", {}).get("request_id", ""))
        log.exception("unexpected error on %s rid=%s", request.url.path, rid)
        return error_response(
            500,
            "internal_error",
            "unexpected error",
            {"request_id": rid},
            headers={"X-Request-ID": rid} if rid else None,
        )
