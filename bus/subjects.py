"""The only place that builds NATS subjects, stream names and KV bucket names.

Grammar (``<p>`` is the configurable prefix, ``rbot`` by default)::

    <p>.md.tick.<venue>.<symbol>                    core    feeds -> executor, API, dashboard
    <p>.md.candle.<venue>.<symbol>.<granularity>    core    feeds -> API, dashboard
    <p>.md.book.<venue>.<symbol>                    core    coinbase feed -> API
    <p>.cmd.order.place                             req/rep API -> order_guard (queue group "guard")
    <p>.exec.<partition>.<venue>.<symbol>           JS EXEC guard/API/reaper -> owning executor
    <p>.exec.live.<venue>.<symbol>                  JS EXEC guard/reaper -> live_executor (one per venue)
    <p>.audit.live.<venue>.<kind>                   JS AUDIT live_executor -> ops (every send and answer)
    <p>.cmd.live.reconcile                          req/rep rbot reconcile -> live_executor
    <p>.evt.order.<venue>.<symbol>.<type>           JS ORDERS executor/guard -> everyone
    <p>.evt.actor.<actor>.<type>                    core (+ stream SYSTEM) supervisor -> ops
    <p>.hb.<actor>.<instance>                       core    every actor -> heartbeat actor
    <p>.evt.heartbeat                               core    heartbeat actor -> SSE

Every token that comes from outside (venue, symbol, id, actor, instance) is checked
against ``TOKEN_RE`` before it goes into a subject or a KV key: a dot, ``*``, ``>``
or whitespace would let a caller address subjects it should not (R10).

Streams and buckets carry the prefix too when it is not the default, so a test
with prefix ``t1a2b`` gets stream ``t1a2b_ORDERS`` and bucket ``t1a2b_orders``
on a shared server and never sees another test's state.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from typing import Final, Literal

# used with fullmatch: "$" would also match before a trailing newline ("EUR_USD\n")
TOKEN_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
PATTERN_TOKEN_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,64}|\*|>")
# the same rule for pydantic / OpenAPI (Rust regex: "$" is the true end there)
TOKEN_PATTERN: Final = r"^[A-Za-z0-9_-]{1,64}$"
DEFAULT_PREFIX: Final = "rbot"

Venue = Literal["oanda", "coinbase"]
VENUES: Final[tuple[Venue, ...]] = ("oanda", "coinbase")

ORDER_EVENT_TYPES: Final = (
    "oco_placed",
    "order_rejected",
    "order_filled",
    "order_cancelled",
    "order_expired",
    "position_closed",
)

STREAMS: Final = ("ORDERS", "EXEC", "SYSTEM", "AUDIT")
BUCKETS: Final = (
    "orders",
    "users",
    "tokens",
    "prices",
    "leases",
    "actors",
    "control",
    "limits",
    "lockouts",
)


class SubjectError(ValueError):
    """A token that would be unsafe in a subject or KV key."""


def check_token(value: str, what: str = "token") -> str:
    if not isinstance(value, str) or not TOKEN_RE.fullmatch(value):
        raise SubjectError(
            f"invalid {what} {value!r}: use 1-64 of A-Z a-z 0-9 _ - (no dots, wildcards or spaces)"
        )
    return value


def is_token(value: str) -> bool:
    return isinstance(value, str) and TOKEN_RE.fullmatch(value) is not None


# live orders keep their active-set markers, counters and lease under a partition
# number of their own per venue (never one of the paper partitions 0..255)
LIVE_PARTITION_BASE: Final = 1024


def live_partition(venue: str) -> int:
    """The pseudo-partition of a venue's live orders (markers, counters, lease)."""
    names: list[str] = list(VENUES)
    return LIVE_PARTITION_BASE + names.index(venue)


def is_live_partition(partition: int) -> bool:
    return LIVE_PARTITION_BASE <= partition < LIVE_PARTITION_BASE + len(VENUES)


def partition_of(venue: str, symbol: str, partitions: int) -> int:
    """A stable partition for a symbol (CRC-32, not Python's salted ``hash``)."""
    if partitions < 1:
        raise ValueError("partitions must be >= 1")
    return zlib.crc32(f"{venue}:{symbol}".encode()) % partitions


@dataclass(frozen=True, slots=True)
class Subjects:
    """Subjects, stream and bucket names under one prefix."""

    prefix: str = DEFAULT_PREFIX
    partitions: int = 4

    def __post_init__(self) -> None:
        check_token(self.prefix, "prefix")
        if not 1 <= self.partitions <= 256:
            raise ValueError("partitions must be in 1..256")

    # -- market data -------------------------------------------------------
    def tick(self, venue: str, symbol: str) -> str:
        return (
            f"{self.prefix}.md.tick.{check_token(venue, 'venue')}.{check_token(symbol, 'symbol')}"
        )

    def ticks(self, venue: str = "*") -> str:
        v = "*" if venue == "*" else check_token(venue, "venue")
        return f"{self.prefix}.md.tick.{v}.*"

    def candle(self, venue: str, symbol: str, granularity: str) -> str:
        return (
            f"{self.prefix}.md.candle.{check_token(venue, 'venue')}."
            f"{check_token(symbol, 'symbol')}.{check_token(granularity, 'granularity')}"
        )

    def book(self, venue: str, symbol: str) -> str:
        return (
            f"{self.prefix}.md.book.{check_token(venue, 'venue')}.{check_token(symbol, 'symbol')}"
        )

    # -- commands ----------------------------------------------------------
    @property
    def order_place(self) -> str:
        return f"{self.prefix}.cmd.order.place"

    @property
    def order_cancel(self) -> str:
        return f"{self.prefix}.cmd.order.cancel"

    @property
    def order_commands(self) -> str:
        return f"{self.prefix}.cmd.order.>"

    def exec(self, venue: str, symbol: str) -> str:
        check_token(venue, "venue")
        check_token(symbol, "symbol")
        part = partition_of(venue, symbol, self.partitions)
        return f"{self.prefix}.exec.{part}.{venue}.{symbol}"

    def partition(self, venue: str, symbol: str) -> int:
        return partition_of(
            check_token(venue, "venue"), check_token(symbol, "symbol"), self.partitions
        )

    def exec_partition(self, partition: int) -> str:
        if not 0 <= partition < self.partitions:
            raise ValueError(f"partition {partition} out of range")
        return f"{self.prefix}.exec.{partition}.>"

    def max_deliveries(self) -> str:
        """JetStream's advisory when a command on ``EXEC`` reached its max deliveries."""
        return f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{self.stream('EXEC')}.*"

    def exec_consumer(self, partition: int) -> str:
        """The durable pull consumer of one partition on ``EXEC``."""
        if not 0 <= partition < self.partitions:
            raise ValueError(f"partition {partition} out of range")
        return f"paper_executor_p{partition}"

    def live_exec(self, venue: str, symbol: str) -> str:
        """Live orders' commands: one writer per venue (``live_executor``)."""
        return (
            f"{self.prefix}.exec.live.{check_token(venue, 'venue')}.{check_token(symbol, 'symbol')}"
        )

    def live_exec_venue(self, venue: str) -> str:
        return f"{self.prefix}.exec.live.{check_token(venue, 'venue')}.>"

    def live_consumer(self, venue: str) -> str:
        return f"live_executor_{check_token(venue, 'venue')}"

    def live_audit(self, venue: str, kind: str) -> str:
        return f"{self.prefix}.audit.live.{check_token(venue, 'venue')}.{check_token(kind, 'kind')}"

    @property
    def live_audits(self) -> str:
        return f"{self.prefix}.audit.live.>"

    @property
    def live_reconcile(self) -> str:
        return f"{self.prefix}.cmd.live.reconcile"

    def throttled(self, venue: str, symbol: str) -> str:
        """Core (not stored): refusals that must cost no durable write (rate limits)."""
        return (
            f"{self.prefix}.evt.limit.{check_token(venue, 'venue')}.{check_token(symbol, 'symbol')}"
            ".order_rejected"
        )

    # -- events ------------------------------------------------------------
    def order_event(self, venue: str, symbol: str, type_: str) -> str:
        return (
            f"{self.prefix}.evt.order.{check_token(venue, 'venue')}."
            f"{check_token(symbol, 'symbol')}.{check_token(type_, 'event type')}"
        )

    def actor_event(self, actor: str, type_: str) -> str:
        return f"{self.prefix}.evt.actor.{check_token(actor, 'actor')}.{check_token(type_, 'event type')}"

    def heartbeat(self, actor: str, instance: str) -> str:
        return f"{self.prefix}.hb.{check_token(actor, 'actor')}.{check_token(instance, 'instance')}"

    @property
    def heartbeats(self) -> str:
        return f"{self.prefix}.hb.*.*"

    def heartbeats_of(self, actor: str) -> str:
        return f"{self.prefix}.hb.{check_token(actor, 'actor')}.*"

    @property
    def pulse(self) -> str:
        return f"{self.prefix}.evt.heartbeat"

    @property
    def all_events(self) -> str:
        return f"{self.prefix}.evt.>"

    @property
    def order_events(self) -> str:
        return f"{self.prefix}.evt.order.>"

    @property
    def actor_events(self) -> str:
        return f"{self.prefix}.evt.actor.>"

    # -- patterns from users (SSE filters, rbot tap) -----------------------
    def pattern(self, pattern: str) -> str:
        """Validate a user's subject pattern and anchor it under the prefix.

        ``evt.order.>`` and ``rbot.evt.order.>`` both give ``<p>.evt.order.>``.
        Each token must be a plain token, ``*`` or a final ``>``.
        """
        tokens = pattern.split(".")
        if tokens and tokens[0] == self.prefix:
            tokens = tokens[1:]
        if not tokens or any(not PATTERN_TOKEN_RE.fullmatch(t) for t in tokens):
            raise SubjectError(f"invalid subject pattern {pattern!r}")
        if ">" in tokens[:-1]:
            raise SubjectError(f"'>' may only end a pattern: {pattern!r}")
        return ".".join([self.prefix, *tokens])

    def relative(self, subject: str) -> str:
        """Strip the prefix: ``rbot.evt.heartbeat`` -> ``evt.heartbeat``."""
        head = self.prefix + "."
        return subject[len(head) :] if subject.startswith(head) else subject

    # -- JetStream names ---------------------------------------------------
    def stream(self, name: str) -> str:
        if name not in STREAMS:
            raise ValueError(f"unknown stream {name}")
        return name if self.prefix == DEFAULT_PREFIX else f"{self.prefix}_{name}"

    def stream_subjects(self, name: str) -> list[str]:
        return {
            "ORDERS": [self.order_events],
            "EXEC": [self.all_exec],
            "SYSTEM": [self.actor_events],
            "AUDIT": [self.live_audits],
        }[name]

    def bucket(self, name: str) -> str:
        if name not in BUCKETS:
            raise ValueError(f"unknown bucket {name}")
        return name if self.prefix == DEFAULT_PREFIX else f"{self.prefix}_{name}"

    def kv_subject(self, bucket: str, key: str) -> str:
        """The subject a KV entry lives on (``$KV.<bucket>.<key>``), for raw publishes."""
        for part in key.split("."):
            check_token(part, "key")
        return f"$KV.{self.bucket(bucket)}.{key}"

    def consumer(self, name: str) -> str:
        return check_token(name, "consumer")

    @property
    def all_exec(self) -> str:
        return f"{self.prefix}.exec.>"

    @property
    def all_market_data(self) -> str:
        return f"{self.prefix}.md.>"

    @property
    def all_heartbeats(self) -> str:
        return f"{self.prefix}.hb.>"

    # -- KV internals (the server's naming, for permissions) ---------------
    def kv_stream(self, name: str) -> str:
        """The stream behind a bucket: ``KV_<bucket>``."""
        return f"KV_{self.bucket(name)}"

    def kv_keys(self, name: str, key: str = ">") -> str:
        """The subject a bucket's key (or key pattern) is stored under: ``$KV.<bucket>.<key>``."""
        for part in key.split("."):
            if part not in ("*", ">"):
                check_token(part, "key")
        return f"$KV.{self.bucket(name)}.{key}"


def matches(pattern: str, subject: str) -> bool:
    """NATS wildcard match of a concrete subject against a pattern."""
    p = pattern.split(".")
    s = subject.split(".")
    for i, tok in enumerate(p):
        if tok == ">":
            return len(s) > i
        if i >= len(s) or (tok != "*" and tok != s[i]):
            return False
    return len(p) == len(s)
