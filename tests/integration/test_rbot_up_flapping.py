"""``rbot up`` rides out a flapping embedded nats-server (issue 17).

The embedded server is SIGKILLed 8 times within a minute, each time as soon
as it is back.  The process stays up (before: "supervisor gave up: 6 restarts
within 60.0s" and the API went with it); ``/ready`` goes 503 at each outage
and 200 again after the last; every restart is visible in ``/system``,
``/metrics`` (``rbot_nats_restarts_total``) and as ``nats_server`` lifecycle
events; no actor is counted as restarted and nothing escalates.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from pathlib import Path

import httpx
import nats

from tests.integration.test_rbot_up import password as nats_password
from tests.rbotproc import RbotUp

KILLS = 8


async def test_rbot_up_survives_its_nats_server_killed_8_times(tmp_path: Path) -> None:
    rbot = RbotUp(tmp_path / "var")
    await rbot.start()
    try:
        async with httpx.AsyncClient(base_url=rbot.base, timeout=10) as client:
            assert rbot.admin is not None
            email, password = rbot.admin
            r = await client.post("/auth/login", json={"email": email, "password": password})
            auth = {"Authorization": f"Bearer {r.json()['access_token']}"}
            back = asyncio.Event()

            async def on_reconnect() -> None:
                back.set()

            nc = await nats.connect(
                rbot.nats_url, user="operator", password=nats_password(rbot, "operator"),
                reconnect_time_wait=0.05, max_reconnect_attempts=-1,
                reconnected_cb=on_reconnect,
            )  # fmt: skip
            pulses = await nc.subscribe("rbot.evt.heartbeat")
            started = time.monotonic()
            to_503: list[float] = []
            for _ in range(KILLS):
                pid = rbot.nats_pid()
                back.clear()
                os.kill(pid, signal.SIGKILL)
                killed = time.monotonic()
                async with asyncio.timeout(1.0):
                    while (await client.get("/ready")).status_code != 503:
                        pass  # each try is a request: the thing measured
                to_503.append(time.monotonic() - killed)
                try:
                    async with asyncio.timeout(60):
                        await back.wait()  # the server is back (our client reconnected)
                except TimeoutError:
                    raise AssertionError("no reconnect:\n" + rbot.text[-6000:]) from None
            elapsed = time.monotonic() - started
            async with asyncio.timeout(60):
                while (await client.get("/ready")).status_code != 200:
                    await pulses.next_msg(timeout=30)  # the next pulse, not a timer
            ready = (await client.get("/ready")).json()
            system = (await client.get("/system", headers=auth)).json()
            metrics = (await client.get("/metrics")).text
            await nc.close()
            print(
                f"\n== rbot up, embedded nats-server SIGKILLed {KILLS}x in {elapsed:.1f} s: "
                f"/ready 503 after {max(to_503) * 1000:.0f} ms at most; "
                f"nats_server {system['nats_server']}"
            )
            assert elapsed < 60, elapsed
            assert rbot.proc is not None and rbot.proc.returncode is None
            assert ready["checks"]["nats_server"]["restarts"] == KILLS
            assert system["nats_server"]["restarts"] == KILLS
            assert (
                "(-9)" in system["nats_server"]["last_exit"]
                or "with -9" in system["nats_server"]["last_exit"]
            )
            m = re.search(r"^rbot_nats_restarts_total (\S+)$", metrics, re.M)
            assert m and float(m.group(1)) == KILLS, metrics[:2000]
            assert system["trading_state"] == "ACTIVE"
    finally:
        code = await rbot.stop(signal.SIGINT)
    text = rbot.text
    assert code == 0, text[-3000:]
    assert "supervisor gave up" not in text and "escalated" not in text
    assert text.count("nats-server died") == KILLS
    # the actors waited for the bus; none was counted as a restart
    assert not re.search(r"rbot\.supervisor: (?!nats_server)\S+ restarting", text), text[-3000:]
