"""The order state machine: an enum (``OrderStatus``) and a transition table.

::

    PENDING ──▶ OPEN ──▶ CLOSED
       ├──▶ CANCELLED
       ├──▶ EXPIRED
       └──▶ REJECTED

``PENDING`` means the entry has not filled; ``OPEN`` means the position is on
and its bracket (stop-loss + take-profit, OCO) is armed.  An open position is
never cancelled or expired: cancelling or timing it out *closes* it (reason
``CLIENT_REQUEST`` / ``TIME_IN_FORCE_EXPIRED``), so ``OPEN`` leads only to
``CLOSED``.  ``CLOSED``, ``CANCELLED``, ``EXPIRED`` and ``REJECTED`` are
terminal.  A status never transitions to itself: a replayed command that
would do so is the caller's to recognise (``status == to``) and ignore.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from rbot.bus.messages import OrderStatus

from .errors import IllegalTransition

_S = OrderStatus

TRANSITIONS: Final[Mapping[OrderStatus, frozenset[OrderStatus]]] = MappingProxyType(
    {
        _S.PENDING: frozenset({_S.OPEN, _S.CANCELLED, _S.EXPIRED, _S.REJECTED}),
        _S.OPEN: frozenset({_S.CLOSED}),
        _S.CLOSED: frozenset(),
        _S.CANCELLED: frozenset(),
        _S.EXPIRED: frozenset(),
        _S.REJECTED: frozenset(),
    }
)

TERMINAL: Final[frozenset[OrderStatus]] = frozenset(s for s, nxt in TRANSITIONS.items() if not nxt)


def allowed_from(current: OrderStatus) -> frozenset[OrderStatus]:
    """The statuses ``current`` may move to (empty for a terminal status)."""
    return TRANSITIONS[current]


def can_transition(current: OrderStatus, to: OrderStatus) -> bool:
    return to in TRANSITIONS[current]


def is_terminal(status: OrderStatus) -> bool:
    return status in TERMINAL


def transition(current: OrderStatus, to: OrderStatus) -> OrderStatus:
    """Return ``to`` if ``current -> to`` is allowed, else raise ``IllegalTransition``."""
    allowed = TRANSITIONS[current]
    if to not in allowed:
        raise IllegalTransition(current, to, allowed)
    return to


ACTIVE: Final[frozenset[OrderStatus]] = frozenset({_S.PENDING, _S.OPEN})


def is_active(status: OrderStatus) -> bool:
    """PENDING or OPEN: in the books, in the active set."""
    return status in ACTIVE
