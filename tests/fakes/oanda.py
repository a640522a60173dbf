"""A fake OANDA v20 server, built from ../shared/docs/PROTOCOLS.md (not from a client).

Endpoints (all under ``/v3`` need ``Authorization: Bearer <token>``, else 401
``{"errorMessage"}``; every response carries a ``RequestID`` header; bodies
need ``Content-Type: application/json``):

- ``GET /v3/accounts/{id}/pricing/stream?instruments=A,B&snapshot=true``:
  chunked NDJSON, a PRICE line per instrument on connect (``snapshot``), a
  HEARTBEAT every ``heartbeat_interval`` seconds, a PRICE whenever a test pushes
  one.  Prices are strings, times have nanoseconds, every other PRICE line
  carries ``unitsAvailable`` and ``quoteHomeConversionFactors``, two buckets
  per side; ``set_price(..., empty=..., tradeable=False)`` gives empty sides
  and ``"tradeable": false``.
- ``GET /v3/instruments/{instrument}/candles?granularity&count&price&from&to``:
  granularity checked against the documented list (default S5), count default
  500 and at most 5000, ``price`` any of M/B/A, deterministic prices around the
  current quote, the last candle ``"complete": false``.
- ``POST /v3/accounts/{id}/orders``, ``GET .../orders/{id|@clientID}``,
  ``PUT .../orders/{spec}/cancel``, ``PUT .../trades/{spec}/close``: see
  ``tests.fakes.oanda_orders.Account`` for what is modelled.

Scripting, in-process::

    async with FakeOanda(heartbeat_interval=0.05).serving() as fake:
        fake.drop()            # cut every open stream (no terminating chunk)
        fake.send_malformed()  # one broken line on every open stream
        fake.go_silent()       # open streams send nothing any more, not even heartbeats
        fake.reject_next(2)    # the next 2 stream connects answer 429
        fake.set_price("EUR_USD", "1.1", "1.1002")   # and push it now
        await fake.connections.reach(2)

or over HTTP (no auth) for a fake run as a process: ``POST /_control/{drop,
end, malformed, silence, reject, reject_rest, price, push, heartbeat}`` with a
JSON body holding the same keyword arguments (``heartbeat``: ``{"interval"}``),
``GET /_control/stats``.

Run: ``python -m tests.fakes.oanda --port 0`` prints ``LISTENING
http://127.0.0.1:<port>``; REST and stream share that base URL.

- ``GET .../transactions/stream`` (NDJSON: every new transaction, a
  ``HEARTBEAT`` with ``lastTransactionID`` every ``heartbeat_interval``),
  ``GET .../changes?sinceTransactionID=N`` (the ``transactions`` list only),
  ``GET .../trades/{id|@clientID}``.  A new price expires GTD entries, fills
  marketable resting LIMIT entries and triggers take-profits / stop-losses.
  ``delay_next_create(s)`` answers a create late (after processing it),
  ``drop_transactions()`` cuts the transaction streams, ``account.expire(id)``
  plays the broker's clock reaching a ``gtdTime``.

Not modelled: position netting (every fill opens its own trade), financing,
request rate limits (429 only when scripted).  Guesses where
PROTOCOLS.md is silent: an unknown account is 400 ``{"errorMessage"}``; a body
without ``Content-Type: application/json`` is 400 ``{"errorMessage"}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import enum
import itertools
import json
import random
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rbot.bus import granularity
from rbot.bus.codec import parse_iso
from rbot.bus.timing import every
from tests.fakes._serve import (
    Counter,
    DroppedByScript,
    cli_args,
    first_done,
    ns_time,
    run_cli,
    serving,
)
from tests.fakes.oanda_orders import Account, Quote, fmt, precision

DEFAULT_TOKEN = "fake-oanda-token"
DEFAULT_ACCOUNT = "101-001-1234567-001"
DEFAULT_QUOTES = {
    "EUR_USD": ("1.09148", "1.09162"),
    "GBP_USD": ("1.27010", "1.27025"),
    "USD_JPY": ("149.512", "149.526"),
    "AUD_USD": ("0.65210", "0.65224"),
}
# seconds per candle; W and M are calendar aligned (Monday, 1st of month, UTC)
GRANULARITIES = granularity.SECONDS
MAX_CANDLES = 5000
MALFORMED = b'{"type":"PRICE","instrument":"EUR_USD","bids":[{"price":"1.0'


def error(status: int, message: str, code: str | None = None, **extra: Any) -> JSONResponse:
    body: dict[str, Any] = dict(extra)
    if code is not None:
        body["errorCode"] = code
    body["errorMessage"] = message
    return JSONResponse(body, status_code=status)


class _Fault(enum.Enum):
    DROP = "drop"
    END = "end"


@dataclass(eq=False)
class _Stream:
    instruments: list[str]
    queue: asyncio.Queue[bytes | _Fault] = field(default_factory=asyncio.Queue)
    silent: bool = False
    prices: int = 0
    transactions: bool = False  # a transaction stream (its heartbeat carries lastTransactionID)


class FakeOanda:
    """State, scripting and the Starlette app of one fake OANDA v20 server."""

    def __init__(
        self,
        *,
        token: str = DEFAULT_TOKEN,
        account_id: str = DEFAULT_ACCOUNT,
        heartbeat_interval: float = 5.0,
        quotes: dict[str, tuple[str, str]] | None = None,
        balance: str = "100000.0000",
        margin_rate: str = "0.02",
    ) -> None:
        self.token = token
        self.account_id = account_id
        self.heartbeat_interval = heartbeat_interval
        self.quotes = {
            k: Quote(Decimal(b), Decimal(a)) for k, (b, a) in (quotes or DEFAULT_QUOTES).items()
        }
        self.connections = Counter()  # pricing streams opened
        self.connect_attempts = Counter()  # every stream request, refused ones too
        self.connect_times: list[float] = []  # time.monotonic() of every attempt
        self.rejected = 0
        self.requests = 0
        self.account = Account(self.quotes, account_id, Decimal(balance), Decimal(margin_rate))
        self.url = ""
        self._reject: list[int] = []
        self._rest_reject: list[int] = []
        self._streams: set[_Stream] = set()
        self._request_ids = itertools.count(time.time_ns() // 1000)
        self._create_delays: list[float] = []
        self.creates = 0  # order creates the account processed
        self.account.listeners.append(self._on_txn)

    # ------------------------------------------------------------------ scripting

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    def drop(self) -> int:
        """Cut every open stream mid-flight (the client sees a broken chunked body)."""
        return self._to_all(_Fault.DROP)

    def close_streams(self) -> int:
        """End every open stream cleanly (terminating chunk)."""
        return self._to_all(_Fault.END)

    def send_malformed(self, line: bytes | str = MALFORMED) -> int:
        raw = line.encode() if isinstance(line, str) else line
        return self._to_all(raw.rstrip(b"\n") + b"\n")

    def go_silent(self) -> int:
        """Open streams stop sending anything, heartbeats included; new ones are normal."""
        for s in self._streams:
            s.silent = True
        return len(self._streams)

    def reject_next(self, n: int, status: int = 429) -> None:
        """The next ``n`` stream connects answer ``status`` (429: rate limited)."""
        self._reject.extend([status] * n)

    def delay_next_create(self, seconds: float) -> None:
        """The next order create is processed at once but answered only after ``seconds``
        (a client with a shorter timeout sees no answer for an order the broker took)."""
        self._create_delays.append(seconds)

    def drop_transactions(self) -> int:
        """Cut every open transaction stream (the pricing streams stay)."""
        cut = [s for s in self._streams if s.transactions]
        for s in cut:
            s.queue.put_nowait(_Fault.DROP)
        return len(cut)

    def _on_txn(self, txn: dict[str, Any]) -> None:
        line = json.dumps(txn, separators=(",", ":")).encode() + b"\n"
        for s in self._streams:
            if s.transactions:
                s.queue.put_nowait(line)

    def reject_rest(self, n: int, status: int = 429) -> None:
        """The next ``n`` REST requests (not the stream) answer ``status``."""
        self._rest_reject.extend([status] * n)

    def set_price(
        self,
        instrument: str,
        bid: str | Decimal,
        ask: str | Decimal,
        *,
        tradeable: bool = True,
        empty: str = "",
        push: bool = True,
    ) -> int:
        """Set a quote (``empty``: "bids", "asks" or "both"); push it now by default."""
        self.quotes[instrument] = Quote(Decimal(bid), Decimal(ask), tradeable, empty)
        self.account.on_price(instrument)
        return self.push(instrument) if push else 0

    def push(self, instrument: str | None = None) -> int:
        """Send the current PRICE of one (or every) instrument to the streams that want it."""
        sent = 0
        for s in self._streams:
            for inst in s.instruments:
                if instrument in (None, inst):
                    s.queue.put_nowait(self._price_line(inst, s))
                    sent += 1
        return sent

    def stats(self) -> dict[str, int]:
        return {
            "connections": self.connections.value,
            "connect_attempts": self.connect_attempts.value,
            "open_streams": self.open_streams,
            "rejected": self.rejected,
            "requests": self.requests,
        }

    async def wander(self, interval: float, seed: int = 7) -> None:
        """Random-walk every quote and push it, every ``interval`` seconds (CLI use)."""
        rng = random.Random(seed)
        async for _ in every(interval):
            for inst, q in list(self.quotes.items()):
                step = Decimal(rng.choice((-2, -1, 1, 2))).scaleb(-precision(inst))
                self.set_price(inst, q.bid + step, q.ask + step, tradeable=q.tradeable)

    def _to_all(self, item: bytes | _Fault) -> int:
        for s in self._streams:
            s.queue.put_nowait(item)
        return len(self._streams)

    # ------------------------------------------------------------------ the app

    def app(self) -> Starlette:
        acct = "/v3/accounts/{account}"
        return Starlette(
            routes=[
                Route(f"{acct}/pricing/stream", self._pricing_stream),
                Route("/v3/instruments/{instrument}/candles", self._candles),
                Route(f"{acct}/orders", self._create_order, methods=["POST"]),
                Route(f"{acct}/orders/{{spec}}", self._get_order),
                Route(f"{acct}/orders/{{spec}}/cancel", self._cancel_order, methods=["PUT"]),
                Route(f"{acct}/trades/{{spec}}/close", self._close_trade, methods=["PUT"]),
                Route(f"{acct}/trades/{{spec}}", self._get_trade),
                Route(f"{acct}/transactions/stream", self._transaction_stream),
                Route(f"{acct}/changes", self._changes),
                Route("/_control/stats", self._control_stats),
                Route("/_control/{action}", self._control, methods=["POST"]),
            ],
            middleware=[Middleware(_Gate, fake=self)],
            exception_handlers={HTTPException: _http_error},
        )

    @contextlib.asynccontextmanager
    async def serving(self, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[FakeOanda]:
        async with serving(self.app(), host=host, port=port, before_stop=self.close_streams) as url:
            self.url = url
            yield self

    # ------------------------------------------------------------------ pricing

    async def _pricing_stream(self, request: Request) -> Response:
        self.connect_attempts.incr()
        self.connect_times.append(time.monotonic())
        if self._reject:
            self.rejected += 1
            status = self._reject.pop(0)
            return error(status, "Too many requests" if status == 429 else "Service unavailable")
        if (bad := self._check_account(request)) is not None:
            return bad
        instruments = [i for i in request.query_params.get("instruments", "").split(",") if i]
        if not instruments or any(i not in self.quotes for i in instruments):
            return error(400, "Invalid value specified for 'instruments'")
        stream = _Stream(instruments)
        if request.query_params.get("snapshot", "true") != "false":
            for inst in instruments:
                stream.queue.put_nowait(self._price_line(inst, stream))
        return _StreamResponse(self, stream)

    def _price_line(self, instrument: str, stream: _Stream) -> bytes:
        q, places = self.quotes[instrument], precision(instrument)
        pip = Decimal(1).scaleb(-places)
        spread = q.ask - q.bid
        stream.prices += 1
        body: dict[str, Any] = {
            "type": "PRICE",
            "time": ns_time(),
            "bids": [
                {"price": fmt(q.bid, places), "liquidity": 1000000},
                {"price": fmt(q.bid - pip, places), "liquidity": 5000000},
            ]
            if q.has_bids
            else [],
            "asks": [
                {"price": fmt(q.ask, places), "liquidity": 1000000},
                {"price": fmt(q.ask + pip, places), "liquidity": 5000000},
            ]
            if q.has_asks
            else [],
            "closeoutBid": fmt(q.bid - spread, places),
            "closeoutAsk": fmt(q.ask + spread, places),
            "status": "tradeable" if q.tradeable else "non-tradeable",
            "tradeable": q.tradeable,
            "instrument": instrument,
        }
        if stream.prices % 2 == 0:  # "sometimes": every other line
            body["unitsAvailable"] = {
                "default": {"long": "2291", "short": "2291"},
                "openOnly": {"long": "2291", "short": "2291"},
            }
            body["quoteHomeConversionFactors"] = {
                "positiveUnits": "1.00000000",
                "negativeUnits": "1.00000000",
            }
        return json.dumps(body, separators=(",", ":")).encode() + b"\n"

    async def _transaction_stream(self, request: Request) -> Response:
        if (bad := self._check_account(request)) is not None:
            return bad
        return _StreamResponse(self, _Stream([], transactions=True))

    def _txn_heartbeat_line(self) -> bytes:
        body = {
            "type": "HEARTBEAT",
            "lastTransactionID": str(self.account.last_txn),
            "time": ns_time(),
        }
        return json.dumps(body, separators=(",", ":")).encode() + b"\n"

    def _heartbeat_line(self) -> bytes:
        return b'{"type":"HEARTBEAT","time":"' + ns_time().encode() + b'"}\n'

    async def _pump(self, stream: _Stream, send: Send) -> str:
        loop = asyncio.get_running_loop()
        next_beat = loop.time() + self.heartbeat_interval
        while True:
            try:
                async with asyncio.timeout_at(next_beat):
                    item = await stream.queue.get()
            except TimeoutError:
                next_beat += self.heartbeat_interval
                if not stream.silent:
                    beat = (
                        self._txn_heartbeat_line()
                        if stream.transactions
                        else self._heartbeat_line()
                    )
                    await _body(send, beat)
                continue
            if isinstance(item, _Fault):
                return item.value
            if not stream.silent:
                await _body(send, item)

    # ------------------------------------------------------------------ candles

    async def _candles(self, request: Request) -> Response:
        inst = request.path_params["instrument"]
        if inst not in self.quotes:
            return error(400, "Invalid value specified for 'instrument'")
        qp = request.query_params
        gran = qp.get("granularity", "S5")
        if gran not in GRANULARITIES:
            return error(400, "Invalid value specified for 'granularity'")
        price = qp.get("price", "M")
        if not price or set(price) - set("MBA") or len(set(price)) != len(price):
            return error(400, "Invalid value specified for 'price'")
        try:
            count = int(qp["count"]) if "count" in qp else None
            start = _query_time(qp.get("from"))
            end = _query_time(qp.get("to"))
        except ValueError as exc:
            return error(400, f"Invalid value specified for '{exc}'")
        if count is not None and not 1 <= count <= MAX_CANDLES:
            return error(
                400, f"Invalid value specified for 'count'. Maximum value is {MAX_CANDLES}"
            )
        if count is not None and start is not None and end is not None:
            return error(400, "'count' cannot be specified with both 'from' and 'to'")
        now = dt.datetime.now(dt.UTC)
        starts = _candle_starts(gran, now, start, end, count)
        if starts is None:
            return error(400, f"Maximum value for 'count' exceeded ({MAX_CANDLES})")
        candles = [self._candle(inst, gran, t, price, now) for t in starts]
        return JSONResponse({"instrument": inst, "granularity": gran, "candles": candles})

    def _candle(
        self, inst: str, gran: str, start: dt.datetime, price: str, now: dt.datetime
    ) -> dict[str, Any]:
        q, places = self.quotes[inst], precision(inst)
        rng = random.Random(f"{inst}/{gran}/{int(start.timestamp())}")
        mid = (q.bid + q.ask) / 2
        half = (q.ask - q.bid) / 2
        end = _step(gran, start, 1)
        complete = end <= now

        def move(x: Decimal, size: float) -> Decimal:
            return x * (1 + Decimal(str(round(rng.uniform(-size, size), 7))))

        o = move(mid, 1e-3)
        c = move(o, 5e-4) if complete else mid
        h = max(o, c) * (1 + Decimal(str(round(rng.uniform(0, 3e-4), 7))))
        low = min(o, c) * (1 - Decimal(str(round(rng.uniform(0, 3e-4), 7))))
        out: dict[str, Any] = {
            "complete": complete,
            "volume": rng.randint(1, 500),
            "time": ns_time(int(start.timestamp()) * 1_000_000_000),
        }
        for letter, name, shift in (
            ("B", "bid", -half),
            ("M", "mid", Decimal(0)),
            ("A", "ask", half),
        ):
            if letter in price:
                out[name] = {
                    k: fmt(v + shift, places) for k, v in zip("ohlc", (o, h, low, c), strict=True)
                }
        return out

    # ------------------------------------------------------------------ orders

    async def _create_order(self, request: Request) -> Response:
        if (bad := self._check_account(request)) is not None:
            return bad
        body, bad = await _json_body(request, required=True)
        if bad is not None:
            return bad
        status, answer = self.account.create(body, self._rid(request))
        self.creates += 1
        if self._create_delays:
            await asyncio.sleep(self._create_delays.pop(0))  # scripted: an answer that is late
        return JSONResponse(answer, status_code=status)

    async def _get_trade(self, request: Request) -> Response:
        if (bad := self._check_account(request)) is not None:
            return bad
        status, answer = self.account.get_trade(request.path_params["spec"])
        return JSONResponse(answer, status_code=status)

    async def _changes(self, request: Request) -> Response:
        if (bad := self._check_account(request)) is not None:
            return bad
        status, answer = self.account.changes(request.query_params.get("sinceTransactionID"))
        return JSONResponse(answer, status_code=status)

    async def _get_order(self, request: Request) -> Response:
        if (bad := self._check_account(request)) is not None:
            return bad
        status, answer = self.account.get_order(request.path_params["spec"])
        return JSONResponse(answer, status_code=status)

    async def _cancel_order(self, request: Request) -> Response:
        if (bad := self._check_account(request)) is not None:
            return bad
        _, bad = await _json_body(request, required=False)
        if bad is not None:
            return bad
        status, answer = self.account.cancel(request.path_params["spec"], self._rid(request))
        return JSONResponse(answer, status_code=status)

    async def _close_trade(self, request: Request) -> Response:
        if (bad := self._check_account(request)) is not None:
            return bad
        body, bad = await _json_body(request, required=False)
        if bad is not None:
            return bad
        spec = request.path_params["spec"]
        status, answer = self.account.close_trade(spec, body or {}, self._rid(request))
        return JSONResponse(answer, status_code=status)

    def _check_account(self, request: Request) -> Response | None:
        if request.path_params.get("account") != self.account_id:
            return error(400, "Invalid value specified for 'accountID'")
        return None

    @staticmethod
    def _rid(request: Request) -> str:
        return str(request.scope.get("request_id", ""))

    # ------------------------------------------------------------------ control

    async def _control_stats(self, request: Request) -> Response:
        return JSONResponse(self.stats())

    async def _control(self, request: Request) -> Response:
        raw = await request.body()
        args: dict[str, Any] = json.loads(raw) if raw else {}
        action = request.path_params["action"]
        handlers: dict[str, Callable[..., object]] = {
            "drop": self.drop,
            "end": self.close_streams,
            "malformed": self.send_malformed,
            "silence": self.go_silent,
            "reject": self.reject_next,
            "reject_rest": self.reject_rest,
            "price": self.set_price,
            "push": self.push,
        }
        if action == "heartbeat":
            self.heartbeat_interval = float(args["interval"])
        elif action in handlers:
            handlers[action](**args)
        else:
            return error(404, f"unknown control action {action!r}")
        return JSONResponse(self.stats())


class _StreamResponse(Response):
    """A chunked NDJSON body fed by a ``_Stream`` until dropped, ended or abandoned."""

    def __init__(self, fake: FakeOanda, stream: _Stream) -> None:
        super().__init__()
        self.fake, self.stream = fake, stream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-type", b"application/octet-stream")]  # no length: chunked
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        self.fake._streams.add(self.stream)
        self.fake.connections.incr()
        try:
            outcome = await first_done(self.fake._pump(self.stream, send), _disconnect(receive))
        finally:
            self.fake._streams.discard(self.stream)
        if outcome == _Fault.DROP.value:
            raise DroppedByScript("pricing stream dropped")
        if outcome == _Fault.END.value:
            await send({"type": "http.response.body", "body": b"", "more_body": False})


class _Gate:
    """Pure ASGI middleware: a RequestID on every response, Bearer auth on /v3."""

    def __init__(self, app: ASGIApp, fake: FakeOanda) -> None:
        self.app, self.fake = app, fake

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = str(next(self.fake._request_ids))
        scope["request_id"] = rid

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), (b"requestid", rid.encode())]
                message = {**message, "headers": headers}
            await send(message)

        if scope["path"].startswith("/v3/"):
            self.fake.requests += 1
            auth = dict(scope["headers"]).get(b"authorization", b"")
            if auth != b"Bearer " + self.fake.token.encode():
                denied = error(401, "Insufficient authorization to perform request.")
                await denied(scope, receive, send_with_id)
                return
            if self.fake._rest_reject and not scope["path"].endswith("/stream"):
                self.fake.rejected += 1
                status = self.fake._rest_reject.pop(0)
                await error(status, "Too many requests")(scope, receive, send_with_id)
                return
        await self.app(scope, receive, send_with_id)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return error(exc.status_code, exc.detail)


async def _body(send: Send, data: bytes) -> None:
    await send({"type": "http.response.body", "body": data, "more_body": True})


async def _disconnect(receive: Receive) -> str:
    while (await receive())["type"] != "http.disconnect":
        pass
    return "gone"


async def _json_body(
    request: Request, *, required: bool
) -> tuple[dict[str, Any] | None, Response | None]:
    raw = await request.body()
    if not raw.strip():
        return (None, error(400, "Missing JSON body")) if required else (None, None)
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        return None, error(400, "Invalid Content-Type: expected application/json")
    try:
        data = json.loads(raw)
    except ValueError:
        return None, error(400, "Invalid JSON body")
    if not isinstance(data, dict):
        return None, error(400, "Invalid JSON body")
    return data, None


# ---------------------------------------------------------------------- candle times


def _query_time(value: str | None) -> dt.datetime | None:
    if value is None:
        return None
    try:
        if value.replace(".", "", 1).isdigit():
            return dt.datetime.fromtimestamp(float(value), dt.UTC)
        return _parse_time(value)
    except (ValueError, OverflowError):
        raise ValueError("time") from None


def _parse_time(value: str) -> dt.datetime:
    return parse_iso(value)


def _floor(gran: str, t: dt.datetime) -> dt.datetime:
    day = t.replace(hour=0, minute=0, second=0, microsecond=0)
    if gran == "M":
        return day.replace(day=1)
    if gran == "W":
        return day - dt.timedelta(days=day.weekday())
    secs = GRANULARITIES[gran]
    return dt.datetime.fromtimestamp(int(t.timestamp()) // secs * secs, dt.UTC)


def _step(gran: str, t: dt.datetime, k: int) -> dt.datetime:
    if gran == "M":
        m = t.year * 12 + t.month - 1 + k
        return t.replace(year=m // 12, month=m % 12 + 1)
    return t + dt.timedelta(seconds=GRANULARITIES[gran] * k)


def _candle_starts(
    gran: str,
    now: dt.datetime,
    start: dt.datetime | None,
    end: dt.datetime | None,
    count: int | None,
) -> list[dt.datetime] | None:
    """Candle start times, oldest first; None if more than MAX_CANDLES are asked for."""
    if start is None:
        last = _floor(gran, min(end or now, now))
        return [_step(gran, last, -i) for i in reversed(range(count or 500))]
    first = _floor(gran, start)
    if first < start:
        first = _step(gran, first, 1)
    limit = count or (MAX_CANDLES + 1 if end is not None else 500)
    out: list[dt.datetime] = []
    t = first
    while t <= now and (end is None or t < end) and len(out) < limit:
        out.append(t)
        t = _step(gran, t, 1)
    return None if len(out) > MAX_CANDLES else out


# ---------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> None:
    def extra(p: Any) -> None:
        p.add_argument("--token", default=DEFAULT_TOKEN)
        p.add_argument("--account", default=DEFAULT_ACCOUNT)

    args = cli_args("python -m tests.fakes.oanda", argv, extra)
    fake = FakeOanda(
        token=args.token, account_id=args.account, heartbeat_interval=args.heartbeat or 5.0
    )
    background: Callable[[], Coroutine[Any, Any, None]] | None = None
    if args.tick_interval > 0:
        interval = args.tick_interval

        def background() -> Coroutine[Any, Any, None]:
            return fake.wander(interval)

    print(f"account={fake.account_id} token={fake.token}", file=sys.stderr, flush=True)
    asyncio.run(
        run_cli(
            fake.app(),
            host=args.host,
            port=args.port,
            background=background,
            before_stop=fake.close_streams,
        )
    )


if __name__ == "__main__":
    main()
