"""Partition leases with a fencing epoch (KV ``orders`` key ``fence.<part>``).

Whoever holds ``fence.<part>`` owns the partition; the entry's revision when it
was taken is the **epoch**.  The lease is not renewed (no TTL): it moves only
when its holder gives it back (a delete) or when a live instance takes it from a
holder whose heartbeats stopped (a compare-and-set on the revision it saw).
Either way the revision changes, so every write the old holder still tries is
refused by the server itself: each fenced write carries
``Nats-Expected-Last-Subject-Sequence: <epoch>`` checked against the fence's
subject (``Nats-Expected-Last-Subject-Sequence-Subject``, nats-server >= 2.11),
in the same stream as the order state.  The check and the write are one atomic
step of the stream, so a holder that lost its lease cannot commit order state;
it learns it from the refusal (``Fenced``) and stops.  Events are published
only after a fenced write succeeded, so they cannot outrun the fence.
"""

from __future__ import annotations

import logging

from nats.js.errors import APIError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from . import codec, keys
from .connection import Bus
from .messages import FenceRecord

log = logging.getLogger("rbot.fence")

WRONG_LAST_SEQUENCE = 10071  # JetStream's err_code for a failed expected-sequence check
BUCKET = "orders"


class Fenced(RuntimeError):
    """This instance no longer holds the partition: stop writing for it."""


class PartitionFence:
    """One partition's lease, and the writes fenced by it."""

    def __init__(self, bus: Bus, kv: KeyValue, partition: int, owner: str) -> None:
        self.bus = bus
        self.kv = kv
        self.partition = partition
        self.owner = owner
        self.key = keys.fence(partition)
        self.epoch: int | None = None
        self._fence_subject = bus.subjects.kv_subject(BUCKET, self.key)

    def _record(self) -> bytes:
        return codec.encode(FenceRecord(owner=self.owner, ts=codec.now_iso()))

    async def claim(self) -> bool:
        """Take a free partition."""
        try:
            self.epoch = await self.kv.create(self.key, self._record())
        except KeyWrongLastSequenceError:
            return False
        return True

    async def take_over(self, seen_revision: int) -> bool:
        """Take the partition from a holder seen dead at ``seen_revision``."""
        try:
            self.epoch = await self.kv.update(self.key, self._record(), last=seen_revision)
        except (KeyWrongLastSequenceError, KeyNotFoundError):
            return False
        return True

    async def release(self) -> None:
        """Give the partition back (a no-op if it was taken from us meanwhile)."""
        if self.epoch is None:
            return
        epoch, self.epoch = self.epoch, None
        try:
            await self.kv.delete(self.key, last=epoch)
        except KeyWrongLastSequenceError:
            pass  # taken over meanwhile: not ours to delete
        except APIError as exc:  # nats-py's delete does not map this one
            if exc.err_code != WRONG_LAST_SEQUENCE:
                raise

    # -- fenced writes -------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        if self.epoch is None:
            raise Fenced(f"partition {self.partition} is not held")
        return {
            "Nats-Expected-Last-Subject-Sequence": str(self.epoch),
            "Nats-Expected-Last-Subject-Sequence-Subject": self._fence_subject,
        }

    async def put(self, key: str, value: bytes) -> int:
        """Write ``key`` in KV ``orders`` if we still hold the partition; its revision."""
        subject = self.bus.subjects.kv_subject(BUCKET, key)
        try:
            ack = await self.bus.js.publish(subject, value, headers=self._headers())
        except APIError as exc:
            if exc.err_code == WRONG_LAST_SEQUENCE:
                self.epoch = None
                raise Fenced(f"partition {self.partition}: lease lost ({self.owner})") from exc
            raise
        return int(ack.seq)

    async def purge(self, key: str, marker_ttl: float) -> None:
        """Remove ``key`` and its history; the purge marker itself goes after ``marker_ttl``
        (so removed keys leave nothing behind that a later scan would have to skip)."""
        subject = self.bus.subjects.kv_subject(BUCKET, key)
        headers = {**self._headers(), "KV-Operation": "PURGE", "Nats-Rollup": "sub"}
        try:
            await self.bus.js.publish(subject, b"", headers=headers, msg_ttl=marker_ttl)
        except APIError as exc:
            if exc.err_code == WRONG_LAST_SEQUENCE:
                self.epoch = None
                raise Fenced(f"partition {self.partition}: lease lost ({self.owner})") from exc
            raise


async def holders(kv: KeyValue, partitions: int) -> dict[int, tuple[str, int]]:
    """Who holds each partition now: ``{part: (owner, epoch)}`` (P reads, for /system)."""
    out: dict[int, tuple[str, int]] = {}
    for part in range(partitions):
        try:
            entry = await kv.get(keys.fence(part))
        except KeyNotFoundError:
            continue
        if entry.value and entry.revision is not None:
            out[part] = (codec.decode(entry.value, FenceRecord).owner, entry.revision)
    return out
