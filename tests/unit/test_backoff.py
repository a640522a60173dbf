"""The restart/reconnect delay schedule: a pure function, tested directly."""

from __future__ import annotations

import dataclasses
import random
import types

import pytest

import rbot.actors.backoff as backoff_module
from rbot.actors.backoff import Backoff


def base(b: Backoff, attempt: int) -> float:
    """The un-jittered delay the docstring promises."""
    return min(b.cap, b.initial * b.factor**attempt)


def test_defaults() -> None:
    b = Backoff()
    assert (b.initial, b.factor, b.cap, b.jitter) == (0.1, 2.0, 10.0, 0.5)


def test_without_jitter_the_delay_doubles_up_to_the_cap() -> None:
    b = Backoff(initial=0.1, factor=2, cap=1.0, jitter=0)
    got = [b.delay(n) for n in range(7)]
    assert got == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0])


def test_factor_one_is_a_constant_delay() -> None:
    b = Backoff(initial=0.3, factor=1, cap=5, jitter=0)
    assert {b.delay(n) for n in range(50)} == {0.3}


def test_zero_delays_are_allowed() -> None:
    b = Backoff(initial=0, cap=0)
    assert [b.delay(n, random.Random(1)) for n in range(5)] == [0.0] * 5


@pytest.mark.parametrize("attempt", [64, 65, 1_000, 10**9])
def test_huge_attempts_stay_at_the_cap_without_overflow(attempt: int) -> None:
    b = Backoff(initial=0.1, factor=2, cap=10, jitter=0)
    assert b.delay(attempt) == 10


@pytest.mark.parametrize("jitter", [0.0, 0.25, 0.5, 1.0])
def test_every_delay_lies_within_the_jitter_band(jitter: float) -> None:
    b = Backoff(initial=0.01, factor=3, cap=2.0, jitter=jitter)
    rng = random.Random(2024)
    for attempt in range(12):
        top = base(b, attempt)
        for _ in range(200):
            d = b.delay(attempt, rng)
            assert top * (1 - jitter) <= d <= top
            assert d <= b.cap


def test_jitter_spreads_over_the_whole_band() -> None:
    """Not just within the band: a seeded sample reaches near both of its ends."""
    b = Backoff(initial=1.0, factor=2, cap=1.0, jitter=0.5)
    rng = random.Random(99)
    sample = [b.delay(0, rng) for _ in range(2_000)]
    assert min(sample) >= 0.5 and max(sample) <= 1.0
    assert min(sample) < 0.51 and max(sample) > 0.99


def test_the_formula_is_exactly_base_times_one_minus_jitter_times_r() -> None:
    b = Backoff(initial=0.2, factor=2, cap=10, jitter=0.5)
    r = random.Random(42).random()  # 0.639...
    assert b.delay(3, random.Random(42)) == pytest.approx(1.6 * (1 - 0.5 * r))


def test_the_same_seed_gives_the_same_schedule() -> None:
    b = Backoff(initial=0.05, factor=1.7, cap=3.0, jitter=0.8)
    one, two = b.delays(random.Random(7)), b.delays(random.Random(7))
    first = [next(one) for _ in range(30)]
    assert first == [next(two) for _ in range(30)]
    other = b.delays(random.Random(8))
    assert first != [next(other) for _ in range(30)]


def test_delays_yields_the_same_as_delay_per_attempt() -> None:
    b = Backoff(initial=0.05, factor=2, cap=1.0, jitter=0.3)
    gen = b.delays(random.Random(5))
    by_hand = random.Random(5)
    for attempt in range(20):
        assert next(gen) == b.delay(attempt, by_hand)


def test_a_new_schedule_starts_over_at_the_initial_delay() -> None:
    """Reset = a fresh ``delays()`` (or attempt 0): back to ``initial``."""
    b = Backoff(initial=0.1, factor=2, cap=10, jitter=0)
    gen = b.delays()
    assert [next(gen) for _ in range(5)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6])
    assert next(b.delays()) == pytest.approx(0.1)
    assert b.delay(0) == pytest.approx(0.1)


def test_without_an_rng_the_module_random_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backoff_module, "random", types.SimpleNamespace(random=lambda: 0.25))
    b = Backoff(initial=1.0, factor=2, cap=10, jitter=0.5)
    assert b.delay(0) == pytest.approx(1.0 * (1 - 0.5 * 0.25))
    assert next(b.delays()) == pytest.approx(0.875)


def test_it_is_a_frozen_value() -> None:
    b = Backoff()
    with pytest.raises(dataclasses.FrozenInstanceError):
        b.cap = 1.0  # type: ignore[misc]
    assert Backoff(initial=0.5) == Backoff(initial=0.5)


@pytest.mark.parametrize(
    "kw",
    [
        {"initial": -0.1},
        {"factor": 0.5},
        {"factor": 0},
        {"factor": -2},
        {"initial": 5, "cap": 1},
        {"cap": -1},
        {"jitter": -0.01},
        {"jitter": 1.01},
    ],
    ids=str,
)
def test_invalid_configurations_are_refused(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Backoff(**kw)


@pytest.mark.parametrize(
    "kw",
    [
        {"initial": 0, "cap": 0},
        {"factor": 1},
        {"jitter": 0},
        {"jitter": 1},
        {"initial": 2, "cap": 2},
    ],
    ids=str,
)
def test_edge_configurations_are_accepted(kw: dict[str, float]) -> None:
    Backoff(**kw)


NAN_BUG: list[pytest.MarkDecorator] = []  # fixed: non-finite values are refused


@pytest.mark.parametrize(
    "field",
    [
        pytest.param("initial", marks=NAN_BUG),
        pytest.param("cap", marks=NAN_BUG),
        pytest.param("factor", marks=NAN_BUG),
        "jitter",
    ],
)
def test_nan_is_refused(field: str) -> None:
    with pytest.raises(ValueError):
        Backoff(**{field: float("nan")})


def test_a_large_factor_still_caps_instead_of_overflowing() -> None:
    assert Backoff(initial=0.1, factor=1e6, cap=10, jitter=0).delay(64) == 10
