"""Users, stored in the KV bucket ``users`` (nothing in memory, nothing in files).

One key per user, derived from the normalised email: ``u_`` + the first 32 hex
digits of its SHA-256.  The key is also the user's id (the JWT ``sub``), so it is
token-safe by construction and a lookup by id or by email is one KV get.
Creation is a KV ``create`` (a second account for the same email fails), every
change a compare-and-set on the revision, retried on a concurrent write.

``token_gen`` counts credential events (password change, disable): access and
refresh tokens carry the generation they were issued under and stop working as
soon as it moves on.  A counter, unlike a "valid after" timestamp, does not
depend on second-granular ``iat`` values or on clocks agreeing across replicas.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
from collections.abc import Callable

import msgspec
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from rbot.bus import keys
from rbot.bus.codec import now_iso
from rbot.bus.connection import Bus
from rbot.bus.kvscan import scan
from rbot.bus.subjects import is_token

from .passwords import Passwords
from .principal import Role

log = logging.getLogger("rbot.api.auth")

ADMIN_EMAIL_ENV = "RBOT_ADMIN_EMAIL"
DEFAULT_ADMIN_EMAIL = "admin@localhost"
MIN_PASSWORD = 8
MIN_PASSWORD_LOCAL = 4  # open registration as trader, or RBOT_DEV: the seed's "pass"
MIN_PASSWORD_ADMIN = 12  # everywhere, local mode included
MAX_PASSWORD = 1024
# the top of the breached-password lists at 12+ characters (compared lower-cased)
COMMON_PASSWORDS = frozenset(
    {
        "123456789012",
        "1234567890123",
        "12345678910",
        "1q2w3e4r5t6y",
        "aaaaaaaaaaaa",
        "abcdefghijkl",
        "administrator",
        "admin1234567",
        "adminadmin12",
        "changeme1234",
        "iloveyou1234",
        "letmein12345",
        "password1234",
        "password12345",
        "password123456",
        "passwordpassword",
        "qwerty123456",
        "qwertyuiop12",
        "qwertyuiopasdf",
        "trustno1trustno1",
        "welcome12345",
        "welcome123456",
    }
)
MAX_EMAIL = 254
_EMAIL_RE = re.compile(r"^[^@\s\x00-\x1f\x7f]{1,64}@[^@\s\x00-\x1f\x7f]{1,189}$")
_CAS_ATTEMPTS = 8


class UserError(Exception):
    """Base of the user store's errors."""


class InvalidEmail(UserError):
    pass


class EmailTaken(UserError):
    pass


class UserNotFound(UserError):
    pass


class WeakPassword(UserError):
    pass


class LastAdmin(UserError):
    """The change would leave no enabled admin."""


class UserRecord(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    email: str
    password_hash: str
    role: Role
    disabled: bool = False
    token_gen: int = 0
    created: str
    updated: str
    password_changed: str | None = None


class AdminRoster(msgspec.Struct, frozen=True, kw_only=True):
    """KV ``users`` key ``admins``: the ids of the enabled admins.

    The last-admin rule is decided on this one record with compare-and-set, so
    two admins demoting each other at once cannot both pass the check: the
    second write loses the race, re-reads, and finds only itself left.  An
    admin leaves the roster *before* its record stops being an enabled admin,
    and joins it *after* it becomes one, so the roster never counts an admin
    that is not one (it may briefly count one fewer, which only refuses more).
    """

    admins: tuple[str, ...] = ()


_decoder = msgspec.json.Decoder(UserRecord)
_roster_decoder = msgspec.json.Decoder(AdminRoster)
_encoder = msgspec.json.Encoder()


def _enabled_admin(user: UserRecord | None) -> bool:
    return user is not None and user.role is Role.ADMIN and not user.disabled


def normalise_email(raw: str) -> str:
    """Trimmed and lower-cased; ``InvalidEmail`` unless it looks like ``local@domain``.

    Deliberately simple (no DNS, no extra dependency): ``trader@test`` and
    ``admin@localhost`` are valid, as the seed and the bootstrap need.
    """
    email = raw.strip().lower()
    if len(email) > MAX_EMAIL or not _EMAIL_RE.match(email) or not _is_text(email):
        raise InvalidEmail("email must look like name@domain")
    return email


def _is_text(value: str) -> bool:
    try:
        value.encode()
    except UnicodeEncodeError:  # lone surrogates
        return False
    return True


def user_id(email: str) -> str:
    return "u_" + hashlib.sha256(normalise_email(email).encode()).hexdigest()[:32]


def check_password(
    password: str,
    *,
    min_length: int = MIN_PASSWORD,
    role: Role | None = None,
    email: str | None = None,
) -> None:
    """``WeakPassword`` unless ``password`` is acceptable for a user of ``role``.

    Admins get the stricter policy everywhere (registration by an admin, password
    change, ``rbot user add --role admin``), whatever mode the server runs in: at
    least ``MIN_PASSWORD_ADMIN`` characters, not the email or its local part, not
    a common password.
    """
    if role is Role.ADMIN:
        min_length = max(min_length, MIN_PASSWORD_ADMIN)
    if len(password) < min_length:
        raise WeakPassword(f"password must be at least {min_length} characters")
    if len(password) > MAX_PASSWORD:
        raise WeakPassword(f"password must be at most {MAX_PASSWORD} characters")
    if not _is_text(password):
        raise WeakPassword("password must be valid Unicode text")
    if role is Role.ADMIN:
        folded = password.strip().lower()
        if email and folded in {email.strip().lower(), email.strip().lower().split("@")[0]}:
            raise WeakPassword("an admin password must not be the email")
        if folded in COMMON_PASSWORDS:
            raise WeakPassword("that password is too common for an admin")


def generate_password() -> str:
    return secrets.token_urlsafe(18)


class UserStore:
    """The ``users`` bucket.  Cheap to build: one per request is fine."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    async def _kv(self) -> KeyValue:
        return await self.bus.kv("users")

    async def _get(self, key: str) -> tuple[UserRecord, int] | None:
        if not is_token(key) or key == keys.ADMINS:
            return None
        kv = await self._kv()
        try:
            entry = await kv.get(key)
        except KeyNotFoundError:
            return None
        if entry.value is None:
            return None
        return _decoder.decode(entry.value), entry.revision or 0

    async def get(self, uid: str) -> UserRecord | None:
        found = await self._get(uid)
        return found[0] if found else None

    async def by_email(self, email: str) -> UserRecord | None:
        try:
            uid = user_id(email)
        except InvalidEmail:
            return None
        return await self.get(uid)

    # -- the admin roster (last-admin rule) -----------------------------------

    async def _roster(self) -> tuple[frozenset[str], int | None]:
        """The roster and its revision (``None``: not written yet, built from the records)."""
        kv = await self._kv()
        try:
            entry = await kv.get(keys.ADMINS)
        except KeyNotFoundError:
            entry = None
        if entry is None or entry.value is None:
            users = await self.list_all()
            return frozenset(u.id for u in users if _enabled_admin(u)), None
        return frozenset(_roster_decoder.decode(entry.value).admins), entry.revision or 0

    async def _write_roster(self, admins: frozenset[str], revision: int | None) -> None:
        """Compare-and-set; ``KeyWrongLastSequenceError`` when someone wrote first."""
        kv = await self._kv()
        value = _encoder.encode(AdminRoster(admins=tuple(sorted(admins))))
        if revision is None:
            await kv.create(keys.ADMINS, value)
        else:
            await kv.update(keys.ADMINS, value, last=revision)

    async def _release_admin(self, uid: str, *, keep_one: bool) -> None:
        """Take ``uid`` off the roster before it stops being an enabled admin.

        With ``keep_one``, ``LastAdmin`` when no other enabled admin would be left.
        Members whose record is no longer an enabled admin are dropped on the way.
        """
        for _ in range(_CAS_ATTEMPTS):
            admins, revision = await self._roster()
            others = {a for a in admins - {uid} if _enabled_admin(await self.get(a))}
            if keep_one and not others and _enabled_admin(await self.get(uid)):
                raise LastAdmin("this is the last enabled admin")
            try:
                await self._write_roster(frozenset(others), revision)
            except KeyWrongLastSequenceError:
                continue
            return
        raise UserError(f"the admin roster kept changing under {_CAS_ATTEMPTS} attempts")

    async def _claim_admin(self, uid: str) -> None:
        """Put ``uid`` on the roster after it became an enabled admin."""
        for _ in range(_CAS_ATTEMPTS):
            admins, revision = await self._roster()
            if uid in admins and revision is not None:
                return
            if not _enabled_admin(await self.get(uid)):
                return  # changed again meanwhile: whoever changed it keeps the roster
            try:
                await self._write_roster(admins | {uid}, revision)
            except KeyWrongLastSequenceError:
                continue
            return
        raise UserError(f"the admin roster kept changing under {_CAS_ATTEMPTS} attempts")

    async def admins(self) -> frozenset[str]:
        """The ids on the admin roster (for tests and ``rbot user list``)."""
        return (await self._roster())[0]

    async def create(self, email: str, password_hash: str, role: Role) -> UserRecord:
        email = normalise_email(email)
        now = now_iso()
        rec = UserRecord(
            id=user_id(email),
            email=email,
            password_hash=password_hash,
            role=role,
            created=now,
            updated=now,
        )
        kv = await self._kv()
        try:
            await kv.create(rec.id, _encoder.encode(rec))
        except KeyWrongLastSequenceError:
            raise EmailTaken("that email is already registered") from None
        log.info("user created sub=%s role=%s", rec.id, rec.role.value)
        if rec.role is Role.ADMIN:
            await self._claim_admin(rec.id)
        return rec

    async def update(self, uid: str, change: Callable[[UserRecord], UserRecord]) -> UserRecord:
        """Apply ``change`` with compare-and-set, re-reading after a concurrent write."""
        kv = await self._kv()
        for _ in range(_CAS_ATTEMPTS):
            found = await self._get(uid)
            if found is None:
                raise UserNotFound(uid)
            current, revision = found
            new = msgspec.structs.replace(change(current), id=current.id, updated=now_iso())
            try:
                await kv.update(uid, _encoder.encode(new), last=revision)
            except KeyWrongLastSequenceError:
                continue
            return new
        raise UserError(f"user {uid} kept changing under {_CAS_ATTEMPTS} attempts")

    async def set_password(self, uid: str, password_hash: str, *, revoke: bool) -> UserRecord:
        """New hash; with ``revoke`` every token issued before stops working."""

        def change(u: UserRecord) -> UserRecord:
            return msgspec.structs.replace(
                u,
                password_hash=password_hash,
                token_gen=u.token_gen + (1 if revoke else 0),
                password_changed=now_iso() if revoke else u.password_changed,
            )

        return await self.update(uid, change)

    async def set_role(self, uid: str, role: Role, *, keep_admin: bool = False) -> UserRecord:
        """Change the role; with ``keep_admin``, ``LastAdmin`` rather than leave none."""
        if role is not Role.ADMIN:
            await self._release_admin(uid, keep_one=keep_admin)
        user = await self.update(uid, lambda u: msgspec.structs.replace(u, role=role))
        if _enabled_admin(user):
            await self._claim_admin(uid)
        return user

    async def set_disabled(
        self, uid: str, disabled: bool, *, keep_admin: bool = False
    ) -> UserRecord:
        """Disable (sessions end) or enable; ``keep_admin`` as for ``set_role``."""
        if disabled:
            await self._release_admin(uid, keep_one=keep_admin)

        def change(u: UserRecord) -> UserRecord:
            gen = u.token_gen + 1 if disabled and not u.disabled else u.token_gen
            return msgspec.structs.replace(u, disabled=disabled, token_gen=gen)

        user = await self.update(uid, change)
        if _enabled_admin(user):
            await self._claim_admin(uid)
        return user

    async def list_all(self) -> list[UserRecord]:
        kv = await self._kv()
        users = [
            _decoder.decode(e.value)
            for e in await scan(kv, ">")
            if e.key != keys.ADMINS and e.value
        ]
        users.sort(key=lambda u: (u.created, u.email))
        return users


async def ensure_admin(
    bus: Bus, passwords: Passwords | None = None, email: str | None = None
) -> tuple[str, str] | None:
    """Create the first admin when there is no enabled one.

    Returns ``(email, password)`` for ``rbot up`` to print once, or ``None`` when
    an admin exists (or the bootstrap email is already taken by a non-admin, in
    which case a warning says how to promote someone).
    """
    store = UserStore(bus)
    if any(u.role is Role.ADMIN and not u.disabled for u in await store.list_all()):
        return None
    email = normalise_email(email or os.environ.get(ADMIN_EMAIL_ENV) or DEFAULT_ADMIN_EMAIL)
    password = generate_password()
    hasher = passwords or Passwords.from_env()
    try:
        await store.create(email, await hasher.hash(password), Role.ADMIN)
    except EmailTaken:
        existing = await store.by_email(email)
        if existing is not None and existing.role is Role.ADMIN and not existing.disabled:
            return None  # another process bootstrapped it a moment ago
        log.warning(
            "no enabled admin, and the bootstrap email is taken: "
            "promote a user with `rbot user role EMAIL admin`"
        )
        return None
    return email, password
