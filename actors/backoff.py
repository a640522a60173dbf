"""Reconnect and restart pacing: a pure delay schedule, no I/O."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    """Jittered exponential backoff ("full jitter" on the upper half).

    delay_n = min(cap, initial * factor**n) * uniform(1 - jitter, 1)
    """

    initial: float = 0.1
    factor: float = 2.0
    cap: float = 10.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if not all(math.isfinite(v) for v in (self.initial, self.factor, self.cap, self.jitter)):
            raise ValueError("backoff parameters must be finite")
        if self.initial < 0 or self.factor < 1 or self.cap < self.initial:
            raise ValueError("need 0 <= initial <= cap and factor >= 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("jitter must be in [0, 1]")

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        try:
            base = min(self.cap, self.initial * self.factor ** min(attempt, 64))
        except OverflowError:
            base = self.cap
        r = (rng or random).random()
        return base * (1 - self.jitter * r)

    def delays(self, rng: random.Random | None = None) -> Iterator[float]:
        attempt = 0
        while True:
            yield self.delay(attempt, rng)
            attempt += 1
