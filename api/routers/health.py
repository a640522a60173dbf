"""``/health`` (the process is up) and ``/ready`` (NATS, streams, actors beating).

``/ready`` answers 503 at once while the API's NATS connection is down (with
``Retry-After``), and 200 again as soon as it is back, the streams are there
and the actors' pulse is fresh.  It shows how often the embedded nats-server
was restarted (``nats_server``), when there is one.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from rbot.bus.provision import check

from ..context import RETRY_AFTER_S, AnyCtx
from ..natsstatus import describe, nats_server_status

router = APIRouter(tags=["health"])
CHECK_TIMEOUT_S = 0.5  # the bus checks; a server that just died must not hang /ready


@router.get("/health")
async def health() -> dict[str, Any]:
    return {"ok": True, "status": "up"}


@router.get("/ready", responses={503: {"description": "not ready"}})
async def ready(ctx: AnyCtx) -> JSONResponse:
    checks: dict[str, Any] = {"nats": ctx.bus.connected, "nats_reconnects": ctx.bus.reconnects}
    missing: list[str] = []
    if ctx.bus.connected:
        try:
            async with asyncio.timeout(CHECK_TIMEOUT_S):  # a probe must answer fast
                missing = await check(ctx.bus)
                server = describe(await nats_server_status(ctx.bus))
        except Exception as exc:  # boundary: readiness reports, never raises
            missing, server = [f"error: {type(exc).__name__}"], None
        if server is not None:
            checks["nats_server"] = server
    checks["streams"] = ctx.bus.connected and not missing
    if missing:
        checks["missing"] = missing
    checks["actors"] = ctx.pulse_fresh()
    if ctx.pulse is not None:
        checks["silent"] = ctx.pulse.silent
        checks["trading_state"] = ctx.pulse.trading_state
    ok = bool(checks["nats"] and checks["streams"] and checks["actors"])
    if ok:
        return JSONResponse({"ok": True, "checks": checks})
    headers = {"Retry-After": str(RETRY_AFTER_S)}
    if not ctx.bus.connected:
        code, message = "bus_unavailable", "the message bus is unavailable"
    else:
        code, message = "not_ready", "streams missing or actors not beating"
    body = {"ok": False, "code": code, "message": message, "checks": checks}
    return JSONResponse(body, 503, headers=headers)
