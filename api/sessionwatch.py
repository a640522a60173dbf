"""Watch one signed-in session while it streams (SSE): KV watches, no polling.

A request is checked once when it arrives (``security.py``); a stream lives on.
This follows the two records that decide whether the session still stands:

- the user's record in KV ``users``: disabled, deleted, or a new credential
  generation (password change, disable) ends the session; a role change is
  passed to ``on_role`` (the relay narrows or widens what it shows);
- the session's refresh family in KV ``tokens`` (``fam_<sid>``): revoked
  (logout, refresh-token reuse, password change) or deleted ends it.

``session_end`` returns the reason as soon as one of them says so: a KV watch
delivers the change within milliseconds of the write, on every API replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import msgspec
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from rbot.bus.connection import Bus
from rbot.bus.timing import raise_if_cancelled

from .principal import Role
from .tokens import FamilyRecord, family_key
from .users import UserRecord

log = logging.getLogger("rbot.api.relay")

_user_dec = msgspec.json.Decoder(UserRecord)
_family_dec = msgspec.json.Decoder(FamilyRecord)


@dataclass(frozen=True, slots=True)
class SessionRef:
    """What the stream was authorised with (from the access token and the store)."""

    user: str
    gen: int
    sid: str


async def _entries(kv: KeyValue, key: str) -> AsyncGenerator[KeyValue.Entry, None]:
    watcher = await kv.watch(key)
    try:
        raise_if_cancelled()
        async for entry in watcher:
            if entry is not None:  # None: the end of the initial values
                yield entry
    finally:
        await watcher.stop()  # type: ignore[no-untyped-call]  # nats-py leaves it unannotated


def _value(entry: KeyValue.Entry) -> bytes | None:
    """The stored bytes, ``None`` for a delete or purge."""
    if entry.operation in (KV_DEL, KV_PURGE) or not entry.value:
        return None
    return entry.value


async def _user_end(bus: Bus, ref: SessionRef, on_role: Callable[[Role], None]) -> str:
    async with contextlib.aclosing(_entries(await bus.kv("users"), ref.user)) as entries:
        return await _user_verdict(entries, ref, on_role)


async def _user_verdict(
    entries: AsyncIterator[KeyValue.Entry], ref: SessionRef, on_role: Callable[[Role], None]
) -> str:
    async for entry in entries:
        value = _value(entry)
        if value is None:
            return "account_removed"
        user = _user_dec.decode(value)
        if user.disabled:
            return "account_disabled"
        if user.token_gen != ref.gen:
            return "credentials_changed"
        on_role(user.role)
    return "session_unverifiable"  # the watch ended: do not stream unchecked


async def _family_end(bus: Bus, ref: SessionRef) -> str:
    async with contextlib.aclosing(_entries(await bus.kv("tokens"), family_key(ref.sid))) as e:
        return await _family_verdict(e, ref)


async def _family_verdict(entries: AsyncIterator[KeyValue.Entry], ref: SessionRef) -> str:
    async for entry in entries:
        value = _value(entry)
        if value is None:
            return "session_ended"
        fam = _family_dec.decode(value)
        if fam.revoked:
            return "session_revoked"
        if fam.user != ref.user:
            return "session_invalid"
    return "session_unverifiable"


async def session_end(bus: Bus, ref: SessionRef, on_role: Callable[[Role], None]) -> str:
    """Wait until the session no longer stands; the reason (a stable code)."""
    reasons: list[str] = []
    done = asyncio.Event()

    async def first(check: Coroutine[Any, Any, str]) -> None:
        reasons.append(await check)
        done.set()

    async with asyncio.TaskGroup() as tg:
        tasks = [
            tg.create_task(first(_user_end(bus, ref, on_role))),
            tg.create_task(first(_family_end(bus, ref))),
        ]
        await done.wait()
        for t in tasks:
            t.cancel()
    return reasons[0]
