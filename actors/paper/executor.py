"""paper_executor: the single writer of order state, filling paper orders on ticks.

One leader (KV lease ``paper_executor``) owns every partition here; per-partition
leases come with the scale-out work.  Inputs, applied one at a time by one loop:

* commands from the ``EXEC`` work queue (durable pull consumer, explicit ack,
  ``max_deliver`` with backoff; undecodable commands are terminated, not retried);
* ticks from ``rbot.md.tick.*.*`` (core; only the latest per symbol is kept).

For each change (``engine.Change``): write the order to KV ``orders`` with
compare-and-set, publish its event on ``ORDERS`` with ``Nats-Msg-Id =
<order>.<n>`` (the n-th event of that order: a re-publish after a crash is
dropped by JetStream), update the user's position and account, and only then
ack the command.  A restarted executor rebuilds its books from KV and
re-publishes the last event of every recently changed order (same ids), and
books that event's position and account effect again: each record keeps the
ORDERS sequence of the last event booked into it (per symbol for accounts), so
an effect a crash cut off is applied once and one already applied is skipped.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import TypeVar

from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout
from nats.js import api
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from rbot.bus import codec, keys
from rbot.bus.connection import Bus
from rbot.bus.kvscan import scan
from rbot.bus.lease import lead
from rbot.bus.messages import (
    Account,
    CancelCmd,
    ExecCommand,
    ExpireCmd,
    Fill,
    Order,
    OrderEvent,
    OrderStatus,
    PlaceCmd,
    Position,
    Tick,
)
from rbot.bus.provision import DUPLICATE_WINDOW_S

from ..base import Actor, Ready
from .engine import Change, Engine

T = TypeVar("T")
CONSUMER = "paper_executor"
FETCH_BATCH = 64


def event_of(change: Change) -> OrderEvent:
    o = change.order
    return OrderEvent(
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
        fill=change.fill,
        reason=change.reason,
        realized_pnl=o.realized_pnl,
        currency=o.currency if o.realized_pnl is not None else None,
    )


class PaperExecutor(Actor):
    name = "paper_executor"

    async def run(self, bus: Bus, ready: Ready) -> None:
        self.bus = bus
        ready()
        await lead(bus, "paper_executor", self.instance, self._serve)

    async def _serve(self) -> None:
        bus = self.bus
        self.kv: KeyValue = await bus.kv("orders")
        self.kv_prices = await bus.kv("prices")
        self.engine = Engine(self.settings.rbot_slippage_bps, self.settings.rbot_account_currency)
        self.revisions: dict[str, int] = {}
        self.closing: dict[str, str] = {}  # open positions to close once a price arrives
        self.pending_ticks: dict[tuple[str, str], Tick] = {}
        self.work = asyncio.Event()
        self.commands: asyncio.Queue[Msg] = asyncio.Queue(maxsize=FETCH_BATCH * 2)
        await self._rebuild()

        async def on_tick(msg: Msg) -> None:
            try:
                tick = codec.payload(codec.decode_envelope(msg.data), Tick)
            except codec.DecodeError:
                self.log.warning("malformed tick on %s", msg.subject)
                return
            self.pending_ticks[(tick.venue, tick.symbol)] = tick
            self.work.set()

        sub = await bus.nc.subscribe(bus.subjects.ticks(), cb=on_tick)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._fetch_loop())
                tg.create_task(self._apply_loop())
        finally:
            await sub.unsubscribe()

    # -- rebuild -----------------------------------------------------------
    async def _rebuild(self) -> None:
        now = dt.datetime.now(dt.UTC)
        loaded = republished = 0
        for entry in await scan(self.kv, keys.orders_all()):
            assert entry.value is not None and entry.revision is not None
            order = codec.decode(entry.value, Order)
            self.revisions[order.id] = entry.revision
            if order.status in (OrderStatus.PENDING, OrderStatus.OPEN):
                self.engine.load(order)
                loaded += 1
            if order.last_event and _recent(order, now):
                seq = await self._publish(
                    Change(order, order.last_event, _last_fill(order), order.close_reason)
                )
                await self._book(order, order.last_event, seq)  # a no-op unless a crash cut it off
                republished += 1
        for venue, symbol in {(o.venue, o.symbol) for o in self.engine.orders.values()}:
            tick = await self._kv_tick(venue, symbol)
            if tick is not None:
                self.engine.last_tick[(venue, symbol)] = tick
        self.log.info("rebuilt: %d active orders, %d events re-published", loaded, republished)

    async def _kv_tick(self, venue: str, symbol: str) -> Tick | None:
        try:
            entry = await self.kv_prices.get(keys.price(venue, symbol))
        except KeyNotFoundError:
            return None
        assert entry.value is not None
        return codec.decode(entry.value, Tick)

    # -- inputs ------------------------------------------------------------
    async def _fetch_loop(self) -> None:
        bus = self.bus
        config = api.ConsumerConfig(
            ack_wait=30.0,
            max_deliver=10,
            backoff=[1.0, 2.0, 5.0, 10.0, 30.0],
            max_ack_pending=1000,
        )
        while True:
            psub = await bus.js.pull_subscribe(
                f"{bus.subjects.prefix}.exec.>",
                durable=CONSUMER,
                stream=bus.subjects.stream("EXEC"),
                config=config,
            )
            seen_reconnects = bus.reconnects
            try:
                while bus.reconnects == seen_reconnects:
                    try:
                        msgs = await psub.fetch(FETCH_BATCH, timeout=1.0)
                    except TimeoutError:  # nats' own, or asyncio's from fetch's second request
                        continue  # long-poll expired with nothing to do
                    for m in msgs:
                        await self.commands.put(m)
                        self.work.set()
            finally:
                await psub.unsubscribe()
            # after a reconnect re-create the pull subscription (nats.py #504)
            self.log.info("re-creating the command consumer after a reconnect")

    async def _apply_loop(self) -> None:
        while True:
            await self.work.wait()
            self.work.clear()
            while not self.commands.empty():
                await self._apply_command(self.commands.get_nowait())
            ticks, self.pending_ticks = self.pending_ticks, {}
            for tick in ticks.values():
                await self._persist_all(self.engine.on_tick(tick))
                await self._sweep_pending_closes(tick)

    async def _apply_command(self, msg: Msg) -> None:
        try:
            cmd: PlaceCmd | CancelCmd | ExpireCmd = codec.decode(msg.data, ExecCommand)  # type: ignore[arg-type]
        except codec.DecodeError as exc:
            self.log.error("poison command on %s terminated: %s", msg.subject, exc)
            await msg.term()
            return
        match cmd:
            case PlaceCmd(order=order):
                await self._place(order)
            case CancelCmd(order_id=oid, user=user, reason=reason):
                active = self.engine.orders.get(oid)
                if active is not None and active.user == user:
                    change = self.engine.cancel(oid, reason)
                    if change is None and active.status is OrderStatus.OPEN:
                        self.closing[oid] = reason  # no price yet: close on the next tick
                    await self._persist_all([change] if change else [])
            case ExpireCmd(order_id=oid):
                change = self.engine.expire(oid, dt.datetime.now(dt.UTC))
                await self._persist_all([change] if change else [])
        await msg.ack()

    async def _sweep_pending_closes(self, tick: Tick) -> None:
        for oid, reason in list(self.closing.items()):
            order = self.engine.orders.get(oid)
            if order is None:
                self.closing.pop(oid, None)
            elif (order.venue, order.symbol) == (tick.venue, tick.symbol):
                change = self.engine.cancel(oid, reason)
                if change is not None:
                    self.closing.pop(oid, None)
                    await self._persist_all([change])

    async def _place(self, order: Order) -> None:
        if order.id in self.engine.orders or order.id in self.revisions:
            return  # a redelivery: already booked
        change = self.engine.place(order)
        try:
            rev = await self.kv.create(keys.order(order.id), codec.encode(change.order))
        except KeyWrongLastSequenceError:  # booked before a crash: KV is the truth
            self.engine.orders.pop(order.id, None)
            self.engine.book(order.venue, order.symbol).remove(order.id)
            entry = await self.kv.get(keys.order(order.id))
            assert entry.value is not None and entry.revision is not None
            stored = codec.decode(entry.value, Order)
            self.revisions[order.id] = entry.revision
            self.engine.load(stored)
            return
        self.revisions[order.id] = rev
        await self._publish(change)
        tick = self.engine.last_tick.get((order.venue, order.symbol))
        if tick is None:
            tick = await self._kv_tick(order.venue, order.symbol)
        if tick is not None and order.order_type == "LIMIT":
            await self._persist_all(self.engine.on_tick(tick))  # a limit already crossed

    # -- persistence -------------------------------------------------------
    async def _persist_all(self, changes: list[Change]) -> None:
        for change in changes:
            await self._persist(change)

    async def _persist(self, change: Change) -> None:
        order = change.order
        rev = self.revisions.get(order.id)
        rev = await _cas(self.kv, keys.order(order.id), codec.encode(order), rev)
        self.revisions[order.id] = rev
        self.engine.update(order)
        if order.status not in (OrderStatus.PENDING, OrderStatus.OPEN):
            self.revisions.pop(order.id, None)  # final: nothing writes it again (bounded memory)
        seq = await self._publish(change)
        await self._book(order, change.event, seq)

    async def _publish(self, change: Change) -> int:
        """Publish the change's event; its ORDERS sequence (the original one for a re-publish)."""
        o = change.order
        subject = self.bus.subjects.order_event(o.venue, o.symbol, change.event)
        msg_id = f"{o.id}.{o.events}"
        data = codec.encode_envelope(change.event, o.venue, event_of(change), id=msg_id)
        ack = await _retry(
            lambda: self.bus.js.publish(subject, data, headers={"Nats-Msg-Id": msg_id})
        )
        return ack.seq

    async def _book(self, order: Order, event: str, seq: int) -> None:
        """The event's effect on the position and the account, each at most once per seq."""
        if event == "order_filled":
            await self._bump_position(order, +1, seq)
        elif event == "position_closed":
            await self._bump_position(order, -1, seq)
            await self._book_pnl(order, seq)

    async def _bump_position(self, order: Order, direction: int, seq: int) -> None:
        signed = order.qty if order.side == "BUY" else -order.qty
        delta = signed * direction

        def apply(pos: Position) -> Position | None:
            if seq <= pos.last_seq:
                return None  # booked before a crash
            pos.qty += delta
            pos.last_seq = seq
            return pos

        await _update(
            self.kv, keys.position(order.user, order.venue, order.symbol), Position, apply, Position
        )

    async def _book_pnl(self, order: Order, seq: int) -> None:
        pnl = order.realized_pnl or Decimal(0)
        start = self.settings.rbot_starting_balance
        currency = self.settings.rbot_account_currency
        market = f"{order.venue}.{order.symbol}"

        def apply(acct: Account) -> Account | None:
            if seq <= acct.booked.get(market, 0):
                return None  # booked before a crash
            if order.currency == acct.currency:
                acct.balance += pnl
                acct.realized_pnl += pnl
            acct.trades += 1
            acct.booked[market] = seq
            return acct

        await _update(
            self.kv, keys.account(order.user), Account, apply,
            lambda: Account(currency=currency, balance=start),
        )  # fmt: skip


def _recent(order: Order, now: dt.datetime) -> bool:
    stamp = order.closed_at or order.opened_at or order.created_at
    if not stamp:
        return True
    return (now - codec.parse_iso(stamp)).total_seconds() < DUPLICATE_WINDOW_S * 0.9


def _last_fill(order: Order) -> Fill | None:
    if order.last_event == "position_closed":
        return order.exit_fill
    if order.last_event == "order_filled":
        return order.entry_fill
    return None


async def _cas(kv: KeyValue, key: str, value: bytes, last: int | None) -> int:
    if last is None:
        entry = await kv.get(key)
        last = entry.revision
    return await kv.update(key, value, last=last)


async def _update(
    kv: KeyValue,
    key: str,
    kind: type[T],
    apply: Callable[[T], T | None],
    fresh: Callable[[], T],
) -> None:
    """Read-modify-write with compare-and-set, retried on a concurrent writer.

    ``apply`` returns None when there is nothing to change (nothing is written)."""
    for _ in range(20):
        try:
            entry = await kv.get(key)
        except KeyNotFoundError:
            created = apply(fresh())
            if created is None:
                return
            try:
                await kv.create(key, codec.encode(created))
                return
            except KeyWrongLastSequenceError:
                continue
        assert entry.value is not None
        changed = apply(codec.decode(entry.value, kind))
        if changed is None:
            return
        try:
            await kv.update(key, codec.encode(changed), last=entry.revision)
            return
        except KeyWrongLastSequenceError:
            continue
    raise RuntimeError(f"could not update {key}: too much contention")


async def _retry(op: Callable[[], Awaitable[T]], attempts: int = 5) -> T:
    for attempt in range(attempts):
        try:
            return await op()
        except NatsTimeout:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")
