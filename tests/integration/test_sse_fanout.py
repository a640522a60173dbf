"""SSE fan-out (issue 12): one bus subscription per subject filter per API process, shared
by every client; per-client authorisation, resume by Last-Event-ID across the replay ->
live seam, and a slow client dropped without slowing the others.  Real nats-server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from rbot.api.hub import Hub
from rbot.api.principal import Principal, Role
from rbot.api.relay import Relay
from rbot.bus.connection import Bus


async def _publish(bus: Bus, owner: str | None, n: int) -> int:
    subject = bus.subjects.order_event("oanda", "EUR_USD", "oco_placed")
    env = {"id": f"e{n}", "source": "t", "type": "oco_placed", "payload": {"user": owner, "n": n}}
    ack = await bus.js.publish(subject, json.dumps(env).encode())
    return int(ack.seq)


async def _head(bus: Bus) -> int:
    return int((await bus.js.stream_info(bus.subjects.stream("ORDERS"))).state.last_seq)


def _who(role: Role, sub: str) -> Principal:
    return Principal(sub=sub, email=f"{sub}@test", role=role)


async def _frame(frames: AsyncIterator[bytes]) -> tuple[int | None, dict[str, object]]:
    """The next data frame: (its id, its envelope's payload); keep-alives skipped."""
    async with asyncio.timeout(10):
        while True:
            raw = await anext(frames)
            assert not raw.startswith(b"event: end"), raw
            if b"data: " not in raw:
                continue
            head, _, data = raw.partition(b"data: ")
            ev_id = int(head[4:].split(b"\n")[0]) if head.startswith(b"id: ") else None
            return ev_id, json.loads(data)["payload"]


async def _open(relay: Relay) -> tuple[AsyncIterator[bytes], asyncio.Task[bytes]]:
    """Start the stream: its first frame, and the task reading the next (which joins)."""
    frames = relay.events()
    assert (await anext(frames)).startswith(b"retry:")
    return frames, asyncio.ensure_future(anext(frames))


async def test_one_subscription_serves_every_client_each_sees_its_own(bus: Bus) -> None:
    hub = Hub(bus)
    who = {
        "alice": _who(Role.TRADER, "alice"),
        "bob": _who(Role.TRADER, "bob"),
        "root": _who(Role.ADMIN, "root"),
    }
    relays = {name: Relay(bus, p, ["evt.order.>"], None, hub=hub) for name, p in who.items()}
    opened = {name: await _open(r) for name, r in relays.items()}
    async with asyncio.timeout(10):
        await hub.until(3)
    assert hub.subscriptions() == 1  # three clients, one filter: one consumer
    seqs = [await _publish(bus, owner, n) for n, owner in enumerate(["alice", "bob", None, "bob"])]
    got: dict[str, list[int | None]] = {}
    for name, (frames, first) in opened.items():
        want = {"alice": 2, "bob": 3, "root": 4}[name]
        raw = await asyncio.wait_for(first, 10)
        ids = [int(raw.split(b"\n")[0][4:])]
        for _ in range(want - 1):
            ids.append((await _frame(frames))[0])
        got[name] = ids
    assert got == {
        "alice": [seqs[0], seqs[2]],
        "bob": [seqs[1], seqs[2], seqs[3]],
        "root": seqs,
    }
    for frames, _ in opened.values():
        await frames.aclose()  # type: ignore[attr-defined]
    assert hub.members() == 0 and hub.subscriptions() == 0  # the last one out unsubscribed


async def test_resume_across_the_replay_to_live_seam_loses_and_repeats_nothing(
    bus: Bus,
) -> None:
    hub = Hub(bus)
    start = await _head(bus)
    # a live client keeps the feed running (its high-water mark moves on)
    live = Relay(bus, None, ["evt.order.>"], None, hub=hub)
    live_frames, live_first = await _open(live)
    async with asyncio.timeout(10):
        await hub.until(1)
    seqs = [await _publish(bus, None, n) for n in range(40)]
    # a client resuming from the start replays (start, H] and goes on from the feed; more
    # events are published while it replays
    late = Relay(bus, None, ["evt.order.>"], start, hub=hub, queue_size=8)
    late_frames, late_first = await _open(late)
    raw = await asyncio.wait_for(late_first, 10)
    ids = [int(raw.split(b"\n")[0][4:])]
    for n in range(40, 60):
        seqs.append(await _publish(bus, None, n))
        ids.append((await _frame(late_frames))[0])  # type: ignore[arg-type]
    while len(ids) < len(seqs):
        ids.append((await _frame(late_frames))[0])  # type: ignore[arg-type]
    assert ids == seqs
    assert hub.subscriptions() == 1
    live_ids = [int((await asyncio.wait_for(live_first, 10)).split(b"\n")[0][4:])]
    while len(live_ids) < len(seqs):
        live_ids.append((await _frame(live_frames))[0])  # type: ignore[arg-type]
    assert live_ids == seqs
    for frames in (late_frames, live_frames):
        await frames.aclose()  # type: ignore[attr-defined]


async def test_resume_with_nothing_to_replay_goes_live_at_once(bus: Bus) -> None:
    hub = Hub(bus)
    await _publish(bus, None, 0)
    head = await _head(bus)
    feeder = Relay(bus, None, ["evt.order.>"], None, hub=hub)
    feeder_frames, feeder_first = await _open(feeder)
    async with asyncio.timeout(10):
        await hub.until(1)
    # other subjects only after ``head - 1``: a filter that matches none of them
    relay = Relay(bus, None, ["evt.order.coinbase.>"], head - 1, hub=hub)
    frames, first = await _open(relay)
    async with asyncio.timeout(10):
        await hub.until(2)
    subject = bus.subjects.order_event("coinbase", "BTC-USD", "oco_placed")
    ack = await bus.js.publish(subject, json.dumps({"payload": {"user": None}}).encode())
    raw = await asyncio.wait_for(first, 10)
    assert raw.startswith(b"id: %d\n" % ack.seq)
    feeder_first.cancel()
    for f in (frames, feeder_frames):
        await f.aclose()  # type: ignore[attr-defined]


async def test_a_slow_client_is_dropped_and_never_slows_the_others(
    bus: Bus, caplog: pytest.LogCaptureFixture
) -> None:
    hub = Hub(bus)
    slow = Relay(bus, None, ["evt.order.>"], None, hub=hub, queue_size=4)
    fast = Relay(bus, None, ["evt.order.>"], None, hub=hub, queue_size=4)
    slow_frames, slow_first = await _open(slow)
    fast_frames, fast_first = await _open(fast)
    async with asyncio.timeout(10):
        await hub.until(2)
    seqs = [await _publish(bus, None, 0)]
    got = [int((await asyncio.wait_for(fast_first, 10)).split(b"\n")[0][4:])]
    for n in range(1, 20):  # the fast one reads each; the slow one reads nothing
        seqs.append(await _publish(bus, None, n))
        got.append((await _frame(fast_frames))[0])  # type: ignore[arg-type]
    assert got == seqs
    async with asyncio.timeout(10):
        await slow.ended.wait()
    assert slow.end_reason == "slow_client" and "reason=slow_client" in caplog.text
    rest = [await asyncio.wait_for(slow_first, 10)] + [f async for f in slow_frames]
    assert rest[-1] == b'event: end\ndata: {"code": "slow_client"}\n\n'
    await fast_frames.aclose()  # type: ignore[attr-defined]
    assert hub.subscriptions() == 0


async def test_a_role_change_regroups_the_client_in_the_shared_feed(bus: Bus) -> None:
    """Members are grouped by whose events they may see: a promoted trader gets everyone's
    order events from the next one on, a demoted admin only its own again."""
    hub = Hub(bus)
    relay = Relay(bus, _who(Role.TRADER, "carol"), ["evt.order.>"], None, hub=hub)
    frames, first = await _open(relay)
    async with asyncio.timeout(10):
        await hub.until(1)
    await _publish(bus, "dave", 0)  # not carol's: not delivered
    mine = await _publish(bus, "carol", 1)
    assert (await asyncio.wait_for(first, 10)).startswith(b"id: %d\n" % mine)
    relay._on_role(Role.ADMIN)  # what the session watch does on a role change
    other = await _publish(bus, "dave", 2)
    assert (await _frame(frames)) == (other, {"user": "dave", "n": 2})
    relay._on_role(Role.TRADER)
    await _publish(bus, "dave", 3)
    last = await _publish(bus, "carol", 4)
    assert (await _frame(frames))[0] == last
    await frames.aclose()  # type: ignore[attr-defined]
