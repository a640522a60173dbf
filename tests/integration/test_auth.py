"""Users, auth and the API's edges, through real HTTP on a real nats-server.

The R6 attack matrix is table-driven below.  R7: an autouse fixture captures
every log record (DEBUG, root logger, setup to teardown), every response body
and every SSE frame of each test, and at the end checks that no secret used in
the test (signing key, passwords, refresh tokens, password hashes) appears in
the logs or in an error body, and that passwords and the key appear in no body.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import logging
import re
import socket
import statistics
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
import pytest
import uvicorn
from fastapi import APIRouter, Depends, FastAPI

from rbot.api import usercli
from rbot.api.app import create_app
from rbot.api.passwords import FAST_ENV
from rbot.api.principal import Role
from rbot.api.ratelimit import limits_of
from rbot.api.security import (
    REFRESH_COOKIE,
    SESSION_COOKIE,
    Trader,
    Viewer,
    require_role,
)
from rbot.api.tokens import RefreshStore, SigningKeyError, TokenExpired
from rbot.api.users import UserStore, ensure_admin
from rbot.bus.config import Settings
from rbot.bus.connection import Bus
from tests.conftest import make_settings
from tests.natsd import NatsServer

TEST_KEY = "test-secret-key-0123456789abcdef-0123456789"
WALL_EPOCH = 1.8e9  # the harness's wall clock is WALL_EPOCH + h.now[0]
BASE = "http://testserver"


# -- R7: capture everything, check for secrets --------------------------------


# the test's own HTTP client logs response headers (Set-Cookie) at DEBUG: it is
# not part of the system under test, so its records are left out of the check
CLIENT_LOGGERS = ("httpcore", "httpx")


def _ours(record: logging.LogRecord) -> bool:
    return not record.name.startswith(CLIENT_LOGGERS)


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if not _ours(record):
            return
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        self.lines.append(f"{record.name} {text}")


@dataclass
class Leaks:
    """Secrets a test used, and everything it could have leaked them into."""

    secrets: set[str] = field(default_factory=lambda: {TEST_KEY})
    never_in_any_body: set[str] = field(default_factory=lambda: {TEST_KEY})
    bodies: list[tuple[int, str]] = field(default_factory=list)

    def password(self, pw: str) -> str:
        self.secrets.add(pw)
        self.never_in_any_body.add(pw)
        return pw

    def token(self, tok: str) -> str:
        self.secrets.add(tok)
        return tok


@pytest.fixture(autouse=True)
def leaks(caplog: pytest.LogCaptureFixture) -> Iterator[Leaks]:
    caplog.set_level(logging.DEBUG)
    handler = _Collect()
    root = logging.getLogger()
    old_level = root.level
    root.setLevel(logging.DEBUG)
    root.addHandler(handler)
    found = Leaks()
    try:
        yield found
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    logs = "\n".join(
        handler.lines + [r.getMessage() for r in caplog.get_records("call") if _ours(r)]
    )
    for secret in found.secrets:
        seen = _finder(secret)
        assert not seen(logs), "a secret reached the logs"
        for status, body in found.bodies:
            assert status < 400 or not seen(body), f"a secret in an error body ({status})"
    for secret in found.never_in_any_body:
        seen = _finder(secret)
        for _, body in found.bodies:
            assert not seen(body), "a password or the key in a response body"
    for _, body in found.bodies:
        assert "$argon2" not in body, "a password hash in a response body"
    assert "$argon2" not in logs


def _finder(secret: str) -> Callable[[str], bool]:
    """The secret as a whole token ("pass" is a secret, "password" is not a leak of it)."""
    pattern = re.compile(r"(?<![A-Za-z0-9_-])" + re.escape(secret) + r"(?![A-Za-z0-9_-])")
    return lambda text: pattern.search(text) is not None


# -- the app, in its lifespan, behind httpx --------------------------------------


@pytest.fixture(autouse=True)
def fast_argon(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FAST_ENV, "1")


@dataclass
class H:
    app: FastAPI
    client: httpx.AsyncClient
    settings: Settings
    leaks: Leaks
    now: list[float]

    def advance(self, seconds: float) -> None:
        self.now[0] += seconds

    def client_from(self, ip: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app, client=(ip, 40000))
        return httpx.AsyncClient(
            transport=transport, base_url=BASE, event_hooks={"response": [self._record]}
        )

    async def _record(self, response: httpx.Response) -> None:
        await response.aread()
        self.leaks.bodies.append((response.status_code, response.text))

    async def register(self, email: str, password: str, **extra: Any) -> httpx.Response:
        self.leaks.password(password)
        body = {"email": email, "password": password, **extra}
        return await self.client.post("/auth/register", json=body)

    async def login(self, email: str, password: str, **extra: Any) -> httpx.Response:
        self.leaks.password(password)
        r = await self.client.post(
            "/auth/login", json={"email": email, "password": password, **extra}
        )
        if r.status_code == 200 and "refresh_token" in r.json():
            self.leaks.token(r.json()["refresh_token"])
        return r

    async def user(self, email: str, password: str, role: Role = Role.VIEWER) -> dict[str, Any]:
        """A user of ``role`` (created by the store directly), logged in."""
        store = UserStore(self.app.state.ctx.bus)
        auth = self.app.state.ctx.extras["auth"]
        await store.create(email, await auth.passwords.hash(self.leaks.password(password)), role)
        r = await self.login(email, password)
        assert r.status_code == 200, r.text
        return dict(r.json())


@asynccontextmanager
async def running(settings: Settings, leaks: Leaks, app: FastAPI | None = None) -> AsyncIterator[H]:
    app = app or create_app(settings)
    async with app.router.lifespan_context(app):
        now = [1000.0]
        limits_of(app.state.ctx).clock = lambda: now[0]
        # KV-backed counters (login throttle, PIN) read the auth clock: wall time
        app.state.ctx.extras["auth"].clock = lambda: WALL_EPOCH + now[0]
        h = H(app, None, settings, leaks, now)  # type: ignore[arg-type]
        async with h.client_from("127.0.0.1") as client:
            h.client = client
            yield h


@pytest.fixture
async def h(settings: Settings, leaks: Leaks) -> AsyncIterator[H]:
    async with running(settings, leaks) as harness:
        yield harness


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_error(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"code", "message", "detail"}
    assert body["code"] == code, body
    return dict(body)


# -- the seed's quick start, registration -----------------------------------------


async def test_seed_quick_start_with_open_registration(
    nats_server: NatsServer, prefix: str, leaks: Leaks
) -> None:
    settings = make_settings(nats_server.url, prefix, rbot_open_registration="trader")
    async with running(settings, leaks) as h:
        h.client.headers["Host"] = "127.0.0.1:8787"  # loopback open mode checks the Host
        r = await h.register("trader@test", "pass")
        assert r.status_code == 201, r.text
        assert r.json()["role"] == "trader"
        r = await h.login("trader@test", "pass")
        assert r.status_code == 200
        body = r.json()
        assert set(body) == {"access_token", "refresh_token", "token_type", "expires_in"}
        assert body["token_type"] == "bearer" and body["expires_in"] == 1800
        me = await h.client.get("/auth/me", headers=bearer(body["access_token"]))
        assert me.json() == {"sub": me.json()["sub"], "email": "trader@test", "role": "trader"}
        # even open registration does not hand out admin
        r = await h.register("boss@test", "passpass", role="admin")
        assert_error(r, 403, "forbidden")


async def test_registration_defaults_to_viewer(h: H) -> None:
    r = await h.register("trader@test", "pass")
    assert_error(r, 422, "weak_password")  # "pass" is only for open/dev mode
    r = await h.register("Someone@Example.com", "long enough pw")
    assert r.status_code == 201 and r.json()["role"] == "viewer"
    assert r.json()["email"] == "someone@example.com"
    assert_error(await h.register("someone@example.COM", "another pw!"), 409, "email_taken")
    assert_error(await h.register("x@y", "long enough pw", role="trader"), 403, "forbidden")
    assert_error(await h.register("not-an-email", "long enough pw"), 422, "invalid_email")


async def test_admin_bootstrap_and_admin_registration(h: H, leaks: Leaks) -> None:
    bus = h.app.state.ctx.bus
    created = await ensure_admin(bus)
    assert created is not None
    email, password = created
    leaks.password(password)
    assert email == "admin@localhost"
    assert await ensure_admin(bus) is None  # once only
    r = await h.login(email, password)
    admin = r.json()["access_token"]
    r = await h.client.post(
        "/auth/register",
        json={"email": "t@desk", "password": leaks.password("trader pw 1"), "role": "trader"},
        headers=bearer(admin),
    )
    assert r.status_code == 201 and r.json()["role"] == "trader"


# -- the access-token attack matrix (R6) ---------------------------------------------


def _b64(obj: dict[str, Any]) -> str:
    raw = json.dumps(obj, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _forge(good: str, alter: dict[str, Any], key: str = TEST_KEY, **kw: Any) -> str:
    claims = jwt.decode(good, options={"verify_signature": False})
    claims.update(alter)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, key, algorithm=kw.get("alg", "HS256"), headers={"typ": "at+jwt"})


def _alg_none(good: str) -> str:
    claims = jwt.decode(good, options={"verify_signature": False})
    return _b64({"alg": "none", "typ": "at+jwt"}) + "." + _b64(claims) + "."


def _tamper_role(good: str) -> str:
    head, payload, sig = good.split(".")
    claims = jwt.decode(good, options={"verify_signature": False})
    claims["role"] = "admin"
    return ".".join([head, _b64(claims), sig])


MATRIX: list[tuple[str, Any, int, str]] = [
    ("alg_none", _alg_none, 401, "token_invalid"),
    ("wrong_key", lambda t, r: _forge(t, {}, key="another-key-" + "z" * 40), 401, "token_invalid"),
    ("expired", lambda t, r: _forge(t, {"exp": int(time.time()) - 120}), 401, "token_expired"),
    ("missing_exp", lambda t, r: _forge(t, {"exp": None}), 401, "token_invalid"),
    ("missing_sid", lambda t, r: _forge(t, {"sid": None}), 401, "token_invalid"),
    ("wrong_aud", lambda t, r: _forge(t, {"aud": "other-api"}), 401, "token_invalid"),
    ("wrong_iss", lambda t, r: _forge(t, {"iss": "other-issuer"}), 401, "token_invalid"),
    ("tampered_role", _tamper_role, 401, "token_invalid"),
    ("refresh_as_access", lambda t, r: r, 401, "token_invalid"),
    ("typ_refresh", lambda t, r: _forge(t, {"typ": "refresh"}), 401, "token_invalid"),
    ("stale_generation", lambda t, r: _forge(t, {"gen": 7}), 401, "token_invalid"),
    ("unknown_session", lambda t, r: _forge(t, {"sid": "f" * 32}), 401, "token_invalid"),
    ("unknown_user", lambda t, r: _forge(t, {"sub": "u_" + "0" * 32}), 401, "token_invalid"),
    ("no_credentials", None, 401, "unauthorized"),
    ("basic_scheme", "basic", 401, "token_invalid"),
    ("token_in_url", "query", 401, "token_in_url"),
]


@pytest.mark.parametrize(("case", "make", "status", "code"), MATRIX, ids=[m[0] for m in MATRIX])
async def test_access_token_matrix(h: H, case: str, make: Any, status: int, code: str) -> None:
    tokens = await h.user("victim@test", "victim pass 1")
    good, refresh = tokens["access_token"], tokens["refresh_token"]
    assert (await h.client.get("/auth/me", headers=bearer(good))).status_code == 200
    url, headers = "/auth/me", {}
    if make is None:
        pass
    elif make == "basic":
        headers = {"Authorization": "Basic dXNlcjpwYXNz"}
    elif make == "query":
        url = f"/auth/me?access_token={good}"
    elif make in (_alg_none, _tamper_role):
        headers = bearer(make(good))
    else:
        headers = bearer(make(good, refresh))
    r = await h.client.get(url, headers=headers)
    assert_error(r, status, code)
    assert r.headers["www-authenticate"].startswith('Bearer realm="rbot-arena"')


async def test_access_token_is_not_a_refresh_token(h: H) -> None:
    tokens = await h.user("v@test", "viewer pass 1")
    r = await h.client.post("/auth/refresh", json={"refresh_token": tokens["access_token"]})
    assert_error(r, 401, "token_invalid")
    r = await h.client.post("/auth/refresh", json={})
    assert_error(r, 401, "unauthorized")


# -- roles -------------------------------------------------------------------------


def _trader_only_router() -> APIRouter:
    """A test-only trader route (the order routes land with a later issue)."""
    router = APIRouter(prefix="/test-trader", dependencies=[Depends(require_role(Role.TRADER))])

    @router.post("/orders")
    async def place(trader: Trader) -> dict[str, str]:
        return {"placed_by": trader.sub}

    @router.get("/viewer")
    async def look(viewer: Viewer) -> dict[str, str]:  # router needs trader anyway
        return {"role": viewer.role.value}

    return router


async def test_roles_on_routes(settings: Settings, leaks: Leaks) -> None:
    app = create_app(settings)
    app.include_router(_trader_only_router())
    async with running(settings, leaks, app) as h:
        viewer = (await h.user("viewer@test", "viewer pass 1"))["access_token"]
        trader = (await h.user("trader@test", "trader pass 1", Role.TRADER))["access_token"]
        admin = (await h.user("admin@test", "admin pass 1!", Role.ADMIN))["access_token"]
        assert_error(await h.client.post("/test-trader/orders"), 401, "unauthorized")
        r = await h.client.post("/test-trader/orders", headers=bearer(viewer))
        assert_error(r, 403, "forbidden")  # viewer placing an order
        r = await h.client.post("/test-trader/orders", headers=bearer(trader))
        assert r.status_code == 200 and r.json()["placed_by"].startswith("u_")
        assert (
            await h.client.post("/test-trader/orders", headers=bearer(admin))
        ).status_code == 200
        for tok in (viewer, trader):  # trader (and viewer) on admin routes
            assert_error(await h.client.get("/admin/users", headers=bearer(tok)), 403, "forbidden")
        r = await h.client.get("/admin/users", headers=bearer(admin))
        assert r.status_code == 200
        listed = {u["email"]: u for u in r.json()}
        assert set(listed) == {"viewer@test", "trader@test", "admin@test"}
        assert set(listed["trader@test"]) == {
            "sub",
            "email",
            "role",
            "disabled",
            "created",
            "updated",
        }


async def test_admin_changes_roles_and_disables(h: H) -> None:
    admin = (await h.user("admin@test", "admin pass 1!", Role.ADMIN))["access_token"]
    tokens = await h.user("t@test", "trader pass 1", Role.TRADER)
    me = (await h.client.get("/auth/me", headers=bearer(tokens["access_token"]))).json()
    sub = me["sub"]
    r = await h.client.post(
        f"/admin/users/{sub}/role", json={"role": "viewer"}, headers=bearer(admin)
    )
    assert r.status_code == 200 and r.json()["role"] == "viewer"
    # the stored role applies at once, even to a token issued as trader
    me = (await h.client.get("/auth/me", headers=bearer(tokens["access_token"]))).json()
    assert me["role"] == "viewer"
    r = await h.client.post(f"/admin/users/{sub}/disable", headers=bearer(admin))
    assert r.status_code == 200 and r.json()["disabled"] is True
    assert (
        await h.client.get("/auth/me", headers=bearer(tokens["access_token"]))
    ).status_code == 401
    r = await h.client.post("/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert_error(r, 401, "token_invalid")
    assert_error(await h.login("t@test", "trader pass 1"), 403, "account_disabled")
    r = await h.client.post(f"/admin/users/{sub}/enable", headers=bearer(admin))
    assert r.status_code == 200 and r.json()["disabled"] is False
    assert (await h.login("t@test", "trader pass 1")).status_code == 200
    # the last admin cannot be demoted or disabled over HTTP
    admin_sub = (await h.client.get("/auth/me", headers=bearer(admin))).json()["sub"]
    r = await h.client.post(f"/admin/users/{admin_sub}/disable", headers=bearer(admin))
    assert_error(r, 409, "last_admin")
    r = await h.client.post(
        f"/admin/users/{admin_sub}/role", json={"role": "trader"}, headers=bearer(admin)
    )
    assert_error(r, 409, "last_admin")
    assert_error(
        await h.client.post("/admin/users/u_nobody/disable", headers=bearer(admin)),
        404,
        "user_not_found",
    )
    r = await h.client.post("/admin/users/a.b.%3E/disable", headers=bearer(admin))
    assert_error(r, 422, "validation_error")


# -- refresh tokens ------------------------------------------------------------------


async def _refresh(h: H, token: str) -> httpx.Response:
    r = await h.client.post("/auth/refresh", json={"refresh_token": token})
    if r.status_code == 200:
        h.leaks.token(r.json()["refresh_token"])
    return r


async def test_refresh_rotates_and_reuse_revokes_the_family(h: H) -> None:
    first = await h.user("r@test", "refresh pass 1")
    r = await _refresh(h, first["refresh_token"])
    assert r.status_code == 200
    second = r.json()
    assert set(second) == {"access_token", "refresh_token", "token_type", "expires_in"}
    assert second["refresh_token"] != first["refresh_token"]
    assert (
        await h.client.get("/auth/me", headers=bearer(second["access_token"]))
    ).status_code == 200
    # the old one again: reuse -> the whole family is revoked
    assert_error(await _refresh(h, first["refresh_token"]), 401, "token_invalid")
    assert_error(await _refresh(h, second["refresh_token"]), 401, "token_invalid")
    r = await h.client.get("/auth/me", headers=bearer(second["access_token"]))
    assert_error(r, 401, "token_invalid")
    # another session of the same user is untouched
    r = await h.login("r@test", "refresh pass 1")
    assert (
        await h.client.get("/auth/me", headers=bearer(r.json()["access_token"]))
    ).status_code == 200


async def test_concurrent_double_refresh_exactly_one_wins(h: H) -> None:
    tokens = await h.user("race@test", "race pass 1")
    results = await asyncio.gather(
        _refresh(h, tokens["refresh_token"]), _refresh(h, tokens["refresh_token"])
    )
    assert sorted(r.status_code for r in results) == [200, 401]
    loser = next(r for r in results if r.status_code == 401)
    assert loser.json()["code"] == "token_invalid"
    # the race is a reuse: the family is revoked, the winner signs in again (RFC 9700 4.14.2)
    winner = next(r for r in results if r.status_code == 200).json()
    assert_error(await _refresh(h, winner["refresh_token"]), 401, "token_invalid")


async def test_refresh_token_expires(bus: Bus) -> None:
    now = [1_000_000.0]
    store = RefreshStore(bus, ttl=60, clock=lambda: now[0])
    raw, family = await store.start("u_" + "1" * 32, 0)
    now[0] += 61
    with pytest.raises(TokenExpired):
        await store.consume(raw)
    assert await store.active(family, "u_" + "1" * 32)  # the session itself still stands
    assert not await store.active(family, "u_" + "2" * 32)  # not someone else's


# -- logout, password change ---------------------------------------------------------


async def test_logout_revokes_access_and_refresh(h: H) -> None:
    tokens = await h.user("out@test", "logout pass 1")
    r = await h.client.post("/auth/logout", headers=bearer(tokens["access_token"]))
    assert r.status_code == 200 and r.json() == {"ok": True}
    assert_error(
        await h.client.get("/auth/me", headers=bearer(tokens["access_token"])), 401, "token_invalid"
    )
    assert_error(await _refresh(h, tokens["refresh_token"]), 401, "token_invalid")
    # logout with only the refresh token (access already gone)
    again = (await h.login("out@test", "logout pass 1")).json()
    r = await h.client.post("/auth/logout", json={"refresh_token": again["refresh_token"]})
    assert r.status_code == 200
    assert_error(
        await h.client.get("/auth/me", headers=bearer(again["access_token"])), 401, "token_invalid"
    )
    assert_error(await h.client.post("/auth/logout"), 401, "unauthorized")


async def test_password_change_revokes_every_session(h: H) -> None:
    one = await h.user("pw@test", "old password 1")
    two = (await h.login("pw@test", "old password 1")).json()
    new_pw = h.leaks.password("new password 2")
    r = await h.client.post(
        "/auth/password",
        json={"old_password": "wrong password", "new_password": new_pw},
        headers=bearer(one["access_token"]),
    )
    assert_error(r, 403, "invalid_credentials")
    r = await h.client.post(
        "/auth/password",
        json={"old_password": "old password 1", "new_password": new_pw},
        headers=bearer(one["access_token"]),
    )
    assert r.status_code == 200, r.text
    fresh = r.json()
    h.leaks.token(fresh["refresh_token"])
    for old in (one, two):
        r = await h.client.get("/auth/me", headers=bearer(old["access_token"]))
        assert_error(r, 401, "token_invalid")
        assert_error(await _refresh(h, old["refresh_token"]), 401, "token_invalid")
    assert (
        await h.client.get("/auth/me", headers=bearer(fresh["access_token"]))
    ).status_code == 200
    assert (await _refresh(h, fresh["refresh_token"])).status_code == 200
    assert_error(await h.login("pw@test", "old password 1"), 401, "invalid_credentials")
    assert (await h.login("pw@test", new_pw)).status_code == 200


# -- cookies (the dashboard) --------------------------------------------------------


async def test_cookie_session(h: H) -> None:
    await h.user("dash@test", "dash pass 11")
    r = await h.login("dash@test", "dash pass 11", cookie=True)
    assert r.status_code == 200
    assert "access_token" not in r.json() and "refresh_token" not in r.json()
    set_cookies = r.headers.get_list("set-cookie")
    session = next(c for c in set_cookies if c.startswith(SESSION_COOKIE + "="))
    refresh = next(c for c in set_cookies if c.startswith(REFRESH_COOKIE + "="))
    for c in (session, refresh):
        low = c.lower()
        assert "httponly" in low and "samesite=strict" in low and "secure" not in low
    assert "path=/;" in session.lower() + ";" and "path=/auth" in refresh.lower()
    h.leaks.token(h.client.cookies[REFRESH_COOKIE])
    me = await h.client.get("/auth/me")
    assert me.status_code == 200 and me.json()["email"] == "dash@test"
    # a cross-site write with the cookie is refused; a same-origin one passes the check
    r = await h.client.post(
        "/auth/password",
        json={"old_password": "x", "new_password": "y" * 8},
        headers={"Origin": "http://evil.example"},
    )
    assert_error(r, 403, "cross_site")
    # refresh from the cookie: new cookies, no tokens in the body
    old_refresh = h.client.cookies[REFRESH_COOKIE]
    r = await h.client.post("/auth/refresh")
    assert r.status_code == 200 and "refresh_token" not in r.json()
    assert h.client.cookies[REFRESH_COOKIE] != old_refresh
    h.leaks.token(h.client.cookies[REFRESH_COOKIE])
    r = await h.client.post("/auth/logout")
    assert r.status_code == 200
    assert SESSION_COOKIE not in h.client.cookies
    assert_error(await h.client.get("/auth/me"), 401, "unauthorized")


async def test_cookie_secure_flag(nats_server: NatsServer, prefix: str, leaks: Leaks) -> None:
    settings = make_settings(nats_server.url, prefix, rbot_cookie_secure=True)
    async with running(settings, leaks) as h:
        await h.user("s@test", "secure pass 1")
        r = await h.client.post(
            "/auth/login",
            json={"email": "s@test", "password": "secure pass 1"},
            headers={"X-Session": "cookie"},
        )
        for c in r.headers.get_list("set-cookie"):
            h.leaks.token(c.split(";")[0].split("=", 1)[1])
            assert "; secure" in c.lower()


# -- brute force and limits ---------------------------------------------------------


async def test_login_brute_force_is_slowed_without_locking_the_owner_out(h: H) -> None:
    await h.user("bf@test", "the real pass")
    h.leaks.password("guess")
    unknown = await h.client.post("/auth/login", json={"email": "ghost@test", "password": "guess"})
    waits = []
    async with h.client_from("10.9.9.9") as stranger:
        for _ in range(12):
            r = await stranger.post("/auth/login", json={"email": "bf@test", "password": "guess"})
            if r.status_code == 429:
                body = assert_error(r, 429, "rate_limited")
                wait = int(r.headers["retry-after"])
                assert body["detail"]["retry_after"] == wait
                waits.append(wait)
                h.advance(wait)
                r = await stranger.post(
                    "/auth/login", json={"email": "bf@test", "password": "guess"}
                )
            assert_error(r, 401, "invalid_credentials")
            assert r.json() == unknown.json()  # an unknown email answers the same
        assert waits == sorted(waits) and waits[-1] >= 64  # progressive: 1, 2, 4 ...
        # throttled, even the right password waits: no oracle for the guesser
        r = await stranger.post(
            "/auth/login", json={"email": "bf@test", "password": "the real pass"}
        )
        assert_error(r, 429, "rate_limited")
        # the owner, from another client, is not locked out
        assert (await h.login("bf@test", "the real pass")).status_code == 200


async def test_password_spraying_from_one_address_is_limited(h: H) -> None:
    h.leaks.password("guess")
    statuses = []
    for i in range(21):
        r = await h.client.post("/auth/login", json={"email": f"u{i}@test", "password": "guess"})
        statuses.append(r.status_code)
    assert statuses == [401] * 20 + [429]
    async with h.client_from("10.1.2.3") as other:  # another address is not affected
        r = await other.post("/auth/login", json={"email": "u0@test", "password": "guess"})
        assert_error(r, 401, "invalid_credentials")


async def test_self_registration_is_limited_per_address(h: H) -> None:
    for i in range(10):
        assert (await h.register(f"n{i}@test", "new user pass")).status_code == 201
    r = await h.register("n10@test", "new user pass")
    assert_error(r, 429, "rate_limited")
    assert "retry-after" in r.headers


# -- the API's edges ------------------------------------------------------------------


async def test_sse_without_credentials_is_refused(h: H) -> None:
    for path in ("/events", "/arena/events"):
        r = await h.client.get(path)
        assert_error(r, 401, "unauthorized")
        assert r.headers["www-authenticate"].startswith("Bearer")
    r = await h.client.get("/events", headers=bearer("not-a-token"))
    assert_error(r, 401, "token_invalid")


async def test_cors_closed_by_default(h: H) -> None:
    r = await h.client.options(
        "/auth/login",
        headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in r.headers


async def test_cors_allow_list(nats_server: NatsServer, prefix: str, leaks: Leaks) -> None:
    settings = make_settings(nats_server.url, prefix, rbot_cors_origins="http://dash.example:8080")
    async with running(settings, leaks) as h:
        pre = {"Access-Control-Request-Method": "POST"}
        r = await h.client.options("/auth/login", headers={"Origin": "http://evil.example", **pre})
        assert "access-control-allow-origin" not in r.headers
        r = await h.client.options(
            "/auth/login", headers={"Origin": "http://dash.example:8080", **pre}
        )
        assert r.headers["access-control-allow-origin"] == "http://dash.example:8080"


async def test_oversized_body_is_413_json(h: H) -> None:
    big = {"email": "a@b", "password": "p" * 20000}
    r = await h.client.post("/auth/login", json=big)
    assert_error(r, 413, "payload_too_large")


async def test_unknown_fields_are_422(h: H) -> None:
    h.leaks.password("whatever pw")
    r = await h.client.post(
        "/auth/login", json={"email": "a@b", "password": "whatever pw", "admin": True}
    )
    body = assert_error(r, 422, "unknown_field")
    assert body["detail"][0]["loc"] == ["body", "admin"]
    r = await h.client.post(
        "/auth/register", json={"email": "a@b", "password": "whatever pw", "is_admin": True}
    )
    assert_error(r, 422, "unknown_field")
    # a lone surrogate is valid JSON but not text: a 422, never a 500
    for path, raw in (
        ("/auth/login", b'{"email": "a@b", "password": "\\ud800 whatever"}'),
        ("/auth/register", b'{"email": "\\ud800@b", "password": "whatever pw"}'),
        ("/auth/refresh", b'{"refresh_token": "\\ud800"}'),
    ):
        r = await h.client.post(path, content=raw, headers={"Content-Type": "application/json"})
        assert_error(r, 422, "validation_error")


# -- durability, startup, configuration --------------------------------------------


async def test_users_survive_a_new_app_instance(settings: Settings, leaks: Leaks) -> None:
    async with running(settings, leaks) as h:
        tokens = await h.user("keep@test", "durable pass 1", Role.TRADER)
    async with running(settings, leaks) as h2:  # a new process on the same server
        r = await h2.client.get("/auth/me", headers=bearer(tokens["access_token"]))
        assert r.status_code == 200 and r.json()["role"] == "trader"
        assert (await h2.login("keep@test", "durable pass 1")).status_code == 200
        assert (await _refresh(h2, tokens["refresh_token"])).status_code == 200


def test_missing_or_short_key_refuses_to_start(nats_server: NatsServer, prefix: str) -> None:
    for key in (None, "too-short"):
        settings = make_settings(nats_server.url, prefix, arena_secret_key=key)
        with pytest.raises(SigningKeyError, match="ARENA_SECRET_KEY"):
            create_app(settings)


async def test_dev_mode_runs_with_a_throwaway_key(
    nats_server: NatsServer, prefix: str, leaks: Leaks, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(nats_server.url, prefix, arena_secret_key=None, rbot_dev=True)
    async with running(settings, leaks) as h:
        assert "per-process key" in caplog.text
        assert (await h.register("dev@test", "pass")).status_code == 201  # short ok in dev
        assert (await h.login("dev@test", "pass")).status_code == 200


def test_settings_repr_masks_secrets(settings: Settings) -> None:
    s = make_settings(
        settings.nats_url or "", "tx", live_pin="841921", oanda_practice_token="tok-xyz"
    )
    for text in (repr(s), str(s), s.model_dump_json()):
        assert TEST_KEY not in text and "841921" not in text and "tok-xyz" not in text


async def test_rehash_on_login_and_real_cost_latency(
    settings: Settings, leaks: Leaks, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running(settings, leaks) as h:  # RBOT_ARGON2_FAST=1: a cheap hash
        await h.user("old@test", "legacy pass 1")
        store = UserStore(h.app.state.ctx.bus)
        before = await store.by_email("old@test")
        assert before is not None and "m=1024" in before.password_hash
    monkeypatch.delenv(FAST_ENV)
    async with running(settings, leaks) as h:  # production parameters
        assert (await h.login("old@test", "legacy pass 1")).status_code == 200
        after = await UserStore(h.app.state.ctx.bus).by_email("old@test")
        assert after is not None and after.password_hash.startswith(
            "$argon2id$v=19$m=19456,t=2,p=1$"
        )
        assert after.token_gen == before.token_gen  # a rehash is not a credential change
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            assert (await h.login("old@test", "legacy pass 1")).status_code == 200
            times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        await h.client.post(
            "/auth/login", json={"email": "nobody@test", "password": "legacy pass 1"}
        )
        unknown = time.perf_counter() - t0
        print(
            f"\nlogin with argon2id m=19456 t=2 p=1: p50 {statistics.median(times) * 1000:.1f} ms,"
            f" max {max(times) * 1000:.1f} ms; unknown email {unknown * 1000:.1f} ms"
        )


# -- SSE through a real server -------------------------------------------------------


@asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[str]:
    """uvicorn on a socket bound (and listening) before it starts: no port race, no wait."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, lifespan="on", access_log=False))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    base = f"http://127.0.0.1:{port}"
    try:
        # the first answer comes once the lifespan has started (the socket queues it)
        async with asyncio.timeout(20), httpx.AsyncClient(base_url=base) as probe:
            assert (await probe.get("/health")).status_code == 200
        yield base
    finally:
        server.should_exit = True
        await task
        sock.close()


async def _first_data_id(client: httpx.AsyncClient, url: str, leaks: Leaks, **kw: Any) -> int:
    async with asyncio.timeout(10), client.stream("GET", url, **kw) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        async for line in r.aiter_lines():
            leaks.bodies.append((200, line))
            if line.startswith("id: "):
                return int(line[4:])
    raise AssertionError("stream ended")


async def test_sse_needs_credentials_and_filters_by_owner(
    settings: Settings, leaks: Leaks, bus: Bus
) -> None:
    app = create_app(settings)
    async with serving(app) as base, httpx.AsyncClient(base_url=base) as client:
        users = UserStore(app.state.ctx.bus)
        auth = app.state.ctx.extras["auth"]
        for email, role in (
            ("a@test", Role.TRADER),
            ("b@test", Role.TRADER),
            ("boss@test", Role.ADMIN),
        ):
            await users.create(
                email, await auth.passwords.hash(leaks.password(email + " pw")), role
            )
        subs = {e: (await users.by_email(e)).id for e in ("a@test", "b@test")}  # type: ignore[union-attr]
        subject = bus.subjects.order_event("oanda", "EUR_USD", "oco_placed")
        for owner in ("b@test", "a@test"):  # stream seq 1 is b's, seq 2 is a's
            env = {
                "id": owner,
                "source": "t",
                "type": "oco_placed",
                "payload": {"user": subs[owner]},
            }
            await bus.js.publish(subject, json.dumps(env).encode())
        r = await client.get("/events")
        assert r.status_code == 401 and r.json()["code"] == "unauthorized"
        leaks.bodies.append((r.status_code, r.text))
        login = await client.post("/auth/login", json={"email": "a@test", "password": "a@test pw"})
        a_tok = login.json()
        leaks.token(a_tok["refresh_token"])
        hdr = {"Last-Event-ID": "0", **bearer(a_tok["access_token"])}
        assert await _first_data_id(client, "/events", leaks, headers=hdr) == 2  # b's is hidden
        r = await client.post(
            "/auth/login", json={"email": "boss@test", "password": "boss@test pw", "cookie": True}
        )
        assert r.status_code == 200
        cookie = {SESSION_COOKIE: r.cookies[SESSION_COOKIE]}
        leaks.token(r.cookies[REFRESH_COOKIE])
        # the dashboard's way: the session cookie, no header; admins see everything
        async with httpx.AsyncClient(base_url=base, cookies=cookie) as dash:
            assert await _first_data_id(dash, "/events", leaks, headers={"Last-Event-ID": "0"}) == 1


# -- the CLI -------------------------------------------------------------------------


async def test_rbot_user_commands(
    settings: Settings,
    bus: Bus,
    leaks: Leaks,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = argparse.ArgumentParser()
    usercli.add_parser(parser.add_subparsers(dest="cmd"))

    async def cli(*argv: str, stdin: str = "") -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        code = await usercli.run(parser.parse_args(["user", *argv]), settings)
        out, err = capsys.readouterr()
        return code, out, err

    pw = leaks.password("cli password 1")
    code, out, _ = await cli("add", "Ops@Desk", "--role", "trader", stdin=pw + "\n")
    assert code == 0 and "ops@desk" in out and "trader" in out and pw not in out
    code, _, err = await cli("add", "ops@desk", stdin=pw + "\n")
    assert code == 1 and "already registered" in err
    code, _, err = await cli("add", "weak@desk", stdin="short\n")
    assert code == 1 and "at least 8" in err
    code, out, _ = await cli("role", "ops@desk", "admin")
    assert code == 0 and "admin" in out
    code, out, _ = await cli("disable", "ops@desk")
    assert code == 0 and "disabled" in out
    code, out, _ = await cli("list")
    assert code == 0 and "ops@desk" in out and "$argon2" not in out
    code, _, err = await cli("role", "ghost@desk", "viewer")
    assert code == 1 and "no user" in err
    user = await UserStore(bus).by_email("ops@desk")
    assert user is not None and user.role is Role.ADMIN and user.disabled
