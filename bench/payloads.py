"""Realistic message bodies: what the guard and the executor really put on the bus."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from rbot.bus import codec
from rbot.bus.messages import Order, OrderEvent, PlaceCmd

# the seed's Test 2 body (POST /brokers/oanda/orders)
SEED_OANDA = {
    "instrument": "EUR_USD", "side": "BUY", "units": 100, "entry_price": 1.1655,
    "stop_loss_price": 1.1600, "take_profit_price": 1.1700, "quality_score": 75,
}  # fmt: skip


def _order(n: int, user: str = "u-0123456789abcdef") -> Order:
    now = codec.now_iso()
    expires = codec.utc_iso(codec.parse_iso(now) + dt.timedelta(minutes=360))
    return Order(
        id=f"paper-oanda-{n}",
        user=user,
        venue="oanda",
        symbol="EUR_USD",
        side="BUY",
        order_type="MARKET",
        qty=Decimal(100),
        stop_loss=Decimal("1.16"),
        take_profit=Decimal("1.17"),
        entry_price=Decimal("1.1655"),
        quality_score=Decimal(75),
        created_at=now,
        expires_at=expires,
    )


def place_cmd(n: int) -> bytes:
    """A ``PlaceCmd`` as the guard publishes it to ``EXEC`` (about 0.6 KiB)."""
    return codec.encode(PlaceCmd(order=_order(n)))


def order_event(n: int, user: str) -> bytes:
    """An ``oco_placed`` envelope as the executor publishes it to ``ORDERS``."""
    ev = OrderEvent.of_order(_order(n, user), partition=n % 8)
    return codec.encode_envelope("oco_placed", "oanda", ev)
