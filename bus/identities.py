"""Who may do what on the bus: one identity per role, least-privilege permissions.

Pure: identities -> subject allow-lists, and the NATS server ``authorization``
block rendered from them.  Every subject, stream and bucket name comes from
``Subjects``, so a test prefix (``t1a2b``) gets its own names, and the cluster
configs in ``deploy/`` can be generated from the same source.

What a JetStream client really sends, for the lists below (nats-py 2.16):

* a KV handle: ``$JS.API.STREAM.INFO.KV_<b>``; a get: ``$JS.API.DIRECT.GET.KV_<b>.$KV.<b>.<key>``;
  a put / create / update / delete: a publish to ``$KV.<b>.<key>`` (the PubAck
  comes back on the client's inbox);
* a scan: an ephemeral pull consumer, ``CONSUMER.CREATE.<stream>`` then
  ``CONSUMER.MSG.NEXT.<stream>.<server-given name>`` (so any consumer of a KV stream);
* a watch or an ordered consumer: ``$JS.API.CONSUMER.CREATE.<stream>`` (the filter
  is in the body, not the subject: whoever may watch a bucket may watch all of
  it), ``$JS.API.CONSUMER.INFO.<stream>.<name>``, flow-control replies on
  ``$JS.FC.<stream>.>``; messages arrive on the client's inbox;
* a durable pull consumer: ``CONSUMER.INFO`` / ``CREATE`` / ``DELETE`` / ``MSG.NEXT``
  with the consumer's name in the subject, acks on ``$JS.ACK.<stream>.<name>.>``;
* every reply (requests, PubAcks, JS API answers, deliveries) lands under the
  identity's own inbox prefix ``_INBOX_<identity>``: no identity can subscribe to
  another's replies (with a shared ``_INBOX.>`` the feeds could read the users
  the API fetches).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from .subjects import STREAMS, Subjects

JS_API: Final = "$JS.API"

OPERATOR: Final = "operator"
IDENTITIES: Final = (
    OPERATOR,
    "api",
    "guard",
    "executor",
    "live",
    "feeds",
    "reaper",
    "heartbeat",
    "reporter",
    "tap",
)

# the actor (supervisor child) name -> the identity its connection uses
ACTOR_IDENTITY: Final[Mapping[str, str]] = {
    "heartbeat": "heartbeat",
    "oanda_feed": "feeds",
    "coinbase_feed": "feeds",
    "order_guard": "guard",
    "paper_executor": "executor",
    "live_executor": "live",
    "ttl_reaper": "reaper",
}


class UnknownIdentity(KeyError):
    """No such identity (nor an actor mapped to one)."""


@dataclass(frozen=True, slots=True)
class Permissions:
    """Allow-lists; anything not listed is denied (``operator``: everything)."""

    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    allow_responses: bool = False  # may answer requests it received (reply subjects)


def identity_of(actor: str) -> str:
    try:
        return ACTOR_IDENTITY[actor]
    except KeyError:
        raise UnknownIdentity(f"no bus identity for actor {actor!r}") from None


def inbox_prefix(identity: str) -> str:
    """Where an identity's replies arrive (nats-py ``inbox_prefix``)."""
    _check(identity)
    return f"_INBOX_{identity}"


def executor_consumers(s: Subjects) -> list[str]:
    """The durable EXEC consumers the executor owns: one per partition."""
    return [s.exec_consumer(n) for n in range(s.partitions)]


# -- building blocks ---------------------------------------------------------
def _stream_read(stream: str) -> list[str]:
    """Stream info and ordered/ephemeral consumers (watches, SSE replays)."""
    return [
        f"{JS_API}.STREAM.INFO.{stream}",
        f"{JS_API}.CONSUMER.CREATE.{stream}",
        f"{JS_API}.CONSUMER.CREATE.{stream}.>",
        f"{JS_API}.CONSUMER.INFO.{stream}.*",
        f"$JS.FC.{stream}.>",
    ]


def _kv_read(s: Subjects, bucket: str) -> list[str]:
    stream = s.kv_stream(bucket)
    return [
        *_stream_read(stream),
        f"{JS_API}.DIRECT.GET.{stream}",
        f"{JS_API}.DIRECT.GET.{stream}.>",
        f"{JS_API}.STREAM.MSG.GET.{stream}",
        # a scan (bus/kvscan.py) pulls from its ephemeral consumer, named by the server
        f"{JS_API}.CONSUMER.MSG.NEXT.{stream}.*",
    ]


def _kv_write(s: Subjects, bucket: str, *keys: str) -> list[str]:
    """Read the bucket, write only ``keys`` (patterns; all by default)."""
    return [*_kv_read(s, bucket), *(s.kv_keys(bucket, k) for k in keys or (">",))]


def _pull_consumer(stream: str, name: str) -> list[str]:
    return [
        f"{JS_API}.CONSUMER.INFO.{stream}.{name}",
        f"{JS_API}.CONSUMER.CREATE.{stream}.{name}",
        f"{JS_API}.CONSUMER.CREATE.{stream}.{name}.>",
        f"{JS_API}.CONSUMER.DURABLE.CREATE.{stream}.{name}",
        f"{JS_API}.CONSUMER.DELETE.{stream}.{name}",
        f"{JS_API}.CONSUMER.MSG.NEXT.{stream}.{name}",
        f"$JS.ACK.{stream}.{name}.>",
    ]


def _beats(s: Subjects, *actors: str) -> list[str]:
    return [s.heartbeats_of(a) for a in actors]


def _actors_of(identity: str) -> list[str]:
    return sorted(a for a, i in ACTOR_IDENTITY.items() if i == identity)


def _check(identity: str) -> None:
    if identity not in IDENTITIES:
        raise UnknownIdentity(f"unknown bus identity {identity!r}")


def _dedupe(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


# -- the identities ----------------------------------------------------------
def permissions(identity: str, s: Subjects) -> Permissions:
    """The allow-lists of one identity under the subjects ``s`` (prefix, partitions)."""
    _check(identity)
    if identity == OPERATOR:
        return Permissions(publish=(">",), subscribe=(">",))
    if identity == "tap":  # read-only: plain subscriptions need no inbox
        return Permissions(
            publish=(), subscribe=(s.all_events, s.all_market_data, s.all_heartbeats)
        )
    inbox = f"{inbox_prefix(identity)}.>"
    pub: list[str]
    sub: list[str] = [inbox]
    responses = False
    beats = _beats(s, *_actors_of(identity))
    if identity == "api":
        pub = [s.order_place, s.order_cancel]
        for b in ("orders", "prices", "actors", "control", "leases", "limits"):
            pub += _kv_read(s, b)
        for b in ("users", "tokens", "control", "lockouts"):
            pub += _kv_write(s, b)
        pub += _stream_read(s.stream("ORDERS"))
        pub += [f"{JS_API}.STREAM.INFO.{s.stream(n)}" for n in STREAMS]  # /ready
        sub += [s.all_events, s.all_market_data]
    elif identity == "guard":
        # rejections: durable (ORDERS) and, for rate limits, core only (evt.limit)
        pub = [s.all_exec, s.pattern("evt.order.*.*.order_rejected"), *beats]
        pub.append(s.pattern("evt.limit.*.*"))
        pub += _kv_write(s, "orders", "idem.>")
        pub += _kv_read(s, "prices") + _kv_read(s, "control")
        pub += _kv_write(s, "limits") + _kv_write(s, "lockouts")
        sub += [s.order_commands, "$SRV.>"]  # nats.micro: the endpoint and discovery
        responses = True
    elif identity == "executor":
        pub = [s.order_events, *beats]
        pub += _kv_write(s, "orders") + _kv_read(s, "prices")  # partition fences live in orders
        exec_stream = s.stream("EXEC")
        pub.append(f"{JS_API}.STREAM.INFO.{exec_stream}")
        for name in executor_consumers(s):
            pub += _pull_consumer(exec_stream, name)
        pub.append(s.actor_event("paper_executor", "max_deliveries"))
        # peers share the partitions; JetStream says when a command is stuck
        sub += [s.ticks(), s.heartbeats_of("paper_executor"), s.max_deliveries()]
    elif identity == "live":  # routes live orders to the brokers, one leader per venue
        pub = [s.order_events, s.live_audits, *beats]
        pub += _kv_write(s, "orders") + _kv_read(s, "prices") + _kv_read(s, "control")
        exec_stream = s.stream("EXEC")
        pub.append(f"{JS_API}.STREAM.INFO.{exec_stream}")
        for venue in ("oanda", "coinbase"):
            pub += _pull_consumer(exec_stream, s.live_consumer(venue))
        sub += [s.ticks(), s.heartbeats_of("live_executor"), s.live_reconcile]
        responses = True  # answers rbot reconcile
    elif identity == "feeds":
        pub = [s.all_market_data, *beats]
        pub += _kv_write(s, "prices")
        pub += _kv_write(s, "actors", "feed.>")
        pub += _kv_write(s, "leases", "feed.>")
    elif identity == "reaper":
        # the one exception to "only the guard sends executor commands": expiry
        pub = [s.all_exec, *beats]
        pub += _kv_read(s, "orders")
        pub += _kv_write(s, "leases", "ttl_reaper")
    elif identity == "heartbeat":
        pub = [s.pattern("evt.actor.*.silent"), s.pulse, *beats]
        pub += _kv_write(s, "actors") + _kv_read(s, "control")
        pub += _kv_write(s, "leases", "heartbeat")
        sub += [s.heartbeats, s.actor_events]
    else:  # reporter: supervisor lifecycle and the escalation hook (trading HALTED)
        assert identity == "reporter"
        pub = [s.actor_events]
        pub += _kv_write(s, "actors", "lifecycle.>")
        pub += _kv_write(s, "control", "trading")
    return Permissions(publish=_dedupe(pub), subscribe=_dedupe(sub), allow_responses=responses)


# -- the server's side -------------------------------------------------------
def _quote(text: str) -> str:
    if '"' in text or "\\" in text or "\n" in text:
        raise ValueError(f"cannot quote {text!r} in a NATS config")
    return f'"{text}"'


def _list(items: Iterable[str]) -> str:
    return "[" + ", ".join(_quote(i) for i in items) + "]"


def render_user(identity: str, password_hash: str, s: Subjects) -> str:
    p = permissions(identity, s)
    lines = [
        "    {",
        f"      user: {_quote(identity)}",
        f"      password: {_quote(password_hash)}",
        "      permissions: {",
        # an empty allow-list would mean "no restriction": deny everything instead
        f"        publish: {{ allow: {_list(p.publish)} }}"
        if p.publish
        else '        publish: { deny: [">"] }',
        f"        subscribe: {{ allow: {_list(p.subscribe)} }}",
    ]
    if p.allow_responses:
        lines.append("        allow_responses: true")
    lines += ["      }", "    }"]
    return "\n".join(lines)


def render_authorization(password_hashes: Mapping[str, str], s: Subjects) -> str:
    """The server's ``authorization { users = [...] }`` block (bcrypt hashes only)."""
    users = [render_user(i, password_hashes[i], s) for i in IDENTITIES if i in password_hashes]
    if not users:
        raise ValueError("no users to render")
    return "authorization {\n  users = [\n" + "\n".join(users) + "\n  ]\n}\n"
