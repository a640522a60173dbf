"""Password hashing: argon2id, off the event loop, at most two at a time.

Hashing is deliberately expensive (about 19 MiB and a few tens of milliseconds
each), so it runs in a worker thread behind a semaphore: a login flood queues
here instead of starving the loop, and past ``max_waiting`` queued requests it
is refused outright (``PasswordsBusy`` -> 503) rather than piling up.

``RBOT_ARGON2_FAST=1`` lowers the cost for the test suite only; production
defaults are ``DEFAULT_PARAMS`` (checked by a unit test).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

log = logging.getLogger("rbot.api.auth")

FAST_ENV = "RBOT_ARGON2_FAST"

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class HashParams:
    time_cost: int
    memory_cost: int  # KiB
    parallelism: int


# OWASP's argon2id minimum: 19 MiB, 2 passes, 1 lane
DEFAULT_PARAMS = HashParams(time_cost=2, memory_cost=19456, parallelism=1)
# only for tests (RBOT_ARGON2_FAST=1): argon2id with a tiny cost
FAST_PARAMS = HashParams(time_cost=1, memory_cost=1024, parallelism=1)


class PasswordsBusy(RuntimeError):
    """Too many hashes queued: the caller should answer 503 and retry later."""


def params_from_env() -> HashParams:
    return FAST_PARAMS if os.environ.get(FAST_ENV, "") in ("1", "true", "yes") else DEFAULT_PARAMS


class Passwords:
    """argon2id hashing with a concurrency cap; safe to share across requests."""

    def __init__(
        self,
        params: HashParams = DEFAULT_PARAMS,
        *,
        concurrency: int = 2,
        max_waiting: int = 256,
    ) -> None:
        self.params = params
        self._hasher = PasswordHasher(
            time_cost=params.time_cost,
            memory_cost=params.memory_cost,
            parallelism=params.parallelism,
            hash_len=32,
            salt_len=16,
            type=Type.ID,
        )
        self._sem = asyncio.Semaphore(concurrency)
        self.concurrency = concurrency
        self.max_waiting = max_waiting
        self.waiting = 0  # callers queued behind the semaphore (for tests and metrics)
        self._dummy: str | None = None

    @classmethod
    def from_env(cls) -> Passwords:
        return cls(params_from_env())

    async def _run(self, fn: Callable[..., T], *args: str) -> T:
        if self.waiting >= self.max_waiting:
            raise PasswordsBusy("password hashing is saturated")
        self.waiting += 1
        try:
            await self._sem.acquire()
        finally:
            self.waiting -= 1
        try:
            return await asyncio.to_thread(fn, *args)
        finally:
            self._sem.release()

    async def hash(self, password: str) -> str:
        return await self._run(self._hasher.hash, password)

    async def verify(self, stored: str | None, password: str) -> bool:
        """True when ``password`` matches ``stored``.

        ``stored=None`` (an unknown user) verifies against a dummy hash of the
        same parameters, so an unknown email costs the same time as a wrong
        password and answers the same way.
        """
        target = stored if stored is not None else await self.dummy_hash()
        ok = await self._run(self._verify, target, password)
        return ok and stored is not None

    def _verify(self, stored: str, password: str) -> bool:
        try:
            return self._hasher.verify(stored, password)
        except VerifyMismatchError:
            return False
        except (InvalidHashError, VerificationError):
            log.warning("a stored password hash could not be checked (corrupt or unsupported)")
            return False

    def needs_rehash(self, stored: str) -> bool:
        try:
            return self._hasher.check_needs_rehash(stored)
        except InvalidHashError:
            return True

    async def dummy_hash(self) -> str:
        if self._dummy is None:
            self._dummy = await self.hash(secrets.token_urlsafe(24))
        return self._dummy

    async def warm(self) -> None:
        """Compute the dummy hash up front, so the first unknown email is not slower."""
        await self.dummy_hash()
