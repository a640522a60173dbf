"""R17 (issue 17): a flapping bus is an outage to ride out, never a trading outage.

Real processes on 127.0.0.1, as in R2: a nats-server (store and port kept),
``rbot actors --only heartbeat order_guard paper_executor ttl_reaper`` and
``rbot api``, under R2's steady order flow (8 at a time, 20/s, a 503 retried
with the same ``client_order_id``).  The server is stopped on a fixed beat,
SIGTERM and SIGKILL alternating; while it is down, an order and two reads
must answer 503 with a JSON code; then it is started again.

Afterwards: trading still ACTIVE, no supervisor escalation, every
acknowledged order booked (or its command/event in JetStream), and no actor
counted a restart: a lost bus or lease is ``waiting_for_bus`` / ``standby``,
not a crash (the per-actor counts are printed).

Sizes: 6 restarts every 4 s in the default run; 30 in 2 minutes behind the
``chaos`` marker (``RBOT_R17_RESTARTS`` to change it).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import time
from collections import Counter

import httpx
import pytest
from nats.errors import Error as NatsError

from rbot.bus import codec
from rbot.bus.connection import Bus
from rbot.bus.messages import Order, TradingStateRecord
from rbot.bus.timing import every
from tests.chaos.conftest import (
    BANNER_ACTORS,
    BANNER_API,
    Spawn,
    figures,
    kv_values,
    publish_tick,
    rbot_env,
    read_stream,
    spread,
    trader_token,
    wait_exec_drained,
)
from tests.chaos.test_r2_nats_restarts import BID, SPREAD, Load, probe, ticker
from tests.natsd import NatsServer

PERIOD_S = 4.0  # one restart every 4 s: 30 in 2 minutes
ACTORS = ["heartbeat", "order_guard", "paper_executor", "ttl_reaper"]
_SUP = re.compile(r"rbot\.supervisor: (\S+) (restarting|crashed|waiting_for_bus|escalated)\b")


async def flapping_bus(
    server: NatsServer, prefix: str, bus: Bus, spawn: Spawn, restarts: int
) -> None:
    wall = time.monotonic()
    env = rbot_env(server.url, prefix, RBOT_ORDERS_PER_MINUTE="1000000")
    actors = spawn("actors", ["actors", "--only", *ACTORS], env, BANNER_ACTORS)
    api = spawn("api", ["api"], env, BANNER_API)
    await publish_tick(bus, "oanda", "EUR_USD", BID, BID + SPREAD)
    _, banner = await asyncio.gather(actors.start(), api.start())
    base = f"http://127.0.0.1:{banner.group(1)}"

    down_s: list[float] = []
    recover_s: list[float] = []
    probes: list[str] = []
    signals: Counter[str] = Counter()
    tick_failures: Counter[str] = Counter()
    stop_ticks = asyncio.Event()
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        token = await trader_token(client, "r17@test")
        load = Load(client, token)
        async with asyncio.TaskGroup() as tg:
            ticks = tg.create_task(ticker(bus, stop_ticks, tick_failures))
            work = tg.create_task(load.run())
            await load.ack_after(0.0, timeout=30)
            flaps = time.monotonic()
            async for k in every(PERIOD_S):  # the beat of the flapping
                if k == restarts:
                    break
                sig = signal.SIGTERM if k % 2 == 0 else signal.SIGKILL
                signals[sig.name] += 1
                await asyncio.to_thread(server.kill, sig)
                down = time.monotonic()
                probes += await probe(client, load.headers, k)
                await asyncio.to_thread(server.start)
                up = time.monotonic()
                down_s.append(up - down)
                recover_s.append(await load.ack_after(up, timeout=90) - up)
            flap_s = time.monotonic() - flaps
            load.stop.set()
            await work
            stop_ticks.set()
            await ticks

    await wait_exec_drained(bus, timeout=120)
    orders = {k[2:]: v for k, v in (await kv_values(bus, "orders", "o.*", Order)).items()}
    placed = {
        e["payload"]["order_id"]
        for _, _, e in await read_stream(bus, "ORDERS")
        if e["type"] == "oco_placed"
    }
    missing = sorted(o for o in load.acked if o not in orders and o not in placed)
    trading = "ACTIVE"
    with contextlib.suppress(NatsError):
        entry = await (await bus.kv("control")).get("trading")
        trading = str(codec.decode(entry.value or b"", TradingStateRecord).state)
    per_actor: dict[str, Counter[str]] = {a: Counter() for a in ACTORS}
    for line in actors.lines:
        if m := _SUP.search(line):
            per_actor.setdefault(m.group(1), Counter())[m.group(2)] += 1
    restarted = {a: c["restarting"] for a, c in per_actor.items() if c["restarting"]}
    figures(
        f"R17 flapping bus: {restarts} nats-server restarts",
        {
            "restarts": f"{restarts} {dict(signals)} in {flap_s:.1f} s",
            "HTTP answers by code": dict(load.statuses),
            "acknowledged orders": len(load.acked),
            "orders given up (40 x 503)": len(load.gave_up),
            "server down (probe time)": spread(down_s),
            "restart -> first new ack": spread(recover_s),
            "missing acked orders": len(missing),
            "per actor (restarts / crashes / outages waited out)": {
                a: f"{c['restarting']} / {c['crashed']} / {c['waiting_for_bus']}"
                for a, c in per_actor.items()
            },
            "tick puts failed while down": dict(tick_failures),
            "trading state after": trading,
            "wall time": f"{time.monotonic() - wall:.1f} s",
        },
    )
    print("   probe answers (first 6):\n     " + "\n     ".join(probes[:6]))
    assert not load.five_hundreds, load.five_hundreds[:5]
    assert not load.no_code, load.no_code[:5]
    assert not missing, missing[:20]
    assert actors.alive and api.alive, actors.tail(80)
    assert trading == "ACTIVE", actors.tail(80)
    assert actors.count("escalated") == 0 and api.count("escalated") == 0, actors.tail(80)
    assert not restarted, (restarted, actors.tail(120))


async def test_r17_six_nats_restarts_change_no_actor_restart_count(
    own_nats_server: NatsServer, prefix: str, chaos_bus: Bus, spawn: Spawn
) -> None:
    await flapping_bus(own_nats_server, prefix, chaos_bus, spawn, restarts=6)


@pytest.mark.chaos
@pytest.mark.timeout(900)
async def test_r17_thirty_nats_restarts_in_two_minutes(
    own_nats_server: NatsServer, prefix: str, chaos_bus: Bus, spawn: Spawn
) -> None:
    restarts = int(os.environ.get("RBOT_R17_RESTARTS", "30"))
    await flapping_bus(own_nats_server, prefix, chaos_bus, spawn, restarts=restarts)
