"""End to end: ``rbot up`` as a subprocess, heartbeats on SSE and on plain NATS,
nats-server SIGKILLed and restarted by the supervisor, a clean Ctrl-C."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
from pathlib import Path

import httpx
import nats

from tests.foreign_nats import ForeignNats
from tests.rbotproc import RbotUp


async def auth_headers(client: httpx.AsyncClient, rbot: RbotUp) -> dict[str, str]:
    if rbot.admin is None:
        return {}
    email, password = rbot.admin
    r = await client.post("/auth/login", json={"email": email, "password": password})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


async def next_sse_data(lines: object, want: str) -> dict[str, object]:
    async for line in lines:  # type: ignore[attr-defined]
        if line.startswith("data: ") and want in line:
            data: dict[str, object] = json.loads(line[6:])
            return data
    raise AssertionError("SSE stream ended")


async def seed_quick_start(client: httpx.AsyncClient) -> None:
    """The seed document's quick start and Tests 1-4, as written (plus bearer on /events)."""
    creds = {"email": "trader@test", "password": "pass"}
    assert (await client.post("/auth/register", json=creds)).status_code in (200, 201)
    tok = (await client.post("/auth/login", json=creds)).json()["access_token"]
    auth = {"Authorization": f"Bearer {tok}"}
    # `curl -d` without -H 'Content-Type: application/json', as the seed's Tests 2 and 3
    curl = {**auth, "Content-Type": "application/x-www-form-urlencoded"}
    r = await client.get("/brokers/oanda/prices?instrument=EUR_USD&env=practice", headers=auth)
    assert r.status_code == 200, r.text
    assert r.json()["instrument"] == "EUR_USD" and r.json()["bids"][0]["price"]
    async with client.stream("GET", "/events", headers=auth) as events:
        r = await client.post(
            "/brokers/oanda/orders",
            headers=curl,
            content=b'{"instrument":"EUR_USD","side":"BUY","units":100,"entry_price":1.1655,'
            b'"stop_loss_price":1.1600,"take_profit_price":1.1700,"quality_score":75}',
        )
        assert r.status_code == 200, r.text
        assert r.json()["ok"] is True and r.json()["order_id"].startswith("paper-oanda-")
        r = await client.post(
            "/brokers/coinbase-adv/orders",
            headers=curl,
            content=b'{"product_id":"BTC-USD","side":"BUY","order_type":"MARKET","size":0.001,'
            b'"stop_loss_price":40000,"take_profit_price":45000}',
        )
        assert r.status_code == 200, r.text
        assert r.json() == {**r.json(), "ok": True, "status": "PENDING", "mode": "paper"}
        env = await next_sse_data(events.aiter_lines(), '"source":"oanda"')
        assert env["type"] in ("oco_placed", "order_filled")


def password(rbot: RbotUp, identity: str) -> str:
    return (rbot.data_dir / "nats-identities" / identity).read_text().strip()


def check_credential_files(rbot: RbotUp) -> None:
    """One password per identity, 0600 in a 0700 folder; the server's config has hashes only."""
    folder = rbot.data_dir / "nats-identities"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    files = sorted(p.name for p in folder.iterdir())
    assert {"operator", "api", "guard", "executor", "feeds", "tap"} <= set(files)
    conf = (rbot.data_dir / "nats-server.conf").read_text()
    for name in files:
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600
        assert password(rbot, name) not in conf  # bcrypt hashes only
        assert password(rbot, name) not in rbot.text  # never printed
    assert stat.S_IMODE((rbot.data_dir / "nats-server.conf").stat().st_mode) == 0o600
    assert conf.count('password: "$2') == len(files)


async def test_rbot_up_end_to_end(tmp_path: Path) -> None:
    rbot = RbotUp(tmp_path / "var")
    await rbot.start()
    try:
        check_credential_files(rbot)
        # the bus is locked: no credentials, no connection
        stranger = ForeignNats(rbot.nats_url)
        await stranger.connect()
        assert "Authorization Violation" in await stranger.refusal()
        await stranger.close()

        async with httpx.AsyncClient(base_url=rbot.base, timeout=10) as client:
            assert (await client.get("/health")).status_code == 200
            headers = await auth_headers(client, rbot)

            # a heartbeat over SSE
            async with (
                asyncio.timeout(20),
                client.stream("GET", "/events", headers=headers) as resp,
            ):
                assert resp.status_code == 200
                assert resp.headers["content-type"].startswith("text/event-stream")
                env = await next_sse_data(resp.aiter_lines(), '"type":"heartbeat"')
                assert env["source"] == "heartbeat"
                assert {"id", "source", "type", "payload", "ts", "v"} <= env.keys()

            await seed_quick_start(client)

            # ready: NATS connected, streams present, actors beating
            r = await client.get("/ready")
            assert r.status_code == 200, r.text
            assert r.json()["checks"]["actors"] is True

            # a heartbeat with nats-py and with a client that is not nats-py
            back = asyncio.Event()

            async def on_reconnect() -> None:
                back.set()

            nc = await nats.connect(
                rbot.nats_url,
                user="operator",  # the test reads the SYSTEM stream below
                password=password(rbot, "operator"),
                reconnect_time_wait=0.1,
                max_reconnect_attempts=-1,
                reconnected_cb=on_reconnect,
            )
            foreign = ForeignNats(rbot.nats_url)  # as a NATS CLI user taps: identity tap
            await foreign.connect(user="tap", password=password(rbot, "tap"))
            await foreign.subscribe("rbot.evt.>")
            sub = await nc.subscribe("rbot.evt.heartbeat")
            async with asyncio.timeout(20):
                msg = await sub.next_msg(timeout=20)
                assert json.loads(msg.data)["type"] == "heartbeat"
                while True:
                    subject, payload = await foreign.next_msg()
                    if subject == "rbot.evt.heartbeat":
                        assert json.loads(payload)["type"] == "heartbeat"
                        break
            await foreign.close()

            # SIGKILL the embedded nats-server: the supervisor restarts it on the
            # same port and store, and the actors reconnect by themselves
            old = rbot.nats_pid()
            os.kill(old, signal.SIGKILL)
            async with asyncio.timeout(30):
                await back.wait()
            # lifecycle events are also kept in the SYSTEM stream: the restart's
            # "started" is there even though we were disconnected when it happened
            js = nc.jetstream()
            starts = await js.subscribe("rbot.evt.actor.nats_server.started", ordered_consumer=True)
            async with asyncio.timeout(30):
                first = json.loads((await starts.next_msg(timeout=30)).data)
                second = json.loads((await starts.next_msg(timeout=30)).data)
                assert first["payload"]["actor"] == second["payload"]["actor"] == "nats_server"
                assert second["payload"]["restarts"] == 1
                pulse = await sub.next_msg(timeout=30)  # the heartbeat actor is back
                assert json.loads(pulse.data)["type"] == "heartbeat"
            assert rbot.nats_pid() != old
            async with asyncio.timeout(30):
                while (await client.get("/ready")).status_code != 200:
                    await sub.next_msg(timeout=30)  # wait for the next pulse, not for time
            await nc.close()
    finally:
        code = await rbot.stop(signal.SIGINT)
    assert code == 0, rbot.text[-3000:]
    # Ctrl-C itself raises nothing (actors still recovering from the server kill
    # may log a crash just before; that is the supervisor doing its job)
    shutdown = rbot.text[rbot.text.index("actors stopped") :]
    assert "Traceback" not in shutdown, shutdown[-3000:]
    assert "never retrieved" not in rbot.text
    # every component on its own identity, and none tried what it may not do
    assert "permissions violation" not in rbot.text.lower(), rbot.text[-3000:]
    assert "nats_server stopped" in rbot.text
    # reverse order: the API stops before the actors, the actors before NATS
    t = rbot.text
    assert t.index("api stopped") < t.index("actors stopped") < t.index("nats_server stopped")
