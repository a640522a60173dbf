"""Streams and KV buckets, created or brought up to date on every start.

Idempotent: a present stream with the same config is left alone, one whose
config drifted is updated, a missing one is created.  Every process may call it.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

from nats.js import api
from nats.js.errors import BadRequestError, NotFoundError

from .connection import Bus

log = logging.getLogger("rbot.bus")

DUPLICATE_WINDOW_S = 600.0  # JetStream de-dup window for ORDERS and EXEC
# ORDERS is the audit trail and the SSE replay source, not the history: orders stay
# queryable in KV ``orders`` (o.<id>, the per-user index) after their events age out
ORDERS_MAX_AGE_S = 90 * 24 * 3600.0
# (no max_bytes: JetStream reserves a stream's max_bytes up front against the server's store)
# every live send and the broker's answer, kept a year (no secrets: actors/live strips them)
AUDIT_MAX_AGE_S = 365 * 24 * 3600.0
LEGACY_CONSUMERS = ("paper_executor",)  # one consumer on exec.> (before partitions)
LEASE_TTL_S = 6.0


@dataclass(frozen=True)
class BucketSpec:
    name: str
    history: int = 1
    ttl: float | None = None
    max_value_size: int = 64 * 1024
    memory: bool = False  # no fsync: state that may be lost with the server (rate windows)
    msg_ttl: bool = False  # per-message TTLs (purge markers of the active set go by themselves)


BUCKET_SPECS = (
    BucketSpec("orders", history=1, msg_ttl=True),
    BucketSpec("users"),
    BucketSpec("tokens", ttl=30 * 24 * 3600.0),
    BucketSpec("prices"),
    BucketSpec("leases", ttl=LEASE_TTL_S),
    BucketSpec("actors"),
    BucketSpec("control"),
    # per-user order rate windows, shared by every guard (lost with the server: harmless)
    BucketSpec("limits", ttl=120.0, memory=True),
    # failure counters that must outlive a process (PIN attempts, login throttling)
    BucketSpec("lockouts", ttl=24 * 3600.0),
)


@dataclass(frozen=True)
class StreamSpec:
    name: str  # ORDERS, EXEC, SYSTEM, AUDIT: prefixed by ``Subjects.stream``
    description: str
    retention: api.RetentionPolicy = api.RetentionPolicy.LIMITS
    dedupe: bool = False  # a ``Nats-Msg-Id`` window of DUPLICATE_WINDOW_S
    max_msg_size: int = -1  # -1: the server's limit
    max_age: float | None = None
    max_msgs: int | None = None


STREAM_SPECS: tuple[StreamSpec, ...] = (
    StreamSpec(
        "ORDERS", "every order event: the audit trail and the SSE replay source",
        dedupe=True, max_msg_size=256 * 1024, max_age=ORDERS_MAX_AGE_S,
    ),
    StreamSpec(
        "EXEC", "accepted order commands waiting for their executor",
        retention=api.RetentionPolicy.WORK_QUEUE, dedupe=True, max_msg_size=256 * 1024,
    ),
    StreamSpec(
        "SYSTEM", "actor lifecycle events (supervisor)",
        max_age=7 * 24 * 3600.0, max_msgs=100_000,
    ),
    StreamSpec(
        "AUDIT", "every live order send and broker answer (written before the send)",
        max_msg_size=64 * 1024, max_age=AUDIT_MAX_AGE_S,
    ),
)  # fmt: skip


def stream_configs(bus: Bus, replicas: int = 1) -> list[api.StreamConfig]:
    s = bus.subjects
    return [
        api.StreamConfig(
            name=s.stream(spec.name),
            description=spec.description,
            subjects=s.stream_subjects(spec.name),
            retention=spec.retention,
            storage=api.StorageType.FILE,
            num_replicas=replicas,
            duplicate_window=DUPLICATE_WINDOW_S if spec.dedupe else 0,
            max_msg_size=spec.max_msg_size,
            max_age=spec.max_age,
            max_msgs=spec.max_msgs,
        )
        for spec in STREAM_SPECS
    ]


async def provision(bus: Bus, replicas: int = 1) -> None:
    for cfg in stream_configs(bus, replicas):
        assert cfg.name is not None
        try:
            await bus.js.stream_info(cfg.name)
        except NotFoundError:
            await bus.js.add_stream(cfg)
            log.info("created stream %s", cfg.name)
        else:
            await bus.js.update_stream(cfg)
    for spec in BUCKET_SPECS:
        name = bus.subjects.bucket(spec.name)
        kv_cfg = api.KeyValueConfig(
            bucket=name,
            history=spec.history,
            ttl=spec.ttl,
            storage=api.StorageType.MEMORY if spec.memory else api.StorageType.FILE,
            replicas=replicas,
            max_value_size=spec.max_value_size,
        )
        try:
            await bus.js.create_key_value(kv_cfg)
        except BadRequestError as exc:  # exists with another config: keep the data
            log.info("bucket %s exists with another config (%s): kept", name, exc)
        if spec.msg_ttl:
            info = await bus.js.stream_info(f"KV_{name}")
            if not info.config.allow_msg_ttl:
                info.config.allow_msg_ttl = True  # may be turned on, never off
                await bus.js.update_stream(info.config)
    exec_stream = bus.subjects.stream("EXEC")
    for legacy in LEGACY_CONSUMERS:  # would overlap the per-partition consumers
        with contextlib.suppress(NotFoundError):  # the usual case: never existed or gone
            await bus.js.delete_consumer(exec_stream, legacy)
            log.info("deleted legacy consumer %s on %s", legacy, exec_stream)


async def check(bus: Bus) -> list[str]:
    """Names of streams or buckets that are missing (empty: all present)."""
    missing: list[str] = []
    for cfg in stream_configs(bus):
        assert cfg.name is not None
        try:
            await bus.js.stream_info(cfg.name)
        except NotFoundError:
            missing.append(cfg.name)
    for spec in BUCKET_SPECS:
        name = bus.subjects.bucket(spec.name)
        try:
            await bus.js.stream_info(f"KV_{name}")
        except NotFoundError:
            missing.append(name)
    return missing
