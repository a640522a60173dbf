"""Pure parts of auth: password hashing, access tokens, rate-limit buckets, emails."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import threading
import time
from typing import Any

import jwt
import pytest

from rbot.api.errors import ApiError
from rbot.api.passwords import (
    DEFAULT_PARAMS,
    FAST_ENV,
    FAST_PARAMS,
    Passwords,
    PasswordsBusy,
    params_from_env,
)
from rbot.api.principal import Role
from rbot.api.ratelimit import RateLimits, TokenBucket
from rbot.api.tokens import (
    REQUIRED_CLAIMS,
    SigningKeyError,
    TokenError,
    TokenExpired,
    TokenService,
    refresh_key,
    signing_key,
)
from rbot.api.users import (
    InvalidEmail,
    WeakPassword,
    check_password,
    normalise_email,
    user_id,
)
from rbot.bus.subjects import is_token
from tests.conftest import make_settings

KEY = b"k" * 48 + b"-unit-test-signing-key"
OTHER_KEY = b"x" * 48


# -- passwords ------------------------------------------------------------------


def test_production_defaults_meet_the_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(FAST_ENV, raising=False)
    assert DEFAULT_PARAMS.memory_cost >= 19456
    assert DEFAULT_PARAMS.time_cost == 2
    assert DEFAULT_PARAMS.parallelism == 1
    assert params_from_env() == DEFAULT_PARAMS
    assert Passwords().params == DEFAULT_PARAMS
    assert Passwords.from_env().params == DEFAULT_PARAMS
    monkeypatch.setenv(FAST_ENV, "1")
    assert params_from_env() == FAST_PARAMS


async def test_real_hash_is_argon2id_with_the_default_cost() -> None:
    pw = Passwords()
    hashed = await pw.hash("correct horse battery staple")
    assert hashed.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert await pw.verify(hashed, "correct horse battery staple")
    assert not await pw.verify(hashed, "correct horse battery stapl")
    assert not pw.needs_rehash(hashed)


async def test_verify_unknown_and_corrupt_and_rehash() -> None:
    fast = Passwords(FAST_PARAMS)
    hashed = await fast.hash("s3cret-pass")
    assert await fast.verify(hashed, "s3cret-pass")
    assert not await fast.verify(None, "s3cret-pass")  # unknown user: dummy hash, False
    assert not await fast.verify("$argon2id$garbage", "s3cret-pass")
    assert Passwords(DEFAULT_PARAMS).needs_rehash(hashed)  # parameters rose
    assert not fast.needs_rehash(hashed)


class _BlockingHasher:
    """Stands in for argon2: blocks its thread until released, counts concurrency."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.active = 0
        self.max_active = 0
        self.release = threading.Event()
        self.one_in = threading.Event()
        self.two_in = threading.Event()

    def hash(self, password: str) -> str:
        with self.lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            self.one_in.set()
            if self.active >= 2:
                self.two_in.set()
        self.release.wait(10)
        with self.lock:
            self.active -= 1
        return "h:" + password


async def test_hashing_runs_in_threads_two_at_a_time() -> None:
    pw = Passwords(FAST_PARAMS, concurrency=2)
    fake = _BlockingHasher()
    pw._hasher = fake  # type: ignore[assignment]
    loop_thread = threading.get_ident()
    tasks = [asyncio.create_task(pw.hash(f"p{i}")) for i in range(6)]
    assert await asyncio.to_thread(fake.two_in.wait, 10)
    # the loop is free (we are running on it) and four callers queue on the semaphore
    assert threading.get_ident() == loop_thread
    assert pw.waiting == 4
    fake.release.set()
    results = await asyncio.gather(*tasks)
    assert results == [f"h:p{i}" for i in range(6)]
    assert fake.max_active == 2
    assert pw.waiting == 0


async def test_a_flood_past_the_queue_is_refused() -> None:
    pw = Passwords(FAST_PARAMS, concurrency=1, max_waiting=1)
    fake = _BlockingHasher()
    pw._hasher = fake  # type: ignore[assignment]
    first = asyncio.create_task(pw.hash("a"))
    second = asyncio.create_task(pw.hash("b"))
    assert await asyncio.to_thread(fake.one_in.wait, 10)
    assert pw.waiting == 1  # "b" queues behind "a"
    with pytest.raises(PasswordsBusy):
        await pw.hash("c")
    fake.release.set()
    assert list(await asyncio.gather(first, second)) == ["h:a", "h:b"]


# -- signing key --------------------------------------------------------------


def _settings(**over: object) -> Any:
    return make_settings("nats://127.0.0.1:1", "tunit", **over)


@pytest.mark.parametrize("key", [None, "short", "x" * 31])
def test_missing_or_short_key_refuses(key: str | None) -> None:
    with pytest.raises(SigningKeyError, match="ARENA_SECRET_KEY"):
        signing_key(_settings(arena_secret_key=key))


def test_long_key_is_used_as_is() -> None:
    assert signing_key(_settings(arena_secret_key="y" * 40)) == b"y" * 40


@pytest.mark.parametrize("key", [None, "short-dev-key"])
def test_dev_mode_generates_a_key_and_never_logs_it(
    key: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    got = signing_key(_settings(arena_secret_key=key, rbot_dev=True))
    assert len(got) == 32
    assert got != signing_key(_settings(arena_secret_key=key, rbot_dev=True))
    assert "RBOT_DEV" in caplog.text
    assert got.hex() not in caplog.text and repr(got) not in caplog.text
    if key:
        assert key not in caplog.text


def test_token_service_refuses_a_short_key_and_hides_it() -> None:
    with pytest.raises(SigningKeyError):
        TokenService(b"short")
    svc = TokenService(KEY)
    assert KEY.decode() not in repr(svc)


# -- access tokens --------------------------------------------------------------


def _b64(data: dict[str, Any]) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _claims(**over: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": "rbot-arena",
        "aud": "rbot-api",
        "sub": "u_" + "a" * 32,
        "role": "viewer",
        "sid": "b" * 32,
        "gen": 0,
        "typ": "access",
        "jti": "c" * 32,
        "iat": now,
        "exp": now + 600,
    }
    claims.update(over)
    return {k: v for k, v in claims.items() if v is not _DROP}


_DROP = object()


def _sign(claims: dict[str, Any], key: bytes = KEY, alg: str = "HS256", typ: str = "at+jwt") -> str:
    return jwt.encode(claims, key, algorithm=alg, headers={"typ": typ})


def test_roundtrip() -> None:
    svc = TokenService(KEY)
    token = svc.issue_access("u_" + "a" * 32, Role.TRADER, "s" * 32, 3)
    c = svc.decode_access(token)
    assert (c.sub, c.role, c.sid, c.gen) == ("u_" + "a" * 32, Role.TRADER, "s" * 32, 3)
    assert c.exp - c.iat == 1800
    header = jwt.get_unverified_header(token)
    assert header == {"alg": "HS256", "typ": "at+jwt"}
    payload = jwt.decode(token, options={"verify_signature": False})
    assert set(payload) == set(REQUIRED_CLAIMS)


def _tampered_role() -> str:
    head, _, sig = _sign(_claims()).split(".")
    return ".".join([head, _b64(_claims(role="admin")), sig])


FORGED: list[tuple[str, Any, type[TokenError]]] = [
    (
        "alg_none",
        lambda: _b64({"alg": "none", "typ": "at+jwt"}) + "." + _b64(_claims()) + ".",
        TokenError,
    ),
    (
        "alg_none_upper",
        lambda: _b64({"alg": "None", "typ": "at+jwt"}) + "." + _b64(_claims()) + ".",
        TokenError,
    ),
    ("wrong_key", lambda: _sign(_claims(), OTHER_KEY), TokenError),
    ("hs512_not_pinned", lambda: _sign(_claims(), KEY, "HS512"), TokenError),
    ("expired", lambda: _sign(_claims(exp=int(time.time()) - 60)), TokenExpired),
    ("wrong_aud", lambda: _sign(_claims(aud="someone-else")), TokenError),
    ("aud_list", lambda: _sign(_claims(aud=["rbot-api", "x"])), TokenError),
    ("wrong_iss", lambda: _sign(_claims(iss="evil")), TokenError),
    ("tampered_role", _tampered_role, TokenError),
    ("typ_claim_refresh", lambda: _sign(_claims(typ="refresh")), TokenError),
    ("typ_header_jwt", lambda: _sign(_claims(), typ="JWT"), TokenError),
    ("future_iat", lambda: _sign(_claims(iat=int(time.time()) + 3600)), TokenError),
    ("unknown_role", lambda: _sign(_claims(role="root")), TokenError),
    ("sub_with_dots", lambda: _sign(_claims(sub="a.b.>")), TokenError),
    ("gen_bool", lambda: _sign(_claims(gen=True)), TokenError),
    ("garbage", lambda: "not.a.jwt", TokenError),
    ("opaque_refresh", lambda: "x" * 43, TokenError),
] + [
    (f"missing_{claim}", (lambda c=claim: _sign(_claims(**{c: _DROP}))), TokenError)
    for claim in REQUIRED_CLAIMS
]


@pytest.mark.parametrize(("name", "make", "error"), FORGED, ids=[f[0] for f in FORGED])
def test_forged_access_tokens_are_refused(name: str, make: Any, error: type[TokenError]) -> None:
    svc = TokenService(KEY)
    token = make()
    with pytest.raises(error) as info:
        svc.decode_access(token)
    assert info.value.code == ("token_expired" if error is TokenExpired else "token_invalid")


def test_refresh_keys_are_token_safe_and_hide_the_token() -> None:
    raw = "some-refresh-token-value"
    key = refresh_key(raw)
    assert is_token(key)
    assert raw not in key and len(key) <= 64
    assert refresh_key(raw) == key and refresh_key(raw + "x") != key


# -- rate limits -------------------------------------------------------------------


def test_bucket_burst_then_retry_after_then_refill() -> None:
    b = TokenBucket(5, 60)
    assert [b.take("k", 0.0) for _ in range(5)] == [0.0] * 5
    assert b.take("k", 0.0) == pytest.approx(12.0)
    assert b.take("other", 0.0) == 0.0  # keys are independent
    assert b.retry_after("k", 6.0) == pytest.approx(6.0)
    assert b.take("k", 12.0) == 0.0
    assert b.take("k", 12.0) > 0
    assert b.retry_after("k", 1000.0) == 0.0  # full again, never above the burst
    b.reset("k")
    assert b.retry_after("k", 12.0) == 0.0


def test_bucket_keeps_a_bounded_number_of_keys() -> None:
    b = TokenBucket(1, 60, max_keys=3)
    for i in range(10):
        b.take(f"k{i}", 0.0)
    assert len(b) == 3


def test_rate_limits_answer_429_with_retry_after() -> None:
    now = [100.0]
    limits = RateLimits(clock=lambda: now[0])
    limits.take("x", 2, 10, "ip")
    limits.take("x", 2, 10, "ip")
    with pytest.raises(ApiError) as info:
        limits.take("x", 2, 10, "ip")
    err = info.value
    assert (err.status, err.code) == (429, "rate_limited")
    assert err.headers == {"Retry-After": "5"}
    now[0] += 5
    limits.take("x", 2, 10, "ip")


# -- users: pure parts ------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "norm"),
    [("Trader@Test", "trader@test"), ("  admin@localhost ", "admin@localhost"), ("a@b.c", "a@b.c")],
)
def test_emails_normalise(raw: str, norm: str) -> None:
    assert normalise_email(raw) == norm
    assert user_id(raw) == user_id(norm)
    assert is_token(user_id(raw))


@pytest.mark.parametrize(
    "raw", ["", "no-at", "a@", "@b", "a b@c", "a@b@c", "x" * 250 + "@d.com", "a\x00@b", "\ud800@b"]
)
def test_bad_emails_are_refused(raw: str) -> None:
    with pytest.raises(InvalidEmail):
        normalise_email(raw)


def test_password_length_policy() -> None:
    check_password("12345678")
    with pytest.raises(WeakPassword):
        check_password("1234567")
    check_password("pass", min_length=4)
    with pytest.raises(WeakPassword):
        check_password("x" * 1025)
    with pytest.raises(WeakPassword):
        check_password("\ud800" * 10)
