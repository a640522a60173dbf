"""``GET /meta``: the lists a client needs, from the modules that own them, so the
dashboard keeps no copy of its own: candle granularities (``bus/granularity.py``),
venues and their symbols (settings), event type names (``bus/subjects.py``,
``bus/lifecycle.py``), order statuses and trading states (``bus/messages.py``),
the token rule for symbols and ids (``bus/subjects.py``).

Public (nothing secret: names and lists, like ``/metrics``), so a page can read
it before anyone signs in.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from rbot.bus import granularity
from rbot.bus.config import Settings
from rbot.bus.lifecycle import LIFECYCLE_EVENT_TYPES
from rbot.bus.messages import OrderStatus, TradingState
from rbot.bus.subjects import ORDER_EVENT_TYPES, TOKEN_PATTERN, VENUES

from ..context import Ctx

router = APIRouter(tags=["meta"])

# envelope types that are not order or lifecycle events
OTHER_EVENT_TYPES = ("tick", "book", "candle", "heartbeat")
ACTIVE_STATUSES = (OrderStatus.PENDING, OrderStatus.OPEN)


@router.get("/meta")
async def meta(ctx: Ctx) -> dict[str, Any]:
    """Granularities, venues and symbols, event type names, order statuses."""
    return meta_body(ctx.settings)


def meta_body(settings: Settings) -> dict[str, Any]:
    """The answer of ``GET /meta`` for these settings (pure: the tests' fakes serve it too)."""
    return {
        "granularities": {
            "chart": list(granularity.FROM_TICKS),  # what GET /candles accepts
            "chart_default": granularity.DEFAULT_CHART,
            "seconds": {g: granularity.SECONDS[g] for g in granularity.FROM_TICKS},
            "oanda": list(granularity.OANDA),  # what GET /brokers/oanda/candles accepts
        },
        "venues": [
            {
                "venue": v,
                "symbols": settings.symbols(v),
                "source": "sim" if settings.use_sim(v) else v,
                "books": v == "coinbase",
            }
            for v in VENUES
        ],
        "event_types": {
            "order": list(ORDER_EVENT_TYPES),
            "lifecycle": list(LIFECYCLE_EVENT_TYPES),
            "other": list(OTHER_EVENT_TYPES),
        },
        "order_statuses": [s.value for s in OrderStatus],
        "active_statuses": [s.value for s in ACTIVE_STATUSES],
        "trading_states": [s.value for s in TradingState],
        "token_pattern": TOKEN_PATTERN,
    }
