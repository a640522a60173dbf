"""The dashboard in a real browser, offline: only the dashboard router plus small fakes.

A tiny FastAPI app serves the static files through ``api.routers.dashboard`` (with
the real error handlers and security headers, so any inline script or style would
break the page through the CSP), and fakes the API routes the page calls:
sessions, prices, candles, orders, and a scripted SSE stream whose envelopes
carry ``id:`` lines.  These are UI-unit tests; the full-stack tests come later.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from playwright.async_api import Locator, Page, expect

from rbot.api import errors
from rbot.api.middleware import RequestIdAndHeaders
from rbot.api.routers import dashboard
from rbot.api.routers.meta import meta_body
from rbot.bus.config import Settings

from . import contract
from .conftest import ConsoleErrors, Screenshot

browser = pytest.mark.browser

USERS = {
    "viewer@arena.test": ("viewer", "viewer-pass"),
    "trader@arena.test": ("trader", "trader-pass"),
    "admin@arena.test": ("admin", "admin-pass"),
}
# the page probes its session with GET /auth/session (always 200): nothing to allow
NOT_SIGNED_IN = r"^$"


# ------------------------------------------------------------------ fake data


def now_iso(offset_s: float = 0) -> str:
    return (datetime.now(UTC) + timedelta(seconds=offset_s)).isoformat().replace("+00:00", "Z")


_ids = iter(range(1, 1_000_000))


def envelope(type_: str, payload: dict[str, Any], source: str = "oanda") -> dict[str, Any]:
    return {
        "id": f"env-{next(_ids)}",
        "source": source,
        "type": type_,
        "payload": payload,
        "ts": now_iso(),
        "v": 1,
    }


def order_payload(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "order_id": "paper-oanda-7",
        "user": "u-trader",
        "venue": "oanda",
        "symbol": "EUR_USD",
        "side": "BUY",
        "qty": "100",
        "order_type": "MARKET",
        "status": "PENDING",
        "mode": "paper",
        "stop_loss": "1.16",
        "take_profit": "1.17",
        "entry_price": "1.16515",
    }
    base.update(over)
    return base


def fill(price: str, trigger: str = "MARKET") -> dict[str, Any]:
    return {
        "price": price,
        "trigger": trigger,
        "level": None,
        "tick_bid": "1.16501",
        "tick_ask": "1.16515",
        "tick_time": now_iso(),
        "tick_seq": 9,
        "spread": "0.00014",
        "slippage": "0",
        "gap": "0",
        "time": now_iso(),
    }


def tick(symbol: str, bid: str, ask: str, venue: str = "oanda") -> dict[str, Any]:
    payload = {"venue": venue, "symbol": symbol, "bid": bid, "ask": ask, "time": now_iso()}
    return envelope("tick", {**payload, "seq": 1, "source": "sim", "tradeable": True}, venue)


def pulse(status: str = "ok", trading: str = "ACTIVE", silent: list[str] | None = None) -> dict:
    actors = [
        {
            "actor": name,
            "instance": "i1",
            "state": "silent" if name in (silent or []) else "running",
            "last_beat": now_iso(-1),
            "silent": name in (silent or []),
            "restarts": 1 if name == "paper_executor" else 0,
        }
        for name in ("order_guard", "paper_executor", "price_feed")
    ]
    payload = {"status": status, "trading_state": trading, "actors": actors, "silent": silent or []}
    return envelope("heartbeat", payload, "heartbeat")


def candles(count: int = 60) -> list[dict[str, Any]]:
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=count - 1)
    out = []
    price = 116520 - sum((7 if i % 3 else -5) * (1 + i % 4) for i in range(count))  # ends near
    for i in range(count):
        o = price
        c = price + (7 if i % 3 else -5) * (1 + i % 4)
        hi, lo = max(o, c) + 4, min(o, c) - 3
        t = (start + timedelta(minutes=i)).isoformat().replace("+00:00", "Z")
        out.append(
            {
                "time": t,
                "o": f"{o / 1e5:.5f}",
                "h": f"{hi / 1e5:.5f}",
                "l": f"{lo / 1e5:.5f}",
                "c": f"{c / 1e5:.5f}",
                "volume": 10 + i,
                "complete": i < count - 1,
            }
        )
        price = c
    return out


PRICES = [
    {"venue": "oanda", "symbol": "EUR_USD", "bid": "1.16501", "ask": "1.16515", "time": now_iso()},
    {"venue": "oanda", "symbol": "GBP_USD", "bid": "1.33810", "ask": "1.33828", "time": now_iso()},
    {
        "venue": "coinbase",
        "symbol": "BTC-USD",
        "bid": "42500.50",
        "ask": "42501.00",
        "time": now_iso(),
    },
]
PENDING = {
    "id": "paper-oanda-3",
    "venue": "oanda",
    "symbol": "EUR_USD",
    "side": "BUY",
    "qty": "100",
    "order_type": "LIMIT",
    "status": "PENDING",
    "stop_loss": "1.15",
    "take_profit": "1.17",
    "entry_price": "1.16",
    "limit_price": "1.16",
    "created_at": now_iso(-60),
    "expires_at": now_iso(6 * 3600),
    "opened_at": None,
    "closed_at": None,
    "entry_fill": None,
    "exit_fill": None,
    "close_reason": None,
    "realized_pnl": None,
    "currency": "USD",
}
CLOSED = {
    **PENDING,
    "id": "paper-oanda-1",
    "status": "CLOSED",
    "order_type": "MARKET",
    "limit_price": None,
    "opened_at": now_iso(-600),
    "closed_at": now_iso(-30),
    "entry_fill": fill("1.16515"),
    "exit_fill": {**fill("1.17000", "TAKE_PROFIT"), "level": "1.17"},
    "close_reason": "TAKE_PROFIT_ORDER",
    "realized_pnl": "4.85",
}
POSITION = {
    "order_id": "paper-oanda-5",
    "venue": "oanda",
    "symbol": "EUR_USD",
    "side": "BUY",
    "qty": "100",
    "entry_price": "1.16000",
    "mark": "1.16501",
    "unrealized_pnl": "0.50",
    "currency": "USD",
    "stop_loss": "1.15",
    "take_profit": "1.18",
    "opened_at": now_iso(-300),
}
ACCOUNT = {
    "currency": "USD",
    "balance": "100004.85",
    "equity": "100005.35",
    "realized_pnl": "4.85",
    "unrealized_pnl": "0.50",
    "open_positions": 1,
}


# ------------------------------------------------------------------ the fake API


@dataclass
class Step:
    """One step of a scripted SSE connection."""

    kind: str  # "event" | "wait" | "close" | "status" | "hold"
    env: dict[str, Any] | None = None
    id: int | None = None
    gate: asyncio.Event | None = None
    status: int = 200


def ev(env: dict[str, Any], id: int | None = None) -> Step:
    return Step("event", env=env, id=id)


def wait(gate: asyncio.Event) -> Step:
    return Step("wait", gate=gate)


def frame(step: Step) -> bytes:
    env = step.env or {}
    if env.get("type") == "tick":  # stamped when sent: candles are made per request
        env = {**env, "payload": {**env["payload"], "time": now_iso()}}
    head = f"id: {step.id}\n" if step.id is not None else ""
    return f"{head}data: {json.dumps(env)}\n\n".encode()


@dataclass
class Fake:
    """State of the fake API: scripted streams and what the page sent."""

    scripts: list[list[Step]] = field(default_factory=list)
    stream_requests: list[dict[str, str | None]] = field(default_factory=list)
    live: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    posted: list[dict[str, Any]] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    admin_posts: list[dict[str, Any]] = field(default_factory=list)
    expire_once: set[str] = field(default_factory=set)
    calls: list[str] = field(default_factory=list)
    pending: list[dict[str, Any]] = field(default_factory=lambda: [PENDING])
    positions: list[dict[str, Any]] = field(default_factory=lambda: [POSITION])
    account: dict[str, Any] = field(default_factory=lambda: dict(ACCOUNT))
    # what /positions and /account answer from their second call on (the API's new marks)
    next_positions: list[dict[str, Any]] | None = None
    next_account: dict[str, Any] | None = None
    trading_state: str = "ACTIVE"

    async def note(self, what: str) -> None:
        async with self.changed:
            self.calls.append(what)
            self.changed.notify_all()

    async def wait_for(self, what: str, count: int = 1) -> None:
        async with asyncio.timeout(10), self.changed:
            await self.changed.wait_for(lambda: self.calls.count(what) >= count)

    async def until(self, gate: asyncio.Event) -> bool:
        """Wait for ``gate`` or for the server to stop; True when the gate opened."""
        async with asyncio.TaskGroup() as tg:
            opened = tg.create_task(gate.wait())
            stopped = tg.create_task(self.stop.wait())
            await asyncio.wait({opened, stopped}, return_when=asyncio.FIRST_COMPLETED)
            opened.cancel()
            stopped.cancel()
        return gate.is_set()

    async def next_live(self) -> dict[str, Any] | None:
        """The next envelope the fake API publishes, or None when the server stops."""
        async with asyncio.TaskGroup() as tg:
            got = tg.create_task(self.live.get())
            stopped = tg.create_task(self.stop.wait())
            await asyncio.wait({got, stopped}, return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            if not got.done():
                got.cancel()
                return None
        return got.result()


def error(status: int, code: str, message: str, detail: Any = None) -> JSONResponse:
    return errors.error_response(status, code, message, detail)


def role_of(request: Request) -> str | None:
    token = request.cookies.get("rbot_session", "")
    return token.removeprefix("sess-") if token.startswith("sess-") else None


CONTRACT_PROBLEMS: list[str] = []


@pytest.fixture(autouse=True)
def page_requests_match_the_real_api() -> Any:
    """Fails a test whose page sent the fake API a request the real API would refuse."""
    CONTRACT_PROBLEMS.clear()
    yield
    problems = sorted(set(CONTRACT_PROBLEMS))
    CONTRACT_PROBLEMS.clear()
    assert not problems, problems


def test_the_fake_api_serves_only_real_routes_and_parameters() -> None:
    """The fake's routes, methods and declared query parameters exist in the real
    app's OpenAPI, and every chart granularity /meta offers is one /candles takes."""
    assert contract.route_problems(build_app(Fake())) == []
    meta = meta_body(Settings(_env_file=None, rbot_sim="on"))  # type: ignore[call-arg]
    chart = meta["granularities"]["chart"]
    assert chart
    for g in chart:
        assert (
            contract.request_problems(
                "GET", "/candles", [("venue", "oanda"), ("symbol", "EUR_USD"), ("granularity", g)]
            )
            == []
        ), g
    # and the checker itself refuses what the real API refuses
    assert contract.request_problems("GET", "/candles", [("granularity", "H6")])
    assert contract.request_problems("GET", "/candles", [("count", "501")])
    assert contract.request_problems("GET", "/orders", [("status", "NOPE")])
    assert contract.request_problems("GET", "/no-such-route", [])


def build_app(fake: Fake) -> FastAPI:
    async def auth(request: Request) -> None:
        path = request.url.path
        if path in fake.expire_once:
            fake.expire_once.discard(path)
            await fake.note(f"expired {path}")
            raise errors.ApiError(401, "token_expired", "the access token has expired")
        public = path in ("/", "/meta", "/auth/session") or path.startswith(
            ("/static/", "/auth/login", "/auth/refresh")
        )
        if not public and role_of(request) is None:
            raise errors.ApiError(401, "unauthorized", "not signed in")

    app = FastAPI(dependencies=[Depends(auth)])
    errors.install(app)
    app.add_middleware(RequestIdAndHeaders)  # the real CSP: no inline script or style
    app.include_router(dashboard.router)

    @app.middleware("http")
    async def held_to_the_real_api(request: Request, call_next: Any) -> Response:
        """Every request the page sends must be one the real API would take (contract.py)."""
        query = request.query_params.multi_items()
        CONTRACT_PROBLEMS.extend(contract.request_problems(request.method, request.url.path, query))
        response: Response = await call_next(request)
        return response

    @app.post("/auth/login")
    async def login(body: dict[str, Any]) -> Response:
        user = USERS.get(body.get("email", ""))
        if user is None or body.get("password") != user[1] or body.get("cookie") is not True:
            return error(401, "invalid_credentials", "wrong email or password")
        res = JSONResponse({"access_token": "not-for-the-page", "token_type": "bearer"})
        res.set_cookie("rbot_session", f"sess-{user[0]}", httponly=True, samesite="strict")
        return res

    @app.get("/meta")
    async def meta() -> dict[str, Any]:
        return meta_body(Settings(_env_file=None, rbot_sim="on"))  # type: ignore[call-arg]

    @app.get("/auth/session")
    async def session(request: Request) -> dict[str, Any]:
        role = role_of(request)
        if role is None:
            return {"authenticated": False}
        email = next(e for e, (r, _) in USERS.items() if r == role)
        return {"authenticated": True, "user": {"sub": f"u-{role}", "email": email, "role": role}}

    @app.get("/auth/me")
    async def me(request: Request) -> dict[str, str]:
        role = role_of(request) or ""
        email = next(e for e, (r, _) in USERS.items() if r == role)
        return {"sub": f"u-{role}", "email": email, "role": role}

    @app.post("/auth/logout")
    async def logout() -> Response:
        await fake.note("logout")
        res = JSONResponse({"ok": True})
        res.delete_cookie("rbot_session")
        return res

    @app.post("/auth/refresh")
    async def refresh() -> dict[str, bool]:
        await fake.note("refresh")
        return {"ok": True}

    @app.get("/prices")
    async def prices() -> dict[str, Any]:
        return {"prices": PRICES}

    @app.get("/candles")
    async def get_candles(venue: str, symbol: str, granularity: str, count: int) -> dict:
        return {"candles": candles(min(count, 60))}

    @app.get("/orders")
    async def orders(status: str = "") -> dict[str, Any]:
        rows = fake.pending if status == "PENDING" else [CLOSED] if status == "CLOSED" else []
        return {"orders": rows, "total": len(rows)}

    @app.delete("/orders/{order_id}")
    async def cancel(order_id: str) -> dict[str, Any]:
        fake.deleted.append(order_id)
        await fake.note("delete")
        return {"ok": True, "order_id": order_id, "status": "CANCELLED"}

    @app.get("/positions")
    async def positions() -> dict[str, Any]:
        await fake.note("positions")
        if fake.next_positions is not None and fake.calls.count("positions") > 1:
            fake.positions = fake.next_positions
        return {"positions": fake.positions}

    @app.get("/account")
    async def account() -> dict[str, Any]:
        await fake.note("account")
        if fake.next_account is not None and fake.calls.count("account") > 1:
            fake.account = fake.next_account
        return fake.account

    @app.get("/system")
    async def system() -> dict[str, Any]:
        return {"trading_state": fake.trading_state, "actors": pulse()["payload"]["actors"]}

    @app.post("/admin/trading-state")
    async def trading_state(body: dict[str, Any]) -> dict[str, Any]:
        fake.admin_posts.append(body)
        fake.trading_state = body["state"]
        return {"ok": True, "state": body["state"]}

    @app.post("/brokers/oanda/orders")
    async def place(body: dict[str, Any]) -> Response:
        fake.posted.append(body)
        await fake.note("order")
        if not body.get("stop_loss_price"):
            detail = [
                {"loc": ["body", "stop_loss_price"], "msg": "Field required", "type": "missing"}
            ]
            return error(422, "validation_error", "the request does not match the schema", detail)
        if float(body.get("quality_score", 0)) < 70:
            return error(
                422, "quality_too_low", f"quality score {body['quality_score']} is below 70"
            )
        placed = order_payload(
            symbol=body["instrument"],
            side=body["side"],
            qty=str(body["units"]),
            stop_loss=body["stop_loss_price"],
            take_profit=body["take_profit_price"],
        )
        await fake.live.put(envelope("oco_placed", placed))
        return JSONResponse(
            {"ok": True, "order_id": "paper-oanda-7", "status": "PENDING", "mode": "paper"}
        )

    @app.post("/brokers/coinbase-adv/orders")
    async def place_coinbase(body: dict[str, Any]) -> Response:
        fake.posted.append(body)
        return JSONResponse(
            {"ok": True, "order_id": "paper-2", "status": "PENDING", "mode": "paper"}
        )

    @app.get("/events")
    async def events(request: Request) -> Response:
        fake.stream_requests.append(
            {
                "last_event_id": request.headers.get("last-event-id"),
                "since": request.query_params.get("since"),
                "subjects": request.query_params.get("subjects"),
            }
        )
        await fake.note("stream")
        steps = fake.scripts.pop(0) if fake.scripts else []
        while steps and steps[0].kind in ("wait", "status"):  # before the response starts
            step = steps.pop(0)
            if step.kind == "status":
                return error(step.status, "unavailable", "the stream is unavailable")
            assert step.gate is not None
            await fake.until(step.gate)

        async def body() -> AsyncIterator[bytes]:
            yield b"retry: 150\n: connected\n\n"
            for step in steps:
                if step.kind == "event":
                    yield frame(step)
                elif step.kind == "wait":
                    assert step.gate is not None
                    await fake.until(step.gate)
                elif step.kind == "close":
                    return
            while (env := await fake.next_live()) is not None:  # what the fake API publishes
                yield frame(Step("event", env=env))

        return StreamingResponse(
            body(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )

    return app


@dataclass
class Served:
    url: str
    fake: Fake


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    fake = Fake()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)  # connections wait in the backlog until uvicorn accepts: no start-up race
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        build_app(fake),
        log_level="warning",
        lifespan="off",
        ws="none",
        http="h11",
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield Served(f"http://127.0.0.1:{port}", fake)
    finally:
        fake.stop.set()  # ends open streams and releases every gate
        server.should_exit = True
        await task
        sock.close()


# ------------------------------------------------------------------ helpers


def tid(page: Page, name: str) -> Locator:
    return page.get_by_test_id(name)


async def sign_in(page: Page, served: Served, email: str) -> None:
    await page.goto(served.url + "/")
    await expect(tid(page, "login-form")).to_be_visible()
    await tid(page, "login-email").fill(email)
    await tid(page, "login-password").fill(USERS[email][1])
    await tid(page, "login-submit").click()
    await expect(tid(page, "app")).to_be_visible()
    await expect(tid(page, "user-role")).to_have_text(USERS[email][0])


async def feed_seqs(page: Page) -> list[str]:
    seqs: list[str] = await page.eval_on_selector_all(
        "[data-testid=feed-line]", "els => els.map(e => e.dataset.seq)"
    )
    return seqs


def order_events(first: int, last: int) -> list[Step]:
    return [
        ev(envelope("oco_placed", order_payload(order_id=f"paper-oanda-{i}")), id=i)
        for i in range(first, last + 1)
    ]


# ------------------------------------------------------------------ the router, over HTTP


@pytest.fixture
def client() -> httpx.AsyncClient:
    app = build_app(Fake())
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def test_router_serves_index_and_assets_with_types_and_no_cache(
    client: httpx.AsyncClient,
) -> None:
    async with client:
        index = await client.get("/")
        assert index.status_code == 200
        assert index.headers["content-type"].startswith("text/html")
        assert index.headers["cache-control"] == "no-cache"
        assert '<script type="module" src="/static/app.js"></script>' in index.text
        assert "script-src 'self'" in index.headers["content-security-policy"]
        for name, kind in [
            ("app.js", "text/javascript"),
            ("sse.js", "text/javascript"),
            ("style.css", "text/css"),
            ("favicon.svg", "image/svg+xml"),
        ]:
            res = await client.get(f"/static/{name}")
            assert res.status_code == 200, name
            assert res.headers["content-type"].startswith(kind), name
        etag = index.headers["etag"]
        again = await client.get("/", headers={"If-None-Match": etag})
        assert again.status_code == 304


@pytest.mark.parametrize(
    "path",
    [
        "/static/..%2Fapi%2Fapp.py",
        "/static/%2e%2e%2f%2e%2e%2fpyproject.toml",
        "/static/..%5Capp.js",
        "/static/__init__.py",
        "/static/.hidden.js",
        "/static/sub/app.js",
        "/static/nope.js",
        "/static/",
        "/static/%2Fetc%2Fpasswd",
    ],
)
async def test_router_refuses_anything_outside_the_folder(
    client: httpx.AsyncClient, path: str
) -> None:
    async with client:
        res = await client.get(path)
    assert res.status_code == 404
    assert res.json() == {"code": "not_found", "message": "no such dashboard file", "detail": None}


# ------------------------------------------------------------------ sign-in and roles


@browser
async def test_login_form_then_cookie_session(
    served: Served, page: Page, console_errors: ConsoleErrors, screenshot: Screenshot
) -> None:
    console_errors.allow(NOT_SIGNED_IN)
    console_errors.allow(r"status of 401 .*/auth/login\]")
    await page.goto(served.url + "/")
    await expect(tid(page, "login-form")).to_be_visible()
    await expect(tid(page, "app")).to_be_hidden()
    await expect(page.get_by_label("Email")).to_be_visible()
    await screenshot(page, "login")

    await tid(page, "login-email").fill("trader@arena.test")
    await tid(page, "login-password").fill("wrong")
    await tid(page, "login-submit").click()
    await expect(tid(page, "login-error")).to_have_text(
        "wrong email or password (invalid_credentials)"
    )

    await tid(page, "login-password").fill("trader-pass")
    await tid(page, "login-submit").click()
    await expect(tid(page, "app")).to_be_visible()
    await expect(tid(page, "user-email")).to_have_text("trader@arena.test")
    cookies = {c["name"]: c for c in await page.context.cookies()}
    assert cookies["rbot_session"]["httpOnly"] is True
    stored = await page.evaluate("() => localStorage.length + sessionStorage.length")
    assert stored == 0  # no token anywhere the page's scripts could leak it
    assert served.fake.stream_requests[0]["subjects"] == "evt.>,md.tick.>,md.book.>"


@browser
async def test_viewer_sees_everything_read_only(
    served: Served, page: Page, console_errors: ConsoleErrors, screenshot: Screenshot
) -> None:
    console_errors.allow(NOT_SIGNED_IN)
    await sign_in(page, served, "viewer@arena.test")
    await expect(tid(page, "pending-row")).to_have_count(1)
    await expect(tid(page, "position-row")).to_have_count(1)
    await expect(tid(page, "closed-row")).to_have_count(1)
    await expect(tid(page, "price-row")).to_have_count(3)
    # not merely hidden: never rendered
    await expect(tid(page, "order-ticket")).to_have_count(0)
    await expect(tid(page, "cancel-button")).to_have_count(0)
    await expect(tid(page, "close-button")).to_have_count(0)
    await expect(tid(page, "admin-controls")).to_have_count(0)
    await expect(tid(page, "conn-status")).to_have_attribute("data-state", "connected")
    await screenshot(page, "viewer")


@browser
async def test_trader_ticket_validates_and_shows_the_servers_rejection(
    served: Served, page: Page, console_errors: ConsoleErrors, screenshot: Screenshot
) -> None:
    console_errors.allow(NOT_SIGNED_IN)
    console_errors.allow(r"status of 422 .*/brokers/oanda/orders\]")
    await sign_in(page, served, "trader@arena.test")
    ticket = tid(page, "order-ticket")
    await expect(ticket).to_be_visible()
    await expect(tid(page, "admin-controls")).to_have_count(0)
    await expect(tid(page, "ticket-symbol")).to_have_value("EUR_USD")  # the chart's symbol

    await tid(page, "ticket-qty").fill("100")
    await tid(page, "ticket-market-fill").click()
    await expect(tid(page, "ticket-price")).to_have_value("1.16515")  # the ask, for a BUY
    await tid(page, "ticket-sl").fill("1.17")
    await tid(page, "ticket-tp").fill("1.18")
    await tid(page, "ticket-quality").fill("50")
    await tid(page, "ticket-submit").click()
    await expect(tid(page, "ticket-sl-error")).to_have_text(
        "BUY: stop-loss must be below 1.16515 (entry)"
    )
    await expect(tid(page, "ticket-sl")).to_have_attribute("aria-invalid", "true")
    await expect(tid(page, "ticket-hint")).to_have_text("BUY: SL < 1.16515 (entry) < TP")
    assert served.fake.posted == []

    await tid(page, "ticket-sl").fill("1.16")
    await tid(page, "ticket-tp").fill("1.17")
    await tid(page, "ticket-submit").click()
    error_box = tid(page, "ticket-error")
    await expect(error_box).to_have_text("quality score 50 is below 70 (quality_too_low)")
    await expect(error_box).to_have_attribute("data-code", "quality_too_low")
    await expect(tid(page, "ticket-quality")).to_have_attribute("aria-invalid", "true")
    await screenshot(page, "rejected")

    await tid(page, "ticket-quality").fill("75")
    await tid(page, "ticket-ttl").fill("30")
    await tid(page, "ticket-submit").click()
    await expect(tid(page, "ticket-result")).to_have_text(
        "✓ Accepted paper-oanda-7 · PENDING · paper"
    )
    await expect(error_box).to_be_hidden()
    body = served.fake.posted[-1]
    assert body.pop("client_order_id").startswith("web-")
    assert body == {
        "instrument": "EUR_USD",
        "side": "BUY",
        "units": 100,
        "entry_price": "1.16515",
        "order_type": "MARKET",
        "stop_loss_price": "1.16",
        "take_profit_price": "1.17",
        "quality_score": 75,
        "ttl_minutes": 30,
    }
    # the fake publishes oco_placed on the stream, as the real pipeline does
    await expect(tid(page, "feed-line").last).to_contain_text(
        "OCO Placed EUR_USD BUY 100 units | SL: 1.16, TP: 1.17 | Mode: paper | Status: PENDING"
    )

    # the event itself put the new order in the pending table (no refetch per event)
    await expect(
        page.locator("[data-testid=pending-row][data-order-id=paper-oanda-7]")
    ).to_have_count(1)
    await (
        page.locator("[data-testid=pending-row][data-order-id=paper-oanda-3]")
        .get_by_test_id("cancel-button")
        .click()
    )
    await served.fake.wait_for("delete")
    await tid(page, "close-button").click()
    await served.fake.wait_for("delete", 2)
    assert served.fake.deleted == ["paper-oanda-3", "paper-oanda-5"]
    await screenshot(page, "trader")


@browser
async def test_coinbase_sell_limit_ticket_follows_the_selected_symbol(
    served: Served, page: Page, console_errors: ConsoleErrors
) -> None:
    console_errors.allow(NOT_SIGNED_IN)
    await sign_in(page, served, "trader@arena.test")
    await (
        page.locator("[data-testid=price-row][data-symbol=BTC-USD]")
        .get_by_test_id("price-select")
        .click()
    )
    await expect(tid(page, "chart-symbol")).to_have_text("BTC-USD · coinbase")
    await expect(tid(page, "ticket-venue")).to_have_value("coinbase")
    await expect(tid(page, "ticket-symbol")).to_have_value("BTC-USD")
    await expect(tid(page, "ticket-qty-label")).to_have_text("Size")
    await expect(tid(page, "ticket-price-field")).to_be_hidden()  # a Coinbase MARKET has none

    await page.get_by_text("Sell", exact=True).click()
    await page.get_by_text("Limit", exact=True).click()
    await expect(tid(page, "ticket-price-field")).to_be_visible()
    await expect(tid(page, "ticket-price-label")).to_have_text("Limit price")
    await expect(tid(page, "ticket-hint")).to_have_text("SELL: TP < 42500.50 (bid) < SL")
    await expect(tid(page, "ticket-submit")).to_have_text("Place SELL order")
    await tid(page, "ticket-qty").fill("0.001")
    await tid(page, "ticket-price").fill("42600")
    await tid(page, "ticket-sl").fill("42000")
    await tid(page, "ticket-tp").fill("41000")
    await tid(page, "ticket-submit").click()
    await expect(tid(page, "ticket-sl-error")).to_have_text(
        "SELL: stop-loss must be above 42600 (limit)"
    )
    assert served.fake.posted == []

    await tid(page, "ticket-sl").fill("43000")
    await tid(page, "ticket-submit").click()
    await expect(tid(page, "ticket-result")).to_have_text("✓ Accepted paper-2 · PENDING · paper")
    body = served.fake.posted[-1]
    assert body.pop("client_order_id").startswith("web-")
    assert body == {
        "product_id": "BTC-USD",
        "side": "SELL",
        "order_type": "LIMIT",
        "size": "0.001",
        "limit_price": "42600",
        "stop_loss_price": "43000",
        "take_profit_price": "41000",
    }


@browser
async def test_admin_can_halt_and_resume(
    served: Served, page: Page, console_errors: ConsoleErrors
) -> None:
    console_errors.allow(NOT_SIGNED_IN)
    await sign_in(page, served, "admin@arena.test")
    await expect(tid(page, "order-ticket")).to_be_visible()
    await expect(tid(page, "trading-state")).to_have_text("ACTIVE")
    await expect(tid(page, "resume-button")).to_be_disabled()
    await tid(page, "halt-reason").fill("news spike")
    await tid(page, "halt-button").click()
    await expect(tid(page, "trading-state")).to_have_attribute("data-state", "HALTED")
    await expect(tid(page, "trading-state-badge")).to_have_text("HALTED")
    await expect(tid(page, "halt-button")).to_be_disabled()
    await tid(page, "resume-button").click()
    await expect(tid(page, "trading-state")).to_have_text("ACTIVE")
    assert served.fake.admin_posts == [
        {"state": "HALTED", "reason": "news spike"},
        {"state": "ACTIVE", "reason": "news spike"},
    ]


@browser
async def test_expired_token_is_refreshed_once_and_the_request_retried(
    served: Served, page: Page, console_errors: ConsoleErrors
) -> None:
    console_errors.allow(NOT_SIGNED_IN)
    console_errors.allow(r"status of 401 .*/positions\]")
    served.fake.expire_once.add("/positions")
    await sign_in(page, served, "viewer@arena.test")
    await expect(tid(page, "position-row")).to_have_count(1)
    assert served.fake.calls.count("refresh") == 1
    assert served.fake.calls.count("expired /positions") == 1


@browser
async def test_logout_returns_to_the_login_form_and_closes_the_stream(
    served: Served, page: Page, console_errors: ConsoleErrors
) -> None:
    console_errors.allow(NOT_SIGNED_IN)
    await sign_in(page, served, "trader@arena.test")
    await expect(tid(page, "conn-status")).to_have_attribute("data-state", "connected")
    await tid(page, "logout-button").click()
    await expect(tid(page, "login-form")).to_be_visible()
    await expect(tid(page, "login-note")).to_have_text("You have signed out.")
    await expect(tid(page, "app")).to_be_hidden()
    await expect(tid(page, "order-ticket")).to_have_count(0)
    await expect(tid(page, "conn-status")).to_have_attribute("data-state", "idle")
    assert served.fake.calls.count("logout") == 1


# ------------------------------------------------------------------ the live narration


@browser
async def test_narration_renders_a_scripted_stream(
    served: Served, page: Page, console_errors: ConsoleErrors, screenshot: Screenshot
) -> None:
    console_errors.allow(NOT_SIGNED_IN)
    closed = order_payload(
        status="CLOSED",
        fill={**fill("1.17000", "TAKE_PROFIT"), "level": "1.17"},
        reason="TAKE_PROFIT_ORDER",
        realized_pnl="4.85",
        currency="USD",
        balance="100009.70",
    )
    restarting = {"actor": "paper_executor", "instance": "i1", "state": "restarting", "restarts": 2}
    go = asyncio.Event()
    served.fake.next_positions = [{**POSITION, "mark": "1.16520", "unrealized_pnl": "0.52"}]
    served.fake.next_account = {**ACCOUNT, "unrealized_pnl": "0.52", "equity": "100005.37"}
    served.fake.scripts.append(
        [
            wait(go),  # until the snapshots are shown, so the tick has a price to move from
            ev(envelope("oco_placed", order_payload()), id=1),
            ev(tick("EUR_USD", "1.16520", "1.16534")),
            ev(envelope("order_filled", order_payload(status="OPEN", fill=fill("1.16515"))), id=2),
            ev(envelope("restarting", {**restarting, "reason": "crashed"}, "paper_executor")),
            ev(pulse()),
            ev(pulse()),  # unchanged: no new line
            ev(envelope("position_closed", closed), id=3),
            ev(
                envelope(
                    "order_rejected",
                    order_payload(
                        order_id=None,
                        status="REJECTED",
                        reason="stale_price",
                        message="no price newer than 30 s",
                    ),
                ),
                id=4,
            ),
            ev(envelope("order_cancelled", order_payload(reason="CLIENT_REQUEST")), id=5),
            ev(envelope("order_expired", order_payload(reason="TIME_IN_FORCE_EXPIRED")), id=6),
            ev(pulse("degraded", "HALTED", ["price_feed"])),
        ]
    )
    await sign_in(page, served, "viewer@arena.test")
    await expect(tid(page, "conn-status")).to_have_attribute("data-state", "connecting")
    await expect(tid(page, "price-row")).to_have_count(3)
    await expect(tid(page, "position-pnl")).to_have_text("+0.50 USD")
    await expect(tid(page, "chart-canvas")).to_have_attribute("data-candles", "60")
    go.set()
    lines = tid(page, "feed-line")
    expected = [
        ("placed", "OCO Placed EUR_USD BUY 100 units | SL: 1.16, TP: 1.17 | Mode: paper | Status: PENDING"),
        ("filled", "Order Filled EUR_USD BUY 100 @ 1.16515 (ask 1.16515, spread 0.00014, slip 0)"),
        ("restarting", "actor paper_executor restarting (restarts 2, crashed)"),
        ("heartbeat", "Heartbeat ok | Trading: ACTIVE | 3 actors"),
        ("closed", "Position Closed EUR_USD BUY 100 @ 1.17000 TAKE_PROFIT_ORDER P&L +4.85 USD"),
        ("rejected", "Order Rejected EUR_USD BUY 100 units — stale_price: no price newer than 30 s"),
        ("cancelled", "Order Cancelled EUR_USD Order ID: paper-oanda-7 (CLIENT_REQUEST)"),
        ("expired", "Order Expired EUR_USD Order ID: paper-oanda-7 (TIME_IN_FORCE_EXPIRED)"),
        ("warning", "Heartbeat degraded | Trading: HALTED | 3 actors | silent: price_feed"),
    ]  # fmt: skip
    await expect(lines).to_have_count(len(expected))
    for i, (icon, text) in enumerate(expected):
        await expect(lines.nth(i)).to_contain_text(text)
        # icons are inline SVG (no emoji font needed), named by the event
        await expect(lines.nth(i).locator("svg.icon")).to_have_attribute("data-icon", icon)
    assert not re.search(
        r"[\U0001F300-\U0001FAFF\u2600-\u27BF]", await tid(page, "feed").inner_text()
    )
    await expect(lines.first.locator("time")).to_have_text(re.compile(r"^\d\d:\d\d:\d\d$"))
    await expect(tid(page, "feed")).to_have_attribute("role", "log")
    await expect(tid(page, "feed")).to_have_attribute("aria-live", "polite")
    assert await feed_seqs(page) == ["1", "2", "", "", "3", "4", "5", "6", ""]
    await expect(lines.nth(4)).to_have_class(re.compile(r"tone-good"))

    # the tick moved the price row; the position's mark and P&L are the API's, refetched
    # (at most every few seconds) while ticks move a held symbol
    row = page.locator("[data-testid=price-row][data-symbol=EUR_USD]")
    await expect(row.get_by_test_id("price-bid")).to_have_text("1.16520")
    await expect(row.get_by_test_id("price-spread")).to_have_text("0.00014")
    await expect(row).to_have_attribute("data-dir", "up")
    await expect(tid(page, "position-pnl")).to_have_text("+0.52 USD", timeout=8000)
    await expect(tid(page, "position-mark")).to_have_text("1.16520")
    await expect(tid(page, "account-unrealized")).to_have_text("+0.52 USD")
    await expect(tid(page, "account-equity")).to_have_text("100005.37 USD")
    # the system panel follows the pulse
    await expect(tid(page, "trading-state")).to_have_text("HALTED")
    await expect(page.locator("[data-testid=actor-row][data-actor=price_feed]")).to_have_attribute(
        "data-state", "silent"
    )
    await expect(tid(page, "chart-canvas")).to_have_attribute("data-candles", "60")
    await expect(tid(page, "chart-canvas")).to_have_attribute("data-last-close", "1.16527")
    await screenshot(page, "narration")


@browser
async def test_resume_after_a_dropped_stream_has_no_gap_and_no_duplicates(
    served: Served, page: Page, console_errors: ConsoleErrors
) -> None:
    console_errors.allow(NOT_SIGNED_IN)
    served.fake.scripts += [
        [*order_events(1, 3), Step("close")],
        # the browser reconnects with Last-Event-ID: 3; this server replays 2 and 3 again
        [*order_events(2, 5), Step("hold")],
    ]
    await sign_in(page, served, "viewer@arena.test")
    await expect(tid(page, "feed-line")).to_have_count(5)
    await expect(tid(page, "conn-status")).to_have_attribute("data-last-id", "5")
    assert await feed_seqs(page) == ["1", "2", "3", "4", "5"]
    assert served.fake.stream_requests[1]["last_event_id"] == "3"
    await expect(tid(page, "conn-status")).to_have_attribute("data-state", "connected")


@browser
async def test_manual_reconnect_after_an_http_error_resumes_with_since(
    served: Served, page: Page, console_errors: ConsoleErrors, screenshot: Screenshot
) -> None:
    console_errors.allow(NOT_SIGNED_IN)
    console_errors.allow(r"status of 503 .*/events")
    drop, reopen = asyncio.Event(), asyncio.Event()
    served.fake.scripts += [
        [*order_events(1, 2), wait(drop), Step("close")],
        [Step("status", status=503)],  # EventSource gives up: readyState CLOSED
        [wait(reopen), *order_events(3, 3), Step("hold")],
    ]
    await sign_in(page, served, "viewer@arena.test")
    status = tid(page, "conn-status")
    await expect(status).to_have_attribute("data-state", "connected")
    await expect(status).to_contain_text("Connected")
    await expect(tid(page, "feed-line")).to_have_count(2)

    drop.set()
    await served.fake.wait_for("stream", 3)  # the page's own reconnect, held at the gate
    await expect(status).to_have_attribute("data-state", "reconnecting")
    await expect(status).to_contain_text("Reconnecting")
    await screenshot(page, "reconnecting")
    assert served.fake.stream_requests[2]["since"] == "2"
    assert served.fake.stream_requests[2]["last_event_id"] is None

    reopen.set()
    await expect(status).to_have_attribute("data-state", "connected")
    await expect(tid(page, "feed-line")).to_have_count(3)
    assert await feed_seqs(page) == ["1", "2", "3"]


@browser
async def test_offline_indicator_and_recovery(
    served: Served, page: Page, console_errors: ConsoleErrors
) -> None:
    console_errors.allow(NOT_SIGNED_IN)
    console_errors.allow(r"ERR_INTERNET_DISCONNECTED")
    await sign_in(page, served, "viewer@arena.test")
    status = tid(page, "conn-status")
    await expect(status).to_have_attribute("data-state", "connected")
    await page.context.set_offline(True)
    await expect(status).to_have_attribute("data-state", "offline")
    await expect(status).to_contain_text("Offline")
    await page.context.set_offline(False)
    await expect(status).to_have_attribute("data-state", "connected")


@browser
async def test_feed_keeps_500_lines_and_pauses_while_scrolled_up(
    served: Served, page: Page, console_errors: ConsoleErrors, screenshot: Screenshot
) -> None:
    console_errors.allow(NOT_SIGNED_IN)
    more = asyncio.Event()
    served.fake.scripts.append([*order_events(1, 520), wait(more), *order_events(521, 525)])
    await sign_in(page, served, "viewer@arena.test")
    lines = tid(page, "feed-line")
    await expect(lines.last).to_have_attribute("data-seq", "520")
    await expect(lines).to_have_count(500)
    await expect(lines.first).to_have_attribute("data-seq", "21")
    feed = tid(page, "feed")
    gap = "el => el.scrollHeight - el.scrollTop - el.clientHeight"
    assert await feed.evaluate(gap) <= 24  # following the newest line
    await expect(tid(page, "feed-jump")).to_be_hidden()

    await feed.evaluate("el => { el.scrollTop = 0; }")
    await expect(tid(page, "feed-jump")).to_be_visible()
    await expect(tid(page, "feed-paused")).to_be_visible()
    more.set()
    await expect(lines.last).to_have_attribute("data-seq", "525")
    await expect(tid(page, "feed-jump")).to_have_text("↓ Jump to latest (5 new)")
    await expect(lines).to_have_count(500)
    assert await feed.evaluate(gap) > 200  # the reader's place is kept
    await screenshot(page, "feed-paused")

    await tid(page, "feed-jump").click()
    await expect(tid(page, "feed-jump")).to_be_hidden()
    assert await feed.evaluate(gap) <= 24


@browser
async def test_narrow_window_is_one_column_without_horizontal_scroll(
    served: Served, page: Page, console_errors: ConsoleErrors, screenshot: Screenshot
) -> None:
    console_errors.allow(NOT_SIGNED_IN)
    await page.set_viewport_size({"width": 390, "height": 844})
    await sign_in(page, served, "trader@arena.test")
    await expect(tid(page, "price-row")).to_have_count(3)
    width = await page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
    assert width <= 0
    boxes = {}
    for name in ("prices-panel", "chart-panel", "order-ticket-panel", "feed-panel", "orders-panel"):
        box = await tid(page, name).bounding_box()
        assert box is not None, name
        boxes[name] = box
    xs = {round(b["x"]) for b in boxes.values()}
    assert len(xs) == 1, boxes  # one column
    ys = [boxes[n]["y"] for n in boxes]
    assert ys == sorted(ys)
    await screenshot(page, "narrow")
