"""Errors of the paper executor's pure core: one base, a few specific ones.

Every error here is a programming or data error the caller should not retry:
the executor logs it, counts it and parks the command that caused it.
"""

from __future__ import annotations

from rbot.bus.messages import OrderStatus


class PaperError(Exception):
    """Base of every error raised by ``rbot.actors.paper``'s pure modules."""


class IllegalTransition(PaperError):
    """An order status change the state machine does not allow."""

    def __init__(self, current: OrderStatus, to: OrderStatus, allowed: frozenset[OrderStatus]):
        self.current = current
        self.to = to
        self.allowed = allowed
        options = ", ".join(sorted(allowed)) or "none, it is terminal"
        super().__init__(
            f"illegal transition {current} -> {to} (allowed from {current}: {options})"
        )


class InvalidOrder(PaperError, ValueError):
    """An order the core cannot handle: a missing price, the wrong status or symbol."""


class DuplicateOrder(PaperError):
    """An order id that is already in the book."""


class BadInput(PaperError, ValueError):
    """A malformed argument that is not an order: a symbol, a slippage, a price, a tick."""
