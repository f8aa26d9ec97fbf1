"""A trial's value(s), from its results.json, and the intermediate value its job reports after each
periodic evaluation (what a pruner compares).

``metrics``: one results key per direction. Besides any results.json key, one derived metric:

* ``time_to_score``: wall seconds (fit, periodic evaluations included) until the first periodic
  evaluation whose ``periodic`` value (the greedy return) reaches ``target``; a run that never
  reaches it counts at the budget (its whole fit time): the issue's "failures counted at the
  budget". Minimised. Its intermediate value at an evaluation is that time if the target is already
  reached, else the fit time projected to the budget (what the run counts at if it never reaches
  it), so a pruner compares trials by how far they are from being counted at the budget; a trial
  that reaches the target stops (``eval.stop_at_return``) and its value is final, so the job
  repeats it at the remaining evaluation steps for the pruner's comparisons.

Intermediate values of plain metrics: the periodic record's ``periodic`` key (a student's
``normalized_score``, a teacher's ``return_mean``), the best so far (``report: best``, what
``eval.final_policy: best`` selects) or the latest (``last``). Multi-objective studies are not
pruned (Optuna's pruners compare one value).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

TIME_TO_SCORE = "time_to_score"


@dataclass(frozen=True)
class Objective:
    metrics: tuple[str, ...]
    directions: tuple[str, ...]
    periodic: str | None = None  # the periodic evaluation record's key a job reports (None: no reports)
    report: str = "best"  # best | last
    target: float | None = None  # time_to_score's score

    def __post_init__(self) -> None:
        if len(self.metrics) != len(self.directions) or not self.metrics:
            raise ValueError(f"one direction per objective metric, got {self.metrics} and {self.directions}")
        for d in self.directions:
            if d not in ("minimize", "maximize"):
                raise ValueError(f"direction must be minimize or maximize, got {d!r}")
        if self.report not in ("best", "last"):
            raise ValueError(f"report must be best or last, got {self.report!r}")
        if TIME_TO_SCORE in self.metrics:
            if self.target is None or self.periodic is None:
                raise ValueError("time_to_score needs a target and the periodic key it is reached on")
            if self.directions[self.metrics.index(TIME_TO_SCORE)] != "minimize":
                raise ValueError("time_to_score is minimised")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Objective:
        return cls(
            metrics=tuple(d["metrics"]),
            directions=tuple(d["directions"]),
            periodic=d.get("periodic"),
            report=d.get("report", "best"),
            target=None if d.get("target") is None else float(d["target"]),
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["metrics"], d["directions"] = list(self.metrics), list(self.directions)
        return d

    @property
    def prunable(self) -> bool:
        return len(self.metrics) == 1 and self.periodic is not None

    @property
    def stops_at_target(self) -> bool:
        return self.metrics == (TIME_TO_SCORE,)

    # final values -------------------------------------------------------------------------------
    def values(self, results: dict[str, Any]) -> list[float]:
        """The trial's values from its results (a ValueError when one is missing or not finite)."""
        out = []
        for metric in self.metrics:
            if metric == TIME_TO_SCORE:
                v = time_to_score(results.get("eval_history") or [], self.periodic, self.target)
                v = results.get("wall_time_s") if v is None else v
            else:
                v = results.get(metric)
            try:
                v = float(v)
            except (TypeError, ValueError):
                raise ValueError(f"results hold no number for objective {metric!r} (got {v!r})") from None
            if not math.isfinite(v):
                raise ValueError(f"objective {metric!r} is not finite ({v})")
            out.append(v)
        return out

    # intermediate values ------------------------------------------------------------------------
    def intermediate(self, history: list[dict[str, Any]], total_steps: int) -> float | None:
        """The value a job reports after the last record of ``history`` (None: nothing to report)."""
        if not self.prunable or not history:
            return None
        metric, direction = self.metrics[0], self.directions[0]
        if metric == TIME_TO_SCORE:
            reached = time_to_score(history, self.periodic, self.target)
            if reached is not None:
                return reached
            last = history[-1]
            steps = max(int(last["env_steps"]), 1)
            return float(last["wall_s"]) * max(total_steps, steps) / steps
        vals = [_finite(h.get(self.periodic)) for h in history]
        vals = [v for v in vals if v is not None]
        if not vals or (self.report == "last" and _finite(history[-1].get(self.periodic)) is None):
            return None
        if self.report == "last":
            return vals[-1]
        return max(vals) if direction == "maximize" else min(vals)


def _finite(v: Any) -> float | None:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def time_to_score(history: list[dict[str, Any]], key: str | None, target: float | None) -> float | None:
    """Wall seconds of the first periodic record whose ``key`` reaches ``target`` (None: never)."""
    if key is None or target is None:
        return None
    for h in history:
        v = _finite(h.get(key))
        if v is not None and v >= target:
            return float(h["wall_s"])
    return None
