"""Each user's order history, newest first, at O(page) cost (KV ``orders``).

Keys (built in ``keys``): ``uh.<user>`` holds how many chunks the user has;
``ul.<user>.<n>`` holds up to ``CHUNK`` order ids, oldest first.  Every chunk but
the last is full, so the i-th order of a user (0 = oldest) is slot ``i % CHUNK``
of chunk ``i // CHUNK``, and a page is the head plus one or two chunks, however
long the history.

The executor appends an order's id when it books the order (``append``; several
partitions may append for one user at once: compare-and-set, retried, and
idempotent, so a redelivered place command appends nothing twice).  The API
reads pages (``page``); a *cursor* is the chronological index to read below, so
paging stays stable while new orders arrive.
"""

from __future__ import annotations

from dataclasses import dataclass

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from . import codec, keys
from .messages import UserIndexChunk, UserIndexHead

CHUNK = 64
ATTEMPTS = 64


class IndexContention(RuntimeError):
    """Too many concurrent appends for one user (should not happen)."""


# -- pure: positions -> chunks ------------------------------------------------
def total(chunks: int, last_len: int) -> int:
    return (chunks - 1) * CHUNK + last_len if chunks > 0 else 0


def window(count: int, before: int, limit: int) -> range:
    """Chronological indexes of the page below ``before``, newest first."""
    top = min(before, count)
    return range(top - 1, max(top - limit, 0) - 1, -1)


def chunks_for(indexes: range) -> list[int]:
    return sorted({i // CHUNK for i in indexes}, reverse=True)


# -- reads ---------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Page:
    ids: list[str]  # newest first
    total: int
    next_cursor: int | None  # pass as ``before`` for the next (older) page


async def _get(kv: KeyValue, key: str) -> tuple[bytes | None, int | None]:
    try:
        entry = await kv.get(key)
    except KeyNotFoundError:
        return None, None
    return entry.value, entry.revision


async def count(kv: KeyValue, user: str) -> int:
    raw, _ = await _get(kv, keys.user_head(user))
    chunks = codec.decode(raw, UserIndexHead).chunks if raw else 1
    last, _ = await _get(kv, keys.user_chunk(user, chunks - 1))
    return total(chunks, len(codec.decode(last, UserIndexChunk).ids) if last else 0)


async def page(kv: KeyValue, user: str, before: int | None, limit: int) -> Page:
    """``limit`` ids below chronological index ``before`` (None: the newest)."""
    raw, _ = await _get(kv, keys.user_head(user))
    chunks = codec.decode(raw, UserIndexHead).chunks if raw else 1
    loaded: dict[int, list[str]] = {}
    last_raw, _ = await _get(kv, keys.user_chunk(user, chunks - 1))
    loaded[chunks - 1] = codec.decode(last_raw, UserIndexChunk).ids if last_raw else []
    n = total(chunks, len(loaded[chunks - 1]))
    idx = window(n, n if before is None else before, limit)
    for c in chunks_for(idx):
        if c not in loaded:
            data, _ = await _get(kv, keys.user_chunk(user, c))
            loaded[c] = codec.decode(data, UserIndexChunk).ids if data else []
    ids = []
    for i in idx:
        chunk = loaded.get(i // CHUNK, [])
        if i % CHUNK < len(chunk):
            ids.append(chunk[i % CHUNK])
    nxt = idx[-1] if len(idx) and idx[-1] > 0 else None
    return Page(ids=ids, total=n, next_cursor=nxt)


# -- writes (the executor) -------------------------------------------------------
async def append(kv: KeyValue, user: str, order_id: str) -> None:
    """Add ``order_id`` to the user's history once (idempotent, safe concurrently)."""
    head_key = keys.user_head(user)
    for _ in range(ATTEMPTS):
        raw, head_rev = await _get(kv, head_key)
        chunks = codec.decode(raw, UserIndexHead).chunks if raw else 1
        c = chunks - 1
        data, rev = await _get(kv, keys.user_chunk(user, c))
        chunk = codec.decode(data, UserIndexChunk) if data else UserIndexChunk()
        rolled = c > 0 and len(chunk.ids) < CHUNK // 4  # a redelivery may predate the roll
        if order_id in chunk.ids or (rolled and await _in_chunk(kv, user, c - 1, order_id)):
            return
        try:
            if len(chunk.ids) >= CHUNK:  # full: open the next chunk
                nxt = codec.encode(UserIndexHead(chunks=chunks + 1))
                if head_rev is None:
                    await kv.create(head_key, nxt)
                else:
                    await kv.update(head_key, nxt, last=head_rev)
                continue
            chunk.ids.append(order_id)
            if rev is None:
                await kv.create(keys.user_chunk(user, c), codec.encode(chunk))
            else:
                await kv.update(keys.user_chunk(user, c), codec.encode(chunk), last=rev)
        except KeyWrongLastSequenceError:
            continue  # another partition appended for this user: read again
        if head_rev is None and raw is None:
            try:
                await kv.create(head_key, codec.encode(UserIndexHead(chunks=1)))
            except KeyWrongLastSequenceError:
                pass  # created meanwhile
        return
    raise IndexContention(f"could not append {order_id} to {user}'s history")


async def _in_chunk(kv: KeyValue, user: str, c: int, order_id: str) -> bool:
    """Only the newest few appends can be repeated (a redelivery right after a crash)."""
    data, _ = await _get(kv, keys.user_chunk(user, c))
    if not data:
        return False
    return order_id in codec.decode(data, UserIndexChunk).ids[-CHUNK // 4 :]
