"""Wire schemas: one msgspec Struct per message, one union per channel.

Every message travels inside the seed's envelope ``{"id", "source", "type",
"payload", "ts", "v"}`` as plain JSON, readable with any NATS client.  ``type``
names the payload; ``id`` is unique and doubles as ``Nats-Msg-Id``.

Money is ``Decimal`` end to end; msgspec writes it as a JSON string, so
``"1.16501"`` stays exactly ``1.16501``.  Schema evolution: new fields always
get defaults, and a field never changes its type.
"""

from __future__ import annotations

import enum
from decimal import Decimal
from typing import Literal

import msgspec

Side = Literal["BUY", "SELL"]
OrderType = Literal["MARKET", "LIMIT"]
CloseReason = Literal[
    "TAKE_PROFIT_ORDER", "STOP_LOSS_ORDER", "TIME_IN_FORCE_EXPIRED", "CLIENT_REQUEST"
]


class Envelope(msgspec.Struct, frozen=True):
    id: str
    source: str
    type: str
    payload: msgspec.Raw
    ts: str
    v: int = 1


# --------------------------------------------------------------------------
# market data (core subjects rbot.md.*)


class Tick(msgspec.Struct, frozen=True, kw_only=True):
    venue: str
    symbol: str
    bid: Decimal | None
    ask: Decimal | None
    time: str
    seq: int = 0
    source: str = "sim"
    tradeable: bool = True

    @property
    def mid(self) -> Decimal | None:
        if self.bid is None or self.ask is None:
            return None
        return (self.bid + self.ask) / 2

    @property
    def spread(self) -> Decimal | None:
        if self.bid is None or self.ask is None:
            return None
        return self.ask - self.bid


class Candle(msgspec.Struct, frozen=True, kw_only=True):
    venue: str
    symbol: str
    granularity: str
    time: str
    o: Decimal
    h: Decimal
    l: Decimal  # noqa: E741 - OANDA's own field name
    c: Decimal
    volume: int = 0
    complete: bool = True
    # the venue's traded volume where it reports one (Coinbase: base currency);
    # ``volume`` stays OANDA's tick count (for Coinbase: this truncated to an int)
    volume_base: Decimal | None = None


class BookLevel(msgspec.Struct, frozen=True, array_like=True):
    price: Decimal
    size: Decimal


class Book(msgspec.Struct, frozen=True, kw_only=True):
    venue: str
    symbol: str
    bids: list[BookLevel]
    asks: list[BookLevel]
    time: str
    seq: int = 0


# --------------------------------------------------------------------------
# orders


class OrderStatus(enum.StrEnum):
    PENDING = "PENDING"
    OPEN = "OPEN"
    CLOSED = "CLOSED"
    CANCELLED = "CANCELLED"
    EXPIRED = "EXPIRED"
    REJECTED = "REJECTED"


class Fill(msgspec.Struct, frozen=True, kw_only=True):
    """Why a fill happened where it did: the tick, the spread, slippage and gap."""

    price: Decimal
    trigger: Literal["MARKET", "LIMIT", "STOP_LOSS", "TAKE_PROFIT", "CLOSE"]
    level: Decimal | None  # the order's own price (limit, stop, take-profit), if any
    tick_bid: Decimal | None
    tick_ask: Decimal | None
    tick_time: str
    tick_seq: int
    spread: Decimal | None
    slippage: Decimal
    gap: Decimal  # how far the market was already through ``level`` (>= 0)
    time: str


class OrderRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """API -> order_guard: a validated HTTP order, not yet accepted."""

    user: str
    venue: str
    symbol: str
    side: Side
    order_type: OrderType
    qty: Decimal
    stop_loss: Decimal | None = None  # required: the guard refuses without (oco_missing)
    take_profit: Decimal | None = None
    entry_price: Decimal | None = None
    limit_price: Decimal | None = None
    quality_score: Decimal | None = None
    client_order_id: str | None = None
    idempotency_key: str | None = None
    ttl_minutes: int | None = None
    live: bool = False
    # the API's verdict on X-PIN (api/pin.py): None = no PIN sent or not checked; the PIN
    # itself never travels on the bus
    pin_ok: bool | None = None
    request_id: str = ""


class IdemRecord(msgspec.Struct, frozen=True, kw_only=True):
    """KV ``orders`` key ``idem.<user>.<key>``; its create revision is the order number."""

    request_hash: str
    ts: str


class Position(msgspec.Struct, kw_only=True):
    """A user's net position on one symbol (KV ``orders`` key ``pos.<user>.<venue>.<symbol>``)."""

    qty: Decimal = Decimal(0)  # signed: + long, - short
    # ORDERS sequence of the last event booked here: a re-booking after a crash is a no-op
    last_seq: int = 0


class Account(msgspec.Struct, kw_only=True):
    """A user's paper account (KV ``orders`` key ``acct.<user>``)."""

    currency: str
    balance: Decimal
    realized_pnl: Decimal = Decimal(0)
    trades: int = 0
    # per ``<venue>.<symbol>`` (one writer each): ORDERS sequence of the last close booked
    booked: dict[str, int] = msgspec.field(default_factory=dict)


class PlaceReply(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    ok: bool
    order_id: str | None = None
    status: str | None = None
    mode: str = "paper"
    code: str | None = None
    message: str | None = None
    detail: dict[str, str] | None = None
    http_status: int = 200
    replayed: bool = False


class Order(msgspec.Struct, kw_only=True):
    """The current state of one order (KV ``orders``, key ``o.<id>``)."""

    id: str
    user: str
    venue: str
    symbol: str
    side: Side
    order_type: OrderType
    qty: Decimal
    stop_loss: Decimal
    take_profit: Decimal
    entry_price: Decimal | None = None
    limit_price: Decimal | None = None
    quality_score: Decimal | None = None
    client_order_id: str | None = None
    status: OrderStatus = OrderStatus.PENDING
    mode: str = "paper"
    created_at: str = ""
    expires_at: str = ""  # PENDING past this -> EXPIRED
    max_hold_min: int = 360  # OPEN longer than this -> closed TIME_IN_FORCE_EXPIRED
    opened_at: str | None = None
    closed_at: str | None = None
    entry_fill: Fill | None = None
    exit_fill: Fill | None = None
    close_reason: str | None = None
    realized_pnl: Decimal | None = None
    currency: str = "USD"
    reject_code: str | None = None
    reject_message: str | None = None
    last_event: str | None = None  # type of the last event published for it
    events: int = 0  # how many events were published for it


# commands on rbot.exec.<partition>.<venue>.<symbol>: one tagged union


class PlaceCmd(msgspec.Struct, frozen=True, tag="place", tag_field="cmd"):
    order: Order


class CancelCmd(msgspec.Struct, frozen=True, tag="cancel", tag_field="cmd"):
    order_id: str
    user: str
    reason: str = "CLIENT_REQUEST"


class ExpireCmd(msgspec.Struct, frozen=True, tag="expire", tag_field="cmd"):
    order_id: str
    reason: str = "TIME_IN_FORCE_EXPIRED"


ExecCommand = PlaceCmd | CancelCmd | ExpireCmd


class OrderEvent(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Payload of every ``rbot.evt.order.*`` event: the order after the change."""

    order_id: str | None
    user: str
    venue: str
    symbol: str
    side: str
    qty: Decimal | None = None
    order_type: str | None = None
    status: str
    mode: str = "paper"
    stop_loss: Decimal | None = None
    take_profit: Decimal | None = None
    entry_price: Decimal | None = None
    limit_price: Decimal | None = None
    client_order_id: str | None = None
    expires_at: str | None = None
    fill: Fill | None = None
    reason: str | None = None
    message: str | None = None
    realized_pnl: Decimal | None = None
    currency: str | None = None
    balance: Decimal | None = None


# --------------------------------------------------------------------------
# actors and heartbeats


class ActorEvent(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    actor: str
    instance: str
    state: str
    restarts: int = 0
    reason: str | None = None
    exit: str | None = None


class Beat(msgspec.Struct, frozen=True, kw_only=True):
    actor: str
    instance: str
    state: str = "running"
    interval: float = 1.0
    ts: str = ""


class ActorStatus(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    actor: str
    instance: str
    state: str
    last_beat: str | None = None
    silent: bool = False
    restarts: int = 0
    info: dict[str, str] | None = None


class Pulse(msgspec.Struct, frozen=True, kw_only=True):
    status: Literal["ok", "degraded"]
    trading_state: str
    actors: list[ActorStatus]
    silent: list[str]


class TradingState(enum.StrEnum):
    ACTIVE = "ACTIVE"
    REDUCING = "REDUCING"
    HALTED = "HALTED"


class TradingStateRecord(msgspec.Struct, frozen=True, kw_only=True):
    state: TradingState
    reason: str = ""
    by: str = ""
    ts: str = ""


class Lease(msgspec.Struct, frozen=True, kw_only=True):
    owner: str
    ts: str
