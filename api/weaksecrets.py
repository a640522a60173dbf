"""Secrets nobody should run with: the examples we ship, and obvious placeholders.

``ARENA_SECRET_KEY=change-me-to-48-random-bytes-base64`` from
``deploy/systemd/rbot.env.example`` is long enough to pass the length check, and
anyone who has read this repository knows it: tokens signed with it can be
forged by anyone.  ``weakness`` says why a value is refused (``None``: fine);
the API refuses to start with such a key.
"""

from __future__ import annotations

# the values our own examples and docs show (keep in step with deploy/)
KNOWN_EXAMPLES = frozenset({"change-me-to-48-random-bytes-base64"})
# a placeholder left in: compared without case, "-", "_" or spaces
PLACEHOLDER_MARKERS = (
    "changeme",
    "replaceme",
    "yoursecret",
    "secretkeyhere",
    "placeholder",
    "example",
    "notasecret",
    "insecure",
)
MIN_DISTINCT_CHARS = 8


def weakness(value: str) -> str | None:
    """Why ``value`` must not be used as a secret, or ``None``."""
    if value.strip() in KNOWN_EXAMPLES:
        return "it is the example value from deploy/ (public, so anyone can forge tokens)"
    folded = "".join(c for c in value.lower() if c not in "-_ .")
    for marker in PLACEHOLDER_MARKERS:
        if marker in folded:
            return f"it looks like a placeholder (contains {marker!r})"
    if len(set(value)) < MIN_DISTINCT_CHARS:
        return f"it has fewer than {MIN_DISTINCT_CHARS} distinct characters"
    return None
