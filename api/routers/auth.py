"""``/auth``: register, login, refresh, logout, me, password.

Login answers the seed's shape ``{"access_token", "refresh_token", "token_type":
"bearer", "expires_in": 1800}``.  With ``"cookie": true`` in the body (or the
header ``X-Session: cookie``) it sets the HttpOnly session cookies for the
dashboard instead and leaves the tokens out of the body, so page scripts never
hold them; ``/auth/refresh`` and ``/auth/logout`` then work from the cookies.

Failed logins slow down progressively per client and account, with a looser
cap per account (``loginthrottle.py``: counters in KV ``lockouts``, shared by
replicas), and are limited per client address (429 + ``Retry-After``); a
stranger's guesses never lock the owner out.  An unknown email costs the same
hash and gets the same answer as a wrong password.
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Header, Request, Response
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr

from ..context import Ctx
from ..errors import ApiError
from ..lockouts import LockoutError, LockoutStore
from ..loginthrottle import LoginThrottle, account_key
from ..passwords import PasswordsBusy
from ..principal import Principal, Role
from ..ratelimit import RateLimits, client_ip, limits_of, too_many
from ..security import (
    REFRESH_COOKIE,
    SESSION_COOKIE,
    Auth,
    AuthDep,
    Authenticated,
    CurrentSession,
    OptionalSession,
    clear_session_cookies,
    forbidden,
    optional_session,
    same_origin,
    set_session_cookies,
    unauthorized,
)
from ..tokens import MAX_REFRESH_LEN, TokenError
from ..users import (
    MAX_EMAIL,
    MAX_PASSWORD,
    MIN_PASSWORD,
    MIN_PASSWORD_LOCAL,
    EmailTaken,
    InvalidEmail,
    UserError,
    UserRecord,
    WeakPassword,
    check_password,
    normalise_email,
)

log = logging.getLogger("rbot.api.auth")

router = APIRouter(prefix="/auth", tags=["auth"])

# (rate, per seconds); per account: loginthrottle.py (KV, progressive delay)
LOGIN_FAIL_PER_IP = (20, 60.0)
LOGIN_PER_IP = (60, 60.0)
REGISTER_PER_IP = (10, 60.0)
REFRESH_PER_IP = (120, 60.0)


def _text(value: str) -> str:
    try:
        value.encode()
    except UnicodeEncodeError:  # a lone surrogate ("\\ud800") is valid JSON, not text
        raise ValueError("must be valid Unicode text") from None
    return value


def _secret_text(value: SecretStr) -> SecretStr:
    _text(value.get_secret_value())
    return value


Password = Annotated[
    SecretStr, Field(min_length=1, max_length=MAX_PASSWORD), AfterValidator(_secret_text)
]
Email = Annotated[str, Field(min_length=3, max_length=MAX_EMAIL + 16), AfterValidator(_text)]
RefreshToken = Annotated[SecretStr, Field(max_length=MAX_REFRESH_LEN), AfterValidator(_secret_text)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RegisterIn(_Strict):
    email: Email
    password: Password
    role: Role | None = None


class LoginIn(_Strict):
    email: Email
    password: Password
    cookie: bool = Field(default=False, description="set the HttpOnly session cookies instead")


class RefreshIn(_Strict):
    refresh_token: RefreshToken | None = None


class LogoutIn(_Strict):
    refresh_token: RefreshToken | None = None


class PasswordIn(_Strict):
    old_password: Password
    new_password: Password


class TokenOut(BaseModel):
    access_token: str | None = None
    refresh_token: str | None = None
    token_type: str = "bearer"
    expires_in: int


class UserOut(BaseModel):
    sub: str
    email: str
    role: Role

    @classmethod
    def of(cls, p: Principal | UserRecord) -> UserOut:
        return cls(sub=p.id if isinstance(p, UserRecord) else p.sub, email=p.email, role=p.role)


class OkOut(BaseModel):
    ok: bool = True


def _min_password(auth: Auth) -> int:
    return MIN_PASSWORD_LOCAL if auth.open_trader or auth.settings.rbot_dev else MIN_PASSWORD


def _busy() -> ApiError:
    return ApiError(503, "busy", "the server is busy; retry shortly", headers={"Retry-After": "1"})


def _throttle(ctx: Ctx, auth: Auth) -> LoginThrottle:
    return LoginThrottle(LockoutStore(ctx.bus, auth.clock))


async def _check_throttle(throttle: LoginThrottle, ip: str, account: str) -> None:
    try:
        wait = await throttle.wait(ip, account)
    except LockoutError:
        raise _busy() from None
    if wait > 0:
        raise too_many(wait)


async def _charge_failure(
    limits: RateLimits, throttle: LoginThrottle, ip: str, account: str
) -> None:
    limits.bucket("login_fail_ip", *LOGIN_FAIL_PER_IP).take(ip, limits.clock())
    try:
        await throttle.failed(ip, account)
    except LockoutError:
        raise _busy() from None


async def _tokens(
    auth: Auth,
    ctx: Ctx,
    response: Response,
    user: UserRecord,
    *,
    cookie: bool,
    family: str,
    refresh: str,
) -> TokenOut:
    access = auth.tokens.issue_access(user.id, user.role, family, user.token_gen)
    ttl = auth.tokens.access_ttl
    response.headers["Cache-Control"] = "no-store"
    if cookie:
        set_session_cookies(response, ctx.settings, access, refresh, ttl)
        return TokenOut(token_type="cookie", expires_in=ttl)
    return TokenOut(access_token=access, refresh_token=refresh, expires_in=ttl)


@router.post(
    "/register",
    status_code=201,
    response_model=UserOut,
    responses={409: {"description": "email taken"}, 403: {"description": "role not allowed"}},
)
async def register(
    body: RegisterIn, request: Request, ctx: Ctx, auth: AuthDep, session: OptionalSession
) -> UserOut:
    """Create a user: a viewer, unless an admin calls (any role) or registration is open."""
    caller_admin = session is not None and session.principal.is_admin
    if not caller_admin:
        limits_of(ctx).take("register_ip", *REGISTER_PER_IP, client_ip(request))
    if caller_admin:
        role = body.role or Role.VIEWER
    elif auth.open_trader:
        role = body.role or Role.TRADER
        if role is Role.ADMIN:
            raise forbidden("only an admin may create admins")
    else:
        role = body.role or Role.VIEWER
        if role is not Role.VIEWER:
            raise forbidden("self-registration creates viewers; an admin assigns other roles")
    try:
        email = normalise_email(body.email)
        check_password(
            body.password.get_secret_value(), min_length=_min_password(auth), role=role, email=email
        )
    except InvalidEmail as exc:
        raise ApiError(422, "invalid_email", str(exc)) from None
    except WeakPassword as exc:
        raise ApiError(422, "weak_password", str(exc)) from None
    users = auth.users(ctx.bus)
    if await users.by_email(email) is not None:  # spare a hash; create() is the real check
        raise ApiError(409, "email_taken", "that email is already registered")
    try:
        hashed = await auth.passwords.hash(body.password.get_secret_value())
        user = await users.create(email, hashed, role)
    except EmailTaken:
        raise ApiError(409, "email_taken", "that email is already registered") from None
    except PasswordsBusy:
        raise _busy() from None
    return UserOut.of(user)


@router.post(
    "/login",
    response_model=TokenOut,
    response_model_exclude_none=True,
    responses={401: {"description": "wrong email or password"}, 429: {"description": "limited"}},
)
async def login(
    body: LoginIn,
    request: Request,
    response: Response,
    ctx: Ctx,
    auth: AuthDep,
    x_session: Annotated[str | None, Header(alias="X-Session")] = None,
) -> TokenOut:
    """Trade email and password for an access token (30 min) and a refresh token."""
    limits = limits_of(ctx)
    ip = client_ip(request)
    try:
        email = normalise_email(body.email)
    except InvalidEmail:
        email = body.email.strip().lower()  # answered like any unknown email
    limits.take("login_ip", *LOGIN_PER_IP, ip)
    limits.check("login_fail_ip", *LOGIN_FAIL_PER_IP, ip)
    throttle, account = _throttle(ctx, auth), account_key(email)
    await _check_throttle(throttle, ip, account)
    users = auth.users(ctx.bus)
    user = await users.by_email(email)
    password = body.password.get_secret_value()
    try:
        ok = await auth.passwords.verify(user.password_hash if user else None, password)
    except PasswordsBusy:
        raise _busy() from None
    if not ok or user is None:
        await _charge_failure(limits, throttle, ip, account)
        log.info("login failed ip=%s", ip)
        raise unauthorized("invalid_credentials", "wrong email or password")
    await throttle.succeeded(ip, account)
    if user.disabled:
        raise forbidden("this account is disabled", "account_disabled")
    if auth.passwords.needs_rehash(user.password_hash):
        try:
            rehashed = await auth.passwords.hash(password)
            user = await users.set_password(user.id, rehashed, revoke=False)
            log.info("password rehashed with current parameters sub=%s", user.id)
        except (UserError, PasswordsBusy) as exc:  # the old hash still works
            log.warning("rehash skipped sub=%s: %s", user.id, type(exc).__name__)
    refresh, family = await auth.refresh(ctx.bus).start(user.id, user.token_gen)
    log.info("login sub=%s role=%s", user.id, user.role.value)
    cookie = body.cookie or (x_session or "").strip().lower() == "cookie"
    return await _tokens(auth, ctx, response, user, cookie=cookie, family=family, refresh=refresh)


@router.post(
    "/refresh",
    response_model=TokenOut,
    response_model_exclude_none=True,
    responses={401: {"description": "invalid, expired, reused or revoked"}},
)
async def refresh(
    request: Request,
    response: Response,
    ctx: Ctx,
    auth: AuthDep,
    body: RefreshIn | None = None,
) -> TokenOut:
    """Use a refresh token once for a new pair (the body's, else the refresh cookie)."""
    limits_of(ctx).take("refresh_ip", *REFRESH_PER_IP, client_ip(request))
    if body is not None and body.refresh_token is not None:
        raw, via_cookie = body.refresh_token.get_secret_value(), False
    else:
        raw, via_cookie = request.cookies.get(REFRESH_COOKIE, ""), True
    if not raw:
        raise unauthorized("unauthorized", "send a refresh_token (or the refresh cookie)")
    origin = request.headers.get("origin")
    if via_cookie and origin is not None and not same_origin(request, origin, ctx.settings):
        raise forbidden("cross-site request refused", "cross_site")
    store = auth.refresh(ctx.bus)
    try:
        used = await store.consume(raw)
    except TokenError as exc:
        raise unauthorized(exc.code, str(exc)) from None
    user = await auth.users(ctx.bus).get(used.record.user)
    if user is None or user.disabled or user.token_gen != used.record.gen:
        await store.revoke_family(used.record.family, "credentials_changed")
        raise unauthorized("token_invalid", "the session was revoked; sign in again")
    new_refresh = await store.rotate(used, user.token_gen)
    return await _tokens(
        auth,
        ctx,
        response,
        user,
        cookie=via_cookie,
        family=used.record.family,
        refresh=new_refresh,
    )


@router.post("/logout", response_model=OkOut)
async def logout(
    request: Request,
    response: Response,
    ctx: Ctx,
    auth: AuthDep,
    session: OptionalSession,
    body: LogoutIn | None = None,
) -> OkOut:
    """End the session: its refresh family is revoked, and with it the access token."""
    store = auth.refresh(ctx.bus)
    families: set[str] = set()
    if session is not None:
        families.add(session.claims.sid)
    if body is not None and body.refresh_token is not None:
        raw = body.refresh_token.get_secret_value()
    else:
        raw = request.cookies.get(REFRESH_COOKIE, "")
    if raw:
        family = await store.family_of(raw)
        if family is not None:
            families.add(family)
    if session is None and not families:
        raise unauthorized("unauthorized", "send the access token or a refresh token")
    for family in families:
        await store.revoke_family(family, "logout")
    clear_session_cookies(response, ctx.settings)
    return OkOut()


@router.get("/me", response_model=UserOut)
async def me(principal: Authenticated) -> UserOut:
    return UserOut.of(principal)


class SessionOut(BaseModel):
    authenticated: bool
    user: UserOut | None = None
    reason: str | None = Field(default=None, description="why not (the 401/403 code)")
    refreshable: bool = Field(
        default=False, description="a refresh cookie came along: POST /auth/refresh may renew it"
    )


@router.get("/session", response_model=SessionOut, response_model_exclude_none=True)
async def session_probe(request: Request, ctx: Ctx) -> SessionOut:
    """The caller's session, always 200: a page probes it before sign-in without an
    error (``/auth/me`` answers 401 then).  Bad credentials say why in ``reason``.
    Reads the bearer header or the session cookie, like every route."""
    creds = None
    bearer = request.headers.get("authorization")
    if bearer is not None:
        scheme, _, token = bearer.partition(" ")
        if scheme.lower() == "bearer" and token:
            creds = HTTPAuthorizationCredentials(scheme=scheme, credentials=token.strip())
    refreshable = bool(request.cookies.get(REFRESH_COOKIE))
    try:
        session = await optional_session(request, ctx, creds, request.cookies.get(SESSION_COOKIE))
    except ApiError as exc:
        if exc.status not in (401, 403):
            raise
        return SessionOut(authenticated=False, reason=exc.code, refreshable=refreshable)
    if session is None:
        return SessionOut(authenticated=False, refreshable=refreshable)
    return SessionOut(authenticated=True, user=UserOut.of(session.principal))


@router.post(
    "/password",
    response_model=TokenOut,
    response_model_exclude_none=True,
    responses={403: {"description": "the current password is wrong"}},
)
async def change_password(
    body: PasswordIn,
    request: Request,
    response: Response,
    ctx: Ctx,
    auth: AuthDep,
    session: CurrentSession,
) -> TokenOut:
    """Change the password: every earlier token of this user stops working.

    Answers a fresh pair for this client (cookies when it came with cookies).
    """
    limits = limits_of(ctx)
    ip = client_ip(request)
    principal = session.principal
    throttle = _throttle(ctx, auth)
    await _check_throttle(throttle, ip, principal.sub)
    users = auth.users(ctx.bus)
    user = await users.get(principal.sub)
    if user is None:
        raise unauthorized("token_invalid", "the account no longer exists")
    try:
        check_password(
            body.new_password.get_secret_value(),
            min_length=_min_password(auth),
            role=principal.role,
            email=principal.email,
        )
    except WeakPassword as exc:
        raise ApiError(422, "weak_password", str(exc)) from None
    try:
        ok = await auth.passwords.verify(user.password_hash, body.old_password.get_secret_value())
        if not ok:
            await _charge_failure(limits, throttle, ip, principal.sub)
            raise forbidden("the current password is wrong", "invalid_credentials")
        hashed = await auth.passwords.hash(body.new_password.get_secret_value())
    except PasswordsBusy:
        raise _busy() from None
    user = await users.set_password(user.id, hashed, revoke=True)
    store = auth.refresh(ctx.bus)
    await store.revoke_family(session.claims.sid, "password_change")
    refresh, family = await store.start(user.id, user.token_gen)
    log.info("password changed sub=%s; earlier sessions revoked", user.id)
    return await _tokens(
        auth, ctx, response, user, cookie=session.via == "cookie", family=family, refresh=refresh
    )
