"""The feeds' errors: one base, a few specific ones."""

from __future__ import annotations


class FeedError(Exception):
    """Base of every error raised by ``rbot.actors.feeds``."""


class ProtocolError(FeedError, ValueError):
    """A venue message that does not match the documented protocol."""


class BookNotReady(ProtocolError):
    """An L2 update arrived for a book that has no snapshot yet (or lost it)."""


class VenueHttpError(FeedError):
    """A REST or stream request answered with a non-success status.

    ``retryable`` is the classifier's answer: 429 and 5xx are worth another
    try, anything else (bad token, bad request, unknown account) is not.
    """

    def __init__(
        self,
        status: int,
        code: str | None,
        message: str,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"HTTP {status}: {code + ': ' if code else ''}{message}")
        self.status = status
        self.code = code
        self.message = message
        self.request_id = request_id
        self.retry_after = retry_after  # seconds, from a Retry-After header

    @property
    def retryable(self) -> bool:
        return self.status == 429 or self.status >= 500

    @property
    def rate_limited(self) -> bool:
        return self.status == 429


class CredentialError(FeedError):
    """API credentials that cannot be used (never carries the secret itself)."""
