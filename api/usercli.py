"""``rbot user``: manage users straight in the KV store, without HTTP.

    rbot user add EMAIL [--role viewer|trader|admin]   password from a prompt, or stdin
    rbot user list
    rbot user role EMAIL ROLE
    rbot user disable EMAIL
    rbot user enable EMAIL

For scripts: ``printf '%s\\n' "$PW" | rbot user add ops@example.com --role trader``.
The password is never echoed or logged.  Admins need a real one (12+
characters, not the email, not a common password), in local mode too.

``rbot.cli`` registers the parser on every run: the user store and the password
hasher (argon2) are imported only when a ``user`` command runs.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from typing import TYPE_CHECKING, Any

from .principal import Role

if TYPE_CHECKING:
    from .users import UserRecord, UserStore
from rbot.bus.config import DEFAULT_NATS_URL, Settings
from rbot.bus.connection import Bus, connect
from rbot.bus.credentials import CredentialsError, operator_auth
from rbot.bus.provision import provision

ROLES = [r.value for r in Role]


class CliError(Exception):
    """A user-facing failure: printed, exit status 1."""


def add_parser(subparsers: Any) -> None:
    """Register ``user`` and its commands on the ``rbot`` sub-parsers."""
    user = subparsers.add_parser("user", help="manage users (add, list, role, disable, enable)")
    cmds = user.add_subparsers(dest="user_cmd", required=True)
    add = cmds.add_parser("add", help="create a user; the password is prompted or read from stdin")
    add.add_argument("email")
    add.add_argument("--role", choices=ROLES, default=Role.VIEWER.value)
    cmds.add_parser("list", help="list users")
    role = cmds.add_parser("role", help="change a user's role")
    role.add_argument("email")
    role.add_argument("role", choices=ROLES)
    disable = cmds.add_parser("disable", help="disable a user (ends their sessions)")
    disable.add_argument("email")
    enable = cmds.add_parser("enable", help="enable a disabled user")
    enable.add_argument("email")


def read_password(min_length: int, role: Role = Role.VIEWER, email: str | None = None) -> str:
    """From a prompt (asked twice) on a terminal, else the first line of stdin."""
    from .users import WeakPassword, check_password

    if sys.stdin.isatty():
        first = getpass.getpass("password: ")
        if getpass.getpass("again: ") != first:
            raise CliError("the passwords differ")
        password = first
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    try:
        check_password(password, min_length=min_length, role=role, email=email)
    except WeakPassword as exc:
        raise CliError(str(exc)) from None
    return password


def _line(u: UserRecord) -> str:
    state = "disabled" if u.disabled else "enabled"
    return f"{u.email:<40} {u.role.value:<7} {state:<8} {u.id}  created {u.created}"


async def _find(store: UserStore, email: str) -> UserRecord:
    from .users import InvalidEmail, normalise_email

    try:
        user = await store.by_email(normalise_email(email))
    except InvalidEmail as exc:
        raise CliError(str(exc)) from None
    if user is None:
        raise CliError(f"no user {email}")
    return user


async def _execute(args: argparse.Namespace, settings: Settings, bus: Bus) -> str:
    from .passwords import Passwords
    from .users import (
        MIN_PASSWORD,
        MIN_PASSWORD_LOCAL,
        EmailTaken,
        InvalidEmail,
        UserStore,
        normalise_email,
    )

    store = UserStore(bus)
    cmd = args.user_cmd
    if cmd == "add":
        try:
            email = normalise_email(args.email)
        except InvalidEmail as exc:
            raise CliError(str(exc)) from None
        local = settings.rbot_dev or settings.rbot_open_registration.strip().lower() == "trader"
        role = Role(args.role)
        password = await asyncio.to_thread(
            read_password, MIN_PASSWORD_LOCAL if local else MIN_PASSWORD, role, email
        )
        hashed = await Passwords.from_env().hash(password)
        try:
            user = await store.create(email, hashed, role)
        except EmailTaken:
            raise CliError(f"{email} is already registered") from None
        return f"created {_line(user)}"
    if cmd == "list":
        users = await store.list_all()
        return "\n".join(_line(u) for u in users) if users else "no users"
    if cmd == "role":
        user = await _find(store, args.email)
        return f"updated {_line(await store.set_role(user.id, Role(args.role)))}"
    if cmd in ("disable", "enable"):
        user = await _find(store, args.email)
        return f"updated {_line(await store.set_disabled(user.id, cmd == 'disable'))}"
    raise CliError(f"unknown user command {cmd!r}")


async def run(args: argparse.Namespace, settings: Settings) -> int:
    """Do one ``rbot user`` command; 0 on success, 1 with a message on stderr."""
    try:
        bus = await connect(
            settings.nats_url or DEFAULT_NATS_URL,
            settings.subjects(),
            "rbot-user-cli",
            first_attempts=5,
            auth=operator_auth(settings),
        )
    except (ConnectionError, CredentialsError) as exc:
        sys.stderr.write(f"rbot user: {exc}\n")
        return 1
    try:
        await provision(bus, settings.rbot_replicas)
        out = await _execute(args, settings, bus)
    except CliError as exc:
        sys.stderr.write(f"rbot user: {exc}\n")
        return 1
    finally:
        await bus.close()
    sys.stdout.write(out + "\n")
    return 0
