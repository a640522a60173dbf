"""paper_executor: the single writer of order state, partitioned across instances.

Commands travel on ``<p>.exec.<part>.<venue>.<symbol>`` (``RBOT_PARTITIONS``
partitions, a stable CRC-32 of venue and symbol).  Each partition is owned by
one instance at a time through its lease ``fence.<part>`` (``bus.fence``); the
lease's revision is the epoch that fences every write, and every order event
names its writer (``executor``, ``epoch``, ``partition``).

This actor only decides *which* partitions it runs (``ownership.plan``: a fair
share of the live instances, seen through their heartbeats, taking over those
of instances that went silent for two beat intervals) and routes ticks to
them; each owned partition is a ``PartitionWorker`` task in this actor's
TaskGroup.  Losing a lease is a state change, not a crash: the worker stops,
the partition is dropped, and the plan runs again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

from nats.aio.msg import Msg
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from rbot.bus import codec, keys
from rbot.bus.connection import Bus
from rbot.bus.fence import Fenced, PartitionFence
from rbot.bus.messages import ActorEvent, Beat, FenceRecord, Tick
from rbot.bus.outage import is_outage, leaves
from rbot.bus.pnl import rate_from_ticks
from rbot.bus.timing import raise_if_cancelled

from ..backoff import Backoff
from ..base import Actor, Ready
from .ownership import Holder, plan
from .partition import PartitionWorker, StateSuspect

log = logging.getLogger("rbot.actor.paper_executor")
HANDOVER_WAIT_S = 3.0
CONSUMER_RESET_AFTER = 3  # runs in a row without an answer from the partition's consumer
# between such runs: JetStream answers 503 at once during an election, and an
# immediate re-run (a KV scan, a consumer create) spun every few ms for seconds
RERUN_BACKOFF = Backoff(initial=0.1, cap=2.0)


class PaperExecutor(Actor):
    name = "paper_executor"

    async def run(self, bus: Bus, ready: Ready) -> None:
        self.bus = bus
        self.kv: KeyValue = await bus.kv("orders")
        self.kv_prices = await bus.kv("prices")
        self.partitions = bus.subjects.partitions
        self.ticks: dict[tuple[str, str], Tick] = {}
        self.workers: dict[int, tuple[PartitionWorker, asyncio.Task[None]]] = {}
        self.holders: dict[int, Holder] = {}
        self.free_since: dict[int, float] = {}
        self.seen: dict[str, float] = {}
        self.ran_epochs: set[int | None] = set()  # epochs whose consumer is fresh already
        self.failures: dict[int, int] = {}
        self.unanswered: dict[int, int] = {}  # runs in a row whose consumer never answered
        self.stale_consumers: set[int] = set()  # partitions whose next run re-creates it
        self.changed = asyncio.Event()
        loop = asyncio.get_running_loop()
        self.started = loop.time()
        interval = self.settings.rbot_beat_interval_s
        self.silence = 2 * interval + 0.25

        async def on_beat(msg: Msg) -> None:
            try:
                beat = codec.payload(codec.decode_envelope(msg.data), Beat)
            except codec.DecodeError:
                return
            if beat.state == "stopping":
                self.seen.pop(beat.instance, None)
            else:
                if beat.instance not in self.seen:
                    self.changed.set()
                self.seen[beat.instance] = loop.time()

        async def on_tick(msg: Msg) -> None:
            try:
                tick = codec.payload(codec.decode_envelope(msg.data), Tick)
            except codec.DecodeError:
                self.log.warning("malformed tick on %s", msg.subject)
                return
            self.ticks[(tick.venue, tick.symbol)] = tick
            held = self.workers.get(bus.subjects.partition(tick.venue, tick.symbol))
            if held is not None:
                held[0].on_tick(tick)

        async def on_max_deliveries(msg: Msg) -> None:
            await self._max_deliveries(msg)

        subs = [
            await bus.nc.subscribe(bus.subjects.heartbeats_of(self.name), cb=on_beat),
            await bus.nc.subscribe(bus.subjects.ticks(), cb=on_tick),
            await bus.nc.subscribe(bus.subjects.max_deliveries(), cb=on_max_deliveries),
        ]
        ready()
        try:
            async with asyncio.TaskGroup() as tg:
                self.tg = tg
                tg.create_task(self._watch_fences())
                await self._reconcile_loop()
        finally:
            for sub in subs:
                with contextlib.suppress(Exception):  # boundary: the connection may be gone
                    await sub.unsubscribe()
            await asyncio.shield(self._release_all())

    async def _max_deliveries(self, msg: Msg) -> None:
        """A command was delivered ``max_deliver`` times and will not come again (the
        partition parks a failing one before that: this is the safety net).  The
        partition's owner says so on the bus (``evt.actor.paper_executor.max_deliveries``,
        kept in the SYSTEM stream; ``/metrics`` counts them)."""
        try:
            adv = json.loads(msg.data)
            consumer, seq = str(adv["consumer"]), int(adv["stream_seq"])
        except (ValueError, KeyError, TypeError):
            self.log.warning("unreadable max-deliveries advisory")
            return
        owner = next(
            (p for p in self.workers if self.bus.subjects.exec_consumer(p) == consumer), None
        )
        if owner is None:
            return  # another instance's partition (or not ours at all)
        self.log.error("command %d on %s reached its max deliveries: it is stuck", seq, consumer)
        ev = ActorEvent(
            actor=self.name, instance=self.instance, state="max_deliveries",
            reason=f"EXEC sequence {seq} on {consumer} was delivered {adv.get('deliveries')} times",
        )  # fmt: skip
        subject = self.bus.subjects.actor_event(self.name, "max_deliveries")
        await self.bus.nc.publish(subject, codec.encode_envelope("max_deliveries", self.name, ev))

    # -- what the others hold -----------------------------------------------------
    async def _watch_fences(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self.bus.reconnected.clear()
            watcher = await self.kv.watch(keys.fences())
            try:
                raise_if_cancelled()  # the watch's request may have swallowed a cancel
                async with asyncio.TaskGroup() as tg:
                    consumer = tg.create_task(self._consume_fences(watcher, loop))
                    await self.bus.reconnected.wait()  # a watch is a hint: re-create it
                    consumer.cancel()
            finally:
                await watcher.stop()  # type: ignore[no-untyped-call]

    async def _consume_fences(
        self, watcher: KeyValue.KeyWatcher, loop: asyncio.AbstractEventLoop
    ) -> None:
        async for entry in watcher:
            if entry is None:
                continue
            part = keys.parse_fence(entry.key)
            if part >= self.partitions:
                continue
            if entry.value and entry.operation is None and entry.revision is not None:
                owner = codec.decode(entry.value, FenceRecord).owner
                self.holders[part] = Holder(owner, entry.revision)
                self.free_since.pop(part, None)
            else:
                self.holders.pop(part, None)
                self.free_since.setdefault(part, loop.time())
            self.changed.set()

    # -- the plan -------------------------------------------------------------------
    def live(self) -> set[str]:
        now = asyncio.get_running_loop().time()
        return {i for i, t in self.seen.items() if now - t <= self.silence} | {self.instance}

    async def _reconcile_loop(self) -> None:
        period = self.settings.rbot_beat_interval_s / 2
        while True:
            # beats and lease changes wake it; the timer is for silence, which sends nothing
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(period):
                    await self.changed.wait()
            self.changed.clear()
            await self._reconcile()
            # a cancel swallowed by a KV request (3.11's wait_for) must still end the
            # loop: else run()'s TaskGroup never cancels its workers, the supervisor
            # abandons this incarnation, and it runs on beside the next one (R16: a
            # partition left to a worker nobody cancelled, its cancels never applied)
            raise_if_cancelled()

    async def _reconcile(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        observed = now - self.started >= self.silence
        free_for = {p: now - t for p, t in self.free_since.items()}
        for p in range(self.partitions):
            if p not in self.holders and p not in self.free_since:
                self.free_since[p] = now
        todo = plan(
            self.instance, self.live(), self.holders, self.partitions,
            observed=observed, free_for=free_for, grace=self.silence,
        )  # fmt: skip
        if todo:
            self.log.debug("plan: live=%s holders=%s todo=%s", sorted(self.live()),
                           {p: h.owner for p, h in self.holders.items()}, todo)  # fmt: skip
        for p in todo.release:
            await self._stop(p, "handed to its target owner")
        for p in todo.claim:
            fence = PartitionFence(self.bus, self.kv, p, self.instance)
            if p not in self.workers:
                if await fence.claim():
                    self._start(fence, "claimed")
                else:
                    await self._refresh(p)  # our view was stale: read the lease itself
        for p, seen in todo.take_over:
            fence = PartitionFence(self.bus, self.kv, p, self.instance)
            silent = self.holders.get(p)
            if p not in self.workers:
                if await fence.take_over(seen):
                    self._start(
                        fence, f"taken over from {silent.owner if silent else '?'} (silent)"
                    )
                else:
                    await self._refresh(p)
        for p, holder in list(self.holders.items()):  # ours from before a restart
            if holder.owner == self.instance and p not in self.workers and p not in todo.release:
                fence = PartitionFence(self.bus, self.kv, p, self.instance)
                fence.epoch = holder.revision
                self._start(fence, "adopted")

    def _start(self, fence: PartitionFence, how: str) -> None:
        p = fence.partition
        self.holders[p] = Holder(self.instance, fence.epoch or 0)
        self.free_since.pop(p, None)
        worker = PartitionWorker(
            self.bus, self.kv, self.kv_prices, fence, self.settings,
            lambda a, b: rate_from_ticks(self.ticks, a, b), self.ticks,
        )  # fmt: skip
        self.log.info("partition %d %s: epoch %s", p, how, fence.epoch)
        task = self.tg.create_task(self._run_worker(worker))
        self.workers[p] = (worker, task)

    async def _run_worker(self, worker: PartitionWorker) -> None:
        p = worker.partition
        # a new epoch, or a consumer that stopped answering: a fresh consumer
        fresh = worker.fence.epoch not in self.ran_epochs or p in self.stale_consumers
        try:
            try:
                await worker.run(fresh_consumer=fresh)
            finally:
                if worker.consumer_bound:  # re-created (or kept) for this epoch: done
                    self.ran_epochs.add(worker.fence.epoch)
                    if fresh:
                        self.stale_consumers.discard(p)
        except Fenced as exc:
            self.log.warning("partition %d lost: %s", p, exc)
        except StateSuspect as exc:
            # one command failed half-way: rebuild from KV (the lease stays ours)
            n = self.failures[p] = self.failures.get(p, 0) + 1
            self.log.error("partition %d rebuilds after a failed command: %s", p, exc)
            await asyncio.sleep(min(5.0, 0.1 * 2**n))  # backoff before running it again
        except Exception as exc:
            if not is_outage(exc) and not isinstance(exc, TimeoutError):
                raise  # a real fault: the supervisor sees it
            # the bus went away: keep the lease, run the partition again once it is back
            self.log.info("partition %d waiting for the bus (%s)", p, leaves(exc))
            unanswered = self._unanswered(worker)
            await self.bus.wait_online()
            if unanswered:  # connected, JetStream not answering: nothing announces its return
                await asyncio.sleep(RERUN_BACKOFF.delay(unanswered - 1))
        finally:
            if self.workers.get(p, (None,))[0] is worker:
                self.workers.pop(p, None)
            self.changed.set()

    def _unanswered(self, worker: PartitionWorker) -> int:
        """Runs in a row (this one included) that ended on an outage while connected,
        the consumer never answering a fetch; 0 when it answered or the bus is away.

        Every ``CONSUMER_RESET_AFTER`` of them, the next run re-creates the consumer.
        (R16: after a node was killed and another paused, a partition's consumer
        answered every fetch 503 for as long as the test waited, and the partition
        re-ran without a pause, its commands never applied.)"""
        p = worker.partition
        if worker.consumer_answered or not self.bus.connected:
            self.unanswered.pop(p, None)
            return 0
        n = self.unanswered[p] = self.unanswered.get(p, 0) + 1
        if n % CONSUMER_RESET_AFTER == 0 and p not in self.stale_consumers:
            self.log.warning(
                "partition %d: its consumer did not answer in %d runs: re-creating it", p, n
            )
            self.stale_consumers.add(p)
        return n

    async def _refresh(self, p: int) -> None:
        """Read one lease directly (the watch is a hint; a refused claim says it lagged)."""
        try:
            entry = await self.kv.get(keys.fence(p))
        except KeyNotFoundError:
            self.holders.pop(p, None)
            return
        if entry.value and entry.revision is not None:
            owner = codec.decode(entry.value, FenceRecord).owner
            self.holders[p] = Holder(owner, entry.revision)
            self.free_since.pop(p, None)

    async def _stop(self, p: int, why: str) -> None:
        held = self.workers.pop(p, None)
        if held is None:
            holder = self.holders.get(p)
            if holder is not None and holder.owner == self.instance:
                # ours in KV (from before a restart) but not run here: give it back,
                # or nobody would ever run it (we look alive to the others)
                fence = PartitionFence(self.bus, self.kv, p, self.instance)
                fence.epoch = holder.revision
                await fence.release()
                self.holders.pop(p, None)
                self.log.info("partition %d released unrun: %s", p, why)
            return
        worker, task = held
        # cancel until it is done: on Python 3.11 a nats-py request (asyncio.wait_for
        # inside) can swallow a cancellation that arrives with its reply.  Give up
        # waiting after HANDOVER_WAIT_S: the lease goes back anyway, and the fence
        # refuses whatever a lingering worker still tries to write.
        deadline = asyncio.get_running_loop().time() + HANDOVER_WAIT_S
        while not task.done() and asyncio.get_running_loop().time() < deadline:
            task.cancel()
            await asyncio.wait([task], timeout=0.5)
        if not task.done():
            self.log.error("partition %d: its worker ignores cancellation; fenced out", p)
        await worker.fence.release()
        self.log.info("partition %d released: %s", p, why)

    async def _release_all(self) -> None:
        for p in list(self.workers):
            try:
                await self._stop(p, "stopping")
            except Exception as exc:  # boundary: the lease is taken over anyway
                self.log.info("partition %d not released: %s", p, type(exc).__name__)

    def owned(self) -> list[int]:
        return sorted(self.workers)
