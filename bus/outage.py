"""What a bus outage looks like from our side: a state to wait out, not a fault.

While nats-server restarts, every request times out, a reconnecting client
refuses new work, JetStream answers 503 until its store is back, and a lease
cannot be renewed.  None of that is a bug in our code.  ``is_outage`` says
whether an exception (or every leaf of an exception group) is such a symptom;
the supervisor restarts a child that ended on one without counting it toward
its restart intensity, and ``lead()`` steps down to standby on one.
"""

from __future__ import annotations

import nats.errors
import nats.js.errors

from .connection import BusClosed


class LeaseLost(RuntimeError):
    """Another owner holds the lease now (or ours lapsed): stop acting on its behalf."""


OUTAGE_ERRORS: tuple[type[BaseException], ...] = (
    BusClosed,
    LeaseLost,
    ConnectionError,  # a write into a socket the server just closed
    nats.errors.TimeoutError,  # a request (KV, JetStream publish) with no answer
    nats.errors.NoRespondersError,
    nats.errors.StaleConnectionError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.ConnectionDrainingError,
    nats.errors.NoServersError,
    nats.errors.OutboundBufferLimitError,
    nats.js.errors.ServiceUnavailableError,  # JetStream still recovering its store
    nats.js.errors.NoStreamResponseError,
)


def is_outage(exc: BaseException) -> bool:
    """True if ``exc`` (every leaf of a group) is a bus outage, not a fault of ours."""
    if isinstance(exc, BaseExceptionGroup):
        return all(is_outage(inner) for inner in exc.exceptions)
    return isinstance(exc, OUTAGE_ERRORS)


def leaves(exc: BaseException) -> str:
    """Every leaf of an exception (group) by type and text, for a log line: an
    ``ExceptionGroup`` alone says nothing about which outage it was."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(leaves(inner) for inner in exc.exceptions)
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
