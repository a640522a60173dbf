"""order_guard: the request/reply gate every order passes (a ``nats.micro`` service).

Stateless: any number run in queue group ``guard``; everything it needs comes
from KV (last prices, trading state, positions, idempotency records).

For one ``rbot.cmd.order.place`` request:

1. Idempotency first: a retry with the same ``client_order_id`` (or
   ``Idempotency-Key``) finds its ``idem.<user>.<key>`` record, re-publishes the
   same place command (same ``Nats-Msg-Id``: JetStream drops the duplicate; after
   the window the executor's KV ``create`` does) and answers the original order.
   The same key with a different request is a 409.
2. The rules (``rules.check``); a refusal answers 4xx and publishes
   ``order_rejected`` on the ``ORDERS`` stream.
3. Acceptance: KV ``create`` of the idempotency record (it fails if another
   guard won the race: back to 1); its revision numbers the order, so ids are
   unique across processes and restarts; the place command goes to the owning
   executor's partition subject on ``EXEC`` and the answer is sent only after
   the PubAck: an order answered ``ok`` is durable.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from decimal import Decimal

from nats.errors import TimeoutError as NatsTimeout
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.micro import add_service
from nats.micro.request import Request

from rbot.bus import codec, keys
from rbot.bus.connection import Bus
from rbot.bus.messages import (
    IdemRecord,
    Order,
    OrderEvent,
    OrderRequest,
    OrderStatus,
    PlaceCmd,
    PlaceReply,
    Position,
    Tick,
    TradingState,
    TradingStateRecord,
)

from ..base import Actor, Ready
from .idem import request_hash
from .rules import GuardContext, Limits, RateLimiter, Rejection, check, rate_limited

PUBLISH_ATTEMPTS = 3

# conservative per-symbol limits for paper trading (quote currency for notional)
LIMITS: dict[str, Limits] = {
    "BTC-USD": Limits(max_qty=Decimal(10), max_notional=Decimal(2_000_000)),
    "ETH-USD": Limits(max_qty=Decimal(200), max_notional=Decimal(2_000_000)),
    "SOL-USD": Limits(max_qty=Decimal(20_000), max_notional=Decimal(2_000_000)),
}
FX_LIMITS = Limits(max_qty=Decimal(10_000_000), max_notional=Decimal(20_000_000))


def order_id_for(venue: str, number: int) -> str:
    """The seed's shapes: ``paper-oanda-<n>`` for OANDA, ``paper-<n>`` for Coinbase."""
    return f"paper-oanda-{number}" if venue == "oanda" else f"paper-{number}"


class OrderGuard(Actor):
    name = "order_guard"

    async def run(self, bus: Bus, ready: Ready) -> None:
        self.bus = bus
        self.kv_orders = await bus.kv("orders")
        self.kv_prices = await bus.kv("prices")
        self.kv_control = await bus.kv("control")
        self.limiter = RateLimiter(self.settings.rbot_orders_per_minute, time.monotonic)
        self.pin_failures: dict[str, list[float]] = {}
        svc = await add_service(
            bus.nc,
            name="order_guard",
            version="0.1.0",
            description="validates orders and hands accepted ones to the executor",
        )
        await svc.add_endpoint(
            name="place", subject=bus.subjects.order_place, handler=self.handle, queue_group="guard"
        )
        ready()
        try:
            await bus.closed.wait()
        finally:
            await svc.stop()

    # -- the handler: never raises (a raise would only log inside nats.micro) --
    async def handle(self, request: Request) -> None:
        try:
            req = codec.decode(request.data, OrderRequest)
        except codec.DecodeError as exc:
            await self._reply(
                request, PlaceReply(ok=False, code="bad_request", message=str(exc), http_status=400)
            )
            return
        try:
            reply = await self.place(req)
        except Exception as exc:  # boundary: count, log, answer 503
            self.log.exception("guard failed on an order from %s", req.user)
            reply = PlaceReply(
                ok=False, code="guard_error", message=f"order not accepted: {type(exc).__name__}",
                http_status=503,
            )  # fmt: skip
        await self._reply(request, reply)

    async def _reply(self, request: Request, reply: PlaceReply) -> None:
        await request.respond(codec.encode(reply))

    async def place(self, req: OrderRequest) -> PlaceReply:
        key = req.client_order_id or req.idempotency_key or uuid.uuid4().hex
        idem_key = keys.idem(req.user, key)
        digest = request_hash(req)
        replay = await self._replay(req, idem_key, digest)
        if replay is not None:
            return replay
        rejection = await self._check(req)
        if rejection is None and req.live:
            rejection = Rejection(
                code="live_unavailable",
                message="live execution is not available yet: set PAPER_MODE=true",
                http_status=409,
            )
        if rejection is not None:
            await self._publish_rejection(req, rejection)
            return PlaceReply(
                ok=False,
                code=rejection.code,
                message=rejection.message,
                detail=dict(rejection.detail) if rejection.detail else None,
                http_status=rejection.http_status,
            )
        record = codec.encode(IdemRecord(request_hash=digest, ts=codec.now_iso()))
        try:
            number = await self.kv_orders.create(idem_key, record)
        except KeyWrongLastSequenceError:  # another guard accepted the same key just now
            again = await self._replay(req, idem_key, digest)
            assert again is not None
            return again
        order = self._order(req, order_id_for(req.venue, number))
        return await self._submit(order)

    async def _replay(self, req: OrderRequest, idem_key: str, digest: str) -> PlaceReply | None:
        try:
            entry = await self.kv_orders.get(idem_key)
        except KeyNotFoundError:
            return None
        assert entry.value is not None and entry.revision is not None
        rec = codec.decode(entry.value, IdemRecord)
        order_id = order_id_for(req.venue, entry.revision)
        if rec.request_hash != digest:
            return PlaceReply(
                ok=False,
                code="idempotency_conflict",
                message="this client_order_id / Idempotency-Key was used for a different order",
                detail={"order_id": order_id},
                http_status=409,
            )
        try:
            current = await self.kv_orders.get(keys.order(order_id))
        except KeyNotFoundError:
            # accepted but not yet booked (or the publish was lost): publish again,
            # same Nats-Msg-Id, so the executor books it exactly once
            return await self._submit(self._order(req, order_id, created=rec.ts), replayed=True)
        assert current.value is not None
        status = codec.decode(current.value, Order).status
        return PlaceReply(ok=True, order_id=order_id, status=str(status), replayed=True)

    def _order(self, req: OrderRequest, order_id: str, created: str | None = None) -> Order:
        ttl = req.ttl_minutes or self.settings.rbot_order_ttl_min
        created = created or codec.now_iso()
        expires = codec.utc_iso(codec.parse_iso(created) + dt.timedelta(minutes=ttl))
        return Order(
            id=order_id,
            user=req.user,
            venue=req.venue,
            symbol=req.symbol,
            side=req.side,
            order_type=req.order_type,
            qty=req.qty,
            stop_loss=req.stop_loss or Decimal(0),
            take_profit=req.take_profit or Decimal(0),
            entry_price=req.entry_price,
            limit_price=req.limit_price,
            quality_score=req.quality_score,
            client_order_id=req.client_order_id,
            created_at=created,
            expires_at=expires,
            max_hold_min=self.settings.max_hold_min,
            currency=self.settings.rbot_account_currency,
        )

    async def _submit(self, order: Order, replayed: bool = False) -> PlaceReply:
        subject = self.bus.subjects.exec(order.venue, order.symbol)
        data = codec.encode(PlaceCmd(order=order))
        headers = {"Nats-Msg-Id": f"place.{order.id}"}
        for attempt in range(PUBLISH_ATTEMPTS):
            try:
                await self.bus.js.publish(subject, data, headers=headers, timeout=2.0)
                break
            except NatsTimeout:  # unknown outcome: retry with the same Nats-Msg-Id
                self.log.warning("PubAck timeout for %s (attempt %d)", order.id, attempt + 1)
        else:
            return PlaceReply(
                ok=False,
                code="bus_unavailable",
                message="the order could not be stored; retry with the same client_order_id",
                detail={"order_id": order.id},
                http_status=503,
            )
        return PlaceReply(ok=True, order_id=order.id, status="PENDING", replayed=replayed)

    # -- rules --------------------------------------------------------------
    async def _check(self, req: OrderRequest) -> Rejection | None:
        retry = self.limiter.hit(req.user)
        if retry > 0:
            return rate_limited(retry)
        tick, age = await self._last_tick(req.venue, req.symbol)
        state = await self._trading_state()
        net = await self._net_position(req) if state is TradingState.REDUCING else Decimal(0)
        s = self.settings
        ctx = GuardContext(
            known_symbols={v: frozenset(s.symbols(v)) for v in ("oanda", "coinbase")},
            limits=LIMITS,
            default_limits=FX_LIMITS if req.venue == "oanda" else Limits(),
            quality_threshold=s.quality_threshold,
            tick=tick,
            tick_age_s=age,
            price_max_age_s=s.rbot_price_max_age_s,
            trading_state=state,
            net_position=net,
            execution_enabled=s.execution_enabled,
            pin_configured=s.live_pin is not None,
            pin_ok=self._pin_ok(req) if req.live else None,
        )
        return check(req, ctx)

    def _pin_ok(self, req: OrderRequest) -> bool | None:
        """The API checked X-PIN (constant time, lockout in KV): only its verdict is here."""
        return req.pin_ok

    async def _last_tick(self, venue: str, symbol: str) -> tuple[Tick | None, float | None]:
        try:
            entry = await self.kv_prices.get(keys.price(venue, symbol))
        except KeyNotFoundError:
            return None, None
        assert entry.value is not None
        tick = codec.decode(entry.value, Tick)
        age = time.time() - codec.parse_iso(tick.time).timestamp()
        return tick, max(age, 0.0)

    async def _trading_state(self) -> TradingState:
        try:
            entry = await self.kv_control.get(keys.TRADING)
        except KeyNotFoundError:
            return TradingState.ACTIVE
        assert entry.value is not None
        return codec.decode(entry.value, TradingStateRecord).state

    async def _net_position(self, req: OrderRequest) -> Decimal:
        try:
            entry = await self.kv_orders.get(keys.position(req.user, req.venue, req.symbol))
        except KeyNotFoundError:
            return Decimal(0)
        assert entry.value is not None
        return codec.decode(entry.value, Position).qty

    async def _publish_rejection(self, req: OrderRequest, rej: Rejection) -> None:
        ev = OrderEvent(
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
            reason=rej.code,
            message=rej.message,
            mode="live" if req.live else "paper",
        )
        subject = self.bus.subjects.order_event(req.venue, req.symbol, "order_rejected")
        msg_id = uuid.uuid4().hex
        data = codec.encode_envelope("order_rejected", req.venue, ev, id=msg_id)
        await self.bus.js.publish(subject, data, headers={"Nats-Msg-Id": msg_id}, timeout=2.0)
