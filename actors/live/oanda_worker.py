"""OANDA's part of a live worker: the transaction stream and ``/changes``, trades.

Fills, TP/SL closes, cancels and GTD expiries come as v20 transactions (the
stream, and ``GET …/changes?sinceTransactionID=`` from the last one applied,
kept in KV ``lc.<venue>``, after every reconnect); a resting order is cancelled
with ``PUT …/orders/@<id>/cancel``, an open trade closed with ``PUT
…/trades/<trade>/close``; a lookup is ``GET …/orders/@<id>`` and its trade.
"""

from __future__ import annotations

import asyncio

import msgspec
from nats.js.errors import KeyNotFoundError

from rbot.bus import codec, keys
from rbot.bus.messages import Order, OrderStatus

from . import core
from .facts import BrokerUnavailable
from .oanda_broker import OandaOrders
from .oanda_proto import facts, order_state_facts
from .worker import LiveWorker, Txns


class OandaWorker(LiveWorker):
    @property
    def oanda(self) -> OandaOrders:
        assert isinstance(self.broker, OandaOrders)
        return self.broker

    async def prepare(self) -> None:
        self.cursor = await self._read_cursor()
        await self.reconcile()

    async def _catch_up(self) -> None:
        """The stream is open: fetch what happened since the last applied transaction."""
        if self.cursor > 0:
            txns, _ = await self.oanda.changes(self.cursor)
            if txns:
                self.log.info("caught up %d transactions since %d", len(txns), self.cursor)
            self.txns.put_nowait(txns)
        if self.gaps:
            self.reconciles.put_nowait(asyncio.get_running_loop().create_future())
        self.work.set()

    async def _end(self, order: Order, reason: str) -> None:
        """Cancel a resting order / close an open trade at the broker."""
        if order.status is OrderStatus.PENDING:
            known = await self._pending_known(order, reason)
            if known is None:
                return None
            order = known
            status, body = await self.oanda.cancel(order.id)
            txn = body.get("orderCancelTransaction")
            if status == 200 and isinstance(txn, dict):
                ours = {**txn, "reason": reason if txn.get("reason") == "CLIENT_REQUEST" else
                        txn.get("reason")}  # fmt: skip
                for fact in facts(ours):
                    order = await self._fact(order, fact)
                return None
            await self._resolve(order)  # filled meanwhile, or gone: ask the broker
            return None
        if order.status is OrderStatus.OPEN and order.broker_trade_id:
            closing = self._stamp(msgspec.structs.replace(order, closing=reason))
            await self.fence.put(keys.order(order.id), codec.encode(closing))
            self.engine.update(closing)
            status, body = await self.oanda.close(order.broker_trade_id)
            txn = body.get("orderFillTransaction")
            if status == 200 and isinstance(txn, dict):
                for fact in facts(txn):
                    closing = await self._fact(closing, fact)
                return None
            await self._resolve(closing)
        return None

    async def _apply_txns(self, txns: Txns) -> None:
        top = self.cursor
        for txn in txns:
            if txn.get("type") in ("HEARTBEAT", "TRANSACTION_HEARTBEAT"):
                last = int(txn.get("lastTransactionID") or 0)
                if self.cursor == 0 and last:
                    top = max(top, last)
                continue
            tid = int(txn.get("id") or 0)
            if tid <= self.cursor:
                continue
            for fact in facts(txn):
                order = core.match(self.engine.orders, fact)
                if order is not None:
                    await self._fact(order, fact)
            top = max(top, tid)
        if top > self.cursor:
            self.cursor = top
            await self.fence.put(keys.live_cursor(self.venue), str(top).encode())

    async def _read_cursor(self) -> int:
        try:
            entry = await self.kv.get(keys.live_cursor(self.venue))
        except KeyNotFoundError:
            return 0
        return int(entry.value or b"0")

    async def _resolve(self, order: Order) -> int:
        """Learn an order's state at the broker by lookup and apply it; an order the broker
        does not have and whose send's outcome was unknown is sent (same client id)."""
        try:
            found = await self.oanda.lookup(order.id)
        except BrokerUnavailable as exc:
            self.log.warning("reconcile %s: %s", order.id, exc)
            return 0
        if found is None:
            return await self._not_at_broker(order)
        broker_order, trade = found
        before = order.events
        order = await self._known_at_broker(order, str(broker_order.get("id", "")))
        for fact in order_state_facts(broker_order, trade):
            order = await self._fact(order, fact)
        return 1 if order.events != before else 0
