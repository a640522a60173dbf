"""The system panel and the kill switch: ``GET /system``, ``POST /admin/trading-state``.

While the bus is down ``/system`` answers ``503 bus_unavailable`` (it needs the
bus to authenticate): the dashboard shows that as the outage.  ``nats_server``
says how often ``rbot up`` restarted its embedded server (``null`` without one).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from rbot.bus import codec, fence, keys
from rbot.bus.control import trading_record
from rbot.bus.messages import TradingState, TradingStateRecord

from ..context import Ctx
from ..models import TradingStateIn
from ..natsstatus import describe, nats_server_status
from ..security import Admin, Viewer

router = APIRouter(tags=["system"])


async def _trading(ctx: Ctx) -> TradingStateRecord:
    return await trading_record(await ctx.bus.kv("control"))


@router.get("/system")
async def system(ctx: Ctx, user: Viewer) -> dict[str, Any]:
    trading = await _trading(ctx)
    pulse = ctx.pulse
    held = await fence.holders(await ctx.bus.kv("orders"), ctx.bus.subjects.partitions)
    partitions = [
        {"partition": p, "owner": held[p][0] if p in held else None,
         "epoch": held[p][1] if p in held else None}
        for p in range(ctx.bus.subjects.partitions)
    ]  # fmt: skip
    return {
        "partitions": partitions,
        "trading_state": str(trading.state),
        "trading_reason": trading.reason,
        "status": pulse.status if pulse else "unknown",
        "actors": codec.to_builtins(pulse.actors) if pulse else [],
        "silent": pulse.silent if pulse else [],
        "bus": {"connected": ctx.bus.connected, "reconnects": ctx.bus.reconnects},
        "nats_server": describe(await nats_server_status(ctx.bus)),
    }


@router.post("/admin/trading-state")
async def set_trading_state(body: TradingStateIn, ctx: Ctx, admin: Admin) -> dict[str, Any]:
    """The kill switch: HALTED refuses every new order at once (R8); it survives restarts."""
    rec = TradingStateRecord(
        state=TradingState(body.state), reason=body.reason, by=admin.email, ts=codec.now_iso()
    )
    kv = await ctx.bus.kv("control")
    await kv.put(keys.TRADING, codec.encode(rec))
    return {"ok": True, "trading_state": str(rec.state), "reason": rec.reason}
