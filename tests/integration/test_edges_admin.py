"""The last-admin rule under concurrency: compare-and-set on the admin roster."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from rbot.api.principal import Role
from rbot.api.users import LastAdmin, UserStore
from rbot.bus.config import Settings
from tests.integration import test_auth as kit
from tests.integration.test_auth import H, Leaks, assert_error, bearer, running

leaks = kit.leaks  # the auth tests' autouse fixtures: R7 leak check, cheap argon2
fast_argon = kit.fast_argon

ROUNDS = 6


@pytest.fixture
async def h(settings: Settings, leaks: Leaks) -> AsyncIterator[H]:
    async with running(settings, leaks) as harness:
        yield harness


async def _sub(h: H, token: str) -> str:
    return str((await h.client.get("/auth/me", headers=bearer(token))).json()["sub"])


async def _enabled_admins(store: UserStore) -> set[str]:
    return {u.id for u in await store.list_all() if u.role is Role.ADMIN and not u.disabled}


@pytest.mark.parametrize("how", ["demote", "disable", "mixed"])
async def test_two_admins_removing_each_other_leave_one(h: H, how: str) -> None:
    store = UserStore(h.app.state.ctx.bus)
    survivor = (await h.user("a0@test", "admin pass word 0", Role.ADMIN))["access_token"]
    for n in range(1, ROUNDS + 1):
        other = (await h.user(f"a{n}@test", f"admin pass word {n}", Role.ADMIN))["access_token"]
        pair = [survivor, other]
        subs = [await _sub(h, t) for t in pair]
        assert await _enabled_admins(store) == set(subs)

        def call(i: int, pair: list[str], subs: list[str]) -> Any:
            target = subs[1 - i]
            act = how if how != "mixed" else ("demote" if i == 0 else "disable")
            if act == "demote":
                return h.client.post(
                    f"/admin/users/{target}/role", json={"role": "trader"}, headers=bearer(pair[i])
                )
            return h.client.post(f"/admin/users/{target}/disable", headers=bearer(pair[i]))

        results = await asyncio.gather(call(0, pair, subs), call(1, pair, subs))
        codes = sorted(r.status_code for r in results)
        assert codes == [200, 409], [r.text for r in results]
        loser = next(r for r in results if r.status_code == 409)
        assert_error(loser, 409, "last_admin")
        left = await _enabled_admins(store)
        assert len(left) == 1, f"round {n}: {len(left)} enabled admins"
        assert await store.admins() == left
        survivor = pair[subs.index(next(iter(left)))]


async def test_roster_follows_cli_and_promotions(h: H) -> None:
    store = UserStore(h.app.state.ctx.bus)
    admin = (await h.user("root@test", "root pass word 1", Role.ADMIN))["access_token"]
    root = await _sub(h, admin)
    t = (await h.user("t@test", "trader pass 1", Role.TRADER))["access_token"]
    t_sub = await _sub(h, t)
    r = await h.client.post(
        f"/admin/users/{t_sub}/role", json={"role": "admin"}, headers=bearer(admin)
    )
    assert r.status_code == 200
    assert await store.admins() == {root, t_sub}
    # the shell (rbot user) may still remove the last admin, and keeps the roster true
    await store.set_disabled(t_sub, True)
    assert await store.admins() == {root}
    with pytest.raises(LastAdmin):
        await store.set_role(root, Role.VIEWER, keep_admin=True)
    await store.set_role(root, Role.VIEWER)
    assert await store.admins() == frozenset()
    await store.set_disabled(t_sub, False)  # an enabled admin again
    assert await store.admins() == {t_sub}
    # the roster key is not a user
    assert "admins" not in {u.id for u in await store.list_all()}
    t = (await h.login("t@test", "trader pass 1")).json()["access_token"]  # disable ended it
    r = await h.client.post("/admin/users/admins/disable", headers=bearer(t))
    assert_error(r, 404, "user_not_found")
