"""One venue's live orders: the paper partition's contract, with a broker behind it.

``LiveWorker`` is a ``PartitionWorker`` (same fenced writes, events, active-set
markers, history index and ledger booking, so ``/orders``, ``/positions``, SSE
and the dashboard show live orders unchanged) whose pseudo-partition is
``live_partition(venue)`` and whose command consumer is ``live_executor_<venue>``
on ``<p>.exec.live.<venue>.>``.  Instead of a fill model it has a broker:

- place: the order is written PENDING with ``broker_state = UNKNOWN`` and
  ``oco_placed`` is published (write-ahead), then sent; the answer's facts are
  applied (fill, ``…_ON_FILL_LOSS`` cancel, reject with the broker's
  ``errorCode``).  Before sending, HALTED refuses (``trading_halted``),
  REDUCING lets out only orders that reduce (``trading_reducing``), and the
  venue's notional cap is checked (``live_notional_cap``).
- the broker's event stream drives fills, TP/SL closes, cancels and expiries;
  how it is read, caught up after a gap, and how an order is looked up,
  cancelled or closed is the venue's part: ``OandaWorker`` (transaction
  stream, ``/changes``) and ``CoinbaseWorker`` (``user`` channel, lookups,
  ``batch_cancel``) override ``_catch_up``, ``_apply_txns``, ``_resolve``, ``_end``;
- reconciliation (on start, after a stream gap, on ``rbot reconcile``): every
  active live order is looked up at the broker; one whose send's outcome is
  unknown is resolved by that lookup and sent again only if the broker says it
  does not have it (the same client order id makes a duplicate impossible
  even then).

One loop applies commands, transactions and reconciliations one at a time.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from typing import Any, Protocol

import msgspec
from nats.aio.msg import Msg
from nats.js.kv import KeyValue

from rbot.bus import codec, keys
from rbot.bus.active import deadline
from rbot.bus.config import Settings
from rbot.bus.connection import Bus
from rbot.bus.control import trading_record
from rbot.bus.fence import PartitionFence
from rbot.bus.messages import (
    CancelCmd,
    ExpireCmd,
    Order,
    OrderStatus,
    PlaceCmd,
    Tick,
    TradingState,
)
from rbot.bus.pnl import Rate
from rbot.bus.timing import raise_if_cancelled

from ..backoff import Backoff
from ..paper.partition import (
    UNKNOWN_CANCEL_RETRIES,
    PartitionWorker,
    _decode_command,
    last_change,
)
from ..paper.state import is_active
from . import core
from .oanda_broker import BrokerUnavailable, OutcomeUnknown, StreamLost
from .oanda_proto import Fact, Outcome

Txns = list[dict[str, Any]]


class Broker(Protocol):
    """What the venue-neutral worker needs of a broker shell (``OandaOrders``,
    ``CoinbaseOrders``); the venue's worker subclass uses the rest of its shell."""

    def create(self, order: Order) -> Awaitable[Outcome]: ...

    def transactions(
        self, on_open: Callable[[], Awaitable[None]]
    ) -> AsyncIterator[dict[str, Any]]: ...

    async def aclose(self) -> None: ...


class LiveWorker(PartitionWorker):
    def __init__(
        self,
        bus: Bus,
        kv: KeyValue,
        kv_prices: KeyValue,
        kv_control: KeyValue,
        fence: PartitionFence,
        settings: Settings,
        rate: Rate,
        ticks: Mapping[tuple[str, str], Tick],
        venue: str,
        broker: Broker,
    ) -> None:
        super().__init__(bus, kv, kv_prices, fence, settings, rate, ticks)
        self.venue = venue
        self.broker = broker
        self.kv_control = kv_control
        self.log = logging.getLogger(f"rbot.actor.live_executor.{venue}")
        self.txns: asyncio.Queue[Txns] = asyncio.Queue()
        self.reconciles: asyncio.Queue[asyncio.Future[dict[str, int]]] = asyncio.Queue()
        self.cursor = 0
        self.gaps = 0
        self.stream_up = asyncio.Event()
        self.live_stats = {"sent": 0, "unknown": 0, "refused": 0, "reconciled": 0}

    async def prepare(self) -> None:
        await self.reconcile()

    def loops(self) -> list[Coroutine[Any, Any, None]]:
        return [*super().loops(), self._stream_loop()]

    async def request_reconcile(self) -> dict[str, int]:
        fut: asyncio.Future[dict[str, int]] = asyncio.get_running_loop().create_future()
        self.reconciles.put_nowait(fut)
        self.work.set()
        return await fut

    # -- inputs -----------------------------------------------------------------------
    ACK_WAIT_S = 60.0
    REDELIVERY_BACKOFF = ()

    def consumer(self) -> tuple[str, str]:
        s = self.bus.subjects
        return s.live_consumer(self.venue), s.live_exec_venue(self.venue)

    async def _stream_loop(self) -> None:
        backoff = Backoff(initial=0.05, cap=5.0)
        attempt = 0
        while True:
            try:
                async for item in self.broker.transactions(self._catch_up):
                    attempt = 0
                    self.stream_up.set()
                    self.txns.put_nowait([item])
                    self.work.set()
            except (StreamLost, BrokerUnavailable) as exc:
                self.stream_up.clear()
                self.gaps += 1
                self.log.warning("%s; reconnecting (gap %d)", exc, self.gaps)
            await asyncio.sleep(backoff.delay(attempt))
            attempt += 1

    async def _catch_up(self) -> None:
        """The stream is open: catch up on what happened while it was not (the venue's way)."""
        raise NotImplementedError

    async def _apply_loop(self) -> None:
        while True:
            await self.work.wait()
            self.work.clear()
            while not self.commands.empty():
                await self._apply_command(self.commands.get_nowait())
            while not self.txns.empty():
                await self._apply_txns(self.txns.get_nowait())
            while not self.reconciles.empty():
                fut = self.reconciles.get_nowait()
                summary = await self.reconcile()
                if not fut.done():
                    fut.set_result(summary)
            await self._flush()
            raise_if_cancelled()  # a broker or KV request may have swallowed a cancel

    async def _apply_command(self, msg: Msg) -> None:
        try:
            cmd = _decode_command.decode(msg.data)
        except msgspec.DecodeError as exc:
            self.log.error("poison command on %s terminated: %s", msg.subject, exc)
            await msg.term()
            return
        match cmd:
            case PlaceCmd(order=order):
                await self._place(order)
            case CancelCmd(order_id=oid, user=user, reason=reason):
                if not await self._cancel(oid, user, reason):
                    if msg.metadata.num_delivered < UNKNOWN_CANCEL_RETRIES:
                        await msg.nak(delay=0.5)
                        return
                    self.log.warning("cancel for unknown live order %s dropped", oid)
            case ExpireCmd(order_id=oid):
                await self._expire(oid)
        await msg.ack()

    # -- place -----------------------------------------------------------------------
    async def _place(self, order: Order) -> None:
        if order.id in self.engine.orders:
            return  # a redelivery: booked and active (reconciliation resolves an unknown)
        stored = await self._get_order(order.id)
        if stored is not None:  # booked before a crash: finish it, resolve by lookup
            seq = await self._publish(last_change(stored))
            await self._settle(stored, stored.last_event or "", seq, set(), index=True)
            if is_active(stored.status):
                self._load(stored)
                await self._resolve(stored)
            return
        refusal = await self._refusal(order)
        if refusal is not None:
            self.live_stats["refused"] += 1
            await self._persist(core.rejected(order, *refusal), index=True)
            return
        change = core.placed(order)
        await self._persist(change)  # write-ahead: PENDING, outcome UNKNOWN
        await self._send(change.order)

    async def _refusal(self, order: Order) -> tuple[str, str] | None:
        """Operator safety, checked again right before a send (a queued order too)."""
        state = await self._trading_state()
        if state is TradingState.HALTED:
            return "trading_halted", "trading is HALTED: no live order is sent"
        if state is TradingState.REDUCING and not self.engine._reduces(order):
            return "trading_reducing", "trading is REDUCING: only orders that reduce go out"
        price = order.limit_price or order.entry_price
        tick = self.shared_ticks.get((order.venue, order.symbol)) or await self._kv_tick(
            order.venue, order.symbol
        )
        if tick is not None and tick.mid is not None:
            price = tick.mid
        cap = self.settings.live_cap(order.venue)
        if price is not None and order.qty * price > cap:
            return (
                "live_notional_cap",
                f"notional {order.qty * price:.2f} above the live cap {cap} for {order.venue}",
            )
        return None

    async def _trading_state(self) -> TradingState:
        return (await trading_record(self.kv_control)).state

    async def _pending_known(self, order: Order, reason: str) -> Order | None:
        """Before ending a PENDING order whose send's outcome is unknown: look it up.
        ``None`` when that settled it (ended at the broker, or never there: cancelled);
        else the order as now known."""
        if order.broker_state != core.UNKNOWN:
            return order
        await self._resolve(order)
        order = self.engine.orders.get(order.id, order)
        if order.status is not OrderStatus.PENDING:
            if is_active(order.status):
                await self._end(order, reason)
            return None
        if order.broker_state == core.UNKNOWN:  # the broker never had it
            await self._fact(order, Fact("cancelled", 0, codec.now_iso(), reason=reason))
            return None
        return order

    async def _not_at_broker(self, order: Order) -> int:
        """An order the broker does not have: sent if its send's outcome was unknown
        (same client id, so never twice); 1 if it was sent."""
        if order.broker_state == core.UNKNOWN and order.status is OrderStatus.PENDING:
            self.log.info("order %s never reached the broker: sending it", order.id)
            await self._send(order)
            return 1
        return 0

    async def _known_at_broker(self, order: Order, broker_id: str | None) -> Order:
        """An order whose send's outcome was unknown, found at the broker: accepted."""
        if order.broker_state != core.UNKNOWN:
            return order
        known = core.accepted(order, broker_id or None)
        await self.fence.put(keys.order(order.id), codec.encode(self._stamp(known)))
        self.engine.update(known)
        return known

    async def _send(self, order: Order) -> None:
        self.live_stats["sent"] += 1
        try:
            outcome = await self.broker.create(order)
        except OutcomeUnknown as exc:
            self.live_stats["unknown"] += 1
            self.log.error("%s: left UNKNOWN for reconciliation", exc)
            return
        await self._outcome(order, outcome)

    async def _outcome(self, order: Order, outcome: Outcome) -> None:
        if outcome.kind == "rejected":
            await self._persist(
                core.rejected(order, outcome.reason or "REJECTED", outcome.message or "")
            )
            return
        if outcome.kind == "pending" or order.broker_state == core.UNKNOWN:
            known = core.accepted(order, outcome.broker_order_id)
            await self.fence.put(keys.order(order.id), codec.encode(self._stamp(known)))
            self.engine.update(known)
            order = known
        for fact in outcome.facts:
            order = await self._fact(order, fact)

    async def _fact(self, order: Order, fact: Fact) -> Order:
        change = core.apply(
            order, fact, self.settings.rbot_account_currency, self.engine.rate
        )  # fmt: skip
        if change is None:
            return order
        await self._persist(change)
        return change.order

    # -- cancel, close, expire -----------------------------------------------------------
    async def _cancel(self, oid: str, user: str, reason: str) -> bool:
        active = self.engine.orders.get(oid)
        if active is None:
            return await self._get_order(oid) is not None
        if active.user != user:
            return True
        await self._end(active, reason)
        return True

    async def _expire(self, oid: str) -> None:
        order = self.engine.orders.get(oid)
        if order is None:
            return
        when = deadline(order)
        if when is None or dt.datetime.now(dt.UTC) < when:
            return
        await self._end(order, "TIME_IN_FORCE_EXPIRED")

    async def _end(self, order: Order, reason: str) -> None:
        """Cancel a resting order / close an open trade at the broker (the venue's way)."""
        raise NotImplementedError

    # -- the venue's part ----------------------------------------------------------------
    async def _apply_txns(self, txns: Txns) -> None:
        """Apply what the broker's stream (or a catch-up) said."""
        raise NotImplementedError

    async def _resolve(self, order: Order) -> int:
        """Learn an order's state at the broker by lookup and apply it (1: it changed); an
        order the broker does not have and whose send's outcome was unknown is sent."""
        raise NotImplementedError

    # -- reconciliation ---------------------------------------------------------------
    async def reconcile(self) -> dict[str, int]:
        """Compare every active live order with the broker; publish what changed."""
        checked = changed = 0
        for order in list(self.engine.orders.values()):
            checked += 1
            changed += await self._resolve(order)
        unknown = sum(1 for o in self.engine.orders.values() if o.broker_state == core.UNKNOWN)
        self.live_stats["reconciled"] += 1
        if checked:
            self.log.info("reconciled %d live orders: %d changed, %d unknown",
                          checked, changed, unknown)  # fmt: skip
        return {"checked": checked, "changed": changed, "unknown": unknown}
