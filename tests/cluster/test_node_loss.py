"""Node loss under load: a 3-node cluster (R3, TLS, identities), ``rbot api`` x2 and
``rbot actors`` x3, each seeded at a different node.

While orders stream in through both APIs:

1. the node leading ``ORDERS`` is SIGKILLed (waits: the stream's leader-elected
   advisory, then orders acknowledged again), then started on its port and store;
2. the node leading ``EXEC`` (or another) is SIGSTOPped for longer than the
   JetStream election timeout (the pause is the fault), then SIGCONTed.

Then every acknowledged order is cancelled or closed, and:

* every acknowledged order has exactly one ``oco_placed`` and one final event
  (lost = 0, duplicated = 0), and no order at all has a repeated event;
* the SSE client (reconnecting with ``Last-Event-ID``) saw every ``ORDERS``
  sequence of its user, each once, in order;
* the leases (feeds, reaper, heartbeat) and every executor partition are held by
  a live instance at the end;
* printed: unavailability per API (longest run of non-200 answers), leaders
  before and after, takeovers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx
import pytest

from rbot.bus.connection import Bus
from rbot.bus.messages import FenceRecord, Order, Tick
from rbot.bus.messages import Lease as LeaseRecord
from rbot.bus.outage import OUTAGE_ERRORS
from tests.chaos.conftest import (
    BANNER_ACTORS,
    BANNER_API,
    Spawn,
    Waker,
    active_left,
    figures,
    kv_values,
    rbot_env,
    read_stream,
    trader_token,
)
from tests.cluster.harness import NatsCluster

FINAL = {"order_cancelled", "order_expired", "position_closed", "order_rejected"}
PAUSE_S = float(os.environ.get("RBOT_CLUSTER_PAUSE_S", "12"))  # > election timeout (4-9 s)
WARMUP = 20  # acknowledged orders before the first fault
BETWEEN = 20  # acknowledged orders after each fault, before the next step
MARKETS = [
    ("oanda", "EUR_USD"), ("oanda", "GBP_USD"), ("oanda", "USD_JPY"),
    ("coinbase", "BTC-USD"), ("coinbase", "ETH-USD"),
]  # fmt: skip


def body(n: int, venue: str, symbol: str, bid: Decimal) -> dict[str, Any]:
    """A market order (fills at once) or a limit far away (stays pending)."""
    sl, tp = bid * Decimal("0.9"), bid * Decimal("1.1")
    cid = f"nl-{n}"
    if venue == "oanda":
        out: dict[str, Any] = {
            "instrument": symbol, "side": "BUY", "units": 10, "quality_score": 80,
            "stop_loss_price": f"{sl:.5f}", "take_profit_price": f"{tp:.5f}",
            "client_order_id": cid,
        }  # fmt: skip
        if n % 2:
            out |= {"order_type": "LIMIT", "entry_price": f"{bid * Decimal('0.95'):.5f}"}
        return out
    out = {
        "product_id": symbol, "side": "BUY", "size": "0.01", "order_type": "MARKET",
        "stop_loss_price": f"{sl:.2f}", "take_profit_price": f"{tp:.2f}", "client_order_id": cid,
    }  # fmt: skip
    if n % 2:
        out |= {"order_type": "LIMIT", "limit_price": f"{bid * Decimal('0.95'):.2f}"}
    return out


@dataclass
class Flow:
    """Orders through one API, one at a time; a refused one is retried (same client id)."""

    name: str
    client: httpx.AsyncClient
    token: str
    prices: dict[tuple[str, str], Decimal]
    numbers: Any  # a shared counter of order numbers (itertools.count)
    acked: dict[str, tuple[str, str]]  # order id -> (token, flow)
    progress: asyncio.Event
    answers: list[tuple[float, float, int]] = field(default_factory=list)  # start, end, status
    codes: Counter[str] = field(default_factory=Counter)

    async def run(self, stop: asyncio.Event) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        while not stop.is_set():
            n = next(self.numbers)
            venue, symbol = MARKETS[n % len(MARKETS)]
            path = "/brokers/oanda/orders" if venue == "oanda" else "/brokers/coinbase-adv/orders"
            payload = body(n, venue, symbol, self.prices[(venue, symbol)])
            while not stop.is_set():
                t0 = time.monotonic()
                try:
                    r = await self.client.post(path, json=payload, headers=headers)
                    status = r.status_code
                except httpx.TransportError as exc:
                    status = 0
                    self.codes[type(exc).__name__] += 1
                self.answers.append((t0, time.monotonic(), status))
                if status == 200:
                    self.acked[r.json()["order_id"]] = (self.token, self.name)
                    self.progress.set()
                    break
                if status:
                    assert status == 503, r.text  # never a 500, never a 4xx for a good order
                    self.codes[r.json().get("code", "?")] += 1

    def unavailability(self) -> float:
        """The longest run of non-200 answers: first failure's start to the next 200."""
        worst, since = 0.0, None
        for t0, t1, status in self.answers:
            if status != 200 and since is None:
                since = t0
            elif status == 200 and since is not None:
                worst, since = max(worst, t1 - since), None
        if since is not None:
            worst = max(worst, self.answers[-1][1] - since)
        return worst


class Sse:
    """One SSE client: every id once, in order; reconnects with Last-Event-ID."""

    def __init__(self, client: httpx.AsyncClient, token: str) -> None:
        self.client = client
        self.token = token
        self.ids: list[int] = []
        self.reconnects = 0
        self.seen = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            headers = {"Authorization": f"Bearer {self.token}"}
            params = {"subjects": "evt.order.>"}
            if self.ids:
                headers["Last-Event-ID"] = str(self.ids[-1])
            else:
                params["since"] = "0"  # from the stream's start: no race with the first order
            try:
                async with self.client.stream(
                    "GET", "/events", params=params, headers=headers,
                    timeout=httpx.Timeout(10.0, read=None),
                ) as r:  # fmt: skip
                    if r.status_code == 200:
                        async for line in r.aiter_lines():
                            if line.startswith("id: "):
                                self.ids.append(int(line[4:]))
                                self.seen.set()
            except httpx.TransportError:
                pass
            self.reconnects += 1


async def wait_acked(flows: list[Flow], acked: dict[str, Any], more: int, timeout: float) -> None:
    """Until ``more`` orders were acknowledged after now, by both APIs together."""
    goal = len(acked) + more
    progress = flows[0].progress
    async with asyncio.timeout(timeout):
        while len(acked) < goal:
            progress.clear()
            await progress.wait()


async def leader_elected(bus: Bus, stream: str) -> asyncio.Future[str]:
    """A future for the next leader-elected advisory of ``stream`` (the new leader's name)."""
    fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def cb(msg: Any) -> None:
        if not fut.done():
            fut.set_result(json.loads(msg.data).get("leader", "?"))
            await sub.unsubscribe()

    sub = await bus.nc.subscribe(f"$JS.EVENT.ADVISORY.STREAM.LEADER_ELECTED.{stream}", cb=cb)
    return fut


async def holders(bus: Bus) -> tuple[dict[str, str], dict[int, str]]:
    leases = await kv_values(bus, "leases", ">", LeaseRecord)
    fences = await kv_values(bus, "orders", "fence.*", FenceRecord)
    return (
        {k: v.owner for k, v in leases.items()},
        {int(k.split(".")[1]): v.owner for k, v in fences.items()},
    )


async def _cancel_until_taken(
    client: httpx.AsyncClient, oid: str, token: str, answers_503: list[str]
) -> None:
    """DELETE until taken (200, or 409: already ended); each 503 body is kept."""
    async with asyncio.timeout(60):
        while True:
            r = await client.delete(f"/orders/{oid}", headers={"Authorization": f"Bearer {token}"})
            if r.status_code in (200, 409):
                return
            assert r.status_code == 503, r.text
            answers_503.append(r.text)
            # the answer's own pacing (Retry-After: 1), not a wait for a fact
            await asyncio.sleep(float(r.headers.get("Retry-After", "1")))


async def wait_held(
    bus: Bus, partitions: int, timeout: float
) -> tuple[dict[str, str], dict[int, str]]:
    """Until every leader lease and every partition has a holder."""
    want = {"feed.oanda", "feed.coinbase", "ttl_reaper", "heartbeat"}
    async with Waker(bus, bus.subjects.heartbeats) as waker, asyncio.timeout(timeout):
        while True:
            try:
                leases, fences = await holders(bus)
            except OUTAGE_ERRORS:  # a stream whose leader is still moving: ask again
                await waker.wait()
                continue
            if want <= set(leases) and len(fences) == partitions:
                return leases, fences
            await waker.wait()


# behind the chaos marker for its length (~30-60 s with three nodes, five
# processes).  Its failures so far and their causes (README, "node loss"): an API
# left serving 503 for good (its auth cache's watch timed out after the kill), a
# partition whose consumer answered 503 for good, a rebuild that read its markers
# from a replica still catching up (cancels then dropped), an abandoned executor
# incarnation running on beside the next; and, in the test, a cancel loop that
# gave up after five 503s.  A failure now names the orders left and the consumers.
@pytest.mark.chaos
@pytest.mark.timeout(420)
async def test_node_loss_under_load(
    nats_cluster: NatsCluster, cluster_bus: Bus, prefix: str, spawn: Spawn
) -> None:
    cluster, bus = nats_cluster, cluster_bus
    parts = cluster.subjects.partitions
    from rbot.bus.provision import provision

    await provision(bus, 3)

    def env(seed: int) -> dict[str, str]:
        return rbot_env(
            cluster.url(seed), prefix, RBOT_PARTITIONS=str(parts), RBOT_BEAT_INTERVAL_S="0.5",
            RBOT_ORDERS_PER_MINUTE="1000000", RBOT_SIM_INTERVAL_S="0.5", **cluster.env(),
        )  # fmt: skip

    actors = [spawn(f"actors{i}", ["actors"], env(i), BANNER_ACTORS) for i in range(3)]
    apis = [spawn(f"api{i}", ["api"], env(i + 1), BANNER_API) for i in range(2)]
    started = await asyncio.gather(
        *(a.start(60, RBOT_INSTANCE=f"node-{'abc'[i]}") for i, a in enumerate(actors)),
        *(a.start(60) for a in apis),
    )
    bases = [f"http://127.0.0.1:{m.group(1)}" for m in started[3:]]
    leases0, fences0 = await wait_held(bus, parts, 60)

    # the market as the sim feeds it (order brackets around it)
    prices: dict[tuple[str, str], Decimal] = {}
    kv = await bus.kv("prices")
    async with Waker(bus, bus.subjects.ticks()) as waker, asyncio.timeout(30):
        while len(prices) < len(MARKETS):
            for venue, symbol in MARKETS:
                entry = await kv.get(f"{venue}.{symbol}") if (venue, symbol) not in prices else None
                if entry is not None and entry.value:
                    from rbot.bus import codec

                    prices[(venue, symbol)] = codec.decode(entry.value, Tick).bid
            if len(prices) < len(MARKETS):
                await waker.wait()

    import itertools

    numbers = itertools.count()
    acked: dict[str, tuple[str, str]] = {}
    progress = asyncio.Event()
    stop = asyncio.Event()
    sse_stop = asyncio.Event()
    steps: dict[str, object] = {}
    observers: list[Bus] = []
    async with (
        httpx.AsyncClient(base_url=bases[0], timeout=30) as c0,
        httpx.AsyncClient(base_url=bases[1], timeout=30) as c1,
    ):
        tokens = [await trader_token(c0, "nl-0@test"), await trader_token(c1, "nl-1@test")]
        flows = [
            Flow(f"api{i}", c, tokens[i], prices, numbers, acked, progress)
            for i, c in enumerate((c0, c1))
        ]
        sse = Sse(c1, tokens[0])  # user 0's orders go through api0; its SSE reads api1
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(f.run(stop)) for f in flows]
            tasks.append(tg.create_task(sse.run(sse_stop)))
            await wait_acked(flows, acked, WARMUP, 60)

            # 1. SIGKILL the leader of ORDERS, then bring it back
            stream = cluster.subjects.stream("ORDERS")
            victim = await cluster.stream_leader(bus, "ORDERS") or "n1"
            bus = await cluster.connect_except(victim)  # observers on the survivors
            observers.append(bus)
            elected = await leader_elected(bus, stream)
            node = cluster.nodes[cluster.index(victim)]
            t_kill = time.monotonic()
            node.kill()
            new_leader = await asyncio.wait_for(elected, 30)
            print("killed", victim, flush=True)
            steps["kill: ORDERS leader"] = (
                f"{victim} -> {new_leader} in {time.monotonic() - t_kill:.2f} s"
            )
            await wait_acked(flows, acked, BETWEEN, 60)
            mark = len(node.log)
            await asyncio.to_thread(node.start)
            await cluster.wait_meta(node, mark)
            steps["kill: back"] = f"{victim} restarted after {time.monotonic() - t_kill:.2f} s"
            await wait_acked(flows, acked, BETWEEN, 60)

            # 2. SIGSTOP the leader of EXEC past the election timeout, then SIGCONT
            stream = cluster.subjects.stream("EXEC")
            paused = await cluster.stream_leader(bus, "EXEC") or "n2"
            bus = await cluster.connect_except(paused)
            observers.append(bus)
            elected = await leader_elected(bus, stream)
            node = cluster.nodes[cluster.index(paused)]
            t_stop = time.monotonic()
            node.pause()
            new_leader = await asyncio.wait_for(elected, 30)
            print("paused", paused, flush=True)
            steps["stop: EXEC leader"] = (
                f"{paused} -> {new_leader} in {time.monotonic() - t_stop:.2f} s"
            )
            await asyncio.sleep(
                max(0.0, PAUSE_S - (time.monotonic() - t_stop))
            )  # the fault's length
            node.resume()
            steps["stop: resumed after"] = f"{time.monotonic() - t_stop:.2f} s"
            await wait_acked(flows, acked, BETWEEN, 90)
            stop.set()
            for t in tasks[:2]:
                await t
            leases1, fences1 = await wait_held(bus, parts, 60)

            # end every acknowledged order: cancel pending, close open.  A 503 means
            # "not taken, retry" (a partition changing hands, the guard's request
            # timing out): retry after its Retry-After until it is taken, within a
            # deadline.  (This loop used to give up silently after five quick 503s,
            # leaving the order active: the one failure seen, a 90 s timeout below.)
            cancel_503s = 0
            for oid, (token, name) in acked.items():
                client = c0 if name == "api0" else c1
                last_503: list[str] = []  # what the answer said, for a failure's message
                try:
                    await _cancel_until_taken(client, oid, token, last_503)
                except TimeoutError:
                    raise AssertionError(
                        f"cancel of {oid} via {name} not taken in 60 s: {last_503[-1:]}"
                    ) from None
                cancel_503s += len(last_503)
            steps["cancels answered 503 first"] = cancel_503s
            left: list[str] = []
            orders: dict[str, Order] = {}
            try:
                async with Waker(bus, bus.subjects.order_events) as waker, asyncio.timeout(90):
                    while True:
                        left, orders = await active_left(bus, acked)
                        if not left:
                            break
                        await waker.wait()
            except TimeoutError:
                raise AssertionError(
                    f"{len(left)} orders still active 90 s after their cancels were taken: "
                    f"{await _left_report(bus, left, orders)}"
                ) from None
            # an order's KV record is written before its event (the executor's steps 1
            # and 2; a step cut off is repaired by the next rebuild): wait for the
            # events, up to a deadline, rather than race them (a run read the stream
            # between the two and counted an order lost)
            events = await read_stream(bus, "ORDERS")
            with contextlib.suppress(TimeoutError):  # what is still missing is asserted below
                async with Waker(bus, bus.subjects.order_events) as waker, asyncio.timeout(30):
                    while _finals_missing(acked, events):
                        await waker.wait()
                        events = await read_stream(bus, "ORDERS")
            user0 = [seq for seq, _, ev in events if ev["payload"].get("user") == _sub(tokens[0])]
            if user0:  # the SSE client catches up with its user's last event
                async with asyncio.timeout(30):
                    while not sse.ids or sse.ids[-1] < user0[-1]:
                        sse.seen.clear()
                        await sse.seen.wait()
            sse_stop.set()
            tasks[2].cancel()

    for obs in observers:
        await obs.close()
    per_order: dict[str, Counter[str]] = defaultdict(Counter)
    for _, _, ev in events:
        p = ev["payload"]
        if p.get("order_id"):
            per_order[p["order_id"]][ev["type"]] += 1
    lost = [o for o in acked if per_order[o]["oco_placed"] != 1
            or sum(per_order[o][k] for k in FINAL) != 1]  # fmt: skip
    duplicated = [o for o, kinds in per_order.items() if any(n > 1 for n in kinds.values())]
    assert not lost, {o: per_order[o] for o in lost}
    assert not duplicated, {o: per_order[o] for o in duplicated}
    assert sse.ids == sorted(set(sse.ids)), "SSE ids repeated or out of order"
    gaps = sorted(set(user0) - set(sse.ids))
    assert not gaps, f"SSE missed {len(gaps)} of its user's events: {gaps[:10]}"
    figures("Node loss under load (3 nodes R3, TLS, 2 APIs, 3 actor processes)", {
        **steps,
        "orders acknowledged": f"{len(acked)} (api0 {sum(1 for v in acked.values() if v[1] == 'api0')}, api1 {sum(1 for v in acked.values() if v[1] == 'api1')})",
        "lost / duplicated": f"{len(lost)} / {len(duplicated)}",
        **{f"unavailability {f.name}": f"{f.unavailability():.2f} s (non-200: {dict(f.codes)})" for f in flows},
        "SSE": f"{len(sse.ids)} events, {sse.reconnects} reconnects, gaps 0",
        "leases before": leases0,
        "leases after": leases1,
        "partitions before": fences0,
        "partitions after": fences1,
    })  # fmt: skip


def _finals_missing(acked: dict[str, Any], events: list[tuple[int, str, dict[str, Any]]]) -> bool:
    """Some acknowledged order has no final event in ``events`` yet."""
    ended = {ev["payload"].get("order_id") for _, _, ev in events if ev["type"] in FINAL}
    return any(oid not in ended for oid in acked)


async def _left_report(bus: Bus, left: list[str], orders: dict[str, Order]) -> str:
    """For a failure's message: each order left active with its partition, then
    each partition's consumer on EXEC and who holds its lease."""
    s = bus.subjects
    lines = []
    for oid in left[:10]:
        o = orders.get(f"o.{oid}")
        where = "no record" if o is None else (
            f"{o.status} p{s.partition(o.venue, o.symbol)} events={o.events}"
        )  # fmt: skip
        lines.append(f"{oid}: {where}")
    _, fences = await holders(bus)
    for c in await bus.js.consumers_info(s.stream("EXEC")):
        lines.append(
            f"{c.name}: pending {c.num_pending} ack_pending {c.num_ack_pending} "
            f"redelivered {c.num_redelivered} waiting {c.num_waiting} "
            f"delivered {c.delivered.stream_seq if c.delivered else '?'} "
            f"ack_floor {c.ack_floor.stream_seq if c.ack_floor else '?'}"
        )
    lines.append(f"leases: {fences}")
    return "; ".join(lines)


def _sub(token: str) -> str:
    """The user id (JWT ``sub``) of a token, for matching event payloads."""
    import base64

    part = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    sub = claims["sub"]
    assert isinstance(sub, str)
    return sub
