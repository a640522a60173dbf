"""The HTTP edges (issue 11): chunked 413, X-Request-ID, Host allow-list, admin
passwords, example secrets.  Real app, real nats-server, the R7 leak check."""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import APIRouter

from rbot.api import usercli
from rbot.api.app import create_app
from rbot.api.principal import Role
from rbot.api.tokens import SigningKeyError
from rbot.api.weaksecrets import weakness
from rbot.bus.config import Settings
from tests.conftest import make_settings
from tests.integration import test_auth as kit
from tests.integration.test_auth import H, Leaks, assert_error, bearer, running
from tests.natsd import NatsServer

# the auth tests' autouse fixtures: the R7 leak check and cheap argon2
leaks = kit.leaks
fast_argon = kit.fast_argon


@pytest.fixture
async def h(settings: Settings, leaks: Leaks) -> AsyncIterator[H]:
    async with running(settings, leaks) as harness:
        yield harness


# -- 413 for chunked bodies -----------------------------------------------------------


async def test_chunked_body_over_the_limit_is_413(h: H) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"email": "a@b", "password": "'
        for _ in range(40):  # 40 KiB, no Content-Length: Transfer-Encoding chunked
            yield b"p" * 1024
        yield b'"}'

    r = await h.client.post(
        "/auth/login", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert "content-length" not in r.request.headers
    assert_error(r, 413, "payload_too_large")

    async def small() -> AsyncIterator[bytes]:
        yield b'{"email": "a@b", '
        yield b'"password": "whatever pw"}'

    h.leaks.password("whatever pw")
    r = await h.client.post(
        "/auth/login", content=small(), headers={"Content-Type": "application/json"}
    )
    assert_error(r, 401, "invalid_credentials")  # under the limit: read as usual


# -- X-Request-ID ---------------------------------------------------------------------


def _boom_router() -> APIRouter:
    router = APIRouter()

    @router.get("/test-boom")
    async def boom() -> None:
        raise RuntimeError("boom")

    return router


@pytest.mark.parametrize(
    "sent",
    ["<script>alert(1)</script>", "a" * 65, "two words", "x\u00e9", ""],
    ids=["markup", "too-long", "space", "latin1", "empty"],
)
async def test_request_id_is_validated_or_replaced(
    settings: Settings,
    leaks: Leaks,
    sent: str,
) -> None:
    app = create_app(settings)
    app.include_router(_boom_router())
    async with running(settings, leaks, app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            hdr = {"X-Request-ID": sent.encode("latin-1")}  # type: ignore[dict-item]
            r = await c.get("/test-boom", headers=hdr)
            assert_error(r, 500, "internal_error")
            rid = r.json()["detail"]["request_id"]
            assert rid != sent and len(rid) == 32 and rid.isalnum()
            assert r.headers["x-request-id"] == rid
            assert sent not in r.text or not sent
            ok = await c.get("/health", headers=hdr)
            assert ok.headers["x-request-id"] not in (sent, "")
            # a sane one is kept, on errors too
            r = await c.get("/test-boom", headers={"X-Request-ID": "trace-1.A_b"})
            assert r.json()["detail"]["request_id"] == "trace-1.A_b"
            assert r.headers["x-request-id"] == "trace-1.A_b"


# -- Host allow-list in loopback open mode ----------------------------------------------


async def test_loopback_open_mode_refuses_foreign_hosts(
    nats_server: NatsServer,
    prefix: str,
    leaks: Leaks,
) -> None:
    settings = make_settings(nats_server.url, prefix, rbot_open_registration="trader")
    async with running(settings, leaks) as h:
        transport = httpx.ASGITransport(app=h.app, client=("127.0.0.1", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8787") as c:
            body = {"email": "dns@test", "password": leaks.password("pass")}
            r = await c.post("/auth/register", json=body, headers={"Host": "evil.example:8787"})
            assert_error(r, 400, "host_not_allowed")
            r = await c.get("/health", headers={"Host": "evil.example"})
            assert_error(r, 400, "host_not_allowed")
            r = await c.post("/auth/register", json=body)
            assert r.status_code == 201 and r.json()["role"] == "trader"
            for host in ("localhost:8787", "LOCALHOST", "[::1]:8787", "127.0.0.1"):
                assert (await c.get("/health", headers={"Host": host})).status_code == 200


async def test_host_is_not_checked_outside_loopback_open_mode(h: H) -> None:
    r = await h.client.get("/health", headers={"Host": "arena.example.com"})
    assert r.status_code == 200  # a reverse proxy's name: allowed (viewer registration)


# -- admin password policy --------------------------------------------------------------


ADMIN_WEAK = [
    ("short admin", "too short"),
    ("password1234", "too common"),
    ("QWERTY123456", "too common, any case"),
    ("longadminname", "the email's local part"),
    ("longadminname@test", "the email"),
]


async def test_admins_need_a_real_password(h: H) -> None:
    admin = (await h.user("boss@test", "a real admin pw 1", Role.ADMIN))["access_token"]
    for pw, why in ADMIN_WEAK:
        r = await h.client.post(
            "/auth/register",
            # (not registered as a leak: the email-shaped ones are in the 201 below)
            json={"email": "longadminname@test", "password": pw, "role": "admin"},
            headers=bearer(admin),
        )
        assert_error(r, 422, "weak_password"), why
    # the same passwords are fine for a trader (8+ outside local mode)
    r = await h.client.post(
        "/auth/register",
        json={"email": "longadminname@test", "password": "password1234", "role": "trader"},
        headers=bearer(admin),
    )
    assert r.status_code == 201, r.text
    r = await h.client.post(
        "/auth/password",
        json={"old_password": "a real admin pw 1", "new_password": h.leaks.password("boss1234")},
        headers=bearer(admin),
    )
    assert_error(r, 422, "weak_password")


async def test_admin_password_policy_in_local_mode_and_cli(
    nats_server: NatsServer,
    prefix: str,
    leaks: Leaks,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = make_settings(nats_server.url, prefix, rbot_open_registration="trader")
    parser = argparse.ArgumentParser()
    usercli.add_parser(parser.add_subparsers(dest="cmd"))

    async def cli(*argv: str, stdin: str) -> tuple[int, str]:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        code = await usercli.run(parser.parse_args(["user", *argv]), settings)
        return code, capsys.readouterr().err

    pw = leaks.password("pass")  # the seed's: fine for a trader in local mode ...
    assert (await cli("add", "t@desk", "--role", "trader", stdin=pw + "\n"))[0] == 0
    code, err = await cli("add", "root@desk", "--role", "admin", stdin=pw + "\n")
    assert code == 1 and "at least 12" in err  # ... never for an admin
    code, err = await cli("add", "root@desk", "--role", "admin", stdin="password1234\n")
    assert code == 1 and "too common" in err
    good = leaks.password("root pass phrase 7")
    assert (await cli("add", "root@desk", "--role", "admin", stdin=good + "\n"))[0] == 0


# -- example secrets ------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "change-me-to-48-random-bytes-base64",  # deploy/systemd/rbot.env.example
        "CHANGE_ME_please_0123456789abcdefghij",
        "replace-me-with-a-long-random-secret-value",
        "your-secret-key-here-0123456789abcdefghijk",
        "x" * 48,
        "abababababababababababababababababab",
    ],
)
def test_example_secret_keys_refuse_to_start(
    nats_server: NatsServer, prefix: str, key: str
) -> None:
    settings = make_settings(nats_server.url, prefix, arena_secret_key=key)
    with pytest.raises(SigningKeyError, match="ARENA_SECRET_KEY is refused") as info:
        create_app(settings)
    assert key not in str(info.value)  # the message never repeats the key


def test_the_shipped_example_is_refused() -> None:
    from pathlib import Path

    env = Path(__file__).parents[2] / "deploy" / "systemd" / "rbot.env.example"
    line = next(x for x in env.read_text().splitlines() if x.startswith("ARENA_SECRET_KEY="))
    assert weakness(line.split("=", 1)[1]) is not None
    assert weakness("Zr3kq0m6bT1vW9xY2sLp8dFh4gJc5nAe7uIo") is None


# -- login throttling across replicas ---------------------------------------------------


async def test_login_throttle_holds_across_replicas_and_restarts(
    settings: Settings, leaks: Leaks
) -> None:
    guess = {"email": "many@test", "password": leaks.password("guess")}
    async with running(settings, leaks) as one, running(settings, leaks) as two:
        two.app.state.ctx.extras["auth"].clock = one.app.state.ctx.extras["auth"].clock
        await one.user("many@test", "many pass 1")
        async with one.client_from("10.7.7.7") as a, two.client_from("10.7.7.7") as b:
            statuses = []
            for i in range(6):  # alternate replicas: the counter is shared in KV
                r = await (a if i % 2 else b).post("/auth/login", json=guess)
                statuses.append(r.status_code)
            assert statuses[:4] == [401] * 4 and 429 in statuses[4:]
    async with running(settings, leaks) as three:  # a restarted API still remembers
        three.app.state.ctx.extras["auth"].clock = lambda: kit.WALL_EPOCH + 1000.0
        async with three.client_from("10.7.7.7") as c:
            assert_error(await c.post("/auth/login", json=guess), 429, "rate_limited")
        assert (await three.login("many@test", "many pass 1")).status_code == 200
