"""Schedules of a counter (kdrl counts exploration in env steps, see conf/algo/dqn.yaml)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LinearSchedule:
    """``start`` until ``delay``, then linear to ``end`` over ``duration`` steps, then ``end``."""

    start: float
    end: float
    duration: int
    delay: int = 0

    def __post_init__(self) -> None:
        if self.duration < 0 or self.delay < 0:
            raise ValueError(f"schedule duration/delay must be >= 0, got {self.duration}/{self.delay}")

    def __call__(self, t: int) -> float:
        if t <= self.delay:
            return self.start
        if self.duration == 0 or t >= self.delay + self.duration:
            return self.end
        frac = (t - self.delay) / self.duration
        return self.start + frac * (self.end - self.start)
