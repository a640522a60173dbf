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
    # what the venue said is available at the best bid / ask (OANDA's ``liquidity``);
    # None where it said nothing (the sim, Coinbase's ticker)
    bid_liquidity: int | None = None
    ask_liquidity: int | None = None

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
    """KV ``orders`` key ``idem.<user>.<key>``; its create revision is the order number.

    The record is never rewritten, so the order number is also its stream sequence in
    the bucket's stream: a cancel for an order the executor has not booked yet finds
    the order's venue and symbol (hence its partition) by that sequence."""

    request_hash: str
    ts: str
    venue: str | None = None
    symbol: str | None = None
    mode: str = "paper"  # "live": its commands go to the live executor


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
    # realized P&L that had no rate to the account currency when it was booked, by currency
    unconverted: dict[str, Decimal] = msgspec.field(default_factory=dict)


class ReplyCode(enum.StrEnum):
    """Every stable ``code`` the order guard answers with (``PlaceReply``,
    ``CancelReply``, the ``reason`` of ``order_rejected``).

    The bus carries only the code; the API maps it to an HTTP status in one table
    (``api/errors.py``, ``GUARD_STATUS``).  The guard rules' meaning of each is in
    ``actors/guard/rules.py``."""

    # the rules (actors/guard/rules.py), in the order they run
    TRADING_HALTED = "trading_halted"
    LIVE_DISABLED = "live_disabled"
    PIN_REQUIRED = "pin_required"
    PIN_INVALID = "pin_invalid"
    UNKNOWN_SYMBOL = "unknown_symbol"
    QTY_INVALID = "qty_invalid"
    TRADING_REDUCING = "trading_reducing"
    TTL_TOO_LONG = "ttl_too_long"
    OCO_MISSING = "oco_missing"
    PRICE_INVALID = "price_invalid"
    QUALITY_MISSING = "quality_missing"
    QUALITY_TOO_LOW = "quality_too_low"
    QTY_TOO_LARGE = "qty_too_large"
    NO_PRICE = "no_price"
    STALE_PRICE = "stale_price"
    OCO_WRONG_SIDE = "oco_wrong_side"
    NOTIONAL_TOO_LARGE = "notional_too_large"
    RATE_LIMITED = "rate_limited"
    # the guard itself
    BAD_REQUEST = "bad_request"  # a request that does not decode (an API bug)
    GUARD_ERROR = "guard_error"  # the guard failed unexpectedly
    LIVE_UNAVAILABLE = "live_unavailable"  # live routing not configured for the venue
    IDEMPOTENCY_CONFLICT = "idempotency_conflict"
    BUS_UNAVAILABLE = "bus_unavailable"  # the place command could not be stored
    # cancels
    ORDER_NOT_FOUND = "order_not_found"
    ORDER_FINAL = "order_final"


class PlaceReply(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    ok: bool
    order_id: str | None = None
    status: str | None = None
    mode: str = "paper"
    code: str | None = None  # a ReplyCode when not ok
    message: str | None = None
    detail: dict[str, str] | None = None
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
    # the writer: executor instance and the epoch (fence revision) of its partition lease
    executor: str | None = None
    epoch: int = 0
    # a close was asked for while the market had no usable price: done on the next tick
    closing: str | None = None
    # accepted while trading was REDUCING: it may only shrink the net position
    reduce_only: bool = False
    # live orders only: the broker's ids, and "UNKNOWN" while a send's outcome is not known
    broker_order_id: str | None = None
    broker_trade_id: str | None = None
    broker_state: str | None = None


# commands on rbot.exec.<partition>.<venue>.<symbol>: one tagged union


class PlaceCmd(msgspec.Struct, frozen=True, tag="place", tag_field="cmd"):
    order: Order


class CancelCmd(msgspec.Struct, frozen=True, tag="cancel", tag_field="cmd"):
    order_id: str
    user: str
    reason: str = "CLIENT_REQUEST"


class CancelRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """API -> order_guard (``<p>.cmd.order.cancel``): cancel or close one order."""

    user: str
    order_id: str
    request_id: str = ""


class CancelReply(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    ok: bool
    order_id: str
    status: str | None = None
    requested: str | None = None  # cancel | close
    code: str | None = None  # a ReplyCode when not ok
    message: str | None = None


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
    created_at: str | None = None
    opened_at: str | None = None
    closed_at: str | None = None
    entry_fill: Fill | None = None
    closing: str | None = None
    # who applied it: the executor instance and its partition lease's epoch (fencing)
    executor: str | None = None
    epoch: int | None = None
    partition: int | None = None

    # the two ways an event is made: every publisher uses these, none copies fields
    @classmethod
    def of_order(
        cls,
        o: Order,
        *,
        fill: Fill | None = None,
        reason: str | None = None,
        partition: int | None = None,
    ) -> OrderEvent:
        """The event for a change to a booked order (paper or live executor): the
        order after the change, the fill it made and why."""
        return cls(
            order_id=o.id,
            user=o.user,
            venue=o.venue,
            symbol=o.symbol,
            side=o.side,
            qty=o.qty,
            order_type=o.order_type,
            status=str(o.status),
            mode=o.mode,
            stop_loss=o.stop_loss,
            take_profit=o.take_profit,
            entry_price=o.entry_price,
            limit_price=o.limit_price,
            client_order_id=o.client_order_id,
            expires_at=o.expires_at,
            fill=fill,
            reason=reason,
            message=o.reject_message,
            realized_pnl=o.realized_pnl,
            currency=o.currency if o.realized_pnl is not None else None,
            created_at=o.created_at or None,
            opened_at=o.opened_at,
            closed_at=o.closed_at,
            entry_fill=o.entry_fill,
            closing=o.closing,
            executor=o.executor,
            epoch=o.epoch,
            partition=partition,
        )

    @classmethod
    def rejected(cls, req: OrderRequest, code: str, message: str) -> OrderEvent:
        """``order_rejected`` for a request the guard refused (it has no order id)."""
        return cls(
            order_id=None,
            user=req.user,
            venue=req.venue,
            symbol=req.symbol,
            side=req.side,
            qty=req.qty,
            order_type=req.order_type,
            status=str(OrderStatus.REJECTED),
            stop_loss=req.stop_loss,
            take_profit=req.take_profit,
            entry_price=req.entry_price,
            limit_price=req.limit_price,
            client_order_id=req.client_order_id,
            reason=code,
            message=message,
            mode="live" if req.live else "paper",
        )


# --------------------------------------------------------------------------
# order state at scale (KV ``orders``; keys in bus/keys.py)


class ActiveMark(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """``a.<part>.<user>.<id>``: an order in the active set.

    Present while the order is PENDING or OPEN, and after it ends until every effect
    of its last event is booked; ``n`` / ``seq`` say which event was booked last (its
    number and ORDERS sequence), so a rebuild repairs exactly the orders that lag."""

    status: str
    venue: str
    symbol: str
    side: str
    qty: Decimal
    deadline: str | None = None  # when the reaper must expire (PENDING) or close (OPEN) it
    n: int = 0
    seq: int = 0
    reduce_only: bool = False


class UserIndexHead(msgspec.Struct, kw_only=True):
    """``uh.<user>``: how many history chunks the user has (the last one is filling)."""

    chunks: int = 1


class UserIndexChunk(msgspec.Struct, kw_only=True):
    """``ul.<user>.<n>``: up to ``CHUNK`` order ids, oldest first."""

    ids: list[str] = msgspec.field(default_factory=list)


class PartitionCounts(msgspec.Struct, kw_only=True):
    """``n.<part>``: orders by status, kept as changes happen (never a scan)."""

    ended: dict[str, int] = msgspec.field(default_factory=dict)  # final statuses, cumulative
    active: dict[str, int] = msgspec.field(default_factory=dict)  # PENDING / OPEN now
    recent: list[str] = msgspec.field(default_factory=list)  # ids counted last (idempotency)
    ts: str = ""


class FenceRecord(msgspec.Struct, frozen=True, kw_only=True):
    """``fence.<part>``: the partition's owner; the entry's revision is the epoch."""

    owner: str
    ts: str


class RateWindow(msgspec.Struct, kw_only=True):
    """``limits`` ``rl.<user>``: a token bucket shared by every guard."""

    tokens: float
    ts: float


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
