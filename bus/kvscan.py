"""Read every current entry under a KV key pattern in one pass.

nats-py's ``KeyValue.keys(filters=...)`` filters by *substring* on the client,
so ``"o.*"`` matches nothing; a watch on the pattern, stopped at the end of the
initial values, is both correct and a single round of messages.

Stopping a watch does not delete its (ephemeral) consumer: the server drops it
after ``inactive_threshold``, 5 minutes by default, and refuses a stream's
1001st consumer.  With that default, 1000 scans of a bucket within 5 minutes
(``GET /prices`` polled at 4/s) made every further scan fail for minutes; a
scan's consumer is idle the moment the scan ends, so it goes after a second.
"""

from __future__ import annotations

from nats.js.kv import KeyValue

SCAN_INACTIVE_S = 1.0


async def scan(kv: KeyValue, pattern: str) -> list[KeyValue.Entry]:
    """Current (non-deleted) entries whose key matches ``pattern`` (NATS wildcards)."""
    watcher = await kv.watch(pattern, ignore_deletes=True, inactive_threshold=SCAN_INACTIVE_S)
    out: list[KeyValue.Entry] = []
    try:
        async for entry in watcher:
            if entry is None:  # end of the initial values
                break
            if entry.value:
                out.append(entry)
    finally:
        await watcher.stop()  # type: ignore[no-untyped-call]
    return out
