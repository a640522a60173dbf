"""A fake Coinbase Advanced Trade server, built from ../shared/docs/PROTOCOLS.md.

WebSocket market data at the root (``ws://127.0.0.1:<port>/``, like
``wss://advanced-trade-ws.coinbase.com``) and at ``/ws``:

- a connection that has not sent a ``subscribe`` within ``subscribe_timeout``
  (5 s) is closed (code 1000, reason ``subscribe timeout``: a guess);
- one channel per message ``{"type": "subscribe"|"unsubscribe", "product_ids",
  "channel"}``; a ``channels`` list, an unknown channel or product gets
  ``{"type": "error", "message"}``; an optional ``jwt`` is verified when keys
  are registered;
- ``ticker``: a snapshot then updates, with best_bid/best_ask strings;
  ``level2``: answers on ``l2_data`` with a snapshot then updates, sides
  ``bid``/``offer``, ``new_quantity "0"`` removes a level; ``heartbeats``: one
  per ``heartbeat_interval``, Go-style ``current_time``, every third
  ``heartbeat_counter`` a string;
- the ``subscriptions`` acknowledgement comes after the snapshots;
- every message has ``channel, client_id, timestamp, sequence_num, events``;
  ``sequence_num`` counts per connection from 0.

REST under ``/api/v3/brokerage`` (CDP JWT required: ``Authorization: Bearer``,
ES256/EdDSA, ``iss=cdp``, ``sub``=``kid``, ``uri`` = "METHOD host/path"; else
401 ``Unauthorized``) and the public mirrors under ``/api/v3/brokerage/market``
(no auth): ``GET /products``, ``GET /products/{id}``, ``GET /product_book``,
``GET /products/{id}/candles`` (newest first, at most 350), and (private
only) the orders of ``tests/fakes/coinbase_orders.py``: ``POST /orders``,
``GET /orders/historical/{order_id}``, ``GET /orders/historical/batch``,
``POST /orders/batch_cancel``; their changes go out on the ``user`` channel
(subscribe with a valid ``jwt``, else an ``error``; a snapshot of the open
orders first).  Every REST answer
carries ``x-ratelimit-limit/-remaining/-reset`` (10/s public per client, 30/s
private per key; ``reset`` is the unix second the window ends: a guess), and
over the limit, or when scripted, answers 429.

Scripting, in-process::

    async with FakeCoinbase(heartbeat_interval=0.05).serving() as fake:
        fake.drop()               # cut every WebSocket (no close frame)
        fake.skip_sequence()      # the next message on every socket skips a number
        fake.send_malformed()     # one frame that is not JSON
        fake.go_silent()          # open sockets send nothing any more
        fake.reject_rest(2)       # the next 2 REST requests answer 429
        fake.delay_next_create(2) # the next create is accepted, answered 2 s late
        fake.expire("<client_order_id>")  # a resting GTD order reaches its end_time
        fake.set_quote("BTC-USD", "100.00", "100.02")  # book + ticker, pushed now
        await fake.snapshots.reach(2)

or over HTTP (no auth): ``POST /_control/{drop, skip, malformed, silence,
reject_rest, reject_ws, quote, level, push, expire, delay_create}`` with the same keyword arguments
as JSON, ``GET /_control/stats``.

Run: ``python -m tests.fakes.coinbase --port 0 [--key-file cdp.pem]`` prints
``LISTENING http://127.0.0.1:<port>`` (and ``KEY <name>`` of the CDP key it
made); REST at that URL, WebSocket at ``ws://`` the same.

Not modelled: fees, partial fills, the user channel's own host (served on the
market-data socket here), ``ticker_batch``/``market_trades``/``candles``
channel data, closing quiet channels after 60-90 s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import enum
import json
import os
import random
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from rbot.bus import granularity
from rbot.bus.timing import every
from tests.fakes._serve import Counter, cli_args, first_done, ns_time, run_cli, serving
from tests.fakes.coinbase_orders import OrderDesk, user_record

API = "/api/v3/brokerage"
CHANNELS = (
    "ticker", "ticker_batch", "level2", "heartbeats", "market_trades", "status", "candles", "user",
)  # fmt: skip
ANSWERS_ON = {"level2": "l2_data"}
GRANULARITIES = granularity.COINBASE
MAX_CANDLES = 350
DEFAULT_PRODUCTS = {
    "BTC-USD": ("21931.98", "21933.98", "0.00000001"),
    "ETH-USD": ("1650.10", "1650.25", "0.00000001"),
    "SOL-USD": ("20.10", "20.12", "0.001"),
}
MALFORMED = '{"channel":"ticker","client_id":"","sequence_num":'
PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey


def rest_error(status: int, error: str, message: str) -> JSONResponse:
    body = {"error": error, "error_details": message, "message": message}
    return JSONResponse(body, status_code=status)


def _dec(value: Any) -> Decimal | None:
    if not isinstance(value, str):
        return None
    try:
        d = Decimal(value)
    except InvalidOperation:
        return None
    return d if d.is_finite() else None


@dataclass
class Product:
    product_id: str
    base_increment: Decimal
    quote_increment: Decimal = Decimal("0.01")
    bids: dict[Decimal, Decimal] = field(default_factory=dict)
    asks: dict[Decimal, Decimal] = field(default_factory=dict)
    volume: Decimal = Decimal("16038.28770938")

    @property
    def best_bid(self) -> Decimal | None:
        return max(self.bids, default=None)

    @property
    def best_ask(self) -> Decimal | None:
        return min(self.asks, default=None)

    @property
    def mid(self) -> Decimal:
        bid, ask = self.best_bid, self.best_ask
        if bid is None or ask is None:
            return bid or ask or Decimal(0)
        return ((bid + ask) / 2).quantize(self.quote_increment)

    def set_level(self, side: str, price: Decimal, qty: Decimal) -> dict[str, str]:
        levels = self.bids if side == "bid" else self.asks
        if qty == 0:
            levels.pop(price, None)
        else:
            levels[price] = qty
        return {
            "side": side,
            "event_time": ns_time(),
            "price_level": str(price),
            "new_quantity": str(qty),
        }

    def levels(self) -> list[dict[str, str]]:
        t = ns_time()
        out = [
            {"side": "bid", "event_time": t, "price_level": str(p), "new_quantity": str(q)}
            for p, q in sorted(self.bids.items(), reverse=True)
        ]
        out += [
            {"side": "offer", "event_time": t, "price_level": str(p), "new_quantity": str(q)}
            for p, q in sorted(self.asks.items())
        ]
        return out

    def ticker(self) -> dict[str, str]:
        def best(levels: dict[Decimal, Decimal], price: Decimal | None) -> tuple[str, str]:
            return ("", "") if price is None else (str(price), str(levels[price]))

        bid, bid_q = best(self.bids, self.best_bid)
        ask, ask_q = best(self.asks, self.best_ask)
        return {
            "type": "ticker",
            "product_id": self.product_id,
            "price": str(self.mid),
            "volume_24_h": str(self.volume),
            "low_24_h": str(self.mid * Decimal("0.97")),
            "high_24_h": str(self.mid * Decimal("1.02")),
            "low_52_w": str(self.mid / 2),
            "high_52_w": str(self.mid * 2),
            "price_percent_chg_24_h": "-4.15775596190603",
            "best_bid": bid,
            "best_bid_quantity": bid_q,
            "best_ask": ask,
            "best_ask_quantity": ask_q,
        }


class _Fault(enum.Enum):
    DROP = "drop"
    CLOSE = "close"


Outgoing = tuple[str, list[dict[str, Any]]] | str | _Fault


@dataclass(eq=False)
class _Conn:
    queue: asyncio.Queue[Outgoing] = field(default_factory=asyncio.Queue)
    subs: dict[str, set[str]] = field(default_factory=dict)
    seq: int = 0
    skip: int = 0
    beats: int = 0
    silent: bool = False
    subscribed: asyncio.Event = field(default_factory=asyncio.Event)

    def wants(self, channel: str, product: str) -> bool:
        return product in self.subs.get(channel, ())


class FakeCoinbase:
    """State, scripting and the Starlette app of one fake Coinbase Advanced server."""

    def __init__(
        self,
        *,
        heartbeat_interval: float = 1.0,
        subscribe_timeout: float = 5.0,
        products: dict[str, tuple[str, str, str]] | None = None,
        public_rate: int = 10,
        private_rate: int = 30,
        depth: int = 10,
        quote_balance: str = "1000000",
    ) -> None:
        self.heartbeat_interval = heartbeat_interval
        self.subscribe_timeout = subscribe_timeout
        self.public_rate, self.private_rate = public_rate, private_rate
        self.products: dict[str, Product] = {}
        for pid, (bid, ask, base_inc) in (products or DEFAULT_PRODUCTS).items():
            self.products[pid] = p = Product(pid, Decimal(base_inc))
            step = p.quote_increment * 5
            for i in range(depth):
                p.bids[Decimal(bid) - i * step] = Decimal("0.5") + Decimal(i) / 10
                p.asks[Decimal(ask) + i * step] = Decimal("0.4") + Decimal(i) / 10
        self.keys: dict[str, PublicKey] = {}
        self.connections = Counter()  # WebSockets accepted
        self.subscribes = Counter()  # subscribe messages accepted
        self.snapshots = Counter()  # l2_data snapshots sent
        self.rest_requests = 0
        self.rejected = 0
        self.url = ""
        self._conns: set[_Conn] = set()
        self._rest_reject: list[int] = []
        self._ws_reject: list[int] = []
        self._windows: dict[str, tuple[int, int]] = {}  # bucket -> (second, count)
        self.lists = 0  # GET /orders/historical/batch requests (lookups)
        self.desk = OrderDesk(self.products, Decimal(quote_balance))
        self.desk.listeners.append(self._on_order)
        self._delays: list[float] = []  # the next creates answer this late (after accepting)

    # ------------------------------------------------------------------ scripting

    @property
    def open_sockets(self) -> int:
        return len(self._conns)

    def new_key(self, name: str = "organizations/org-1/apiKeys/key-1") -> tuple[str, str]:
        """Make an EC P-256 CDP key, register its public half; returns (name, private PEM)."""
        key = ec.generate_private_key(ec.SECP256R1())
        self.keys[name] = key.public_key()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        return name, pem.decode()

    def drop(self) -> int:
        return self._to_all(_Fault.DROP)

    def close_sockets(self) -> int:
        return self._to_all(_Fault.CLOSE)

    def skip_sequence(self, n: int = 1) -> int:
        for c in self._conns:
            c.skip += n
        return len(self._conns)

    def send_malformed(self, text: str = MALFORMED) -> int:
        return self._to_all(text)

    def go_silent(self) -> int:
        for c in self._conns:
            c.silent = True
        return len(self._conns)

    def reject_rest(self, n: int, status: int = 429) -> None:
        self._rest_reject.extend([status] * n)

    def delay_next_create(self, seconds: float) -> None:
        """The next create is accepted at once but answered ``seconds`` late."""
        self._delays.append(seconds)

    @property
    def creates(self) -> int:
        return self.desk.creates

    def expire(self, client_order_id: str) -> bool:
        return self.desk.expire(client_order_id)

    def reject_ws(self, n: int, status: int = 429) -> None:
        self._ws_reject.extend([status] * n)

    def set_quote(
        self,
        product_id: str,
        bid: str | Decimal,
        ask: str | Decimal,
        *,
        bid_size: str | Decimal = "1.5",
        ask_size: str | Decimal = "2.0",
        push: bool = True,
    ) -> list[dict[str, str]]:
        """Make ``bid``/``ask`` the best levels; levels through them are removed."""
        p = self.products[product_id]
        b, a = Decimal(bid), Decimal(ask)
        updates = [p.set_level("bid", x, Decimal(0)) for x in list(p.bids) if x > b or x >= a]
        updates += [p.set_level("offer", x, Decimal(0)) for x in list(p.asks) if x < a or x <= b]
        updates.append(p.set_level("bid", b, Decimal(bid_size)))
        updates.append(p.set_level("offer", a, Decimal(ask_size)))
        if push:
            self._publish(product_id, updates)
        self.desk.match(product_id)
        return updates

    def set_level(
        self, product_id: str, side: str, price: str, qty: str, push: bool = True
    ) -> None:
        """One raw L2 change (side "bid" or "offer"; qty "0" removes)."""
        update = self.products[product_id].set_level(side, Decimal(price), Decimal(qty))
        if push:
            self._publish(product_id, [update])

    def push(self, product_id: str | None = None) -> None:
        """Send the current ticker of one (or every) product to its subscribers."""
        for pid in self.products if product_id is None else [product_id]:
            self._publish(pid, [])

    def stats(self) -> dict[str, int]:
        return {
            "connections": self.connections.value,
            "open_sockets": self.open_sockets,
            "subscribes": self.subscribes.value,
            "snapshots": self.snapshots.value,
            "rest_requests": self.rest_requests,
            "rejected": self.rejected,
        }

    async def wander(self, interval: float, seed: int = 11) -> None:
        """Move every product's quote a tick or two and push it (CLI use)."""
        rng = random.Random(seed)
        async for _ in every(interval):
            for pid, p in self.products.items():
                bid, ask = p.best_bid, p.best_ask
                if bid is None or ask is None:
                    continue
                step = p.quote_increment * rng.choice((-2, -1, 1, 2))
                self.set_quote(pid, bid + step, ask + step)

    def _to_all(self, item: Outgoing) -> int:
        for c in self._conns:
            c.queue.put_nowait(item)
        return len(self._conns)

    def _publish(self, product_id: str, updates: list[dict[str, str]]) -> None:
        p = self.products[product_id]
        for c in self._conns:
            if c.wants("ticker", product_id):
                c.queue.put_nowait(("ticker", [{"type": "update", "tickers": [p.ticker()]}]))
            if updates and c.wants("level2", product_id):
                event = {"type": "update", "product_id": product_id, "updates": updates}
                c.queue.put_nowait(("l2_data", [event]))

    # ------------------------------------------------------------------ the app

    def app(self) -> Starlette:
        routes: list[Route | WebSocketRoute] = [
            WebSocketRoute("/", self._websocket),
            WebSocketRoute("/ws", self._websocket),
            Route("/_control/stats", self._control_stats),
            Route("/_control/{action}", self._control, methods=["POST"]),
            Route(f"{API}/orders", self._create_order, methods=["POST"]),
            Route(f"{API}/orders/historical/batch", self._list_orders),
            Route(f"{API}/orders/historical/{{order_id}}", self._get_order),
            Route(f"{API}/orders/batch_cancel", self._batch_cancel, methods=["POST"]),
        ]
        for prefix in (API, f"{API}/market"):
            routes += [
                Route(f"{prefix}/products", self._products),
                Route(f"{prefix}/products/{{product_id}}", self._product),
                Route(f"{prefix}/product_book", self._product_book),
                Route(f"{prefix}/products/{{product_id}}/candles", self._candles),
            ]
        return Starlette(
            routes=routes,
            middleware=[Middleware(_Gate, fake=self)],
            exception_handlers={HTTPException: _http_error},
        )

    @contextlib.asynccontextmanager
    async def serving(self, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[FakeCoinbase]:
        async with serving(self.app(), host=host, port=port, before_stop=self.close_sockets) as url:
            self.url = url
            yield self

    @property
    def ws_url(self) -> str:
        return "ws" + self.url.removeprefix("http")

    # ------------------------------------------------------------------ WebSocket

    async def _websocket(self, ws: WebSocket) -> None:
        if self._ws_reject:
            status = self._ws_reject.pop(0)
            self.rejected += 1
            await ws.send_denial_response(
                rest_error(status, "RATE_LIMIT_EXCEEDED", "Too many requests")
            )
            return
        await ws.accept()
        conn = _Conn()
        self._conns.add(conn)
        self.connections.incr()
        try:
            outcome = await first_done(self._reader(ws, conn), self._writer(ws, conn))
        finally:
            self._conns.discard(conn)
        if outcome == "timeout":
            await ws.close(code=1000, reason="subscribe timeout")
        elif outcome == _Fault.CLOSE.value:
            await ws.close(code=1001, reason="going away")
        # "drop": return without a close frame; uvicorn closes the TCP connection

    async def _reader(self, ws: WebSocket, conn: _Conn) -> str:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.subscribe_timeout
        while True:
            try:
                async with asyncio.timeout_at(None if conn.subscribed.is_set() else deadline):
                    msg = await ws.receive()
            except TimeoutError:
                return "timeout"
            if msg["type"] == "websocket.disconnect":
                return "gone"
            text = msg.get("text") or (msg.get("bytes") or b"").decode(errors="replace")
            self._on_client_message(conn, text)

    def _on_client_message(self, conn: _Conn, text: str) -> None:
        def fail(message: str) -> None:
            conn.queue.put_nowait(json.dumps({"type": "error", "message": message}))

        try:
            msg = json.loads(text)
        except ValueError:
            return fail("failed to parse message")
        if not isinstance(msg, dict) or msg.get("type") not in ("subscribe", "unsubscribe"):
            return fail("unknown message type")
        if "channels" in msg:
            return fail("one channel per subscribe message: use 'channel'")
        channel = msg.get("channel")
        if channel not in CHANNELS:
            return fail(f"Failure to subscribe: unknown channel {channel!r}")
        products = msg.get("product_ids", [])
        if not isinstance(products, list) or any(p not in self.products for p in products):
            return fail("Failure to subscribe: unknown product")
        if "jwt" in msg and self.keys and self._verify_jwt(str(msg["jwt"]), None) is not None:
            return fail("authentication failure")
        if channel == "user" and self._verify_jwt(str(msg.get("jwt", "")), None) is not None:
            return fail("authentication failure: the user channel needs a valid jwt")
        subs = conn.subs.setdefault(channel, set())
        if msg["type"] == "unsubscribe":
            subs.difference_update(products)
        else:
            subs.update(products)
            conn.subscribed.set()
            self.subscribes.incr()
            self._snapshots(conn, channel, products)
        ack = {ch: sorted(ps) for ch, ps in conn.subs.items() if ps or ch == "heartbeats"}
        conn.queue.put_nowait(("subscriptions", [{"subscriptions": ack}]))

    def _snapshots(self, conn: _Conn, channel: str, products: list[str]) -> None:
        if channel == "user":
            orders = [
                user_record(o) for o in self.desk.orders.values()
                if o["status"] in ("OPEN", "PENDING") and (not products or o["product_id"] in products)
            ]  # fmt: skip
            conn.queue.put_nowait(("user", [{"type": "snapshot", "orders": orders}]))
        if channel == "ticker" and products:
            tickers = [self.products[p].ticker() for p in products]
            conn.queue.put_nowait(("ticker", [{"type": "snapshot", "tickers": tickers}]))
        if channel == "level2":
            for pid in products:
                event = {"type": "snapshot", "product_id": pid}
                event["updates"] = self.products[pid].levels()  # type: ignore[assignment]
                conn.queue.put_nowait(("l2_data", [event]))
                self.snapshots.incr()

    async def _writer(self, ws: WebSocket, conn: _Conn) -> str:
        loop = asyncio.get_running_loop()
        next_beat = loop.time() + self.heartbeat_interval
        while True:
            try:
                async with asyncio.timeout_at(next_beat):
                    item = await conn.queue.get()
            except TimeoutError:
                next_beat += self.heartbeat_interval
                if "heartbeats" in conn.subs and not conn.silent:
                    await self._send(ws, conn, "heartbeats", [self._heartbeat(conn)])
                continue
            if isinstance(item, _Fault):
                return item.value
            if conn.silent:
                continue
            if isinstance(item, str):
                await ws.send_text(item)  # errors and malformed frames carry no sequence_num
            else:
                await self._send(ws, conn, *item)

    async def _send(
        self, ws: WebSocket, conn: _Conn, channel: str, events: list[dict[str, Any]]
    ) -> None:
        seq = conn.seq + conn.skip
        conn.seq, conn.skip = seq + 1, 0
        msg = {
            "channel": channel,
            "client_id": "",
            "timestamp": ns_time(),
            "sequence_num": seq,
            "events": events,
        }
        await ws.send_text(json.dumps(msg, separators=(",", ":")))

    def _heartbeat(self, conn: _Conn) -> dict[str, Any]:
        conn.beats += 1
        t = time.time_ns()
        sec, frac = divmod(t, 1_000_000_000)
        go = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(sec))
        go += f".{frac:09d} +0000 UTC m=+{time.monotonic():.9f}"
        counter: int | str = str(conn.beats) if conn.beats % 3 == 0 else conn.beats
        return {"current_time": go, "heartbeat_counter": counter}

    # ------------------------------------------------------------------ REST

    async def _products(self, request: Request) -> Response:
        kind = request.query_params.get("product_type", "SPOT")
        products = [self._product_json(p) for p in self.products.values()] if kind == "SPOT" else []
        return JSONResponse({"products": products, "num_products": len(products)})

    async def _product(self, request: Request) -> Response:
        p = self.products.get(request.path_params["product_id"])
        if p is None:
            return rest_error(404, "NOT_FOUND", "ProductID is invalid")
        return JSONResponse(self._product_json(p))

    def _product_json(self, p: Product) -> dict[str, Any]:
        base, quote = p.product_id.split("-")
        return {
            "product_id": p.product_id,
            "price": str(p.mid),
            "price_percentage_change_24h": "-4.15775596190603",
            "volume_24h": str(p.volume),
            "volume_percentage_change_24h": "12.5",
            "base_increment": str(p.base_increment),
            "quote_increment": str(p.quote_increment),
            "quote_min_size": "1",
            "quote_max_size": "10000000",
            "base_min_size": str(p.base_increment),
            "base_max_size": "3400",
            "base_name": base,
            "quote_name": quote,
            "watched": False,
            "is_disabled": False,
            "new": False,
            "status": "online",
            "cancel_only": False,
            "limit_only": False,
            "post_only": False,
            "trading_disabled": False,
            "auction_mode": False,
            "product_type": "SPOT",
            "quote_currency_id": quote,
            "base_currency_id": base,
            "mid_market_price": str(p.mid),
            "base_display_symbol": base,
            "quote_display_symbol": quote,
        }

    async def _product_book(self, request: Request) -> Response:
        pid = request.query_params.get("product_id")
        if not pid:
            return rest_error(400, "INVALID_ARGUMENT", "product_id is required")
        p = self.products.get(pid)
        if p is None:
            return rest_error(404, "NOT_FOUND", "ProductID is invalid")
        try:
            limit = int(request.query_params.get("limit", "50"))
        except ValueError:
            return rest_error(400, "INVALID_ARGUMENT", "limit must be an integer")
        bids = [{"price": str(x), "size": str(p.bids[x])} for x in sorted(p.bids, reverse=True)]
        asks = [{"price": str(x), "size": str(p.asks[x])} for x in sorted(p.asks)]
        bid, ask = p.best_bid, p.best_ask
        spread = (ask - bid) if bid is not None and ask is not None else Decimal(0)
        mid = p.mid
        return JSONResponse(
            {
                "pricebook": {
                    "product_id": pid,
                    "bids": bids[:limit],
                    "asks": asks[:limit],
                    "time": ns_time(),
                },
                "last": str(mid),
                "mid_market": str(mid),
                "spread_bps": str((spread / mid * 10000).quantize(Decimal("0.01"))) if mid else "0",
                "spread_absolute": str(spread),
            }
        )

    async def _candles(self, request: Request) -> Response:
        pid = request.path_params["product_id"]
        p = self.products.get(pid)
        if p is None:
            return rest_error(404, "NOT_FOUND", "ProductID is invalid")
        qp = request.query_params
        gran = qp.get("granularity", "")
        if gran not in GRANULARITIES:
            return rest_error(400, "INVALID_ARGUMENT", "granularity is invalid")
        try:
            start, end = int(qp["start"]), int(qp["end"])
        except (KeyError, ValueError):
            return rest_error(400, "INVALID_ARGUMENT", "start and end must be unix seconds")
        secs = GRANULARITIES[gran]
        first = -(-start // secs) * secs
        starts = list(range(first, min(end, int(time.time())) + 1, secs))
        if end < start or len(starts) > MAX_CANDLES:
            return rest_error(
                400,
                "INVALID_ARGUMENT",
                f"number of candles requested should be less than {MAX_CANDLES}",
            )
        candles = [self._candle(p, gran, t) for t in reversed(starts)]
        return JSONResponse({"candles": candles})

    def _candle(self, p: Product, gran: str, start: int) -> dict[str, str]:
        rng = random.Random(f"{p.product_id}/{gran}/{start}")
        q = p.quote_increment

        def move(x: Decimal, size: float) -> Decimal:
            return (x * (1 + Decimal(str(round(rng.uniform(-size, size), 7))))).quantize(q)

        o = move(p.mid, 1e-3)
        c = move(o, 5e-4)
        return {
            "start": str(start),
            "low": str(min(o, c) - q * rng.randint(0, 20)),
            "high": str(max(o, c) + q * rng.randint(0, 20)),
            "open": str(o),
            "close": str(c),
            "volume": str(Decimal(rng.randint(1, 10**8)).scaleb(-6)),
        }

    # ------------------------------------------------------------------ orders

    async def _create_order(self, request: Request) -> Response:
        try:
            body = json.loads(await request.body())
        except ValueError:
            return rest_error(400, "INVALID_ARGUMENT", "body is not JSON")
        status, answer = self.desk.create(body)
        if self._delays:  # accepted, then the answer comes late (the client times out)
            await asyncio.sleep(self._delays.pop(0))
        if status != 200:
            return rest_error(status, str(answer["error"]), str(answer["message"]))
        return JSONResponse(answer)

    async def _get_order(self, request: Request) -> Response:
        order = self.desk.orders.get(request.path_params["order_id"])
        if order is None:
            return rest_error(404, "NOT_FOUND", "order not found")
        return JSONResponse({"order": order})

    async def _list_orders(self, request: Request) -> Response:
        self.lists += 1
        qp = request.query_params
        try:
            limit = int(qp.get("limit", "100"))
            cursor = int(qp.get("cursor") or "0")
        except ValueError:
            return rest_error(400, "INVALID_ARGUMENT", "limit and cursor must be integers")
        listing = self.desk.listing(
            qp.getlist("product_ids"), qp.getlist("order_status"), max(1, min(limit, 1000)), cursor
        )
        return JSONResponse(listing)

    async def _batch_cancel(self, request: Request) -> Response:
        try:
            body = json.loads(await request.body())
        except ValueError:
            return rest_error(400, "INVALID_ARGUMENT", "body is not JSON")
        ids = body.get("order_ids") if isinstance(body, dict) else None
        if not isinstance(ids, list) or not ids:
            return rest_error(400, "INVALID_ARGUMENT", "order_ids is required")
        return JSONResponse(self.desk.batch_cancel(ids))

    def _on_order(self, record: dict[str, Any]) -> None:
        """An order changed: the user channel tells every socket subscribed to it."""
        for c in self._conns:
            if "user" in c.subs:
                c.queue.put_nowait(("user", [{"type": "update", "orders": [record]}]))

    # ------------------------------------------------------------------ auth, limits

    def _verify_jwt(self, token: str, uri: str | None) -> str | None:
        """None when the token is good, else why not (never echoed to the client)."""
        try:
            header = jwt.get_unverified_header(token)
            key = self.keys.get(str(header.get("kid")))
            if key is None:
                return "unknown kid"
            if not header.get("nonce"):
                return "no nonce"
            alg = "ES256" if isinstance(key, ec.EllipticCurvePublicKey) else "EdDSA"
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                issuer="cdp",
                options={"require": ["sub", "iss", "nbf", "exp"]},
            )
        except jwt.PyJWTError as exc:
            return type(exc).__name__
        if claims["sub"] != header["kid"] or claims["exp"] - claims["nbf"] > 120:
            return "bad sub or lifetime"
        if uri is not None and claims.get("uri") != uri:
            return "bad uri"
        return None

    def _rate(self, bucket: str, limit: int) -> tuple[bool, list[tuple[bytes, bytes]]]:
        now = int(time.time())
        second, count = self._windows.get(bucket, (now, 0))
        if second != now:
            second, count = now, 0
        count += 1
        self._windows[bucket] = (second, count)
        headers = [
            (b"x-ratelimit-limit", str(limit).encode()),
            (b"x-ratelimit-remaining", str(max(0, limit - count)).encode()),
            (b"x-ratelimit-reset", str(second + 1).encode()),
        ]
        return count <= limit, headers

    # ------------------------------------------------------------------ control

    async def _control_stats(self, request: Request) -> Response:
        return JSONResponse(self.stats())

    async def _control(self, request: Request) -> Response:
        raw = await request.body()
        args: dict[str, Any] = json.loads(raw) if raw else {}
        handlers: dict[str, Callable[..., object]] = {
            "drop": self.drop,
            "close": self.close_sockets,
            "skip": self.skip_sequence,
            "malformed": self.send_malformed,
            "silence": self.go_silent,
            "reject_rest": self.reject_rest,
            "reject_ws": self.reject_ws,
            "quote": self.set_quote,
            "level": self.set_level,
            "push": self.push,
            "expire": self.expire,
            "delay_create": self.delay_next_create,
        }
        handler = handlers.get(request.path_params["action"])
        if handler is None:
            return JSONResponse({"error": "unknown control action"}, status_code=404)
        handler(**args)
        return JSONResponse(self.stats())


class _Gate:
    """Pure ASGI middleware for REST: rate-limit headers, scripted 429s, CDP JWT auth."""

    def __init__(self, app: ASGIApp, fake: FakeCoinbase) -> None:
        self.app, self.fake = app, fake

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        if scope["type"] != "http" or not path.startswith(API):
            await self.app(scope, receive, send)
            return
        fake = self.fake
        fake.rest_requests += 1
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        public = path.startswith(f"{API}/market/")
        bucket, limit = "public", fake.public_rate
        if not public:
            token = headers.get("authorization", "").removeprefix("Bearer ")
            host = headers.get("host", "")
            uri = f"{scope['method']} {host}{path}"
            if fake._verify_jwt(token, uri) is not None:
                await PlainTextResponse("Unauthorized\n", status_code=401)(scope, receive, send)
                return
            bucket, limit = str(jwt.get_unverified_header(token)["kid"]), fake.private_rate
        allowed, rate_headers = fake._rate(bucket, limit)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *rate_headers]}
            await send(message)

        if fake._rest_reject or not allowed:
            status = fake._rest_reject.pop(0) if fake._rest_reject else 429
            fake.rejected += 1
            denied = rest_error(status, "RATE_LIMIT_EXCEEDED", "Too many requests")
            await denied(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return rest_error(
        exc.status_code, "NOT_FOUND" if exc.status_code == 404 else "ERROR", exc.detail
    )


def _extra(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--key-file",
        default=None,
        help="make a CDP key (EC P-256), register it and write its private PEM here "
        "(mode 0600); its name is printed as KEY <name>",
    )


def main(argv: list[str] | None = None) -> None:
    args = cli_args("python -m tests.fakes.coinbase", argv, _extra)
    fake = FakeCoinbase(heartbeat_interval=args.heartbeat or 1.0)
    if args.key_file:
        name, pem = fake.new_key()
        fd = os.open(args.key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(pem)
        print(f"KEY {name}", flush=True)
    background: Callable[[], Coroutine[Any, Any, None]] | None = None
    if args.tick_interval > 0:
        interval = args.tick_interval

        def background() -> Coroutine[Any, Any, None]:
            return fake.wander(interval)

    asyncio.run(
        run_cli(
            fake.app(),
            host=args.host,
            port=args.port,
            background=background,
            before_stop=fake.close_sockets,
        )
    )


if __name__ == "__main__":
    print("WebSocket at the root of the same host and port (also /ws)", file=sys.stderr)
    main()
