"""Failure counters in the KV bucket ``lockouts``, shared by every API replica.

One record per key (keys from ``bus/keys.py``): how many failures since the
counter was last cleared or forgotten, and the times of the most recent ones.
Every change is a compare-and-set on the revision (retried on a concurrent
write), so two replicas counting the same key never lose a failure.  The bucket
keeps a key for 24 hours after its last write (``bus/provision.py``), so a
counter survives API restarts and needs no sweeping.

Login throttling (``loginthrottle.py``) and the live PIN (``pin.py``) build
their policies on top; this module only stores.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

import msgspec
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from rbot.bus.connection import Bus

KEEP_TIMES = 16
_CAS_ATTEMPTS = 16


class LockoutError(RuntimeError):
    """A counter kept changing under every attempt (answer 503, retry)."""


class Strikes(msgspec.Struct, frozen=True, kw_only=True):
    count: int = 0  # failures since cleared or forgotten
    times: tuple[float, ...] = ()  # the most recent failure times (epoch s), oldest first

    @property
    def last(self) -> float | None:
        return self.times[-1] if self.times else None

    def add(self, now: float, *, forget_after: float) -> Strikes:
        """One more failure at ``now``; a counter idle for ``forget_after`` starts over."""
        last = self.last
        base = self if last is not None and now - last < forget_after else Strikes()
        return Strikes(count=base.count + 1, times=(*base.times, now)[-KEEP_TIMES:])

    def within(self, now: float, seconds: float) -> int:
        """Failures in the last ``seconds``."""
        return sum(1 for t in self.times if now - t < seconds)


_decoder = msgspec.json.Decoder(Strikes)
_encoder = msgspec.json.Encoder()


class LockoutStore:
    """The ``lockouts`` bucket.  Cheap to build: one per request is fine."""

    def __init__(self, bus: Bus, clock: Callable[[], float] = time.time) -> None:
        self.bus = bus
        self.clock = clock

    async def _kv(self) -> KeyValue:
        return await self.bus.kv("lockouts")

    async def _read(self, key: str) -> tuple[Strikes, int | None]:
        kv = await self._kv()
        try:
            entry = await kv.get(key)
        except KeyNotFoundError:
            return Strikes(), None
        if not entry.value:
            return Strikes(), entry.revision  # a delete marker: update over it
        try:
            return _decoder.decode(entry.value), entry.revision
        except msgspec.DecodeError:
            return Strikes(), entry.revision  # unreadable: start over rather than fail open

    async def read(self, key: str) -> Strikes:
        return (await self._read(key))[0]

    async def change(self, key: str, fn: Callable[[Strikes], Strikes]) -> Strikes:
        """Apply ``fn`` with compare-and-set; the stored result."""
        kv = await self._kv()
        for _ in range(_CAS_ATTEMPTS):
            current, revision = await self._read(key)
            new = fn(current)
            try:
                if revision is None:
                    await kv.create(key, _encoder.encode(new))
                else:
                    await kv.update(key, _encoder.encode(new), last=revision)
            except KeyWrongLastSequenceError:
                continue
            return new
        raise LockoutError(f"the counter {key} kept changing under {_CAS_ATTEMPTS} attempts")

    async def strike(self, key: str, *, forget_after: float) -> Strikes:
        now = self.clock()
        return await self.change(key, lambda s: s.add(now, forget_after=forget_after))

    async def clear(self, key: str) -> None:
        kv = await self._kv()
        with contextlib.suppress(KeyNotFoundError):  # nothing counted: nothing to clear
            await kv.delete(key)
