"""A bus outage, seen from the API (issue 17): fail fast, say so, come back.

The whole stack in-process (actors and the API over real HTTP) on a
nats-server of this test's own.  With the server SIGKILLed: ``/ready`` turns
503 within 1 s; every route that needs the bus (an order, a read, the auth
dependency behind both) answers ``503 bus_unavailable`` with ``Retry-After``,
p99 under 100 ms; ``/health`` and ``/metrics`` still answer.  With the server
back: ``/ready`` 200 again, and an order goes through.
"""

from __future__ import annotations

import asyncio
import signal
import statistics
import time

import httpx

from rbot.bus.config import Settings
from rbot.bus.connection import connect
from rbot.bus.provision import provision
from tests.conftest import make_settings
from tests.natsd import NatsServer
from tests.stack import publish_tick, running_stack

ORDER = {
    "instrument": "EUR_USD", "side": "BUY", "units": 100, "quality_score": 75,
    "stop_loss_price": 1.1600, "take_profit_price": 1.1700,
}  # fmt: skip
ACTORS = ["heartbeat", "order_guard", "paper_executor"]
PROBES = 200  # per route


def p99(xs: list[float]) -> float:
    v = sorted(xs)
    return v[min(len(v) - 1, round(0.99 * (len(v) - 1)))]


async def ready_after_pulses(c: httpx.AsyncClient, pulses: asyncio.Queue[object]) -> None:
    """Until ``/ready`` is 200, waiting for the next pulse between tries (not a timer)."""
    async with asyncio.timeout(60):
        while (await c.get("/ready")).status_code != 200:
            await pulses.get()


async def test_fast_503s_while_nats_is_down_and_ready_again_after(
    own_nats_server: NatsServer, prefix: str
) -> None:
    server = own_nats_server
    settings: Settings = make_settings(server.url, prefix)
    bus = await connect(server.url, settings.subjects(), "outage-test")
    await provision(bus)
    pulses: asyncio.Queue[object] = asyncio.Queue()

    async def on_pulse(msg: object) -> None:
        pulses.put_nowait(msg)

    await bus.nc.subscribe(bus.subjects.pulse, cb=on_pulse)
    try:
        async with running_stack(settings, only=ACTORS) as stack:
            token = await stack.user("outage@test")
            await publish_tick(bus, "oanda", "EUR_USD", "1.16500", "1.16514")
            async with stack.client(token) as c:
                await ready_after_pulses(c, pulses)
                assert (await c.post("/brokers/oanda/orders", json=ORDER)).status_code == 200

                await asyncio.to_thread(server.kill, signal.SIGKILL)
                down = time.monotonic()
                async with asyncio.timeout(1.0):
                    while (r := await c.get("/ready")).status_code != 503:
                        pass  # each try is a real request: the thing measured
                to_ready_503 = time.monotonic() - down
                assert r.json()["code"] == "bus_unavailable" and r.headers["retry-after"]
                assert r.json()["checks"]["nats"] is False

                times: dict[str, list[float]] = {
                    "POST /brokers/oanda/orders": [],
                    "GET /orders": [],
                }
                for i in range(PROBES):
                    for route in times:
                        method, path = route.split()
                        body = (
                            {**ORDER, "client_order_id": f"down-{i}"} if method == "POST" else None
                        )
                        t = time.monotonic()
                        r = await c.request(method, path, json=body)
                        times[route].append(time.monotonic() - t)
                        assert r.status_code == 503, (route, r.status_code, r.text)
                        assert r.json()["code"] == "bus_unavailable", r.text
                        assert r.json()["message"] and r.headers["retry-after"] == "1"
                # the process itself answers: liveness and its own metrics
                assert (await c.get("/health")).status_code == 200
                m = await c.get("/metrics")
                assert m.status_code == 200 and "rbot_nats_connected 0.0" in m.text
                print(f"\n== bus outage: /ready 503 after {to_ready_503 * 1000:.1f} ms")
                for route, xs in times.items():
                    print(
                        f"   {route:<28} 503 in median {statistics.median(xs) * 1000:.2f} ms, "
                        f"p99 {p99(xs) * 1000:.2f} ms, max {max(xs) * 1000:.2f} ms (n={len(xs)})"
                    )
                for route, xs in times.items():
                    assert p99(xs) < 0.100, (route, p99(xs))

                await asyncio.to_thread(server.start)
                up = time.monotonic()
                await ready_after_pulses(c, pulses)
                print(f"   server back -> /ready 200 after {time.monotonic() - up:.2f} s")
                r = await c.post("/brokers/oanda/orders", json={**ORDER, "client_order_id": "back"})
                assert r.status_code == 200, r.text
            # nobody crashed over it: at most the outage, never a restart
            assert not [e for e in stack.events if e[1] in ("crashed", "escalated")], stack.events
    finally:
        await bus.close()
