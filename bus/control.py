"""The trading state (KV ``control`` key ``trading``): the one read of the kill switch.

ACTIVE when nothing was ever written; a record that does not decode reads as
ACTIVE too, and says so in the log (only an admin writes it, through the API).
"""

from __future__ import annotations

import logging

from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from . import codec, keys
from .connection import Bus
from .messages import TradingState, TradingStateRecord

log = logging.getLogger("rbot.control")


async def trading_record(kv: KeyValue) -> TradingStateRecord:
    """The trading state record from KV ``control`` (``kv`` is that bucket)."""
    try:
        entry = await kv.get(keys.TRADING)
    except KeyNotFoundError:
        return TradingStateRecord(state=TradingState.ACTIVE)
    if not entry.value:
        return TradingStateRecord(state=TradingState.ACTIVE)
    try:
        return codec.decode(entry.value, TradingStateRecord)
    except codec.DecodeError as exc:
        log.error("undecodable trading state record, reading ACTIVE: %s", exc)
        return TradingStateRecord(state=TradingState.ACTIVE)


async def trading_state(bus: Bus) -> TradingState:
    return (await trading_record(await bus.kv("control"))).state
