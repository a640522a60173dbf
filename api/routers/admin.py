"""``/admin/users``: list users, change a role, disable or enable an account.

Admin only, declared once on the router.  Disabling ends the user's sessions at
once (its credential generation moves on).  The last enabled admin cannot be
demoted or disabled here, so the API never locks itself out (``rbot user``
still can, from a shell with access to NATS).  The rule is decided by
compare-and-set on the admin roster (``users.AdminRoster``): two admins
demoting each other at once cannot both succeed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, ConfigDict

from rbot.bus.subjects import TOKEN_PATTERN

from ..context import Ctx
from ..errors import ApiError
from ..principal import Role
from ..security import AuthDep, require_role
from ..users import LastAdmin, UserNotFound, UserRecord, UserStore

router = APIRouter(
    prefix="/admin",
    tags=["admin"],
    dependencies=[Depends(require_role(Role.ADMIN))],
)

UserId = Annotated[str, Path(pattern=TOKEN_PATTERN, description="the user's id (sub)")]


class AdminUserOut(BaseModel):
    sub: str
    email: str
    role: Role
    disabled: bool
    created: str
    updated: str

    @classmethod
    def of(cls, u: UserRecord) -> AdminUserOut:
        return cls(
            sub=u.id,
            email=u.email,
            role=u.role,
            disabled=u.disabled,
            created=u.created,
            updated=u.updated,
        )


class RoleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Role


async def _target(users: UserStore, user_id: str) -> UserRecord:
    user = await users.get(user_id)
    if user is None:
        raise ApiError(404, "user_not_found", "no such user")
    return user


@router.get("/users", response_model=list[AdminUserOut])
async def list_users(ctx: Ctx, auth: AuthDep) -> list[AdminUserOut]:
    return [AdminUserOut.of(u) for u in await auth.users(ctx.bus).list_all()]


async def _change(
    users: UserStore, user_id: str, change: Callable[[], Awaitable[UserRecord]]
) -> AdminUserOut:
    """One change to an existing user: 404 if there is none, 409 for the last admin."""
    await _target(users, user_id)
    try:
        return AdminUserOut.of(await change())
    except UserNotFound:
        raise ApiError(404, "user_not_found", "no such user") from None
    except LastAdmin:
        raise ApiError(409, "last_admin", "this is the last enabled admin") from None


@router.post("/users/{user_id}/role", response_model=AdminUserOut)
async def set_role(user_id: UserId, body: RoleIn, ctx: Ctx, auth: AuthDep) -> AdminUserOut:
    users = auth.users(ctx.bus)
    return await _change(
        users, user_id, lambda: users.set_role(user_id, body.role, keep_admin=True)
    )


@router.post("/users/{user_id}/disable", response_model=AdminUserOut)
async def disable(user_id: UserId, ctx: Ctx, auth: AuthDep) -> AdminUserOut:
    users = auth.users(ctx.bus)
    return await _change(users, user_id, lambda: users.set_disabled(user_id, True, keep_admin=True))


@router.post("/users/{user_id}/enable", response_model=AdminUserOut)
async def enable(user_id: UserId, ctx: Ctx, auth: AuthDep) -> AdminUserOut:
    users = auth.users(ctx.bus)
    return await _change(users, user_id, lambda: users.set_disabled(user_id, False))
