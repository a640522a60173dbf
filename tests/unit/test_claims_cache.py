"""The access-token claims cache (issue 12): a token's signature is checked once,
its expiry on every use, and a bad token is never kept."""

from __future__ import annotations

import pytest

from rbot.api import security
from rbot.api.principal import Role
from rbot.api.security import Auth
from rbot.api.tokens import LEEWAY_S, TokenError, TokenExpired
from tests.conftest import make_settings


@pytest.fixture
def auth() -> Auth:
    return Auth.build(make_settings("nats://127.0.0.1:1", "tclaims"))


def test_a_token_is_verified_once_and_kept_by_digest(auth: Auth) -> None:
    token = auth.tokens.issue_access("u_" + "1" * 32, Role.TRADER, "s" * 32, 3)
    first = auth.claims(token)
    assert first.gen == 3 and first.role is Role.TRADER
    assert auth.claims(token) is first  # the kept claims, not a second decode
    assert len(auth.verified) == 1
    assert all(token.encode() not in key for key in auth.verified)  # a digest, not the token


def test_a_bad_token_is_refused_and_not_kept(auth: Auth) -> None:
    token = auth.tokens.issue_access("u_" + "1" * 32, Role.TRADER, "s" * 32, 3)
    head, body, sig = token.split(".")
    for bad in (f"{head}.{body}.{sig[::-1]}", token + "x", "not.a.token"):
        with pytest.raises(TokenError):
            auth.claims(bad)
    assert auth.verified == {}


def test_expiry_is_checked_on_every_use(auth: Auth, monkeypatch: pytest.MonkeyPatch) -> None:
    token = auth.tokens.issue_access("u_" + "1" * 32, Role.VIEWER, "s" * 32, 0)
    claims = auth.claims(token)
    later = claims.exp + LEEWAY_S + 1.0
    monkeypatch.setattr(security.time, "time", lambda: later)
    with pytest.raises(TokenExpired):
        auth.claims(token)
    assert auth.verified == {}  # dropped: the next use decodes (and is refused) again
    monkeypatch.undo()
    assert auth.claims(token).exp == claims.exp  # still within its life on the real clock
