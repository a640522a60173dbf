"""What a broker says, venue-neutral: a ``Fact`` about one of our orders, the
``Outcome`` of a create, and the shells' errors.  Each venue's protocol module
maps its own answers to these; ``core`` applies them."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

FactKind = Literal["filled", "closed", "cancelled"]


@dataclass(frozen=True, slots=True)
class Fact:
    """Something the broker says happened to one of our orders."""

    kind: FactKind
    txn_id: int
    time: str
    client_id: str | None = None  # our order id (clientExtensions.id), when the txn names it
    broker_order_id: str | None = None
    trade_id: str | None = None
    price: Decimal | None = None
    reason: str | None = None  # OANDA's reason (fill reason, cancel reason)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a create answered: ``filled`` / ``pending`` / ``cancelled`` / ``rejected``."""

    kind: Literal["filled", "pending", "cancelled", "rejected"]
    broker_order_id: str | None = None
    reason: str | None = None
    message: str | None = None
    facts: tuple[Fact, ...] = ()
    last_txn: int = 0


class BrokerUnavailable(Exception):
    """The broker could not be reached (or kept refusing) within the retry budget."""


class OutcomeUnknown(BrokerUnavailable):
    """A send whose outcome could not be learnt: the order is marked UNKNOWN."""


class StreamLost(Exception):
    """The broker's event stream ended, broke or went silent."""
