"""Score maths shared by the job runners and the table tools: the random-normalised score and the
geometric mean over tasks.

It lives in its own numpy-only module (not kdrl.evaluation, which builds environments) so that the
table tools can use it without importing gymnasium and the env suites, and so that there is one
definition of each number a results.json and a table report.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def normalized_score(student: float, teacher: float, random: float, *, scale: float = 1.0,
                     strict: bool = True) -> float:
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
