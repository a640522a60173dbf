"""Read every current entry under a KV key pattern in one pass.

nats-py's ``KeyValue.keys(filters=...)`` filters by *substring* on the client,
so ``"o.*"`` matches nothing; a watch on the pattern, stopped at the end of the
initial values, is both correct and a single round of messages.
"""

from __future__ import annotations

from nats.js.kv import KeyValue


async def scan(kv: KeyValue, pattern: str) -> list[KeyValue.Entry]:
    """Current (non-deleted) entries whose key matches ``pattern`` (NATS wildcards)."""
    watcher = await kv.watch(pattern, ignore_deletes=True)
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
