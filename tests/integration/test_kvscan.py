"""bus.kvscan.scan on a real nats-server: exact, whatever the timing.

A scan built on a KV watch returned an empty admin roster in CI once: the
watcher's "end of the initial values" marker can overtake the values.  These
check the pull-consumer scan against what was written, many times over."""

from __future__ import annotations

import asyncio

from rbot.bus.connection import Bus
from rbot.bus.kvscan import BATCH, missed, scan


async def test_scan_sees_every_current_value_and_skips_deletes(bus: Bus) -> None:
    kv = await bus.kv("orders")
    n = BATCH * 2 + 7  # more than one fetch
    await asyncio.gather(*(kv.put(f"scantest.{i}", str(i).encode()) for i in range(n)))
    await kv.put("scantest.3", b"updated")
    await kv.delete("scantest.4")
    await kv.purge("scantest.5")
    await kv.put("other.1", b"x")
    got = {e.key: e.value for e in await scan(kv, "scantest.*")}
    assert len(got) == n - 2
    assert got["scantest.3"] == b"updated"
    assert "scantest.4" not in got and "scantest.5" not in got
    assert all(k.startswith("scantest.") for k in got)


async def test_scan_of_nothing_is_empty(bus: Bus) -> None:
    kv = await bus.kv("orders")
    assert await scan(kv, "nothing.here.*") == []


async def test_back_to_back_scans_never_come_back_short(bus: Bus) -> None:
    kv = await bus.kv("orders")
    for i in range(3):
        await kv.put(f"few.{i}", b"v")
    counts = await asyncio.gather(*(scan(kv, "few.*") for _ in range(200)))
    assert {len(c) for c in counts} == {3}


async def test_a_confirmed_scan_is_the_same_scan_on_one_server(bus: Bus) -> None:
    kv = await bus.kv("orders")
    for i in range(5):
        await kv.put(f"conf.{i}", str(i).encode())
    await kv.delete("conf.1")
    await kv.purge("conf.2")
    plain = {e.key: e.value for e in await scan(kv, "conf.*")}
    confirmed = {e.key: e.value for e in await scan(kv, "conf.*", confirm=True)}
    assert confirmed == plain == {"conf.0": b"0", "conf.3": b"3", "conf.4": b"4"}


async def test_what_a_lagging_scan_missed_is_read_from_the_leader(bus: Bus) -> None:
    """The confirmation's own part: every live key the leader holds that the scan
    did not see (here: a scan that saw nothing), deleted and purged ones skipped."""
    kv = await bus.kv("orders")
    for i in range(4):
        await kv.put(f"lag.{i}", str(i).encode())
    await kv.delete("lag.1")
    await kv.purge("lag.2")
    got = {e.key: e.value for e in await missed(kv, "lag.*", seen={"lag.3"})}
    assert got == {"lag.0": b"0"}
