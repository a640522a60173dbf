"""What makes two order requests "the same order": the idempotency hash.

A retry with the same ``client_order_id`` / ``Idempotency-Key`` must hash the
same whatever way the client wrote its numbers: ``100``, ``100.00`` and ``1E+2``
are one quantity.  Decimals are hashed in a canonical form (sign, significant
digits without trailing zeros, exponent) built from ``Decimal.as_tuple()``,
with no arithmetic context: ``1E+999999999`` is hashed as cheaply as ``1`` (no
expansion to a billion digits, no overflow trap).

Excluded: the user and the key (they locate the record), the request id, and
anything secret or derived from a secret (the PIN verdict).
"""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal

from rbot.bus.messages import OrderRequest

HASH_HEX = 32


def canonical_decimal(value: Decimal) -> str:
    """One string per numeric value: ``100``, ``1E+2``, ``100.0`` -> ``1E2``; zero -> ``0``."""
    if not value.is_finite():
        return "NaN" if value.is_nan() else str(value)  # qNaN and sNaN alike
    sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)  # finite
    end = len(digits)
    while end > 1 and digits[end - 1] == 0:
        end -= 1
    exponent += len(digits) - end
    if end == 1 and digits[0] == 0:
        return "0"  # 0, -0, 0E+5, 0.000
    return ("-" if sign else "") + "".join(map(str, digits[:end])) + f"E{exponent}"


def _canon(value: object) -> object:
    return canonical_decimal(value) if isinstance(value, Decimal) else value


def request_hash(req: OrderRequest) -> str:
    """The idempotency record's hash of the order's economic content."""
    fields = (
        req.venue, req.symbol, req.side, req.order_type, req.qty, req.stop_loss,
        req.take_profit, req.entry_price, req.limit_price, req.quality_score, req.ttl_minutes,
    )  # fmt: skip
    text = json.dumps([_canon(f) for f in fields], separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:HASH_HEX]
