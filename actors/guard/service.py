"""order_guard: the request/reply gate every order passes (a ``nats.micro`` service).

Stateless: any number run in queue group ``guard``; everything it needs comes
from KV (last prices, trading state, positions, idempotency records).

For one ``rbot.cmd.order.place`` request:

1. Three reads at once (one round trip of latency): the per-user rate limit, a
   token bucket in KV ``limits`` (memory storage, compare-and-set on the
   revision this guard wrote last, so usually one ``update``; shared by every
   guard), the trading state (KV ``control``) and the last price.  A rate
   refusal costs no durable write (its ``order_rejected`` goes on the core
   subject ``<p>.evt.limit.<venue>.<symbol>.order_rejected``, outside the
   ``ORDERS`` stream).
2. The rules (``rules.check``); a refusal answers with its code and publishes
   ``order_rejected`` on the ``ORDERS`` stream.
3. Acceptance: KV ``create`` of the idempotency record ``idem.<user>.<key>``;
   its revision numbers the order, so ids are unique across processes and
   restarts; the place command goes to the owning executor's partition
   subject on ``EXEC`` and the answer is sent only after the PubAck: an order
   answered ``ok`` is durable.  Two durable writes, nothing else in between.
4. Idempotency: a retry with the same ``client_order_id`` (or
   ``Idempotency-Key``) finds its record when the ``create`` fails (or, before
   any refusal, by reading it: a retry of an accepted order is never refused),
   re-publishes the same place command (same ``Nats-Msg-Id``: JetStream drops
   the duplicate; after the window the executor finds the order booked) and
   answers the original order.  The same key with a different request is a 409.
   (A retry takes a rate-limit token like any order, and is answered all the
   same.)

Cancels come here too (``<p>.cmd.order.cancel``): the guard is the only
publisher of executor commands besides the reaper's expiries.  A cancel for an
order the executor has not booked yet finds the order's venue and symbol in its
idempotency record (the order number is that record's stream sequence), so it
follows the place command through the same partition and is applied after it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from collections.abc import Callable
from decimal import Decimal

import msgspec
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError
from nats.micro import add_service
from nats.micro.request import Request

from rbot.bus import codec, keys, msgids
from rbot.bus.config import Settings
from rbot.bus.connection import Bus
from rbot.bus.control import trading_record
from rbot.bus.kvscan import scan
from rbot.bus.messages import (
    ActiveMark,
    CancelCmd,
    CancelReply,
    CancelRequest,
    IdemRecord,
    Order,
    OrderEvent,
    OrderRequest,
    OrderStatus,
    PlaceCmd,
    PlaceReply,
    Position,
    RateWindow,
    ReplyCode,
    Tick,
    TradingState,
)
from rbot.bus.subjects import is_token

from ..base import Actor, Ready
from .idem import request_hash
from .rules import GuardContext, Limits, Rejection, check, rate_limited, take_token

PUBLISH_ATTEMPTS = 3
RATE_ATTEMPTS = 16
RATE_WINDOWS_KEPT = 100_000  # users whose last rate window (and its revision) a guard keeps

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


def order_number(order_id: str) -> int | None:
    """The number in an order id (the idempotency record's sequence), or None."""
    head, _, tail = order_id.rpartition("-")
    if head not in ("paper", "paper-oanda") or not tail.isdigit() or len(tail) > 18:
        return None
    return int(tail)


class OrderGuard(Actor):
    name = "order_guard"

    def __init__(
        self, settings: Settings, url: str | Callable[[], str], instance: str | None = None
    ) -> None:
        super().__init__(settings, url, instance)
        # each user's rate window as this guard wrote it last, with its revision
        self._rate_windows: dict[str, tuple[int, RateWindow]] = {}

    async def run(self, bus: Bus, ready: Ready) -> None:
        self.bus = bus
        self.kv_orders = await bus.kv("orders")
        self.kv_prices = await bus.kv("prices")
        self.kv_control = await bus.kv("control")
        self.kv_limits = await bus.kv("limits")
        svc = await add_service(
            bus.nc,
            name="order_guard",
            version="0.1.0",
            description="validates orders and hands accepted ones to the executor",
        )
        await svc.add_endpoint(
            name="place", subject=bus.subjects.order_place, handler=self.handle, queue_group="guard"
        )
        await svc.add_endpoint(
            name="cancel", subject=bus.subjects.order_cancel, handler=self.handle_cancel,
            queue_group="guard",
        )  # fmt: skip
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
                request, PlaceReply(ok=False, code=ReplyCode.BAD_REQUEST, message=str(exc))
            )
            return
        try:
            reply = await self.place(req)
        except Exception as exc:  # boundary: count, log, answer 503
            self.log.exception("guard failed on an order from %s", req.user)
            reply = PlaceReply(
                ok=False, code=ReplyCode.GUARD_ERROR,
                message=f"order not accepted: {type(exc).__name__}",
            )  # fmt: skip
        await self._reply(request, reply)

    async def _reply(self, request: Request, reply: PlaceReply) -> None:
        await request.respond(codec.encode(reply))

    async def place(self, req: OrderRequest) -> PlaceReply:
        """Round trips for an accepted order: the rate window, the trading state and
        the price, concurrently (one round trip of latency; the rate window usually
        one ``update``, see ``_rate``), then the two durable writes in a row: the
        idempotency ``create`` and the place command's PubAck.  The idempotency
        record is read only when it decides something: on a refusal (a retry of an
        accepted order is answered with the original, never refused) and when the
        ``create`` finds it exists (a retry, or a race with another guard)."""
        key = req.client_order_id or req.idempotency_key or uuid.uuid4().hex
        idem_key = keys.idem(req.user, key)
        digest = request_hash(req)
        async with asyncio.TaskGroup() as tg:
            rate = tg.create_task(self._rate(req.user))
            trading = tg.create_task(self._trading_state())
            price = tg.create_task(self._last_tick(req.venue, req.symbol))
        if rate.result() > 0:
            replay = await self._replay(req, idem_key, digest)
            if replay is not None:
                return replay
            limited = rate_limited(rate.result())
            await self._publish_rejection(req, limited, durable=False)
            return PlaceReply(
                ok=False, code=limited.code, message=limited.message,
                detail=dict(limited.detail or {}),
            )  # fmt: skip
        state = trading.result()
        rejection = await self._check(req, state, price.result())
        if rejection is None and req.live and req.venue not in self.settings.live_venues():
            rejection = Rejection(
                code=ReplyCode.LIVE_UNAVAILABLE,
                message=f"live routing for {req.venue} is not configured on this server",
            )
        if rejection is not None:
            replay = await self._replay(req, idem_key, digest)
            if replay is not None:
                return replay
            await self._publish_rejection(req, rejection)
            return PlaceReply(
                ok=False,
                code=rejection.code,
                message=rejection.message,
                detail=dict(rejection.detail) if rejection.detail else None,
            )
        record = codec.encode(
            IdemRecord(
                request_hash=digest, ts=codec.now_iso(), venue=req.venue, symbol=req.symbol,
                mode="live" if req.live else "paper",
            )
        )  # fmt: skip
        try:
            number = await self.kv_orders.create(idem_key, record)
        except KeyWrongLastSequenceError:  # a retry, or another guard accepted it just now
            again = await self._replay(req, idem_key, digest)
            assert again is not None
            return again
        order = self._order(req, order_id_for(req.venue, number))
        if state is TradingState.REDUCING:
            order = msgspec.structs.replace(order, reduce_only=True)
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
                code=ReplyCode.IDEMPOTENCY_CONFLICT,
                message="this client_order_id / Idempotency-Key was used for a different order",
                detail={"order_id": order_id},
            )
        try:
            current = await self.kv_orders.get(keys.order(order_id))
        except KeyNotFoundError:
            # accepted but not yet booked (or the publish was lost): publish again,
            # same Nats-Msg-Id, so the executor books it exactly once
            return await self._submit(self._order(req, order_id, created=rec.ts), replayed=True)
        assert current.value is not None
        booked = codec.decode(current.value, Order)
        return PlaceReply(
            ok=True, order_id=order_id, status=str(booked.status), mode=booked.mode, replayed=True
        )

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
            mode="live" if req.live else "paper",
        )

    async def _submit(self, order: Order, replayed: bool = False) -> PlaceReply:
        subject = self._exec_subject(order.venue, order.symbol, order.mode)
        data = codec.encode(PlaceCmd(order=order))
        headers = msgids.headers(msgids.place(order.id))
        for attempt in range(PUBLISH_ATTEMPTS):
            try:
                await self.bus.js.publish(subject, data, headers=headers, timeout=2.0)
                break
            except NatsTimeout:  # unknown outcome: retry with the same Nats-Msg-Id
                self.log.warning("PubAck timeout for %s (attempt %d)", order.id, attempt + 1)
        else:
            return PlaceReply(
                ok=False,
                code=ReplyCode.BUS_UNAVAILABLE,
                message="the order could not be stored; retry with the same client_order_id",
                detail={"order_id": order.id},
            )
        return PlaceReply(
            ok=True, order_id=order.id, status="PENDING", mode=order.mode, replayed=replayed
        )

    def _exec_subject(self, venue: str, symbol: str, mode: str) -> str:
        """Live orders' commands go to the live executor, paper ones to their partition."""
        if mode == "live":
            return self.bus.subjects.live_exec(venue, symbol)
        return self.bus.subjects.exec(venue, symbol)

    # -- rules --------------------------------------------------------------
    async def _rate(self, user: str) -> float:
        """Take a token from the user's shared bucket: 0.0, or seconds to wait.

        Compare-and-set on the window's revision, as before; what changed is where
        the revision comes from: the window this guard wrote last for the user is
        kept, so the usual order costs one ``update`` (memory storage, no fsync)
        instead of a ``get`` and an ``update``.  If another guard (or a restarted
        server) moved it, the ``update`` is refused and the window is read again."""
        per_min = self.settings.rbot_orders_per_minute
        key = keys.rate(user)
        for attempt in range(RATE_ATTEMPTS):
            now = time.time()
            held = self._rate_windows.pop(key, None) if attempt == 0 else None
            if held is not None:
                revision: int | None = held[0]
                old: RateWindow | None = held[1]
            else:
                try:
                    entry = await self.kv_limits.get(key)
                except KeyNotFoundError:
                    entry = None
                except (NotFoundError, NoRespondersError):
                    return self._unlimited(user)
                revision = entry.revision if entry is not None else None
                old = codec.decode(entry.value, RateWindow) if entry and entry.value else None
            tokens, wait = take_token(
                old.tokens if old else None, old.ts if old else None, now, per_min / 60, per_min
            )
            window = RateWindow(tokens=tokens, ts=now)
            value = codec.encode(window)
            try:
                if revision is None:
                    written = await self.kv_limits.create(key, value)
                else:
                    written = await self.kv_limits.update(key, value, last=revision)
            except KeyWrongLastSequenceError:
                continue  # another guard took a token meanwhile (or the server restarted)
            except (NotFoundError, NoRespondersError):
                return self._unlimited(user)
            if len(self._rate_windows) >= RATE_WINDOWS_KEPT:
                self._rate_windows.clear()  # a bound, not a policy: the next ones read KV
            self._rate_windows[key] = (written, window)
            return wait
        return 1.0  # hot contention on one user: slow down rather than let it through

    def _unlimited(self, user: str) -> float:
        # the memory bucket went with a restarted server and is not provisioned
        # again yet: let the order through rather than refuse every order
        self.log.warning("rate limit bucket missing: not limiting %s", user)
        return 0.0

    async def _check(
        self, req: OrderRequest, state: TradingState, price: tuple[Tick | None, float | None]
    ) -> Rejection | None:
        tick, age = price
        net = pending = Decimal(0)
        if state is TradingState.REDUCING:
            net = await self._net_position(req)
            pending = await self._pending_reductions(req)
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
            pending_reductions=pending,
            max_hold_min=s.max_hold_min,
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
        return (await trading_record(self.kv_control)).state

    async def _net_position(self, req: OrderRequest) -> Decimal:
        try:
            entry = await self.kv_orders.get(keys.position(req.user, req.venue, req.symbol))
        except KeyNotFoundError:
            return Decimal(0)
        assert entry.value is not None
        return codec.decode(entry.value, Position).qty

    async def _pending_reductions(self, req: OrderRequest) -> Decimal:
        """Reduce-only orders of this user and symbol waiting to fill (O(user's active))."""
        total = Decimal(0)
        for entry in await scan(self.kv_orders, keys.active_of_user(req.user)):
            assert entry.value is not None
            mark = codec.decode(entry.value, ActiveMark)
            if (
                mark.reduce_only and mark.status == OrderStatus.PENDING and mark.side == req.side
                and (mark.venue, mark.symbol) == (req.venue, req.symbol)
            ):  # fmt: skip
                total += mark.qty
        return total

    async def _publish_rejection(
        self, req: OrderRequest, rej: Rejection, durable: bool = True
    ) -> None:
        ev = OrderEvent.rejected(req, rej.code, rej.message)
        msg_id = uuid.uuid4().hex
        data = codec.encode_envelope("order_rejected", req.venue, ev, id=msg_id)
        if not durable:
            await self.bus.nc.publish(self.bus.subjects.throttled(req.venue, req.symbol), data)
            return
        subject = self.bus.subjects.order_event(req.venue, req.symbol, "order_rejected")
        await self.bus.js.publish(subject, data, headers=msgids.headers(msg_id), timeout=2.0)

    # -- cancels ---------------------------------------------------------------
    async def handle_cancel(self, request: Request) -> None:
        try:
            req = codec.decode(request.data, CancelRequest)
        except codec.DecodeError as exc:
            reply = CancelReply(ok=False, order_id="", code=ReplyCode.BAD_REQUEST, message=str(exc))
        else:
            try:
                reply = await self.cancel(req)
            except Exception as exc:  # boundary: count, log, answer unavailable
                self.log.exception("guard failed on a cancel of %s", req.order_id)
                reply = CancelReply(
                    ok=False, order_id=req.order_id, code=ReplyCode.GUARD_ERROR,
                    message=f"cancel not sent: {type(exc).__name__}",
                )  # fmt: skip
        await request.respond(codec.encode(reply))

    async def cancel(self, req: CancelRequest) -> CancelReply:
        missing = CancelReply(
            ok=False, order_id=req.order_id, code=ReplyCode.ORDER_NOT_FOUND,
            message=f"no order {req.order_id!r}",
        )  # fmt: skip
        if not is_token(req.order_id) or not is_token(req.user):
            return missing
        try:
            entry = await self.kv_orders.get(keys.order(req.order_id))
        except KeyNotFoundError:
            entry = None
        if entry is not None and entry.value:
            order = codec.decode(entry.value, Order)
            if order.user != req.user:
                return missing
            if order.status not in (OrderStatus.PENDING, OrderStatus.OPEN):
                return CancelReply(
                    ok=False, order_id=order.id, status=str(order.status),
                    code=ReplyCode.ORDER_FINAL,
                    message=f"order {order.id} is already {order.status}",
                )  # fmt: skip
            venue, symbol, status, mode = order.venue, order.symbol, order.status, order.mode
        else:  # accepted, not booked yet: its idempotency record says where it went
            found = await self._accepted(req)
            if found is None:
                return missing
            venue, symbol, mode = found
            status = OrderStatus.PENDING
        cmd = CancelCmd(order_id=req.order_id, user=req.user)
        await self.bus.js.publish(
            self._exec_subject(venue, symbol, mode),
            codec.encode(cmd),
            headers=msgids.headers(msgids.cancel(req.order_id, uuid.uuid4().hex[:12])),
            timeout=2.0,
        )
        return CancelReply(
            ok=True, order_id=req.order_id, status=str(status),
            requested="cancel" if status is OrderStatus.PENDING else "close",
        )  # fmt: skip

    async def _accepted(self, req: CancelRequest) -> tuple[str, str, str] | None:
        number = order_number(req.order_id)
        if number is None:
            return None
        stream = self.bus.subjects.kv_stream("orders")
        try:
            msg = await self.bus.js.get_msg(stream, seq=number)
        except NotFoundError:
            return None
        prefix = self.bus.subjects.kv_subject("orders", keys.idem(req.user, "x"))[:-1]
        if not msg.subject or not msg.subject.startswith(prefix) or not msg.data:
            return None  # another user's order, or not an order number
        rec = codec.decode(msg.data, IdemRecord)
        if rec.venue is None or rec.symbol is None:
            return None
        if order_id_for(rec.venue, number) != req.order_id:
            return None
        return rec.venue, rec.symbol, rec.mode
