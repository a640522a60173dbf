"""The live PIN at the API (issue 11): constant-time check, failures counted in KV
``lockouts`` across API replicas, ``pin_locked`` after 5 in 15 minutes, and only the
verdict on the bus.  Real guard actor, two real API apps, a real nats-server."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from nats.aio.msg import Msg
from pydantic import SecretStr

from rbot.api.lockouts import LockoutStore
from rbot.api.pin import MAX_FAILURES, WINDOW_S, locked_for
from rbot.api.principal import Role
from rbot.bus import keys
from rbot.bus.config import Settings
from rbot.bus.connection import Bus
from tests.integration import test_auth as kit
from tests.integration.test_auth import Leaks, assert_error, bearer, running
from tests.stack import running_stack

leaks = kit.leaks  # the auth tests' autouse fixtures: R7 leak check, cheap argon2
fast_argon = kit.fast_argon

PIN = "841921"
WRONG = "000000"
ORDER = {
    "instrument": "EUR_USD", "side": "BUY", "units": 100, "entry_price": 1.1655,
    "stop_loss_price": 1.1600, "take_profit_price": 1.1700, "quality_score": 75,
}  # fmt: skip


def _live(settings: Settings, **over: object) -> Settings:
    upd: dict[str, Any] = {"paper_mode": False, "execution_enabled": True}
    upd["live_pin"] = SecretStr(PIN)
    return settings.model_copy(update={**upd, **over})


async def _place(c: httpx.AsyncClient, token: str, pin: str | None) -> httpx.Response:
    headers = bearer(token) | ({"X-PIN": pin} if pin is not None else {})
    return await c.post("/brokers/oanda/orders", json=ORDER, headers=headers)


class _BusTap:
    """Every raw order request the API sends the guard."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.seen: list[bytes] = []

    async def __aenter__(self) -> _BusTap:
        async def cb(msg: Msg) -> None:
            self.seen.append(msg.data)

        self.sub = await self.bus.nc.subscribe(self.bus.subjects.order_place, cb=cb)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.sub.unsubscribe()


async def test_pin_checked_at_the_api_and_locked_across_replicas(
    settings: Settings, bus: Bus, leaks: Leaks
) -> None:
    leaks.secrets.add(PIN)
    leaks.never_in_any_body.add(PIN)
    live = _live(settings)
    async with (
        running_stack(live, only=["order_guard"], api=False),
        running(live, leaks) as one,
        running(live, leaks) as two,
        _BusTap(bus) as tap,
    ):
        two.app.state.ctx.extras["auth"].clock = one.app.state.ctx.extras["auth"].clock
        token = (await one.user("live@test", "live trader 1", Role.TRADER))["access_token"]
        r = await _place(one.client, token, PIN)
        assert r.json()["code"] not in ("pin_invalid", "pin_required", "pin_locked"), r.text
        assert_error(await _place(one.client, token, None), 403, "pin_required")
        for i in range(MAX_FAILURES):  # alternate replicas: one counter in KV
            r = await _place((one if i % 2 else two).client, token, WRONG)
            assert_error(r, 403, "pin_invalid")
        for h in (one, two):  # locked now, even with the right PIN
            r = await _place(h.client, token, PIN)
            body = assert_error(r, 429, "pin_locked")
            assert int(r.headers["retry-after"]) == body["detail"]["retry_after"] > 0
        one.advance(WINDOW_S)
        r = await _place(two.client, token, PIN)
        assert r.json()["code"] not in ("pin_invalid", "pin_locked"), r.text
    assert tap.seen, "the guard was asked"
    for raw in tap.seen:  # only the verdict travelled
        assert PIN.encode() not in raw and WRONG.encode() not in raw
        assert b'"pin"' not in raw and b'"pin_ok"' in raw


async def test_while_live_is_unavailable_no_pin_is_told_apart(
    settings: Settings, bus: Bus, leaks: Leaks
) -> None:
    leaks.secrets.add(PIN)
    live_off = _live(settings, execution_enabled=False)
    async with (
        running_stack(live_off, only=["order_guard"], api=False),
        running(live_off, leaks) as h,
    ):
        token = (await h.user("off@test", "live trader 2", Role.TRADER))["access_token"]
        answers = set()
        for pin in [WRONG] * (MAX_FAILURES + 2) + [PIN, None]:
            r = await _place(h.client, token, pin)
            answers.add((r.status_code, r.json()["code"], r.json()["message"]))
        assert answers == {(403, "live_disabled", "live execution is disabled on this server")}
        sub = (await h.client.get("/auth/me", headers=bearer(token))).json()["sub"]
        store = LockoutStore(h.app.state.ctx.bus)
        assert (await store.read(keys.pin_failures(sub))).count == 0  # nothing was counted


def test_lock_window() -> None:
    from rbot.api.lockouts import Strikes

    s = Strikes()
    for t in (0.0, 100.0, 200.0, 300.0):
        s = s.add(t, forget_after=WINDOW_S)
    assert locked_for(s, 301.0) == 0.0  # four failures: not yet
    s = s.add(400.0, forget_after=WINDOW_S)
    assert locked_for(s, 401.0) == WINDOW_S - 401.0  # until the first leaves the window
    assert locked_for(s, WINDOW_S + 1.0) == 0.0
    assert asyncio.iscoroutinefunction(LockoutStore.strike)
