"""Who is calling, and may they: the dependencies every router declares.

Credentials come from ``Authorization: Bearer <access token>`` (scripts) or the
HttpOnly, SameSite=Strict cookie ``rbot_session`` (the same-origin dashboard),
never from a URL.  An access token is checked for its signature and claims
(``tokens.py``), then against the store on every request: the user must exist, be
enabled and still be on the token's credential generation, and the session
(refresh family) must not be revoked, so logout, password change, disable and
refresh-token reuse take effect at once.  The store is read through this
process's ``AuthCache`` (``authcache.py``: kept current by KV watches, no KV
read per request).  The role used is the stored one: a
demoted user loses rights without waiting for the token to expire.

Use on routers and parameters::

    router = APIRouter(dependencies=[Depends(require_role(Role.TRADER))])

    async def place(principal: Trader) -> ...
"""

from __future__ import annotations

import functools
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Literal
from urllib.parse import urlsplit

from fastapi import Depends, Request, Response, Security
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer

from rbot.bus.config import Settings
from rbot.bus.connection import Bus

from .authcache import AuthCache, WriteThroughRefresh, WriteThroughUsers
from .context import ApiContext, Ctx, get_ctx
from .errors import ApiError
from .passwords import Passwords
from .principal import Principal, Role
from .tokens import (
    LEEWAY_S,
    REFRESH_TTL_S,
    AccessClaims,
    RefreshStore,
    SigningKeyError,
    TokenError,
    TokenExpired,
    TokenService,
    signing_key,
)
from .users import UserStore
from .weaksecrets import weakness

log = logging.getLogger("rbot.api.auth")

SESSION_COOKIE = "rbot_session"
REFRESH_COOKIE = "rbot_refresh"
REFRESH_COOKIE_PATH = "/auth"
EXTRAS_KEY = "auth"
REALM = "rbot-arena"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_URL_TOKEN_PARAMS = ("access_token", "token", "refresh_token", "jwt")
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
VERIFIED_KEPT = 10_000  # access tokens whose checked claims are kept (by SHA-256)


@dataclass
class Auth:
    """What authentication needs for one app: built at app creation (fails fast)."""

    settings: Settings
    tokens: TokenService
    passwords: Passwords
    clock: Callable[[], float] = field(default=time.time)
    cache: AuthCache | None = None  # set by the app's lifespan (it needs the bus)
    verified: dict[bytes, AccessClaims] = field(default_factory=dict, repr=False)

    def claims(self, token: str) -> AccessClaims:
        """``tokens.decode_access``, remembered: a token's signature and claims never
        change, so each is checked once (pyjwt cost a quarter of an authenticated
        GET); expiry is checked again on every use, as pyjwt does it (wall clock,
        leeway).  Keyed by the token's SHA-256, so no token is kept."""
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        claims = self.verified.get(digest)
        if claims is None:
            claims = self.tokens.decode_access(token)  # raises on a bad token: not kept
            if len(self.verified) >= VERIFIED_KEPT:
                self.verified.clear()  # a bound, not a policy: the next ones decode again
            self.verified[digest] = claims
        if claims.exp <= time.time() - LEEWAY_S:
            self.verified.pop(digest, None)
            raise TokenExpired("the access token has expired")
        return claims

    @classmethod
    def build(cls, settings: Settings, passwords: Passwords | None = None) -> Auth:
        refuse_example_secret(settings)
        auth = cls(
            settings=settings,
            tokens=TokenService(signing_key(settings)),
            passwords=passwords or Passwords.from_env(),
        )
        if auth.open_trader and settings.rbot_api_host not in _LOOPBACK:
            log.warning(
                "RBOT_OPEN_REGISTRATION=trader on %s: anyone who can reach the API "
                "can register as a trader (meant for local use)",
                settings.rbot_api_host,
            )
        return auth

    def users(self, bus: Bus) -> UserStore:
        if self.cache is not None:
            return WriteThroughUsers(bus, self.cache)
        return UserStore(bus)

    def refresh(self, bus: Bus) -> RefreshStore:
        if self.cache is not None:
            return WriteThroughRefresh(bus, self.cache, self.clock)
        return RefreshStore(bus, clock=self.clock)

    @property
    def open_trader(self) -> bool:
        return self.settings.rbot_open_registration.strip().lower() == "trader"


def refuse_example_secret(settings: Settings) -> None:
    """``SigningKeyError`` when ARENA_SECRET_KEY is a published example or a placeholder."""
    secret = settings.arena_secret_key
    if secret is None:
        return  # missing: signing_key() decides (a refusal, or RBOT_DEV's throwaway key)
    reason = weakness(secret.get_secret_value())
    if reason is not None:
        raise SigningKeyError(
            f"ARENA_SECRET_KEY is refused: {reason}; generate one with "
            "python -c 'import secrets; print(secrets.token_urlsafe(48))'"
        )


def auth_of(ctx: ApiContext) -> Auth:
    auth = ctx.extras.get(EXTRAS_KEY)
    if not isinstance(auth, Auth):
        raise RuntimeError("the app was created without auth (ctx.extras['auth'])")
    return auth


async def get_auth(ctx: Ctx) -> Auth:  # async: no thread-pool hop per request
    return auth_of(ctx)


AuthDep = Annotated[Auth, Depends(get_auth)]


def unauthorized(code: str, message: str) -> ApiError:
    challenge = f'Bearer realm="{REALM}"'
    if code.startswith("token"):
        challenge += ', error="invalid_token"'
    return ApiError(401, code, message, headers={"WWW-Authenticate": challenge})


def forbidden(message: str, code: str = "forbidden") -> ApiError:
    return ApiError(403, code, message)


@dataclass(frozen=True, slots=True)
class Session:
    principal: Principal
    claims: AccessClaims
    via: Literal["bearer", "cookie"]


_bearer = HTTPBearer(auto_error=False, description="an access token from POST /auth/login")
_cookie = APIKeyCookie(
    name=SESSION_COOKIE, auto_error=False, description="the dashboard's HttpOnly session"
)


def same_origin(request: Request, origin: str, settings: Settings) -> bool:
    allowed = {o.strip() for o in settings.rbot_cors_origins.split(",") if o.strip()}
    if origin in allowed:
        return True
    try:
        netloc = urlsplit(origin).netloc
    except ValueError:  # "http://[" is no origin at all
        return False
    return netloc.lower() == request.headers.get("host", "").lower()


async def _authenticate(
    request: Request,
    ctx: ApiContext,
    bearer: HTTPAuthorizationCredentials | None,
    cookie: str | None,
) -> Session | None:
    """The caller's session, ``None`` without credentials; raises on bad ones."""
    if any(p in request.query_params for p in _URL_TOKEN_PARAMS):
        raise unauthorized(
            "token_in_url", "tokens are accepted in the Authorization header or cookie, never a URL"
        )
    via: Literal["bearer", "cookie"]
    if bearer is not None:
        token, via = bearer.credentials, "bearer"
    elif "authorization" in request.headers:
        raise unauthorized("token_invalid", "use Authorization: Bearer <access token>")
    elif cookie:
        token, via = cookie, "cookie"
    else:
        return None
    auth = auth_of(ctx)
    try:
        claims = auth.claims(token)
    except TokenError as exc:
        raise unauthorized(exc.code, str(exc)) from None
    cache = auth.cache
    if cache is not None:  # the records, current by KV watch (authcache.py)
        user = await cache.user(claims.sub)
    else:
        user = await auth.users(ctx.bus).get(claims.sub)
    if user is None or user.token_gen != claims.gen:
        raise unauthorized("token_invalid", "the access token was revoked; sign in again")
    if user.disabled:
        raise forbidden("this account is disabled", "account_disabled")
    if cache is not None:
        fam = await cache.family(claims.sid)
        active = fam is not None and not fam.revoked and fam.user == user.id
        active = active and fam is not None and fam.expires > auth.clock()
    else:
        active = await auth.refresh(ctx.bus).active(claims.sid, user.id)
    if not active:
        raise unauthorized("token_invalid", "the session has ended; sign in again")
    if via == "cookie" and request.method not in _SAFE_METHODS:
        origin = request.headers.get("origin")
        if origin is not None and not same_origin(request, origin, ctx.settings):
            raise forbidden("cross-site request refused", "cross_site")
    principal = Principal(sub=user.id, email=user.email, role=user.role)
    request.state.principal_sub = principal.sub
    return Session(principal=principal, claims=claims, via=via)


async def optional_session(
    request: Request,
    ctx: Ctx,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    cookie: Annotated[str | None, Security(_cookie)],
) -> Session | None:
    """The session when credentials were sent (bad ones still raise), else ``None``."""
    return await _authenticate(request, ctx, bearer, cookie)


async def current_session(
    session: Annotated[Session | None, Depends(optional_session)],
) -> Session:
    if session is None:
        raise unauthorized("unauthorized", "sign in: send Authorization: Bearer <access token>")
    return session


async def _principal(
    request: Request,
    bearer: HTTPAuthorizationCredentials | None,
    cookie: str | None,
) -> Principal:
    """``current_session``'s answer, in one step (see ``current_principal``)."""
    session = await _authenticate(request, await get_ctx(request), bearer, cookie)
    if session is None:
        raise unauthorized("unauthorized", "sign in: send Authorization: Bearer <access token>")
    return session.principal


async def current_principal(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    cookie: Annotated[str | None, Security(_cookie)],
) -> Principal:
    """The caller.  One dependency over the credentials, not a chain of them: each
    level FastAPI solves costs about as much as the check itself (issue 12)."""
    return await _principal(request, bearer, cookie)


@functools.cache
def require_role(role: Role | str) -> Callable[..., Awaitable[Principal]]:
    """A dependency that answers 403 unless the caller's role reaches ``role``.

    Cached per role, so a router-level ``Depends(require_role(Role.TRADER))`` and
    a ``Trader`` parameter on the same route resolve once per request.
    """
    needed = Role(role)

    async def dependency(
        request: Request,
        bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
        cookie: Annotated[str | None, Security(_cookie)],
    ) -> Principal:
        principal = await _principal(request, bearer, cookie)
        if not principal.role.allows(needed):
            raise forbidden(f"this needs the {needed.value} role")
        return principal

    dependency.__name__ = f"require_{needed.value}"
    return dependency


Authenticated = Annotated[Principal, Depends(current_principal)]
Viewer = Annotated[Principal, Depends(require_role(Role.VIEWER))]
Trader = Annotated[Principal, Depends(require_role(Role.TRADER))]
Admin = Annotated[Principal, Depends(require_role(Role.ADMIN))]
CurrentSession = Annotated[Session, Depends(current_session)]
OptionalSession = Annotated[Session | None, Depends(optional_session)]


# -- cookies --------------------------------------------------------------------


def set_session_cookies(
    response: Response, settings: Settings, access: str, refresh: str, access_ttl: int
) -> None:
    """The access cookie for every path, the refresh cookie only for ``/auth``."""
    secure = settings.rbot_cookie_secure
    response.set_cookie(
        SESSION_COOKIE,
        access,
        max_age=access_ttl,
        path="/",
        httponly=True,
        samesite="strict",
        secure=secure,
    )
    response.set_cookie(
        REFRESH_COOKIE,
        refresh,
        max_age=REFRESH_TTL_S,
        path=REFRESH_COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=secure,
    )


def clear_session_cookies(response: Response, settings: Settings) -> None:
    for name, path in ((SESSION_COOKIE, "/"), (REFRESH_COOKIE, REFRESH_COOKIE_PATH)):
        response.delete_cookie(
            name, path=path, httponly=True, samesite="strict", secure=settings.rbot_cookie_secure
        )
