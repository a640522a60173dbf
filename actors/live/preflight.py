"""Live settings checked before anything starts: a mistake is a clear exit, not a crash loop.

A ``COINBASE_API_ALGO`` that is unknown or disagrees with the key, or a key that
does not load, would otherwise fail ``live_executor`` on every start until the
supervisor's intensity limit halts trading.  ``rbot up`` and ``rbot actors`` call
``preflight`` first and exit with the reason (the key itself is never shown).
"""

from __future__ import annotations

import sys

from rbot.bus.config import Settings

from ..feeds.errors import CredentialError
from .coinbase_proto import key_algorithm


def live_on(settings: Settings) -> bool:
    return not settings.paper_mode and settings.execution_enabled


def problems(settings: Settings) -> list[str]:
    """What is wrong with the live settings (empty: nothing, or live is off)."""
    if not live_on(settings) or "coinbase" not in settings.live_venues():
        return []
    key = settings.coinbase_api_key_secret
    assert key is not None  # live_venues() says it is set
    try:
        key_algorithm(key.get_secret_value(), settings.coinbase_api_algo)
    except CredentialError as exc:
        return [str(exc)]
    return []


def preflight(settings: Settings) -> None:
    """Exit (code 2) with every problem found, before any actor starts."""
    found = problems(settings)
    if found:  # 2, like a usage error: 1 means "escalated, trading HALTED" (R3)
        sys.stderr.write("rbot: live settings refused: " + "; ".join(found) + "\n")
        raise SystemExit(2)
