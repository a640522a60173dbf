"""``/health`` (the process is up) and ``/ready`` (NATS, streams, actors beating)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from rbot.bus.provision import check

from ..context import Ctx

router = APIRouter(tags=["health"])


@router.get("/health")
async def health() -> dict[str, Any]:
    return {"ok": True, "status": "up"}


@router.get("/ready", responses={503: {"description": "not ready"}})
async def ready(ctx: Ctx) -> JSONResponse:
    checks: dict[str, Any] = {"nats": ctx.bus.connected}
    missing: list[str] = []
    if ctx.bus.connected:
        try:
            missing = await check(ctx.bus)
        except Exception as exc:  # boundary: readiness reports, never raises
            missing = [f"error: {type(exc).__name__}"]
    checks["streams"] = not missing
    if missing:
        checks["missing"] = missing
    checks["actors"] = ctx.pulse_fresh()
    if ctx.pulse is not None:
        checks["silent"] = ctx.pulse.silent
        checks["trading_state"] = ctx.pulse.trading_state
    ok = bool(checks["nats"] and checks["streams"] and checks["actors"])
    return JSONResponse({"ok": ok, "checks": checks}, status_code=200 if ok else 503)
