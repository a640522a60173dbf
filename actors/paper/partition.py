"""One executor partition: its books, its command consumer and its writes, all fenced.

A ``PartitionWorker`` runs while its executor holds the partition's lease
(``bus.fence``).  It owns the partition's active orders (a pure ``Engine``),
the durable pull consumer ``paper_executor_p<N>`` on ``EXEC`` (filter
``<p>.exec.<N>.>``), and every write for the partition.  Inputs are applied one
at a time by one loop: commands in stream order, then the latest tick per symbol.

For each change (the engine's ``Change``), in this order:

1. the order to KV ``o.<id>`` (fenced: refused once the lease moved);
2. its event on ``ORDERS`` (``Nats-Msg-Id = <id>.<n>``: a re-publish is dropped);
3. the event's effect on position and account (``ledger``, once per sequence);
4. for an order that stays active, its active-set marker ``a.<part>.<user>.<id>``
   with the event number and sequence just booked (a new order is first added
   to the user's history index); for an order that ended, its counters, and
   after the next counter flush the marker is purged;
5. the command that caused it is acknowledged.

A crash anywhere leaves the marker behind with an older event number, so a
rebuild, which reads only the partition's markers (O(active), never history),
repairs exactly the orders whose effects lag: it re-publishes their last event
(same id, so JetStream drops it and hands back the original sequence), books
it, and writes or purges the marker.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import logging
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

import msgspec
from nats.aio.msg import Msg
from nats.js import api
from nats.js.errors import KeyNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from rbot.bus import codec, keys, kvcas, msgids, userindex
from rbot.bus.active import mark_of
from rbot.bus.config import Settings
from rbot.bus.connection import Bus
from rbot.bus.fence import Fenced, PartitionFence
from rbot.bus.kvscan import scan
from rbot.bus.messages import (
    ActiveMark,
    CancelCmd,
    ExecCommand,
    ExpireCmd,
    Fill,
    Order,
    OrderEvent,
    OrderStatus,
    PartitionCounts,
    PlaceCmd,
    Tick,
)
from rbot.bus.outage import is_outage
from rbot.bus.pnl import Rate
from rbot.bus.timing import raise_if_cancelled

from . import ledger
from .engine import Change, Engine
from .errors import PaperError
from .state import is_active

FETCH_BATCH = 64
MARKER_TTL_S = 60.0  # purge markers of ended orders disappear after this
FLUSH_EVERY = 500  # ended orders counted per counter flush, at most
UNKNOWN_CANCEL_RETRIES = 5  # a cancel that overtook its place is retried this often
PARK_AFTER = 3  # a command that failed this many deliveries is parked, not retried again


class StateSuspect(RuntimeError):
    """A command failed half-way: rebuild the partition from KV before going on."""


_decode_command = msgspec.json.Decoder(ExecCommand)


def event_of(change: Change, partition: int) -> OrderEvent:
    return OrderEvent.of_order(
        change.order, fill=change.fill, reason=change.reason, partition=partition
    )


def last_change(order: Order) -> Change:
    """The change that produced ``order``'s last event (to re-publish it)."""
    fill: Fill | None = None
    if order.last_event == "position_closed":
        fill = order.exit_fill
    elif order.last_event == "order_filled":
        fill = order.entry_fill
    reason = order.close_reason or order.reject_code
    return Change(order, order.last_event or "oco_placed", fill, reason)


class PartitionWorker:
    def __init__(
        self,
        bus: Bus,
        kv: KeyValue,
        kv_prices: KeyValue,
        fence: PartitionFence,
        settings: Settings,
        rate: Rate,
        ticks: Mapping[tuple[str, str], Tick],
    ) -> None:
        self.bus = bus
        self.kv = kv
        self.kv_prices = kv_prices
        self.fence = fence
        self.partition = fence.partition
        self.settings = settings
        self.instance = fence.owner
        self.log = logging.getLogger(f"rbot.actor.paper_executor.p{self.partition}")
        self.engine = Engine(settings.rbot_slippage_bps, settings.rbot_account_currency, rate)
        self.shared_ticks = ticks
        self.pending_ticks: dict[tuple[str, str], Tick] = {}
        self.commands: asyncio.Queue[Msg] = asyncio.Queue(maxsize=FETCH_BATCH * 2)
        self.work = asyncio.Event()
        self.counts = PartitionCounts()
        self.active_counts: collections.Counter[str] = collections.Counter()
        self.ended: list[tuple[str, str]] = []  # (user, id) markers to purge after a flush
        self.recent: list[str] = []  # ids whose markers the next flush will purge
        self.dirty = False
        self.closing: dict[tuple[str, str], set[str]] = {}  # closes waiting for a price
        self.rebuilt = asyncio.Event()
        self.in_hand: Msg | None = None
        self.fresh_consumer = True
        # the consumer is bound for this run: re-created (a fresh run) or kept as it was
        self.consumer_bound = False
        # its consumer answered a fetch in this run (messages, or none within the wait)
        self.consumer_answered = False
        self.stats = {"repaired": 0, "loaded": 0}

    def on_tick(self, tick: Tick) -> None:
        self.pending_ticks[(tick.venue, tick.symbol)] = tick
        self.work.set()

    async def run(
        self, on_ready: Callable[[], None] | None = None, *, fresh_consumer: bool = True
    ) -> None:
        """Rebuild, then consume and apply until cancelled or fenced.

        ``fresh_consumer``: re-create the durable consumer (a new epoch: a dead
        holder's unacknowledged batch comes again at once).  When this instance
        runs its own partition again after a failure, the consumer is kept and the
        commands it had in hand are handed back (``nak``), so their delivery count
        goes on and a poison command is parked after ``PARK_AFTER`` tries."""
        self.fresh_consumer = fresh_consumer
        try:
            await self.rebuild()
            await self.prepare()
            if on_ready is not None:
                on_ready()
            async with asyncio.TaskGroup() as tg:
                for loop in self.loops():
                    tg.create_task(loop)
        finally:
            await asyncio.shield(self._hand_back())

    async def prepare(self) -> None:
        """After the rebuild, before serving (a live worker reconciles here)."""

    def loops(self) -> list[Coroutine[Any, Any, None]]:
        """What runs while the partition is served."""
        return [self._fetch_loop(), self._apply_loop()]

    async def _hand_back(self) -> None:
        """Best effort: commands fetched but not applied come again at once."""
        pending = [self.in_hand] if self.in_hand is not None else []
        while not self.commands.empty():
            pending.append(self.commands.get_nowait())
        for msg in pending:
            with contextlib.suppress(Exception):  # boundary: the ack wait returns it anyway
                await msg.nak()
        self.in_hand = None

    # -- rebuild: the partition's active set only -------------------------------
    async def rebuild(self) -> None:
        markers: list[tuple[str, str, ActiveMark]] = []
        for entry in await scan(self.kv, keys.active_of_partition(self.partition), confirm=True):
            assert entry.value is not None
            _, user, oid = keys.parse_active(entry.key)
            markers.append((user, oid, codec.decode(entry.value, ActiveMark)))
        # a partition that never counted anything has no record yet: fresh counters
        with contextlib.suppress(KeyNotFoundError):
            raw = await self.kv.get(keys.counters(self.partition))
            if raw.value:
                self.counts = codec.decode(raw.value, PartitionCounts)
        counted = set(self.counts.recent)
        for start in range(0, len(markers), 256):
            batch = markers[start : start + 256]
            orders = await asyncio.gather(*(self._get_order(oid) for _, oid, _ in batch))
            for (user, oid, mark), order in zip(batch, orders, strict=True):
                await self._restore(user, oid, mark, order, counted)
            raise_if_cancelled()
        self.active_counts = collections.Counter(str(o.status) for o in self.engine.orders.values())
        self.dirty = True
        await self._flush()
        for venue, symbol in {(o.venue, o.symbol) for o in self.engine.orders.values()}:
            tick = self.shared_ticks.get((venue, symbol)) or await self._kv_tick(venue, symbol)
            if tick is not None:
                self.engine.last_tick[(venue, symbol)] = tick
        self.stats["loaded"] = len(self.engine.orders)
        self.log.info(
            "partition %d rebuilt (epoch %s): %d active orders, %d repaired",
            self.partition, self.fence.epoch, len(self.engine.orders), self.stats["repaired"],
        )  # fmt: skip
        self.rebuilt.set()

    async def _restore(
        self, user: str, oid: str, mark: ActiveMark, order: Order | None, counted: set[str]
    ) -> None:
        if order is None:  # cannot happen (the order is written first); drop the marker
            self.ended.append((user, oid))
            return
        if order.events > mark.n or not is_active(order.status):
            seq = await self._publish(last_change(order))  # dropped as a duplicate
            self.stats["repaired"] += 1
            await self._settle(order, order.last_event or "", seq, counted)
        if is_active(order.status):
            self._load(order)

    def _load(self, order: Order) -> None:
        self.engine.load(order)
        if order.closing:
            self.closing.setdefault((order.venue, order.symbol), set()).add(order.id)

    # -- inputs ---------------------------------------------------------------------
    # the durable consumer on EXEC: a live worker names its own (``LiveWorker``)
    ACK_WAIT_S = 30.0
    REDELIVERY_BACKOFF: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0, 30.0)

    def consumer(self) -> tuple[str, str]:
        """This worker's durable consumer on ``EXEC``: its name and filter subject."""
        s = self.bus.subjects
        return s.exec_consumer(self.partition), s.exec_partition(self.partition)

    async def _reset_consumer(self) -> None:
        """A fresh durable consumer: every command not yet acknowledged comes again at
        once (a dead holder's in-flight batch does not wait out its ack wait)."""
        stream = self.bus.subjects.stream("EXEC")
        name, subject = self.consumer()
        with contextlib.suppress(NotFoundError):  # the partition's first owner: none yet
            await self.bus.js.delete_consumer(stream, name)
        await self.bus.js.add_consumer(
            stream,
            api.ConsumerConfig(
                durable_name=name,
                filter_subject=subject,
                deliver_policy=api.DeliverPolicy.ALL,
                ack_policy=api.AckPolicy.EXPLICIT,
                ack_wait=self.ACK_WAIT_S,
                max_deliver=10,
                backoff=list(self.REDELIVERY_BACKOFF) or None,
                max_ack_pending=1000,
            ),
        )

    async def _fetch_loop(self) -> None:
        bus = self.bus
        if self.fresh_consumer:
            await self._reset_consumer()
        self.consumer_bound = True
        stream = bus.subjects.stream("EXEC")
        name, _ = self.consumer()
        while True:
            psub = await bus.js.pull_subscribe_bind(durable=name, stream=stream)
            seen_reconnects = bus.reconnects
            try:
                while bus.reconnects == seen_reconnects:
                    try:
                        msgs = await psub.fetch(FETCH_BATCH, timeout=1.0)
                    except TimeoutError:  # nats' own, or asyncio's
                        self.consumer_answered = True
                        raise_if_cancelled()  # 3.11's wait_for may have eaten a cancel
                        continue
                    self.consumer_answered = True
                    raise_if_cancelled()
                    for m in msgs:
                        await self.commands.put(m)
                        self.work.set()
            finally:
                await psub.unsubscribe()
            # after a reconnect bind the pull subscription again (nats.py #504)
            self.log.info("re-binding the command consumer after a reconnect")

    async def _apply_loop(self) -> None:
        while True:
            await self.work.wait()
            self.work.clear()
            while not self.commands.empty():
                self.in_hand = self.commands.get_nowait()
                await self._apply_command(self.in_hand)
                self.in_hand = None
                raise_if_cancelled()
            ticks, self.pending_ticks = self.pending_ticks, {}
            for tick in ticks.values():
                await self._persist_all(self.engine.on_tick(tick))
                await self._sweep_closing(tick)
            await self._flush()
            raise_if_cancelled()

    async def _apply_command(self, msg: Msg) -> None:
        try:
            cmd = _decode_command.decode(msg.data)
        except msgspec.DecodeError as exc:
            self.log.error("poison command on %s terminated: %s", msg.subject, exc)
            await msg.term()
            return
        try:
            match cmd:
                case PlaceCmd(order=order):
                    await self._place(order)
                case CancelCmd(order_id=oid, user=user, reason=reason):
                    if not await self._cancel(oid, user, reason):
                        if msg.metadata.num_delivered < UNKNOWN_CANCEL_RETRIES:
                            await msg.nak(delay=0.5)  # its place has not been applied yet
                            return
                        self.log.warning("cancel for unknown order %s dropped", oid)
                case ExpireCmd(order_id=oid):
                    await self._book_of(oid)
                    change = self.engine.expire(oid, dt.datetime.now(dt.UTC))
                    await self._persist_all([change] if change else [])
        except Exception as exc:
            if isinstance(exc, Fenced | TimeoutError) or is_outage(exc):
                raise
            if msg.metadata.num_delivered < PARK_AFTER:
                raise StateSuspect(f"{type(cmd).__name__} failed: {exc!r}") from exc
            await self._park(msg, cmd, exc)
            raise StateSuspect(f"parked a {type(cmd).__name__}: {exc!r}") from exc
        await msg.ack()

    async def _park(self, msg: Msg, cmd: PlaceCmd | CancelCmd | ExpireCmd, exc: Exception) -> None:
        """A command that keeps failing: refuse it for good (a place becomes an
        ``order_rejected``), take it off the queue, and say so loudly."""
        self.log.error(
            "parking a %s on %s after %d deliveries: %r",
            type(cmd).__name__, msg.subject, msg.metadata.num_delivered, exc,
        )  # fmt: skip
        if isinstance(cmd, PlaceCmd) and await self._get_order(cmd.order.id) is None:
            self.engine.orders.pop(cmd.order.id, None)
            self.engine.book(cmd.order.venue, cmd.order.symbol).remove(cmd.order.id)
            await self._reject(cmd.order, "order_unprocessable", f"{type(exc).__name__}: {exc}")
        await msg.term()
        self.in_hand = None

    async def _place(self, order: Order) -> None:
        if order.id in self.engine.orders:
            return  # a redelivery: already booked and still active
        stored = await self._get_order(order.id)
        if stored is not None:  # booked before a crash: finish what the crash cut off
            seq = await self._publish(last_change(stored))
            await self._settle(stored, stored.last_event or "", seq, set(), index=True)
            if is_active(stored.status):
                self._load(stored)
            return
        try:
            change = self.engine.place(order)
        except PaperError as exc:  # cannot be applied: refused for good, not retried
            await self._reject(order, "order_invalid", str(exc))
            return
        await self._persist(change)
        tick = self.engine.last_tick.get((order.venue, order.symbol)) or self.shared_ticks.get(
            (order.venue, order.symbol)
        )
        if tick is None:
            tick = await self._kv_tick(order.venue, order.symbol)
        if tick is not None and order.order_type == "LIMIT":
            await self._persist_all(self.engine.on_tick(tick))  # a limit already crossed

    async def _reject(self, order: Order, code: str, message: str) -> None:
        self.log.warning("order %s parked as rejected: %s", order.id, message)
        rejected = msgspec.structs.replace(
            order, status=OrderStatus.REJECTED, reject_code=code, reject_message=message,
            last_event="order_rejected", events=order.events + 1, closed_at=codec.now_iso(),
        )  # fmt: skip
        await self._persist(Change(rejected, "order_rejected", None, code), index=True)

    async def _book_of(self, oid: str) -> tuple[Order | None, bool]:
        """The order as this partition's book holds it, and whether it exists at all.

        An order active in KV but not in the book was missed by the rebuild (its
        marker read from a replica still catching up, R16), or its place was cut
        off after its KV write (its event and marker not written yet, the place
        command waiting for redelivery behind this one).  Either way it is finished
        as a redelivered place would (its last event re-published, dropped if it
        is a duplicate; booked; marked) and loaded, so a command for it is applied
        after its ``oco_placed`` instead of being taken for one already ended."""
        active = self.engine.orders.get(oid)
        if active is not None:
            return active, True
        stored = await self._get_order(oid)
        if stored is None or not is_active(stored.status):
            return None, stored is not None
        self.log.warning("order %s is active in KV but was not in the book: loaded", oid)
        seq = await self._publish(last_change(stored))
        await self._settle(stored, stored.last_event or "", seq, set(), index=True)
        self._load(stored)
        return self.engine.orders.get(oid), True

    async def _cancel(self, oid: str, user: str, reason: str) -> bool:
        """False if the order is unknown here (its place command not applied yet)."""
        active, known = await self._book_of(oid)
        if active is None:
            return known  # ended already: nothing to do
        if active.user != user:
            return True
        change = self.engine.cancel(oid, reason)
        if change is not None:
            await self._persist(change)
        elif active.status is OrderStatus.OPEN and active.closing is None:
            # no usable price: the close is durable and happens on the next tick
            closing = self._stamp(msgspec.structs.replace(active, closing=reason))
            await self.fence.put(keys.order(oid), codec.encode(closing))
            self.engine.update(closing)
            self._load(closing)
        return True

    async def _sweep_closing(self, tick: Tick) -> None:
        waiting = self.closing.get((tick.venue, tick.symbol))
        for oid in list(waiting or ()):
            order = self.engine.orders.get(oid)
            change = None if order is None else self.engine.cancel(oid, order.closing or "")
            if order is None or change is not None:
                waiting.discard(oid)  # type: ignore[union-attr]
            if change is not None:
                await self._persist(change)

    # -- persistence ------------------------------------------------------------------
    def _stamp(self, order: Order) -> Order:
        return msgspec.structs.replace(order, executor=self.instance, epoch=self.fence.epoch or 0)

    async def _persist_all(self, changes: list[Change]) -> None:
        for change in changes:
            await self._persist(change)

    async def _persist(self, change: Change, index: bool = False) -> None:
        order = self._stamp(change.order)
        change = Change(order, change.event, change.fill, change.reason)
        await self.fence.put(keys.order(order.id), codec.encode(order))  # 1. fenced state
        self.engine.update(order)
        seq = await self._publish(change)  # 2. the event
        self._count(change.event)
        await self._settle(order, change.event, seq, set(), index=index)  # 3. and 4.

    async def _settle(
        self, order: Order, event: str, seq: int, counted: set[str], index: bool = False
    ) -> None:
        s = self.settings
        await ledger.book(
            self.kv, order, event, seq, s.rbot_account_currency, s.rbot_starting_balance
        )
        if index or event == "oco_placed":
            await userindex.append(self.kv, order.user, order.id)
        mark_key = keys.active(self.partition, order.user, order.id)
        if is_active(order.status):
            await self.fence.put(mark_key, codec.encode(mark_of(order, seq)))
            return
        if order.id not in counted:
            self.counts.ended[str(order.status)] = self.counts.ended.get(str(order.status), 0) + 1
        self.recent.append(order.id)
        self.ended.append((order.user, order.id))
        self.dirty = True
        if len(self.ended) >= FLUSH_EVERY:
            await self._flush()

    def _count(self, event: str) -> None:
        moves = {
            "oco_placed": ((), ("PENDING",)),
            "order_filled": (("PENDING",), ("OPEN",)),
            "position_closed": (("OPEN",), ()),
            "order_cancelled": (("PENDING",), ()),
            "order_expired": (("PENDING",), ()),
        }.get(event, ((), ()))
        for status in moves[0]:
            self.active_counts[status] -= 1
        for status in moves[1]:
            self.active_counts[status] += 1
        self.dirty = True

    async def _flush(self) -> None:
        """Counters first, then the purge of ended orders' markers (see the module doc)."""
        if not self.dirty:
            return
        self.counts.active = {k: v for k, v in self.active_counts.items() if v > 0}
        self.counts.recent = self.recent
        self.counts.ts = codec.now_iso()
        await self.fence.put(keys.counters(self.partition), codec.encode(self.counts))
        for user, oid in self.ended:
            await self.fence.purge(keys.active(self.partition, user, oid), MARKER_TTL_S)
        self.ended, self.recent, self.dirty = [], [], False

    async def _publish(self, change: Change) -> int:
        """Publish the change's event; its ORDERS sequence (the original one for a re-publish).

        The event names this worker and its epoch, a re-publish of an earlier
        owner's change included (a place cut off between its KV write and its
        event): the epochs in a partition's events then never go back."""
        o = self._stamp(change.order)
        change = Change(o, change.event, change.fill, change.reason)
        subject = self.bus.subjects.order_event(o.venue, o.symbol, change.event)
        msg_id = msgids.event(o.id, o.events)
        data = codec.encode_envelope(
            change.event, o.venue, event_of(change, self.partition), id=msg_id
        )
        ack = await kvcas.retry(
            lambda: self.bus.js.publish(subject, data, headers=msgids.headers(msg_id))
        )
        return int(ack.seq)

    # -- reads ---------------------------------------------------------------------------
    async def _get_order(self, oid: str) -> Order | None:
        try:
            entry = await self.kv.get(keys.order(oid))
        except KeyNotFoundError:
            return None
        return None if not entry.value else codec.decode(entry.value, Order)

    async def _kv_tick(self, venue: str, symbol: str) -> Tick | None:
        try:
            entry = await self.kv_prices.get(keys.price(venue, symbol))
        except KeyNotFoundError:
            return None
        assert entry.value is not None
        return codec.decode(entry.value, Tick)
