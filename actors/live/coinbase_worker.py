"""Coinbase's part of a live worker: the ``user`` channel, lookups, ``batch_cancel``.

Fills, bracket closes (take-profit / stop), cancels and expiries come as order
records on the ``user`` channel; it has no replay, so every reconnect (a drop,
silence or a ``sequence_num`` gap) is followed by a reconciliation: every
active order is looked up (``client_order_id`` in the product's order list)
and what changed is applied.  A resting order is cancelled with
``batch_cancel``; an open position is closed by cancelling its bracket child
and sending a market order for the other side (``<id>-close``).
"""

from __future__ import annotations

import asyncio
import dataclasses

import msgspec

from rbot.bus import codec, keys
from rbot.bus.messages import Order, OrderStatus

from . import core
from .coinbase_broker import CoinbaseOrders
from .coinbase_proto import CLOSE_SUFFIX, user_facts
from .facts import BrokerUnavailable, Fact
from .worker import LiveWorker, Txns


class CoinbaseWorker(LiveWorker):
    @property
    def cb(self) -> CoinbaseOrders:
        assert isinstance(self.broker, CoinbaseOrders)
        return self.broker

    async def _catch_up(self) -> None:
        """Subscribed again after a gap: nothing replays, so reconcile by lookup."""
        if self.gaps:
            self.reconciles.put_nowait(asyncio.get_running_loop().create_future())
        self.work.set()

    async def _apply_txns(self, txns: Txns) -> None:
        for msg in txns:
            for fact in user_facts(msg):
                await self._apply_fact(fact)

    async def _apply_fact(self, fact: Fact) -> None:
        order = core.match(self.engine.orders, fact)
        if order is None:
            return
        if fact.kind == "closed" and fact.trade_id is None:  # our own close order
            fact = dataclasses.replace(fact, trade_id=order.broker_trade_id)
        await self._fact(order, fact)

    async def _resolve(self, order: Order) -> int:
        try:
            found = await self.cb.lookup(order.id, order.symbol)
            fs = await self.cb.state_facts(found) if found is not None else []
            if found is not None and order.closing:
                closing = await self.cb.lookup(order.id + CLOSE_SUFFIX, order.symbol)
                fs += await self.cb.state_facts(closing) if closing is not None else []
        except BrokerUnavailable as exc:
            self.log.warning("reconcile %s: %s", order.id, exc)
            return 0
        if found is None:
            return await self._not_at_broker(order)
        before = order.events
        order = await self._known_at_broker(order, str(found.get("order_id", "")))
        for fact in fs:
            if fact.kind == "closed" and fact.trade_id is None:
                fact = dataclasses.replace(fact, trade_id=order.broker_trade_id)
            order = await self._fact(order, fact)
        return 1 if order.events != before else 0

    async def _end(self, order: Order, reason: str) -> None:
        """Cancel a resting order (``batch_cancel``) / close an open position."""
        if order.status is OrderStatus.PENDING:
            known = await self._pending_known(order, reason)
            if known is None:
                return None
            order = known
            boid = order.broker_order_id
            if boid is not None and (await self.cb.cancel([boid]))[boid] is None:
                fact = Fact("cancelled", 0, codec.now_iso(), broker_order_id=boid, reason=reason)
                await self._fact(order, fact)
                return None
            await self._resolve(order)  # filled meanwhile, or gone: ask the broker
            return None
        if order.status is OrderStatus.OPEN and order.broker_trade_id:
            closing = self._stamp(msgspec.structs.replace(order, closing=reason))
            await self.fence.put(keys.order(order.id), codec.encode(closing))
            self.engine.update(closing)
            facts = await self.cb.close(closing)
            for fact in facts:
                if fact.kind == "closed" and fact.trade_id is None:
                    fact = dataclasses.replace(fact, trade_id=closing.broker_trade_id)
                closing = await self._fact(closing, fact)
            if not facts:
                await self._resolve(closing)
        return None
