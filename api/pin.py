"""The live PIN, checked at the API: only the verdict goes on the bus.

``X-PIN`` is compared with ``LIVE_PIN`` in constant time (``hmac.compare_digest``
on the bytes).  Failures are counted per user in KV ``lockouts`` (key
``pin.<user>``), so every API replica sees them and a restart forgets nothing;
after ``MAX_FAILURES`` wrong PINs in ``WINDOW_S`` the user's live orders are
refused with ``pin_locked`` (429 + ``Retry-After``) until the oldest of them
leaves the window, whatever PIN is sent.

The PIN is looked at only when a live order could actually be placed
(``PAPER_MODE`` off, ``EXECUTION_ENABLED`` on, ``LIVE_PIN`` configured).
Otherwise the verdict is ``None`` and the guard answers ``live_disabled`` for
any PIN: while live is unavailable nothing tells a right PIN from a wrong one,
and nothing is counted.
"""

from __future__ import annotations

import hmac
import logging
import math

from rbot.bus import keys
from rbot.bus.config import Settings

from .errors import ApiError
from .lockouts import LockoutError, LockoutStore, Strikes
from .principal import Principal

log = logging.getLogger("rbot.api.pin")

MAX_FAILURES = 5
WINDOW_S = 15 * 60.0


def live_available(settings: Settings) -> bool:
    return not settings.paper_mode and settings.execution_enabled and settings.live_pin is not None


def locked_for(strikes: Strikes, now: float) -> float:
    """Seconds until the user may try again (0: not locked)."""
    recent = [t for t in strikes.times if now - t < WINDOW_S]
    if len(recent) < MAX_FAILURES:
        return 0.0
    return recent[-MAX_FAILURES] + WINDOW_S - now


def pin_matches(sent: str, configured: str) -> bool:
    return hmac.compare_digest(sent.encode(), configured.encode())


def _locked(wait: float) -> ApiError:
    seconds = max(1, math.ceil(wait))
    return ApiError(
        429,
        "pin_locked",
        f"too many wrong PINs: live orders are locked for {seconds} s",
        {"retry_after": seconds},
        headers={"Retry-After": str(seconds)},
    )


async def pin_verdict(
    settings: Settings, store: LockoutStore, user: Principal, sent: str | None
) -> bool | None:
    """``True`` / ``False`` for a checked PIN, ``None`` when none was sent or live is off.

    Raises ``ApiError`` ``pin_locked`` (429) while the user is locked out.
    """
    if not live_available(settings) or not sent:
        return None
    assert settings.live_pin is not None
    key = keys.pin_failures(user.sub)
    try:
        wait = locked_for(await store.read(key), store.clock())
        if wait > 0:
            raise _locked(wait)
        if pin_matches(sent, settings.live_pin.get_secret_value()):
            return True
        await store.strike(key, forget_after=WINDOW_S)
    except LockoutError:
        raise ApiError(
            503, "busy", "the server is busy; retry shortly", headers={"Retry-After": "1"}
        ) from None
    log.info("wrong live PIN sub=%s", user.sub)
    return False
