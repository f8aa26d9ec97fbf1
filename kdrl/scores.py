"""Score maths shared by the job runners and the table tools: the random-normalised score and the
geometric mean over tasks, and multi-task's % of teacher built on them.

It lives in its own numpy-only module (not kdrl.evaluation, which builds environments) so that the
table tools can use it without importing gymnasium and the env suites, and so that there is one
definition of each number a results.json and a table report.

% of teacher (multi-task). Rusu et al. report the student's score as a fraction of the teacher's
raw score, which assumes scores >= 0 with 0 meaning "nothing learnt" (Atari). Acrobot's returns
are negative (-500 = never swung up), where the raw ratio inverts (a student at -100 against a
teacher at -80 would be "125%"). So the headline is the normalised score

    pct_of_teacher = 100 * (R_student - R_random) / (R_teacher - R_random)

with all three returns measured on the same held-out seeds (random = uniform actions): 0% = a
random policy, 100% = the teacher. For CartPole (random ~ 22, teacher 500) it is within a few
points of the raw ratio, which is reported too (``return_ratio``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

GEOMEAN_FLOOR_PCT = 1.0  # a task at or below 0% would make the geometric mean 0 or undefined


def normalized_score(
    student: float, teacher: float, random: float, *, scale: float = 1.0, strict: bool = True
) -> float:
    """``scale * (S - R) / (T - R)``: 0 = a uniform-random policy, ``scale`` = the teacher.

    A raw ratio S / T inverts for negative returns (Acrobot, Pong), so scores are measured from a
    random policy on the same seeds. The score only has that 0..scale meaning when the teacher beats
    random, so it is nan when T <= R (``strict``). ``strict=False`` is the rule kdrl-distill's
    ``normalized_return_ratio`` has used so far: nan only when T == R, a sign-flipped number when the
    teacher is worse than random.

    ``scale`` multiplies before dividing, so ``scale=100`` gives multi-task's ``pct_of_teacher``
    float for float (``100 * (S - R) / (T - R)``), and ``scale=1`` the plain ratio.
    """
    gap = teacher - random
    usable = gap > 0 if strict else gap != 0
    return scale * (student - random) / gap if usable else float("nan")


def geometric_mean(values: Sequence[float] | np.ndarray, floor: float | None = None) -> float:
    """exp(mean(log x)): the summary over tasks of Rusu et al. (2016), which one task cannot carry.

    Edge cases, the one rule for every caller:
      * no values, or any value nan or +-inf -> nan (a task without a score has no summary);
      * with ``floor``, a value below it counts as ``floor`` (multi-task's 1%: a task at or below a
        random policy pulls the mean down hard but leaves it defined);
      * without ``floor``, any value <= 0 -> nan (its log is undefined; kdrl-table prints "–").
    """
    if floor is not None and not floor > 0:
        raise ValueError(f"geometric_mean: floor must be > 0 or None, got {floor!r}")
    x = np.asarray(values, dtype=float)
    if x.size == 0 or not np.all(np.isfinite(x)):
        return math.nan
    if floor is not None:
        x = np.maximum(x, floor)
    elif np.any(x <= 0):
        return math.nan
    return float(np.exp(np.log(x).mean()))


def pct_of_teacher(student: float, teacher: float, random: float) -> float:
    """100 * (student - random) / (teacher - random); nan when the teacher is no better than random
    (``normalized_score`` in %, float for float)."""
    return normalized_score(student, teacher, random, scale=100.0)


def mean_pcts(pcts: Sequence[float]) -> tuple[float, float]:
    """Arithmetic and geometric mean % over tasks, both nan unless every task has a finite %; the
    geometric one floors each task at GEOMEAN_FLOOR_PCT (``geometric_mean``)."""
    x = np.asarray(pcts, dtype=float)
    if len(x) == 0 or not np.all(np.isfinite(x)):
        return float("nan"), float("nan")
    return float(x.mean()), geometric_mean(x, floor=GEOMEAN_FLOOR_PCT)


def teacher_beats_random(teacher: Sequence[float], random: Sequence[float], alpha: float = 0.01) -> bool:
    """Whether a teacher clearly beats a uniform-random policy on the same held-out episodes: its mean
    is higher and a one-sided Welch t-test rejects "no better" at ``alpha``. Below that, a normalised
    score (S - R) / (T - R) divides by noise (MinAtar Asterix at budget=cpu: teacher 0.9 +- 1.1)."""
    t, r = np.asarray(teacher, dtype=float), np.asarray(random, dtype=float)
    if len(t) < 2 or len(r) < 2 or not t.mean() > r.mean():
        return False
    if t.std() == 0 and r.std() == 0:
        return True  # both deterministic and the teacher higher
    import warnings

    from scipy.stats import ttest_ind

    with warnings.catch_warnings():  # near-constant returns (a perfect CartPole teacher): precision note
        warnings.simplefilter("ignore", RuntimeWarning)
        return bool(ttest_ind(t, r, equal_var=False, alternative="greater").pvalue < alpha)


# What an episode's return can be, per env id (the first matching prefix): the bounds every interval
# of a return or a normalised score is clipped to, and the ceiling whose ties flag a cell
# (kdrl.statistics.mean_ci). An env not listed is unbounded. MinAtar and these Atari games pay only
# non-negative rewards; Pong pays -1/+1 per point to 21; CartPole-v1 ends at 500 steps of +1,
# Acrobot-v1 at 500 steps of -1 (0 = swung up at once).
RETURN_RANGES: dict[str, tuple[float, float]] = {
    "CartPole-v1": (0.0, 500.0),
    "CartPole-v0": (0.0, 200.0),
    "Acrobot-v1": (-500.0, 0.0),
    "MountainCar-v0": (-200.0, 0.0),
    "ALE/Pong": (-21.0, 21.0),
    "MinAtar/": (0.0, math.inf),
    "ALE/": (0.0, math.inf),
}


def return_range(env_id: str | None) -> tuple[float, float]:
    """The (low, high) an episode's return can take in ``env_id`` (RETURN_RANGES), else unbounded."""
    for prefix, rng in RETURN_RANGES.items():
        if env_id and str(env_id).startswith(prefix):
            return rng
    return (-math.inf, math.inf)


def normalized_bounds(env_id: str | None, teacher: Sequence[float], random: Sequence[float]) -> tuple[float, float]:
    """What a normalised score (S - R) / (T - R) can take over runs with these teacher and random
    returns: the return range mapped through each run's (T, R), the widest over runs."""
    low, high = return_range(env_id)
    t, r = np.asarray(teacher, dtype=float), np.asarray(random, dtype=float)
    gap = t - r
    if len(gap) == 0 or not np.all(np.isfinite(gap)) or np.any(gap <= 0):
        return (-math.inf, math.inf)
    with np.errstate(invalid="ignore"):  # inf - r is inf; a bound of +-inf stays unbounded
        lows, highs = (low - r) / gap, (high - r) / gap
    return float(np.min(lows)), float(np.max(highs))
