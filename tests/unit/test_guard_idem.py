"""The idempotency hash: canonical decimals (``100`` and ``1E+2`` are one order)."""

from __future__ import annotations

import time
from decimal import Decimal as D

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rbot.actors.guard.idem import canonical_decimal, request_hash
from rbot.bus.messages import OrderRequest
from tests.helpers import SEED_REQUEST

BASE = SEED_REQUEST


def _wire(**fields: object) -> OrderRequest:
    """A request as the API would build it from JSON numbers written some way."""
    raw = msgspec.json.encode(BASE)
    doc = msgspec.json.decode(raw)
    doc.update(fields)
    return msgspec.json.decode(msgspec.json.encode(doc), type=OrderRequest)


@pytest.mark.parametrize(
    "qty", ["100", "1E+2", "1e2", "100.000", "0.1E+3", "10E1", "+100"], ids=str
)
def test_number_formatting_does_not_change_the_hash(qty: str) -> None:
    assert request_hash(_wire(qty=qty, stop_loss="1.16")) == request_hash(BASE)


def test_what_changes_the_order_changes_the_hash() -> None:
    base = request_hash(BASE)
    for change in (
        {"qty": D(101)},
        {"qty": D("100.0001")},
        {"stop_loss": D("1.161")},
        {"side": "SELL"},
        {"symbol": "GBP_USD"},
        {"order_type": "LIMIT", "limit_price": D("1.16")},
        {"ttl_minutes": 5},
        {"quality_score": None},
    ):
        assert request_hash(msgspec.structs.replace(BASE, **change)) != base, change  # type: ignore[arg-type]


def test_who_asks_and_how_is_not_the_order() -> None:
    other = msgspec.structs.replace(
        BASE, user="bob", client_order_id="c1", idempotency_key="k1", request_id="r1", live=True
    )
    assert request_hash(other) == request_hash(BASE)


@pytest.mark.parametrize(
    ("a", "b"),
    [("0", "-0"), ("0", "0E+7"), ("0", "0.000"), ("1.10", "1.1"), ("-2.50", "-25E-1")],
)
def test_canonical_equal_values(a: str, b: str) -> None:
    assert canonical_decimal(D(a)) == canonical_decimal(D(b))


def test_canonical_is_cheap_for_huge_exponents() -> None:
    t0 = time.perf_counter()
    assert canonical_decimal(D("1E+999999999")) == "1E999999999"
    assert canonical_decimal(D("1E-999999999")) == "1E-999999999"
    assert time.perf_counter() - t0 < 0.1  # no expansion to a billion digits
    assert canonical_decimal(D("NaN")) == canonical_decimal(D("sNaN")) == "NaN"
    assert canonical_decimal(D("-Infinity")) == "-Infinity"


finite = st.decimals(allow_nan=False, allow_infinity=False)


@given(finite, st.integers(min_value=0, max_value=12))
def test_padding_with_zeros_keeps_the_value_and_the_form(d: D, pad: int) -> None:
    sign, digits, exp = d.as_tuple()
    assert isinstance(exp, int)
    padded = D((sign, (*digits, *([0] * pad)), exp - pad))
    assert padded == d
    assert canonical_decimal(padded) == canonical_decimal(d)


@given(finite, finite)
def test_same_form_exactly_when_same_value(a: D, b: D) -> None:
    assert (canonical_decimal(a) == canonical_decimal(b)) == (a == b)
