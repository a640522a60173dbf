"""Identities on a locked nats-server: who may do what (issue 11, the NATS part).

The server runs the generated ``authorization`` block (bcrypt hashes, the
permissions from ``bus/identities.py``).  A denied publish or subscription is
answered by the server with ``-ERR 'Permissions Violation ...'`` before the
PONG of the next flush, so each check is: try, flush, look at the errors; no
waiting on time.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NATS
from pydantic import SecretStr

from rbot.bus import codec
from rbot.bus.config import Settings
from rbot.bus.connection import Bus, BusClosed, connect
from rbot.bus.credentials import NatsAuth, auth_for, ensure_credentials, password_hashes
from rbot.bus.identities import inbox_prefix, render_authorization
from rbot.bus.provision import provision
from rbot.bus.subjects import Subjects
from tests.conftest import make_settings
from tests.foreign_nats import ForeignNats
from tests.natsd import NatsServer, running_server
from tests.stack import EventTap, running_stack

SEED_TEST3 = {
    "product_id": "BTC-USD", "side": "BUY", "order_type": "MARKET", "size": 0.001,
    "stop_loss_price": 40000, "take_profit_price": 45000,
}  # fmt: skip


@dataclass
class Locked:
    server: NatsServer
    creds: Path
    passwords: dict[str, SecretStr]
    subjects: Subjects

    def violations(self) -> list[str]:
        return [line for line in self.server.log if "Violation" in line]


@pytest.fixture
def locked(tmp_path: Path, prefix: str) -> Iterator[Locked]:
    creds = tmp_path / "creds"
    passwords = ensure_credentials(creds)
    subjects = Subjects(prefix=prefix, partitions=2)
    conf = tmp_path / "auth.conf"
    conf.write_text(render_authorization(password_hashes(passwords), subjects))
    with running_server(tmp_path / "js", config=conf) as srv:
        yield Locked(srv, creds, passwords, subjects)


@pytest.fixture
def locked_settings(locked: Locked, prefix: str) -> Settings:
    return make_settings(locked.server.url, prefix, nats_creds_dir=locked.creds)


@pytest.fixture
async def operator(locked_settings: Settings) -> AsyncIterator[Bus]:
    assert locked_settings.nats_url
    bus = await connect(
        locked_settings.nats_url,
        locked_settings.subjects(),
        "test-operator",
        auth=auth_for(locked_settings, "operator"),
    )
    await provision(bus)
    try:
        yield bus
    finally:
        await bus.close()


class Client:
    """A plain nats-py connection as one identity, collecting the server's -ERRs."""

    def __init__(self, nc: NATS, errors: list[str], changed: asyncio.Event) -> None:
        self.nc = nc
        self.errors = errors
        self.changed = changed

    async def denied(self, subject: str, *, subscribe: bool = False) -> bool:
        """Try to publish (or subscribe); True once the server's refusal arrives.

        (nats-py lower-cases the -ERR text; a refused publish with a reply
        subject may be answered after the PONG of a flush, so wait for the error
        itself, not for a flush.)
        """
        want = f'"{subject.lower()}"'
        if subscribe:
            await self.nc.subscribe(subject)
        else:  # a request without waiting for its answer
            await self.nc.publish(subject, b"{}", reply=self.nc.new_inbox())
        async with asyncio.timeout(10):
            while not any("permissions violation" in e and want in e for e in self.errors):
                self.changed.clear()
                await self.changed.wait()
        return True

    async def clean(self) -> bool:
        await self.nc.flush()
        return not self.errors


@pytest.fixture
async def as_identity(locked: Locked) -> AsyncIterator[object]:
    clients: list[NATS] = []

    async def make(identity: str) -> Client:
        errors: list[str] = []
        changed = asyncio.Event()

        async def on_error(exc: Exception) -> None:
            errors.append(str(exc))
            changed.set()

        nc = await nats.connect(
            locked.server.url,
            user=identity,
            password=locked.passwords[identity].get_secret_value(),
            inbox_prefix=inbox_prefix(identity) if identity != "tap" else "_INBOX",
            error_cb=on_error,
            allow_reconnect=False,
        )
        clients.append(nc)
        return Client(nc, errors, changed)

    try:
        yield make
    finally:
        for nc in clients:
            await nc.close()


# -- no credentials, wrong credentials ---------------------------------------
async def test_a_foreign_client_without_credentials_is_refused(locked: Locked) -> None:
    foreign = ForeignNats(locked.server.url)
    await foreign.connect()
    assert "Authorization Violation" in await foreign.refusal()
    await foreign.close()


async def test_a_wrong_password_is_refused_at_once(locked_settings: Settings) -> None:
    assert locked_settings.nats_url
    wrong = NatsAuth("api", SecretStr("not-the-password"), inbox_prefix("api"))
    with pytest.raises(BusClosed, match="authorization violation"):
        await connect(locked_settings.nats_url, locked_settings.subjects(), "t", auth=wrong)


async def test_a_foreign_client_with_the_tap_identity_reads_events(
    locked: Locked, operator: Bus
) -> None:
    foreign = ForeignNats(locked.server.url)
    await foreign.connect(user="tap", password=locked.passwords["tap"].get_secret_value())
    await foreign.subscribe(locked.subjects.all_events)
    await foreign.flush()
    assert foreign.errors == []
    await operator.nc.publish(locked.subjects.pulse, b'{"type":"heartbeat"}')
    async with asyncio.timeout(10):
        subject, payload = await foreign.next_msg()
    assert subject == locked.subjects.pulse and json.loads(payload)["type"] == "heartbeat"
    await foreign.close()


# -- what each identity must not do -------------------------------------------
async def test_tap_reads_events_and_nothing_else(
    locked: Locked, operator: Bus, as_identity: object
) -> None:
    s = locked.subjects
    tap: Client = await as_identity("tap")  # type: ignore[operator]
    sub = await tap.nc.subscribe(s.all_events)
    await tap.nc.subscribe(s.all_market_data)
    await tap.nc.subscribe(s.all_heartbeats)
    assert await tap.clean()
    await operator.nc.publish(s.pulse, b"pulse")
    await operator.nc.flush()
    assert (await sub.next_msg(timeout=20)).data == b"pulse"

    assert await tap.denied(s.exec("oanda", "EUR_USD"))
    assert await tap.denied(s.order_place)
    assert await tap.denied(f"$JS.API.STREAM.DELETE.{s.stream('ORDERS')}")
    users = s.kv_stream("users")
    assert await tap.denied(f"$JS.API.CONSUMER.CREATE.{users}")
    assert await tap.denied(f"$JS.API.DIRECT.GET.{users}.{s.kv_keys('users', 'u1')}")
    assert await tap.denied(f"$JS.API.STREAM.INFO.{users}")
    assert await tap.denied(s.kv_keys("users", "u1"))
    assert await tap.denied(s.order_place, subscribe=True)  # cannot watch order requests
    assert await tap.denied("_INBOX.>", subscribe=True)  # nor anyone's replies
    info = await operator.js.stream_info(s.stream("EXEC"))
    assert info.state.messages == 0


async def test_api_cannot_write_orders_nor_command_the_executor(
    locked: Locked, operator: Bus, as_identity: object
) -> None:
    s = locked.subjects
    api: Client = await as_identity("api")  # type: ignore[operator]
    assert await api.denied(s.kv_keys("orders", "o.paper-oanda-1"))
    assert await api.denied(s.kv_keys("orders", "idem.u1.k1"))
    assert await api.denied(s.exec("oanda", "EUR_USD"))
    assert await api.denied(f"$JS.API.STREAM.DELETE.{s.stream('ORDERS')}")
    assert await api.denied(f"$JS.API.STREAM.PURGE.{s.stream('ORDERS')}")
    assert await api.denied(f"$JS.API.STREAM.CREATE.{s.stream('ORDERS')}")
    assert await api.denied(f"$JS.API.CONSUMER.CREATE.{s.stream('EXEC')}")  # no reading commands
    assert await api.denied(s.order_events)  # no forged order events
    assert await api.denied(s.exec("oanda", "EUR_USD"), subscribe=True)
    assert await api.denied("_INBOX_guard.>", subscribe=True)


async def test_feeds_publish_market_data_only(
    locked: Locked, operator: Bus, as_identity: object
) -> None:
    s = locked.subjects
    feeds: Client = await as_identity("feeds")  # type: ignore[operator]
    assert await feeds.denied(s.exec("oanda", "EUR_USD"))
    assert await feeds.denied(s.kv_keys("users", "u1"))
    assert await feeds.denied(s.kv_keys("orders", "o.x"))
    assert await feeds.denied(s.kv_keys("control", "trading"))
    assert await feeds.denied(s.order_event("oanda", "EUR_USD", "order_filled"))
    assert await feeds.denied(s.pulse)
    assert await feeds.denied(s.heartbeat("order_guard", "i1"))  # beats only as a feed
    assert await feeds.denied(f"$JS.API.CONSUMER.CREATE.{s.kv_stream('users')}")
    assert await feeds.denied("_INBOX_api.>", subscribe=True)  # the API's replies stay private
    assert await feeds.denied("_INBOX.>", subscribe=True)


async def test_guard_writes_idempotency_records_only(
    locked: Locked, operator: Bus, as_identity: object
) -> None:
    s = locked.subjects
    guard: Client = await as_identity("guard")  # type: ignore[operator]
    assert await guard.denied(s.kv_keys("orders", "o.paper-oanda-1"))
    assert await guard.denied(s.kv_keys("users", "u1"))
    assert await guard.denied(s.order_event("oanda", "EUR_USD", "order_filled"))
    assert await guard.denied(f"$JS.API.CONSUMER.CREATE.{s.stream('EXEC')}")
    assert await guard.denied(f"$JS.API.CONSUMER.CREATE.{s.kv_stream('users')}")


async def test_executor_reaper_heartbeat_reporter_stay_in_their_lanes(
    locked: Locked, operator: Bus, as_identity: object
) -> None:
    s = locked.subjects
    executor: Client = await as_identity("executor")  # type: ignore[operator]
    assert await executor.denied(s.exec("oanda", "EUR_USD"))
    assert await executor.denied(s.kv_keys("users", "u1"))
    assert await executor.denied(s.tick("oanda", "EUR_USD"))  # no forged prices
    assert await executor.denied(f"$JS.API.CONSUMER.DELETE.{s.stream('EXEC')}.other")
    reaper: Client = await as_identity("reaper")  # type: ignore[operator]
    assert await reaper.denied(s.kv_keys("orders", "o.x"))
    assert await reaper.denied(s.order_event("oanda", "EUR_USD", "order_expired"))
    heartbeat: Client = await as_identity("heartbeat")  # type: ignore[operator]
    assert await heartbeat.denied(s.kv_keys("control", "trading"))
    assert await heartbeat.denied(s.exec("oanda", "EUR_USD"))
    reporter: Client = await as_identity("reporter")  # type: ignore[operator]
    assert await reporter.denied(s.kv_keys("users", "u1"))
    assert await reporter.denied(s.kv_keys("actors", "feed.oanda"))


# -- what each identity may do: the whole system, locked ----------------------
async def test_the_whole_stack_trades_with_every_identity_locked(
    locked: Locked, locked_settings: Settings, operator: Bus
) -> None:
    """Every actor and the API on their own identities: an order is placed, booked and
    filled on sim prices, the reads the dashboard makes answer, and the server saw no
    permission violation at all."""
    async with running_stack(locked_settings) as stack, EventTap(operator) as tap:
        token = await stack.user("trader@test")
        async with stack.client(token) as c:
            r = await c.post("/brokers/coinbase-adv/orders", json=SEED_TEST3)
            assert r.status_code == 200, r.text
            oid = r.json()["order_id"]
            await tap.next("oco_placed", oid)
            await tap.next("order_filled", oid)
            r = await c.delete(f"/orders/{oid}")  # API -> guard -> executor: close it
            assert r.status_code == 200, r.text
            assert (await tap.next("position_closed", oid))["payload"]["reason"] == "CLIENT_REQUEST"
            again = await c.post(
                "/brokers/coinbase-adv/orders", json={**SEED_TEST3, "side": "SELL"}
            )
            assert again.status_code == 422, again.text  # a guard rejection (event published)
            await tap.next("order_rejected")
            async with c.stream("GET", "/events?subjects=evt.order.>&since=0") as events:
                async for line in events.aiter_lines():
                    if line.startswith("data: ") and oid in line:
                        break
            for path in ("/orders", f"/orders/{oid}", "/positions", "/account", "/prices",
                         "/system", "/metrics", "/brokers/coinbase/status", "/auth/me"):  # fmt: skip
                assert (await c.get(path)).status_code == 200, path
            pulse = await operator.nc.subscribe(locked.subjects.pulse)
            async with asyncio.timeout(20):
                while (await c.get("/ready")).status_code != 200:
                    await pulse.next_msg(timeout=20)
            await pulse.unsubscribe()
        # the executor's lease and consumer, the feeds' prices, the heartbeat's snapshot
        kv = await operator.kv("actors")
        assert (await kv.get("feed.coinbase")).value
        await operator.nc.flush()
    assert locked.violations() == []


async def test_kv_writes_that_are_allowed_work(locked: Locked, locked_settings: Settings) -> None:
    s = locked.subjects
    assert locked_settings.nats_url
    op = await connect(
        locked_settings.nats_url, s, "op", auth=auth_for(locked_settings, "operator")
    )
    await provision(op)
    api = await connect(locked_settings.nats_url, s, "api", auth=auth_for(locked_settings, "api"))
    guard = await connect(
        locked_settings.nats_url, s, "guard", auth=auth_for(locked_settings, "guard")
    )
    try:
        await (await api.kv("users")).put("u1", b"{}")
        await (await api.kv("control")).put("trading", b"{}")
        await (await guard.kv("orders")).create("idem.u1.k1", codec.encode({"h": 1}))
        assert (await (await api.kv("orders")).get("idem.u1.k1")).value
    finally:
        for b in (guard, api, op):
            await b.close()
    assert locked.violations() == []
