"""NATS credentials on disk: one random password per identity, bcrypt for the server.

Layout (``rbot up`` makes it on first start, reuses it after)::

    <RBOT_DATA_DIR>/nats-identities/        0700
        api, guard, executor, ...           0600, one line: the identity's password

The server never sees a password at rest: its config holds bcrypt hashes only
(``bus.identities.render_authorization``).  A process picks its credentials by
settings, never from argv or a URL:

* ``NATS_CREDS_DIR`` (a folder like the one above): each connection uses the
  identity of what connects (the API ``api``, the guard ``guard`` ...);
* ``NATS_USER`` / ``NATS_PASSWORD``: one identity for every connection of the
  process (a remote ``rbot api``, a tap);
* neither: no credentials (an open server, as in most tests).
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import bcrypt
from pydantic import SecretStr

from .config import Settings
from .identities import IDENTITIES, OPERATOR, UnknownIdentity, identity_of, inbox_prefix

CREDS_DIR = "nats-identities"
# The passwords are 256-bit random tokens, not something a person chose: a slow
# hash adds nothing against guessing them, and every (re)connect of every
# actor pays it on the server.  Measured here: a connect costs ~54 ms at cost 8
# (1.3 ms without auth); cost 11, the NATS CLI's default, would be ~310 ms a hash.
BCRYPT_ROUNDS = 8


class CredentialsError(RuntimeError):
    """Credentials missing or unreadable."""


@dataclass(frozen=True, slots=True)
class NatsAuth:
    """What one connection presents: user, password, and where its replies arrive."""

    user: str
    password: SecretStr
    inbox_prefix: str | None = None  # None: nats-py's default ``_INBOX``

    def __repr__(self) -> str:
        return f"NatsAuth(user={self.user!r}, password=**********)"


def creds_dir(data_dir: Path) -> Path:
    return Path(data_dir) / CREDS_DIR


def ensure_credentials(folder: Path) -> dict[str, SecretStr]:
    """Every identity's password, generating the missing ones (0600 files, 0700 folder)."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    out: dict[str, SecretStr] = {}
    for identity in IDENTITIES:
        path = folder / identity
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(32) + "\n")
        out[identity] = SecretStr(_read(path))
    return out


def password_hashes(passwords: dict[str, SecretStr]) -> dict[str, str]:
    """bcrypt hashes for the server's config (the passwords stay in their files)."""
    return {
        identity: bcrypt.hashpw(
            pw.get_secret_value().encode(), bcrypt.gensalt(rounds=BCRYPT_ROUNDS)
        ).decode()
        for identity, pw in passwords.items()
    }


def _read(path: Path) -> str:
    try:
        text = path.read_text().strip()
    except OSError as exc:
        raise CredentialsError(f"cannot read NATS credentials {path}: {exc.strerror}") from None
    if not text:
        raise CredentialsError(f"empty NATS credentials file {path}")
    return text


def load(folder: Path, identity: str) -> NatsAuth:
    if identity not in IDENTITIES:
        raise UnknownIdentity(f"unknown bus identity {identity!r}")
    password = SecretStr(_read(Path(folder) / identity))
    return NatsAuth(identity, password, inbox_prefix(identity))


def auth_for(settings: Settings, identity: str) -> NatsAuth | None:
    """The credentials a connection of ``identity`` presents under ``settings``."""
    if settings.nats_creds_dir is not None:
        return load(settings.nats_creds_dir, identity)
    if settings.nats_user is not None:
        user = settings.nats_user
        pw = settings.nats_password or SecretStr("")
        # our own identities reply on their own inboxes; a foreign user keeps _INBOX
        return NatsAuth(user, pw, inbox_prefix(user) if user in IDENTITIES else None)
    return None


def operator_auth(settings: Settings) -> NatsAuth | None:
    return auth_for(settings, OPERATOR)


def actor_auth(settings: Settings, actor: str) -> NatsAuth | None:
    """The credentials of an actor's connection (its identity: ``identities.ACTOR_IDENTITY``)."""
    if settings.nats_creds_dir is None and settings.nats_user is None:
        return None
    return auth_for(settings, identity_of(actor))


def local_defaults(settings: Settings) -> Settings:
    """Against the embedded server (no ``NATS_URL``), use ``rbot up``'s credentials folder."""
    if settings.nats_url or settings.nats_creds_dir is not None or settings.nats_user is not None:
        return settings
    folder = creds_dir(settings.rbot_data_dir)
    if not folder.is_dir():
        return settings
    return settings.model_copy(update={"nats_creds_dir": folder})
