"""The records every authenticated request checks, kept in memory by KV watches.

A request is allowed when its user (KV ``users``: exists, enabled, same
credential generation) and its session (KV ``tokens`` ``fam_<sid>``: not
revoked, same user, not expired) still stand.  Reading both from KV on every
request cost two round trips (issue 12); this process keeps them current
instead: one watch per bucket delivers every change within milliseconds of the
write, on every API replica, so logout, disable and a role change take effect
at once here too.

Correctness, not a TTL guess:

- a watch delivers each key's current value, then every change, in stream
  order; each key keeps the record with the highest revision seen (from the
  watch or from a read), so nothing is reordered;
- a key the cache does not hold is read from KV (a session started on another
  replica a moment ago may not have reached this one's watch yet): a miss never
  grants more than the store would, so no snapshot is needed before serving
  (and none is taken: the ``api`` NATS identity may watch these buckets but not
  pull from them; the watch's end-of-initial-values marker is not used either);
- while the bus is down lookups read KV (the routes answer 503 anyway); on
  every reconnect the watches are re-created and what they held is forgotten (a
  watch is a hint: it may have missed changes meanwhile);
- a change this process makes itself (logout, disable, role, password) marks
  the key, and the next lookup reads KV: the caller's own next request sees it
  even before the watch delivers it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import msgspec
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from rbot.bus import keys
from rbot.bus.connection import Bus
from rbot.bus.outage import is_outage, leaves
from rbot.bus.subjects import is_token
from rbot.bus.timing import raise_if_cancelled

from .tokens import FamilyRecord, RefreshStore, family_key
from .users import UserRecord, UserStore

log = logging.getLogger("rbot.api.auth")

FAMILY_PREFIX = family_key("")
WATCH_RETRY_S = (0.25, 4.0)  # first and longest wait before making the watches again

_user_dec = msgspec.json.Decoder(UserRecord)
_family_dec = msgspec.json.Decoder(FamilyRecord)

T = TypeVar("T")


@dataclass
class _Table(Generic[T]):
    """One bucket's records by key, each with the revision it came from."""

    decode: Callable[[bytes], T]
    accept: Callable[[str], bool]
    rows: dict[str, tuple[int, T | None]] = field(default_factory=dict)
    # keys this process just wrote: read from KV until a read started after the write
    dirty: dict[str, int] = field(default_factory=dict)
    marks: int = 0

    def touch(self, key: str) -> None:
        self.marks += 1
        self.dirty[key] = self.marks

    def apply(self, key: str, revision: int, value: bytes | None) -> None:
        """Keep ``value`` (``None``: deleted) unless a newer revision is already held."""
        if not self.accept(key):
            return
        held = self.rows.get(key)
        if held is not None and held[0] >= revision:
            return
        try:
            record = None if value is None else self.decode(value)
        except msgspec.DecodeError:
            log.warning("auth cache: undecodable record at revision %d", revision)
            record = None
        self.rows[key] = (revision, record)

    def entry(self, entry: KeyValue.Entry) -> None:
        deleted = entry.operation in (KV_DEL, KV_PURGE) or not entry.value
        self.apply(entry.key, entry.revision or 0, None if deleted else entry.value)


def _is_user_key(key: str) -> bool:
    return key != keys.ADMINS


def _is_family_key(key: str) -> bool:
    return key.startswith(FAMILY_PREFIX)


class AuthCache:
    """Users and session families of this API process, current by KV watch."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.users: _Table[UserRecord] = _Table(_user_dec.decode, _is_user_key)
        self.families: _Table[FamilyRecord] = _Table(_family_dec.decode, _is_family_key)
        self.live = False  # the snapshot is in and the watches run
        self.loaded = asyncio.Event()  # set after each complete (re)load: tests wait on it
        self.loads = 0
        self.stalled = asyncio.Event()  # set when the watches could not be made (outage)
        self.stalls = 0
        self.changed = asyncio.Event()  # set on each change a watch delivers (tests wait on it)

    # -- lookups ------------------------------------------------------------------
    async def user(self, uid: str) -> UserRecord | None:
        if not is_token(uid) or not _is_user_key(uid):
            return None
        return await self._lookup(self.users, "users", uid)

    async def family(self, sid: str) -> FamilyRecord | None:
        """The session's refresh family (``sid`` from the access token)."""
        if not is_token(sid):
            return None
        return await self._lookup(self.families, "tokens", family_key(sid))

    async def _lookup(self, table: _Table[T], bucket: str, key: str) -> T | None:
        mark = table.dirty.get(key)
        if mark is None and self.live and self.bus.connected:
            held = table.rows.get(key)
            if held is not None:
                return held[1]
        # not loaded yet, the bus is down (the answer is 503 anyway), a record this
        # process has not seen yet, or one it has just written: the store decides
        kv = await self.bus.kv(bucket)
        try:
            entry = await kv.get(key)
        except KeyNotFoundError:
            entry = None
        if mark is not None and table.dirty.get(key) == mark:
            del table.dirty[key]  # this read started after the write: the cache has it now
        if entry is None:
            return None
        table.entry(entry)
        held = table.rows.get(key)
        return None if held is None else held[1]

    async def _follow(self, watcher: KeyValue.KeyWatcher, table: _Table[T]) -> None:
        async for entry in watcher:
            if entry is not None:  # None: the end-of-initial-values marker (not used)
                table.entry(entry)
                self.changed.set()

    def touch_user(self, uid: str) -> None:
        """This process changed the user: its own next request reads it from KV (the
        watch delivers the change within milliseconds, but not before the reply)."""
        self.users.touch(uid)

    def touch_family(self, sid: str) -> None:
        self.families.touch(family_key(sid))

    # -- keeping it current -----------------------------------------------------------
    async def run(self) -> None:
        """Load, follow both buckets, and load again after every reconnect. Never returns.

        A watch that cannot be made (JetStream still electing a stream leader after
        a node loss: the consumer create times out, or no JetStream yet) is an
        outage, not the end: lookups read KV meanwhile, and the watches are tried
        again.  (It used to end this task, and with it the API's lifespan and its
        NATS connection: every later request answered ``503 bus_unavailable``.)"""
        delay = WATCH_RETRY_S[0]
        while True:
            seen = self.bus.reconnects
            self.live = False
            try:
                await self._load_and_follow(seen)
            except Exception as exc:
                if not is_outage(exc):
                    raise
                log.info("auth cache: watches not made (%s); again in %.1f s", leaves(exc), delay)
                self.stalls += 1
                self.stalled.set()
                await self.bus.wait_online()
                await asyncio.sleep(delay)  # nothing announces JetStream's recovery
                delay = min(delay * 2, WATCH_RETRY_S[1])
            else:
                delay = WATCH_RETRY_S[0]

    async def _load_and_follow(self, seen: int) -> None:
        """One generation of watches: until the next reconnect after ``seen``."""
        buckets: tuple[tuple[KeyValue, _Table[Any]], ...] = (
            (await self.bus.kv("users"), self.users),
            (await self.bus.kv("tokens"), self.families),
        )
        async with contextlib.AsyncExitStack() as stack, asyncio.TaskGroup() as tg:
            followers = []
            for kv, table in buckets:
                # what an earlier watch left may be stale (it may have missed changes
                # while the bus was away): forget it; a miss reads the store
                table.rows.clear()
                watcher = await kv.watch(">")
                stack.push_async_callback(watcher.stop)
                raise_if_cancelled()  # nats-py's requests may swallow a cancellation
                followers.append(tg.create_task(self._follow(watcher, table)))
            if self.bus.reconnects == seen:  # else: reconnected meanwhile, start again
                self.live = True
                self.loads += 1
                self.loaded.set()
                try:
                    await self.bus.reconnected_after(seen)  # a watch is a hint: re-create it
                finally:
                    self.live = False
            for f in followers:
                f.cancel()


class WriteThroughUsers(UserStore):
    """The user store for API routes: a change is seen at once by this process."""

    def __init__(self, bus: Bus, cache: AuthCache) -> None:
        super().__init__(bus)
        self._cache = cache

    async def update(self, uid: str, change: Callable[[UserRecord], UserRecord]) -> UserRecord:
        try:
            return await super().update(uid, change)
        finally:
            self._cache.touch_user(uid)


class WriteThroughRefresh(RefreshStore):
    """The refresh store for API routes: a revoked session is seen at once here."""

    def __init__(self, bus: Bus, cache: AuthCache, clock: Callable[[], float]) -> None:
        super().__init__(bus, clock=clock)
        self._cache = cache

    async def revoke_family(self, family: str, reason: str) -> None:
        try:
            await super().revoke_family(family, reason)
        finally:
            self._cache.touch_family(family)
