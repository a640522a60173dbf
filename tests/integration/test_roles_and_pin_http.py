"""R6 on the real routes, over HTTP: roles (viewer / trader / admin) and the live
PIN's lockout (5 failures per user per 15 minutes, then even the right PIN is
refused), through the real API and the real guard on a real nats-server."""

from __future__ import annotations

from typing import Any

from rbot.api.principal import Role
from rbot.api.users import ensure_admin
from rbot.bus.config import Settings
from rbot.bus.connection import Bus
from tests.conftest import make_settings
from tests.natsd import NatsServer
from tests.stack import publish_tick, running_stack

ORDER: dict[str, Any] = {
    "instrument": "EUR_USD", "side": "BUY", "units": 100, "entry_price": 1.1655,
    "stop_loss_price": 1.1600, "take_profit_price": 1.1700, "quality_score": 75,
}  # fmt: skip
PIN = "841921"


def code(r: Any) -> str:
    body = r.json()
    assert isinstance(body, dict) and isinstance(body.get("message"), str), r.text
    return str(body["code"])


async def test_roles_on_the_real_order_and_admin_routes(settings: Settings, bus: Bus) -> None:
    async with running_stack(settings, only=["order_guard"]) as stack:
        trader = await stack.user("trader@roles")  # open registration: trader
        created = await ensure_admin(bus)
        assert created is not None
        async with stack.client() as c:
            r = await c.post("/auth/login", json={"email": created[0], "password": created[1]})
            admin = r.json()["access_token"]
            r = await c.post(
                "/auth/register", json={"email": "viewer@roles", "password": "viewer-pw-1",
                                        "role": Role.VIEWER.value},
                headers={"Authorization": f"Bearer {admin}"},
            )  # fmt: skip
            assert r.status_code == 201 and r.json()["role"] == "viewer", r.text
            r = await c.post(
                "/auth/login", json={"email": "viewer@roles", "password": "viewer-pw-1"}
            )
            viewer = r.json()["access_token"]
            # anonymous: 401 on every order route
            assert (r := await c.post("/brokers/oanda/orders", json=ORDER)).status_code == 401
            assert code(r) == "unauthorized"
        await publish_tick(bus, "oanda", "EUR_USD", "1.16500", "1.16514")
        async with stack.client(viewer) as v:
            for method, path, body in (
                ("POST", "/brokers/oanda/orders", ORDER),
                ("POST", "/brokers/coinbase-adv/orders", {**ORDER, "product_id": "BTC-USD"}),
                ("DELETE", "/orders/paper-oanda-1", None),
                ("POST", "/admin/trading-state", {"state": "HALTED"}),
                ("GET", "/admin/users", None),
            ):
                r = await v.request(method, path, json=body)
                assert r.status_code == 403 and code(r) == "forbidden", (path, r.text)
            assert (await v.get("/orders")).status_code == 200  # a viewer reads
        async with stack.client(trader) as t:
            r = await t.post("/admin/trading-state", json={"state": "HALTED"})
            assert r.status_code == 403 and code(r) == "forbidden", r.text
            r = await t.post("/brokers/oanda/orders", json=ORDER)
            assert r.status_code == 200, r.text  # the same order the viewer could not place


async def test_live_pin_locks_out_after_five_failures(
    nats_server: NatsServer, prefix: str, bus: Bus
) -> None:
    settings = make_settings(
        nats_server.url, prefix, paper_mode=False, execution_enabled=True,
        live_pin=PIN,
    )  # fmt: skip
    unknown = {**ORDER, "instrument": "XXX_YYY"}  # past the live gate, refused after it
    async with running_stack(settings, only=["order_guard"]) as stack:
        mallory, alice = await stack.user("mallory@pin"), await stack.user("alice@pin")
        async with stack.client(mallory) as m, stack.client(alice) as a:
            r = await m.post("/brokers/oanda/orders", json=unknown)
            assert r.status_code == 403 and code(r) == "pin_required", r.text
            r = await m.post("/brokers/oanda/orders", json=unknown, headers={"X-PIN": PIN})
            assert code(r) == "unknown_symbol", r.text  # the right PIN passes the gate
            for n in range(5):
                r = await m.post(
                    "/brokers/oanda/orders", json=unknown, headers={"X-PIN": f"00000{n}"}
                )
                assert r.status_code == 403 and code(r) == "pin_invalid", r.text
                assert PIN not in r.text
            # locked: the right PIN is refused now, for this user only (the API's lockout)
            r = await m.post("/brokers/oanda/orders", json=unknown, headers={"X-PIN": PIN})
            assert r.status_code == 429 and code(r) == "pin_locked", r.text
            assert r.headers.get("Retry-After")
            assert PIN not in r.text
            r = await a.post("/brokers/oanda/orders", json=unknown, headers={"X-PIN": PIN})
            assert code(r) == "unknown_symbol", r.text
