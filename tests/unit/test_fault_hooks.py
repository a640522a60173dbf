"""The test-only fault hook ``RBOT_FAULT`` (actors/base.py) parses as documented."""

from __future__ import annotations

import pytest

from rbot.actors.base import Fault, injected_fault


@pytest.mark.parametrize(
    ("spec", "actor", "incarnation", "want"),
    [
        (None, "order_guard", 1, None),
        ("", "order_guard", 1, None),
        ("crash:order_guard", "order_guard", 1, Fault.CRASH),
        ("crash:order_guard", "order_guard", 99, Fault.CRASH),
        ("crash:order_guard", "ttl_reaper", 1, None),
        ("hang:order_guard:1", "order_guard", 1, Fault.HANG),
        ("hang:order_guard:1", "order_guard", 2, None),
        ("hang:*:2", "heartbeat", 2, Fault.HANG),
        ("crash:ttl_reaper, hang:order_guard", "order_guard", 3, Fault.HANG),
    ],
)
def test_injected_fault(spec: str | None, actor: str, incarnation: int, want: Fault | None) -> None:
    assert injected_fault(actor, incarnation, spec) == want


def test_an_unknown_fault_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="explode"):
        injected_fault("order_guard", 1, "explode:order_guard")
