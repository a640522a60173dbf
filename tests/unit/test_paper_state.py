"""The order state machine: every (from, to) pair of statuses, table-driven."""

from __future__ import annotations

import itertools

import pytest

from rbot.actors.paper.errors import IllegalTransition, PaperError
from rbot.actors.paper.state import (
    TERMINAL,
    TRANSITIONS,
    allowed_from,
    can_transition,
    is_terminal,
    transition,
)
from rbot.bus.messages import OrderStatus as S

LEGAL = {
    (S.PENDING, S.OPEN),
    (S.PENDING, S.CANCELLED),
    (S.PENDING, S.EXPIRED),
    (S.PENDING, S.REJECTED),
    (S.OPEN, S.CLOSED),
}
ALL_PAIRS = list(itertools.product(S, S))


@pytest.mark.parametrize(("current", "to"), sorted(LEGAL))
def test_legal_transitions_return_the_new_status(current: S, to: S) -> None:
    assert transition(current, to) is to
    assert can_transition(current, to)


@pytest.mark.parametrize(("current", "to"), [p for p in ALL_PAIRS if p not in LEGAL])
def test_every_other_pair_is_illegal(current: S, to: S) -> None:
    assert not can_transition(current, to)
    with pytest.raises(IllegalTransition) as info:
        transition(current, to)
    assert (info.value.current, info.value.to) == (current, to)
    assert isinstance(info.value, PaperError)
    assert f"{current} -> {to}" in str(info.value)


@pytest.mark.parametrize(
    ("status", "terminal"),
    [
        (S.PENDING, False),
        (S.OPEN, False),
        (S.CLOSED, True),
        (S.CANCELLED, True),
        (S.EXPIRED, True),
        (S.REJECTED, True),
    ],
)
def test_terminal_states_go_nowhere(status: S, terminal: bool) -> None:
    assert is_terminal(status) is terminal
    assert (allowed_from(status) == frozenset()) is terminal


def test_table_covers_every_status_and_matches_the_legal_set() -> None:
    assert set(TRANSITIONS) == set(S)
    assert {(a, b) for a, nxt in TRANSITIONS.items() for b in nxt} == LEGAL
    assert frozenset({S.CLOSED, S.CANCELLED, S.EXPIRED, S.REJECTED}) == TERMINAL


def test_table_is_read_only() -> None:
    with pytest.raises(TypeError):
        TRANSITIONS[S.CLOSED] = frozenset({S.OPEN})  # type: ignore[index]


def test_terminal_error_message_says_so() -> None:
    with pytest.raises(IllegalTransition, match="terminal"):
        transition(S.CLOSED, S.OPEN)
