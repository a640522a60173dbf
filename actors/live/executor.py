"""live_executor: the single writer of live orders, one leader per venue.

A venue's live orders are one pseudo-partition (``live_partition(venue)``,
lease ``fence.<N>``, markers ``a.<N>.<user>.<id>``), so the fence, the active
set, the history index and the ledger are the paper executor's own.  The
instance that holds the lease runs a ``LiveWorker``; the others wait on a
watch of the lease and take it over (compare-and-set on the revision they saw)
when its holder's heartbeats stop for two beat intervals.  A restart of the
same instance adopts its own lease.  Only venues whose live routing exists
and is configured run (``Settings.live_venues``: OANDA, Coinbase), and only
while live execution is on (``PAPER_MODE=false``, ``EXECUTION_ENABLED=true``):
with live off this actor never talks to a broker.  A Coinbase key whose
``COINBASE_API_ALGO`` disagrees with it (or is unknown) stops the start with
that error.

``<p>.cmd.live.reconcile`` (``rbot reconcile``) reconciles every venue this
instance leads and answers a JSON summary per venue.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from nats.aio.msg import Msg
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from rbot.bus import codec
from rbot.bus.connection import Bus
from rbot.bus.fence import PartitionFence
from rbot.bus.messages import Beat, FenceRecord, Tick
from rbot.bus.pnl import rate_from_ticks
from rbot.bus.subjects import live_partition

from ..base import Actor, Ready
from ..feeds.live import coinbase_credentials, coinbase_rest_base, oanda_account, oanda_endpoints
from .coinbase_broker import CoinbaseOrders, user_ws_url
from .coinbase_proto import key_algorithm
from .coinbase_worker import CoinbaseWorker
from .oanda_broker import OandaOrders
from .oanda_worker import OandaWorker
from .worker import Broker, LiveWorker

SECRET_FIELDS = ("token", "authorization", "pin", "jwt", "secret")


class LiveExecutor(Actor):
    name = "live_executor"

    async def run(self, bus: Bus, ready: Ready) -> None:
        self.bus = bus
        self.kv: KeyValue = await bus.kv("orders")
        self.kv_prices = await bus.kv("prices")
        self.kv_control = await bus.kv("control")
        self.ticks: dict[tuple[str, str], Tick] = {}
        self.workers: dict[str, LiveWorker] = {}
        self.seen: dict[str, float] = {}
        loop = asyncio.get_running_loop()
        self._t0 = loop.time()

        async def on_beat(msg: Msg) -> None:
            try:
                beat = codec.payload(codec.decode_envelope(msg.data), Beat)
            except codec.DecodeError:
                return
            self.seen[beat.instance] = loop.time()

        async def on_tick(msg: Msg) -> None:
            try:
                tick = codec.payload(codec.decode_envelope(msg.data), Tick)
            except codec.DecodeError:
                return
            self.ticks[(tick.venue, tick.symbol)] = tick

        venues = self.settings.live_venues() if self._live_on() else []
        brokers = {venue: self._broker(venue) for venue in venues}  # bad credentials: stop here
        subs = [
            await bus.nc.subscribe(bus.subjects.heartbeats_of(self.name), cb=on_beat),
            await bus.nc.subscribe(bus.subjects.ticks(), cb=on_tick),
            await bus.nc.subscribe(bus.subjects.live_reconcile, cb=self._on_reconcile),
        ]
        ready()
        try:
            async with asyncio.TaskGroup() as tg:
                for venue, broker in brokers.items():
                    tg.create_task(self._lead(venue, broker))
                await bus.closed.wait()
        finally:
            for sub in subs:
                with contextlib.suppress(Exception):  # boundary: the connection may be gone
                    await sub.unsubscribe()
            for broker in brokers.values():
                await broker.aclose()

    async def _on_reconcile(self, msg: Msg) -> None:
        out: dict[str, Any] = {}
        for venue, worker in list(self.workers.items()):
            try:
                out[venue] = await worker.request_reconcile()
            except Exception as exc:  # boundary: the answer says what failed
                self.log.exception("reconcile of %s failed", venue)
                out[venue] = {"error": type(exc).__name__}
        if msg.reply:
            await msg.respond(json.dumps({"instance": self.instance, "venues": out}).encode())

    # -- leadership ------------------------------------------------------------------
    def _live_on(self) -> bool:
        return not self.settings.paper_mode and self.settings.execution_enabled

    async def _lead(self, venue: str, broker: Broker) -> None:
        fence = PartitionFence(self.bus, self.kv, live_partition(venue), self.instance)
        silence = 2 * self.settings.rbot_beat_interval_s + 0.25
        while not await self._acquire(fence, silence):
            watcher = await self.kv.watch(fence.key, include_history=False)
            try:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(silence):
                        async for entry in watcher:
                            if entry is not None and (entry.value is None or entry.operation):
                                break  # released
            finally:
                await watcher.stop()  # type: ignore[no-untyped-call]
        self.log.info("live %s: leading (epoch %s)", venue, fence.epoch)
        kind = CoinbaseWorker if venue == "coinbase" else OandaWorker
        worker = kind(
            self.bus, self.kv, self.kv_prices, self.kv_control, fence, self.settings,
            lambda a, b: rate_from_ticks(self.ticks, a, b), self.ticks, venue, broker,
        )  # fmt: skip
        self.workers[venue] = worker
        try:
            await worker.run()
        finally:
            self.workers.pop(venue, None)
            with contextlib.suppress(Exception):  # boundary: taken over anyway when we are gone
                await asyncio.shield(fence.release())

    async def _acquire(self, fence: PartitionFence, silence: float) -> bool:
        if await fence.claim():
            return True
        try:
            entry = await self.kv.get(fence.key)
        except KeyNotFoundError:
            return False
        if not entry.value or entry.revision is None:
            return False
        owner = codec.decode(entry.value, FenceRecord).owner
        if owner == self.instance:  # ours from before a restart
            fence.epoch = entry.revision
            return True
        last = self.seen.get(owner)
        now = asyncio.get_running_loop().time()
        if (last is None or now - last > silence) and now - self._t0 > silence:
            return await fence.take_over(entry.revision)
        return False

    def _broker(self, venue: str) -> Broker:
        s = self.settings

        async def audit(kind: str, data: dict[str, Any]) -> None:
            clean = {k: v for k, v in data.items() if k.lower() not in SECRET_FIELDS}
            self.log.info("audit %s %s", kind, clean)
            payload = {"venue": venue, "kind": kind, "instance": self.instance, **clean}
            # durable (stream AUDIT) before the send goes out: no send without its record
            await self.bus.js.publish(
                self.bus.subjects.live_audit(venue, kind),
                codec.encode_envelope(f"live_{kind}", venue, codec.to_builtins(payload)),
            )

        if venue == "coinbase":
            creds = coinbase_credentials(s)
            assert creds is not None  # live_venues() says the key is there
            key = s.coinbase_api_key_secret
            assert key is not None
            key_algorithm(key.get_secret_value(), s.coinbase_api_algo)  # CredentialError
            return CoinbaseOrders(
                base_url=coinbase_rest_base(s), ws_url=user_ws_url(s.coinbase_ws_url),
                credentials=creds, products=s.symbols("coinbase"),
                timeout=s.rbot_live_timeout_s, max_retries=s.rbot_live_max_retries, audit=audit,
            )  # fmt: skip
        stream_url, rest_url = oanda_endpoints(s)
        account, token = oanda_account(s)
        return OandaOrders(
            base_url=rest_url, stream_url=stream_url, account_id=account, token=token,
            timeout=s.rbot_live_timeout_s, max_retries=s.rbot_live_max_retries, audit=audit,
        )  # fmt: skip
