"""Access tokens (JWT per RFC 8725) and refresh tokens (opaque, hashed in KV).

Access tokens
    HS256 only (the algorithm is pinned, never read from the token), signed with
    ``ARENA_SECRET_KEY`` (at least 32 bytes).  Header ``typ: at+jwt`` and claim
    ``typ: access``; every claim we rely on is listed in pyjwt's ``require``
    (pyjwt checks only what it is told to).  ``sid`` names the refresh-token
    family (the session) and ``gen`` the user's credential generation, so logout,
    reuse detection, password change and disable all end access tokens too.

Refresh tokens
    ``secrets.token_urlsafe(32)`` strings, never stored: the KV key is
    ``r_`` + base64url(SHA-256(token)).  Each record names its family, user and
    generation, is single use and expires; using one marks it ``used`` with
    compare-and-set and issues the next one in the same family.  Presenting a
    used one (or losing the compare-and-set race) revokes the family
    (``fam_<id>``), as RFC 9700 §4.14.2 advises: the server cannot tell the thief
    from the owner, so both sign in again.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
import msgspec
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from rbot.bus.codec import now_iso
from rbot.bus.config import Settings
from rbot.bus.connection import Bus
from rbot.bus.subjects import is_token

from .principal import Role

log = logging.getLogger("rbot.api.auth")

ALGORITHM = "HS256"
ISSUER = "rbot-arena"
AUDIENCE = "rbot-api"
HEADER_TYP = "at+jwt"
ACCESS_TTL_S = 30 * 60
REFRESH_TTL_S = 14 * 24 * 3600  # idle lifetime: each rotation extends it ...
SESSION_MAX_S = 29 * 24 * 3600  # ... up to this (the tokens bucket keeps 30 days)
LEEWAY_S = 5
MIN_KEY_BYTES = 32
MAX_REFRESH_LEN = 512
REQUIRED_CLAIMS = ["exp", "iat", "iss", "aud", "sub", "role", "jti", "typ", "sid", "gen"]


class SigningKeyError(RuntimeError):
    """ARENA_SECRET_KEY is missing or too short (and RBOT_DEV is not set)."""


class TokenError(Exception):
    """A token we refuse; ``code`` is the API error code."""

    code = "token_invalid"


class TokenExpired(TokenError):
    code = "token_expired"


class TokenReused(TokenError):
    """A refresh token presented twice: its family is now revoked."""


def signing_key(settings: Settings) -> bytes:
    """The HS256 key, or a clear refusal.  The key itself is never logged."""
    secret = settings.arena_secret_key
    raw = secret.get_secret_value().encode() if secret is not None else b""
    if len(raw) >= MIN_KEY_BYTES:
        return raw
    if settings.rbot_dev:
        log.warning(
            "ARENA_SECRET_KEY is %s; RBOT_DEV is set, so a random per-process key is used: "
            "tokens die with this process and are not valid on other API replicas",
            "missing" if secret is None else f"shorter than {MIN_KEY_BYTES} bytes",
        )
        return secrets.token_bytes(MIN_KEY_BYTES)
    raise SigningKeyError(
        f"ARENA_SECRET_KEY must be set to at least {MIN_KEY_BYTES} bytes "
        "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(48))'), "
        "or set RBOT_DEV=1 for a throwaway per-process key"
    )


@dataclass(frozen=True, slots=True)
class AccessClaims:
    sub: str
    role: Role
    sid: str
    gen: int
    jti: str
    iat: int
    exp: int


class TokenService:
    """Issues and checks access tokens.  Holds the key; its repr does not show it."""

    __slots__ = ("_jwt", "_key", "access_ttl", "clock")

    def __init__(
        self,
        key: bytes,
        *,
        access_ttl: int = ACCESS_TTL_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise SigningKeyError(f"signing key shorter than {MIN_KEY_BYTES} bytes")
        self._key = key
        self._jwt = jwt.PyJWT(options={"enforce_minimum_key_length": True})
        self.access_ttl = access_ttl
        self.clock = clock

    def __repr__(self) -> str:
        return f"TokenService(alg={ALGORITHM}, key=***, access_ttl={self.access_ttl})"

    def issue_access(self, sub: str, role: Role, sid: str, gen: int) -> str:
        now = int(self.clock())
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": sub,
            "role": role.value,
            "sid": sid,
            "gen": gen,
            "typ": "access",
            "jti": secrets.token_hex(16),
            "iat": now,
            "exp": now + self.access_ttl,
        }
        return self._jwt.encode(claims, self._key, algorithm=ALGORITHM, headers={"typ": HEADER_TYP})

    def decode_access(self, token: str) -> AccessClaims:
        try:
            decoded = self._jwt.decode_complete(
                token,
                self._key,
                algorithms=[ALGORITHM],
                audience=AUDIENCE,
                issuer=ISSUER,
                leeway=LEEWAY_S,
                options={
                    "require": REQUIRED_CLAIMS,
                    "strict_aud": True,
                    "enforce_minimum_key_length": True,
                },
            )
        except jwt.ExpiredSignatureError:
            raise TokenExpired("the access token has expired") from None
        except jwt.PyJWTError:
            raise TokenError("the access token is not valid") from None
        if decoded["header"].get("typ") != HEADER_TYP:
            raise TokenError("not an access token")
        p = decoded["payload"]
        sub, role, sid, gen, jti = p["sub"], p["role"], p["sid"], p["gen"], p["jti"]
        if p["typ"] != "access":
            raise TokenError("not an access token")
        if not (isinstance(sub, str) and is_token(sub) and isinstance(sid, str) and is_token(sid)):
            raise TokenError("the access token is not valid")
        if not isinstance(gen, int) or isinstance(gen, bool) or not isinstance(jti, str):
            raise TokenError("the access token is not valid")
        if role not in {r.value for r in Role}:
            raise TokenError("the access token is not valid")
        return AccessClaims(
            sub=sub,
            role=Role(role),
            sid=sid,
            gen=gen,
            jti=jti,
            iat=int(p["iat"]),
            exp=int(p["exp"]),
        )


# -- refresh tokens ------------------------------------------------------------


class RefreshRecord(msgspec.Struct, frozen=True, kw_only=True):
    family: str
    user: str
    gen: int
    expires: float  # epoch seconds
    created: str
    used: bool = False


class FamilyRecord(msgspec.Struct, frozen=True, kw_only=True):
    user: str
    expires: float
    created: str
    revoked: bool = False
    reason: str | None = None


_refresh_dec = msgspec.json.Decoder(RefreshRecord)
_family_dec = msgspec.json.Decoder(FamilyRecord)
_enc = msgspec.json.Encoder()


def refresh_key(raw: str) -> str:
    digest = hashlib.sha256(raw.encode("utf-8", "surrogatepass")).digest()
    return "r_" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def family_key(family: str) -> str:
    return "fam_" + family


@dataclass(frozen=True, slots=True)
class Consumed:
    """A refresh token that was just used (by this caller, and only this one)."""

    record: RefreshRecord
    family: FamilyRecord


class RefreshStore:
    """Refresh-token families in the KV bucket ``tokens``."""

    def __init__(
        self,
        bus: Bus,
        *,
        ttl: float = REFRESH_TTL_S,
        session_max: float = SESSION_MAX_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.bus = bus
        self.ttl = ttl
        self.session_max = session_max
        self.clock = clock

    async def _kv(self) -> KeyValue:
        return await self.bus.kv("tokens")

    async def _family(self, family: str) -> tuple[FamilyRecord, int] | None:
        if not is_token(family):
            return None
        kv = await self._kv()
        try:
            entry = await kv.get(family_key(family))
        except KeyNotFoundError:
            return None
        if not entry.value:
            return None
        return _family_dec.decode(entry.value), entry.revision or 0

    async def start(self, user: str, gen: int) -> tuple[str, str]:
        """A new session: ``(refresh_token, family_id)``."""
        family = secrets.token_hex(16)
        now = self.clock()
        rec = FamilyRecord(user=user, expires=now + self.session_max, created=now_iso())
        kv = await self._kv()
        await kv.create(family_key(family), _enc.encode(rec))
        return await self._issue(family, rec, user, gen), family

    async def _issue(self, family: str, fam: FamilyRecord, user: str, gen: int) -> str:
        raw = secrets.token_urlsafe(32)
        rec = RefreshRecord(
            family=family,
            user=user,
            gen=gen,
            expires=min(self.clock() + self.ttl, fam.expires),
            created=now_iso(),
        )
        kv = await self._kv()
        await kv.create(refresh_key(raw), _enc.encode(rec))
        return raw

    async def consume(self, raw: str) -> Consumed:
        """Use a refresh token once.  Raises ``TokenError`` (``TokenReused`` on reuse)."""
        if not raw or len(raw) > MAX_REFRESH_LEN:
            raise TokenError("the refresh token is not valid")
        kv = await self._kv()
        key = refresh_key(raw)
        try:
            entry = await kv.get(key)
        except KeyNotFoundError:
            raise TokenError("the refresh token is not valid") from None
        if not entry.value:
            raise TokenError("the refresh token is not valid")
        rec = _refresh_dec.decode(entry.value)
        found = await self._family(rec.family)
        if found is None or found[0].revoked:
            raise TokenError("the session was revoked; sign in again")
        fam = found[0]
        if rec.used:
            await self.revoke_family(rec.family, "reuse")
            raise TokenReused("refresh token reuse detected; the session was revoked")
        if rec.expires <= self.clock() or fam.expires <= self.clock():
            raise TokenExpired("the refresh token has expired; sign in again")
        try:
            await kv.update(
                key, _enc.encode(msgspec.structs.replace(rec, used=True)), entry.revision
            )
        except KeyWrongLastSequenceError:
            # someone used the same token at the same moment: that is a reuse too
            await self.revoke_family(rec.family, "reuse")
            raise TokenReused("refresh token reuse detected; the session was revoked") from None
        return Consumed(record=rec, family=fam)

    async def rotate(self, used: Consumed, gen: int) -> str:
        """The next refresh token of the family ``used`` came from."""
        return await self._issue(used.record.family, used.family, used.record.user, gen)

    async def family_of(self, raw: str) -> str | None:
        """The family a refresh token belongs to (used or not), for logout."""
        if not raw or len(raw) > MAX_REFRESH_LEN:
            return None
        kv = await self._kv()
        try:
            entry = await kv.get(refresh_key(raw))
        except KeyNotFoundError:
            return None
        return _refresh_dec.decode(entry.value).family if entry.value else None

    async def active(self, family: str, user: str) -> bool:
        found = await self._family(family)
        if found is None:
            return False
        fam = found[0]
        return not fam.revoked and fam.user == user and fam.expires > self.clock()

    async def revoke_family(self, family: str, reason: str) -> None:
        kv = await self._kv()
        for _ in range(8):
            found = await self._family(family)
            if found is None or found[0].revoked:
                return
            fam, revision = found
            new = msgspec.structs.replace(fam, revoked=True, reason=reason)
            try:
                await kv.update(family_key(family), _enc.encode(new), revision)
            except KeyWrongLastSequenceError:
                continue
            log.info("session revoked sub=%s reason=%s", fam.user, reason)
            return
