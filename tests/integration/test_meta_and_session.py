"""``GET /meta`` (the lists the dashboard needs, from the modules that own them) and
``GET /auth/session`` (a probe that never answers an error), over real HTTP."""

from __future__ import annotations

from rbot.api.routers.market import OANDA_GRANULARITIES
from rbot.bus import granularity
from rbot.bus.config import Settings
from rbot.bus.connection import Bus
from rbot.bus.lifecycle import LIFECYCLE_EVENT_TYPES
from rbot.bus.messages import OrderStatus
from rbot.bus.subjects import ORDER_EVENT_TYPES
from tests.stack import running_stack


async def test_meta_lists_come_from_their_modules_and_every_chart_granularity_works(
    settings: Settings, bus: Bus
) -> None:
    async with running_stack(settings, only=["heartbeat"]) as stack:
        token = await stack.user("meta@test")
        async with stack.client() as anon, stack.client(token) as c:
            r = await anon.get("/meta")  # public: the page reads it before sign-in
            assert r.status_code == 200
            meta = r.json()
            assert meta["granularities"]["chart"] == list(granularity.FROM_TICKS)
            assert meta["granularities"]["oanda"] == list(OANDA_GRANULARITIES)
            assert meta["event_types"]["order"] == list(ORDER_EVENT_TYPES)
            assert meta["event_types"]["lifecycle"] == list(LIFECYCLE_EVENT_TYPES)
            assert meta["order_statuses"] == [s.value for s in OrderStatus]
            venues = {v["venue"]: v for v in meta["venues"]}
            assert venues["oanda"]["symbols"] == settings.symbols("oanda")
            assert venues["coinbase"]["books"] and venues["coinbase"]["source"] == "sim"
            # every granularity offered is accepted (H4 was offered and refused)
            for gran in meta["granularities"]["chart"]:
                params = {"venue": "oanda", "symbol": "EUR_USD", "granularity": gran}
                r = await c.get("/candles", params=params)
                assert r.status_code == 200, (gran, r.text)
            r = await c.get("/candles", params={**params, "granularity": "H5"})
            assert r.status_code == 422 and r.json()["code"]


async def test_session_probe_is_200_signed_in_or_not(settings: Settings, bus: Bus) -> None:
    async with running_stack(settings, only=["heartbeat"]) as stack:
        token = await stack.user("probe@test")
        async with stack.client() as anon:
            r = await anon.get("/auth/session")
            assert (r.status_code, r.json()) == (
                200,
                {"authenticated": False, "refreshable": False},
            )
            r = await anon.get("/auth/session", headers={"Authorization": "Bearer nonsense"})
            assert r.status_code == 200 and r.json()["authenticated"] is False
            assert r.json()["reason"].startswith("token")
            # the dashboard's way: a cookie login, then the probe with the cookies
            body = {"email": "probe@test", "password": "correct-horse-9", "cookie": True}
            r = await anon.post("/auth/login", json=body)
            assert r.status_code == 200
            r = await anon.get("/auth/session")
            assert r.json()["authenticated"] is True
            assert r.json()["user"]["email"] == "probe@test"
            r = await anon.post("/auth/logout", json={})
            assert r.status_code == 200
            r = await anon.get("/auth/session")
            assert r.status_code == 200 and r.json()["authenticated"] is False
        async with stack.client(token) as c:
            r = await c.get("/auth/session")
            assert r.json()["authenticated"] is True and r.json()["user"]["role"] == "trader"
