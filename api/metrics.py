"""``GET /metrics``: the system as the bus sees it, in Prometheus text format.

Read at scrape time, never cached: the feed leaders' link status (KV ``actors``,
``feed.<venue>``), actor heartbeat states from the latest pulse, the trading
state, the age of every last price, and order counts by status.

No authentication, on purpose: scrapers rarely carry tokens, and nothing
secret is inside (counters, states, symbols, actor instance names).  Put the
API behind a proxy that hides ``/metrics`` if even that is too much.

Each app has its own ``CollectorRegistry`` (never prometheus_client's global
one): a collector that hands out the families gathered for the current
scrape, plus the app's own scrape counter.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector

from rbot.bus import codec
from rbot.bus.control import trading_record
from rbot.bus.messages import OrderStatus, TradingState
from rbot.bus.subjects import VENUES

from . import orderbook
from .context import AnyCtx, ApiContext
from .marketcache import feed_status
from .natsstatus import nats_server_status

router = APIRouter(tags=["metrics"])

EXTRAS_KEY = "metrics"

# ActorStatus.info keys of a feed leader's status -> help; exposed as rbot_feed_<key>_total.
# They count since the leader took the lead: a new leader starts from 0 (a counter reset).
FEED_COUNTERS = {
    "connects": "connections established",
    "reconnects": "connection attempts after the first",
    "malformed": "lines or frames that failed to parse (skipped)",
    "gaps": "sequence gaps (Coinbase sequence_num)",
    "resnapshots": "order book resnapshots after a gap (Coinbase)",
    "silences": "connections replaced after a silence (no heartbeat)",
    "rate_limited": "429 answers from the venue",
    "errors": "transport errors, 5xx answers and drops",
    "messages": "venue messages parsed",
    "heartbeats": "venue heartbeats",
    "ticks": "ticks published",
    "books": "order books published",
    "candles": "candles published",
    "rest_errors": "failed REST calls (candles, products)",
}


class _Scrape(Collector):
    """Hands out the families gathered for the scrape in progress."""

    def __init__(self) -> None:
        self.families: list[Metric] = []

    def collect(self) -> Iterable[Metric]:
        return list(self.families)


@dataclass
class AppMetrics:
    registry: CollectorRegistry = field(
        default_factory=lambda: CollectorRegistry(auto_describe=False)
    )
    scrape: _Scrape = field(default_factory=_Scrape)

    def __post_init__(self) -> None:
        self.registry.register(self.scrape)
        self.scrapes = Counter(
            "rbot_metrics_scrapes", "scrapes of /metrics served", registry=self.registry
        )

    def render(self, families: list[Metric]) -> bytes:
        # no await between setting and rendering: concurrent scrapes cannot mix
        self.scrapes.inc()
        self.scrape.families = families
        return generate_latest(self.registry)


def app_metrics(ctx: ApiContext) -> AppMetrics:
    found = ctx.extras.get(EXTRAS_KEY)
    if not isinstance(found, AppMetrics):
        found = ctx.extras[EXTRAS_KEY] = AppMetrics()
    return found


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {
            "description": "Prometheus text exposition format 0.0.4",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    },
)
async def metrics(ctx: AnyCtx) -> Response:
    """Prometheus metrics (no authentication; nothing secret inside).

    While the bus is down only the API process's own figures (``rbot_nats_connected 0``)."""
    if not ctx.bus.connected:
        return Response(app_metrics(ctx).render(_process(ctx)), media_type=CONTENT_TYPE_PLAIN_0_0_4)
    families = [
        *await _nats_server(ctx),
        *_process(ctx),
        *await _feeds(ctx),
        *_actors(ctx),
        *await _trading(ctx),
        *await _prices(ctx),
        *await _orders(ctx),
    ]
    return Response(app_metrics(ctx).render(families), media_type=CONTENT_TYPE_PLAIN_0_0_4)


def _process(ctx: ApiContext) -> list[Metric]:
    return [
        GaugeMetricFamily(
            "rbot_nats_connected",
            "1 while the API's NATS connection is up",
            value=1.0 if ctx.bus.connected else 0.0,
        ),
        CounterMetricFamily(
            "rbot_nats_reconnects", "NATS reconnections of the API", value=ctx.bus.reconnects
        ),
        GaugeMetricFamily(
            "rbot_api_uptime_seconds",
            "seconds since the API started",
            value=time.monotonic() - ctx.started,
        ),
        GaugeMetricFamily(
            "rbot_asyncio_tasks",
            "asyncio tasks alive in the API's event loop (under `rbot up`: every actor's too)",
            value=float(len(asyncio.all_tasks())),
        ),
    ]


async def _nats_server(ctx: ApiContext) -> list[Metric]:
    status = await nats_server_status(ctx.bus)
    if status is None:  # not under `rbot up`: no embedded server
        return []
    return [
        CounterMetricFamily(
            "rbot_nats_restarts",
            "restarts of the embedded nats-server after it died (rbot up)",
            value=status.restarts,
        )
    ]


async def _feeds(ctx: ApiContext) -> list[Metric]:
    v = ["venue"]
    info_f = GaugeMetricFamily(
        "rbot_feed_info",
        "the feed leader of each venue (always 1)",
        labels=["venue", "source", "state", "leader"],
    )
    connected = GaugeMetricFamily(
        "rbot_feed_connected", "1 while the leader's venue link is streaming", labels=v
    )
    msg_age = GaugeMetricFamily(
        "rbot_feed_last_message_age_seconds",
        "seconds since the venue link last said anything (heartbeats included)",
        labels=v,
    )
    status_age = GaugeMetricFamily(
        "rbot_feed_status_age_seconds",
        "seconds since the leader last wrote its status (stale: no leader)",
        labels=v,
    )
    counters = {
        key: CounterMetricFamily(f"rbot_feed_{key}", help_, labels=v)
        for key, help_ in FEED_COUNTERS.items()
    }
    now = time.time()
    for venue in VENUES:
        st = await feed_status(ctx.bus, venue)
        if st is None:
            continue
        info = st.info or {}
        info_f.add_metric([venue, info.get("source", ""), st.state, st.instance], 1.0)
        connected.add_metric([venue], 1.0 if info.get("connected") == "true" else 0.0)
        written = _age(st.last_beat, now)
        if written is not None:
            status_age.add_metric([venue], written)
        age = _num(info.get("last_message_age"))
        if age is not None:
            msg_age.add_metric([venue], age + (written or 0.0))
        for key, fam in counters.items():
            value = _num(info.get(key))
            if value is not None:
                fam.add_metric([venue], value)
    return [info_f, connected, msg_age, status_age, *counters.values()]


def _actors(ctx: ApiContext) -> list[Metric]:
    pulse = ctx.pulse
    if pulse is None or ctx.last_pulse is None:
        return []
    labels = ["actor", "instance"]
    up = GaugeMetricFamily("rbot_actor_up", "1 while the actor beats, 0 when silent", labels=labels)
    state = GaugeMetricFamily(
        "rbot_actor_state", "the actor's reported state (always 1)", labels=[*labels, "state"]
    )
    restarts = GaugeMetricFamily(
        "rbot_actor_restarts", "restarts reported by its supervisor", labels=labels
    )
    for a in pulse.actors:
        up.add_metric([a.actor, a.instance], 0.0 if a.silent else 1.0)
        state.add_metric([a.actor, a.instance, a.state], 1.0)
        restarts.add_metric([a.actor, a.instance], a.restarts)
    return [
        up,
        state,
        restarts,
        GaugeMetricFamily(
            "rbot_pulse_age_seconds",
            "seconds since the last system pulse reached the API",
            value=time.monotonic() - ctx.last_pulse,
        ),
        GaugeMetricFamily(
            "rbot_system_degraded",
            "1 when the pulse says degraded (a silent actor)",
            value=1.0 if pulse.status == "degraded" else 0.0,
        ),
    ]


async def _trading(ctx: ApiContext) -> list[Metric]:
    current = (await trading_record(await ctx.bus.kv("control"))).state
    fam = GaugeMetricFamily(
        "rbot_trading_state", "1 for the current trading state", labels=["state"]
    )
    for s in TradingState:
        fam.add_metric([s.value], 1.0 if s is current else 0.0)
    return [fam]


async def _prices(ctx: ApiContext) -> list[Metric]:
    labels = ["venue", "symbol"]
    age = GaugeMetricFamily(
        "rbot_price_age_seconds", "age of the last tick in KV prices", labels=labels
    )
    tradeable = GaugeMetricFamily(
        "rbot_price_tradeable", "1 when the last tick is tradeable", labels=labels
    )
    now = time.time()
    for (venue, symbol), tick in sorted((await orderbook.last_ticks(ctx.bus)).items()):
        seconds = _age(tick.time, now)
        if seconds is not None:
            age.add_metric([venue, symbol], seconds)
        tradeable.add_metric([venue, symbol], 1.0 if tick.tradeable else 0.0)
    return [age, tradeable]


async def _orders(ctx: ApiContext) -> list[Metric]:
    counts = await orderbook.order_counts(ctx.bus)  # counters kept by the executors
    fam = GaugeMetricFamily("rbot_orders", "orders by status", labels=["status"])
    for s in OrderStatus:
        fam.add_metric([s.value], counts.get(s.value, 0))
    # commands that reached max deliveries (the executors' events in SYSTEM): one
    # per-subject count, never a read of the events themselves
    subject = ctx.bus.subjects.actor_event("paper_executor", "max_deliveries")
    info = await ctx.bus.js.stream_info(ctx.bus.subjects.stream("SYSTEM"), subjects_filter=subject)
    stuck = CounterMetricFamily(
        "rbot_exec_max_deliveries", "executor commands that reached their max deliveries"
    )
    stuck.add_metric([], float((info.state.subjects or {}).get(subject, 0)))
    return [fam, stuck]


def _num(text: str | None) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None


def _age(iso: str | None, now: float) -> float | None:
    if not iso:
        return None
    try:
        return max(0.0, now - codec.parse_iso(iso).timestamp())
    except ValueError:
        return None
