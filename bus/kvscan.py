"""Read every current entry under a KV key pattern in one pass.

nats-py's ``KeyValue.keys(filters=...)`` filters by *substring* on the client,
so ``"o.*"`` matches nothing, and a ``watch`` stopped at its "end of initial
values" marker is racy: the watcher decides the initial values are done when the
consumer's info reports nothing pending and nothing has reached the client yet,
but the server may have pushed every value already with the bytes still on the
wire, so the marker arrives *before* the values and a scan returns nothing (seen
in CI: an admin roster read as empty).  A rebuild that trusted that marker would
lose active orders.

So a scan is a pull consumer (last value per key, no acks): the create reply
says how many values there are, and every delivered message says how many
remain, so the end is known exactly, whatever the timing.  Its consumer is idle
the moment the scan ends; ``inactive_threshold`` lets the server drop it after a
second (with the 5-minute default, 1000 scans within 5 minutes made the stream
refuse further consumers).
"""

from __future__ import annotations

import nats.errors
from nats.js import api
from nats.js.errors import KeyNotFoundError, NotFoundError, ServiceUnavailableError
from nats.js.kv import KV_DEL, KV_OP, KV_PURGE, KeyValue

SCAN_INACTIVE_S = 1.0
BATCH = 256
FETCH_WAIT_S = 2.0
MARKER_REASON = "Nats-Marker-Reason"  # nats-server 2.11+: server-placed TTL/purge markers


async def scan(kv: KeyValue, pattern: str, *, confirm: bool = False) -> list[KeyValue.Entry]:
    """Current (non-deleted) entries whose key matches ``pattern`` (NATS wildcards).

    A scan whose consumer vanished (nats-server restarted under it) or whose
    stream answered 503 (its leader moving in a cluster) starts again, once; a
    second loss is an outage (``nats.errors.TimeoutError``).

    ``confirm``: in a cluster the scan's ephemeral (R1) consumer may be hosted by
    a replica still catching up (a node just back from a pause), which reads its
    own store: recent keys are missing (R16: a partition rebuilt without three of
    its active orders).  The stream's leader then lists the keys it holds under
    the pattern, and each one the scan did not see is read from the leader."""
    try:
        out, seen = await _scan_once(kv, pattern)
    except ConsumerGone:
        try:
            out, seen = await _scan_once(kv, pattern)
        except ConsumerGone as exc:
            raise nats.errors.TimeoutError from exc
    if confirm:
        out += await missed(kv, pattern, seen)
    return out


async def missed(kv: KeyValue, pattern: str, seen: set[str]) -> list[KeyValue.Entry]:
    """Live entries the stream's leader holds under ``pattern`` that are not in ``seen``."""
    js, stream, pre = kv._js, kv._stream, kv._pre  # nats-py keeps these private
    info = await js.stream_info(stream, subjects_filter=f"{pre}{pattern}")  # the leader answers
    out = []
    for subject in info.state.subjects or {}:
        key = subject[len(pre) :]
        if key in seen:
            continue
        try:
            entry = await kv.get(key)  # a read from the leader too
        except KeyNotFoundError:  # deleted or purged (KeyDeletedError is one)
            continue
        if entry.value:
            out.append(entry)
    return out


class ConsumerGone(Exception):
    """The scan's ephemeral consumer is no longer on the server."""


async def _scan_once(kv: KeyValue, pattern: str) -> tuple[list[KeyValue.Entry], set[str]]:
    """The live entries, and every key seen (deleted ones too)."""
    js, stream, pre = kv._js, kv._stream, kv._pre  # nats-py keeps these private
    config = api.ConsumerConfig(
        filter_subject=f"{pre}{pattern}",
        deliver_policy=api.DeliverPolicy.LAST_PER_SUBJECT,
        ack_policy=api.AckPolicy.NONE,
        inactive_threshold=SCAN_INACTIVE_S,
        mem_storage=True,
    )
    info = await js.add_consumer(stream, config=config)
    remaining = info.num_pending or 0
    out: list[KeyValue.Entry] = []
    seen: set[str] = set()
    if remaining == 0:
        return out, seen
    sub = await js.pull_subscribe_bind(consumer=info.name, stream=stream)
    try:
        while remaining > 0:
            try:
                msgs = await sub.fetch(batch=min(remaining, BATCH), timeout=FETCH_WAIT_S)
            except ServiceUnavailableError as exc:  # the stream's leader moved (a cluster)
                raise ConsumerGone from exc
            except nats.errors.TimeoutError:  # FetchTimeoutError and fetch(1)'s plain one
                # values counted at the start may have been removed since (age, TTL)
                try:
                    remaining = (await sub.consumer_info()).num_pending or 0
                except NotFoundError as exc:
                    raise ConsumerGone from exc
                continue
            for msg in msgs:
                meta = msg.metadata
                remaining = meta.num_pending
                headers = msg.headers or {}
                seen.add(msg.subject[len(pre) :])
                if headers.get(KV_OP) in (KV_DEL, KV_PURGE) or MARKER_REASON in headers:
                    continue
                if not msg.data:
                    continue
                out.append(
                    KeyValue.Entry(
                        bucket=stream.removeprefix("KV_"),
                        key=msg.subject[len(pre) :],
                        value=msg.data,
                        revision=meta.sequence.stream,
                        delta=meta.num_pending,
                        created=None,
                        operation=None,
                    )
                )
    finally:
        await sub.unsubscribe()
    return out, seen
