"""The statistics every published kdrl number goes through (numpy/scipy only; no env imports).

Per cell (one method on one env, n seeds):
  * ``mean_ci``: the mean with a 95% interval whose coverage is measured on the shapes kdrl's data
    has (docs/protocol.md, ``python scripts/ci_coverage.py``), clipped to what the score can take,
    and a flag where no interval is reliable;
  * ``iqm``: the interquartile mean, as rliable computes it;
  * ``bootstrap_ci``: a percentile bootstrap of any statistic (the median of censored speed).

Across envs (the way the field reports aggregates, after Agarwal et al. 2021, "Deep RL at the edge
of the statistical precipice"; written here because rliable is archived and its ``random_state``
does not control its resampling):
  * ``aggregate_ci``: IQM / mean / median over all runs of all tasks, with a stratified-bootstrap CI
    (runs are resampled within each task);
  * ``probability_of_improvement``: P(X > Y), averaged over tasks, with a stratified-bootstrap CI;
  * ``performance_profile``: the fraction of runs scoring above each threshold, with a band.

Every resampling draws from ``numpy.random.default_rng(seed)``: the same inputs give the same output.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
from scipy.stats import t as student_t
from scipy.stats import trim_mean

MIN_SEEDS = 5  # cells over fewer seeds are marked † in tables (docs/protocol.md)
Bounds = tuple[float, float]
UNBOUNDED: Bounds = (-math.inf, math.inf)

# Why a cell has no interval (``MeanCI.flag``); tables print the mean with "‡" and this reason.
FLAG_NO_SPREAD = "no spread"  # every seed has the same score: no spread to build an interval from
FLAG_AT_BOUND = "at bound"  # most seeds tied at the score's maximum/minimum (CartPole's 500)


class MeanCI(NamedTuple):
    mean: float
    low: float  # nan when flagged
    high: float
    flag: str  # "" when the interval is reliable; else FLAG_* (and low/high are nan)

    def text(self, fmt: str = ".3f") -> str:
        """'mean [low, high]', or 'mean ‡ (why)' where flagged: how every table prints a cell."""
        m = format(self.mean, fmt)
        return f"{m} ‡ ({self.flag})" if self.flag else f"{m} [{format(self.low, fmt)}, {format(self.high, fmt)}]"


def _same(a: np.ndarray, b: float, scale: float) -> np.ndarray:
    return np.abs(a - b) <= 1e-9 * scale


def ci_flag(x: np.ndarray, bounds: Bounds = UNBOUNDED) -> str:
    """Why no interval of the mean is reliable for ``x``, or "".

    When most seeds sit tied at a bound of the score (a point mass at CartPole's ceiling), the few
    below it carry all the spread: [1, 1, 1, 1, 0.9] comes as often from a population whose mean is
    0.9 as from one at 0.98, and no method in the coverage suite held there. A strict majority is the
    rule the suite chose: flagging at two ties instead leaves, at n = 10, only samples with unusually
    few ceiling seeds unflagged, and those under-cover (0.92 against 0.97; docs/protocol.md). The
    tolerance is relative, so % and fractions flag alike."""
    scale = max(float(np.max(np.abs(x))), 1.0)
    if np.all(_same(x, float(x[0]), scale)):
        return FLAG_NO_SPREAD
    for b in bounds:
        if math.isfinite(b) and 2 * int(_same(x, b, scale).sum()) > len(x):
            return FLAG_AT_BOUND
    return ""


def mean_ci(x: Sequence[float], level: float = 0.95, bounds: Bounds = UNBOUNDED) -> MeanCI:
    """The mean over seeds with its ``level`` confidence interval, clipped to ``bounds`` (what the
    score can take: ``kdrl.scores.normalized_bounds``).

    From ``MIN_SEEDS`` seeds on: Hall's (1992) transformed t, a Student t that corrects for the
    sample's skewness (Zhou & Dinh 2005), with the skewness capped (``_hall_skew_cap``) so that one
    outlying seed cannot swing an arm far past the seeds: uncapped, SpaceInvaders 7% (seeds 29-67%)
    got a lower bound of -23%, and the bootstrap-t before it Asterix 41.8 [29.4, 663.6] (seeds
    33.0-69.9). It is closed form (deterministic, no resampling) and equivariant under any change of
    unit. Below MIN_SEEDS, where three or four seeds cannot estimate a skewness, Student's t.
    Coverage and width against the alternatives, on the shapes kdrl's data has: docs/protocol.md.

    Flagged (``flag`` set, no interval) where ``ci_flag`` says none is reliable; nan throughout
    when there are no seeds or any score is undefined."""
    x = np.asarray(x, dtype=float)
    n = len(x)
    if n == 0 or not np.isfinite(x).all():  # an undefined score (teacher not above random) has no CI
        return MeanCI(math.nan, math.nan, math.nan, "")
    m = float(x.mean())
    if n == 1:
        return MeanCI(m, math.nan, math.nan, FLAG_NO_SPREAD)
    flag = ci_flag(x, bounds)
    if flag:
        return MeanCI(m, math.nan, math.nan, flag)
    s = float(x.std(ddof=1))
    q = float(student_t.ppf(1 - (1 - level) / 2, n - 1)) / math.sqrt(n)
    if n < MIN_SEEDS:
        lo, hi = m - q * s, m + q * s
    else:
        z = (x - m) / s
        g = n / ((n - 1) * (n - 2)) * float((z**3).sum())  # sample skewness
        g = float(np.clip(g, -_hall_skew_cap(q, n), _hall_skew_cap(q, n)))
        lo, hi = m - _hall_inverse(q, g, n) * s, m - _hall_inverse(-q, g, n) * s
    return MeanCI(m, max(lo, bounds[0]), min(hi, bounds[1]), "")


def _hall_skew_cap(q: float, n: int) -> float:
    """The largest |skewness| for which the cube root in ``_hall_inverse`` stays >= 1/4 at both ends
    (|g| q + g² / 6n = 3/4). Past it the interval's end nears the transformation's turning point
    (T = -3/g), where the inverse is steep and a noisy five-seed skewness moves the bound by several
    standard deviations. The 1/4 was chosen on the coverage suite: it keeps >= 0.93 on every smooth
    shape at n = 5 and 10 (1/2 gave 0.928 on 1 - gamma at n = 5) and every published arm within
    1.03x of the farthest seed (scripts/ci_coverage.py, docs/protocol.md)."""
    return 3.0 * n * (math.sqrt(q * q + 0.5 / n) - q)


def _hall_inverse(v: float, g: float, n: int) -> float:
    """The inverse of Hall's monotone transformation T + gT²/3 + g²T³/27 + g/(6n) at ``v``."""
    if abs(g) < 1e-12:
        return v
    return 3.0 / g * (float(np.cbrt(1.0 + g * (v - g / (6 * n)))) - 1.0)


def iqm(x: Sequence[float]) -> float:
    """Interquartile mean as rliable computes it: scipy's trim_mean with 25% cut from each end
    (whole observations only: for n = 3 nothing is cut)."""
    x = np.asarray(x, dtype=float)
    return float(trim_mean(x, 0.25)) if len(x) else math.nan


def bootstrap_ci(
    x: Sequence[float], stat: Callable = np.mean, reps: int = 5000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap of ``stat`` over ``x`` (the median of censored speed; the mean's CI is
    ``mean_ci``). Inside [min(x), max(x)] by construction."""
    x = np.asarray(x, dtype=float)
    if len(x) == 0:
        return math.nan, math.nan
    if len(x) == 1:
        return float(x[0]), float(x[0])
    rng = np.random.default_rng(seed)
    samples = x[rng.integers(0, len(x), size=(reps, len(x)))]
    stats = samples.mean(axis=1) if stat is np.mean else np.apply_along_axis(stat, 1, samples)
    alpha = (1 - level) / 2
    return float(np.quantile(stats, alpha)), float(np.quantile(stats, 1 - alpha))


# ---- across tasks -------------------------------------------------------------------------------------
Scores = Mapping[str, Sequence[float]]  # task -> one score per run (normalised: 0 = random, 1 = teacher)

AGGREGATES: dict[str, Callable[[np.ndarray], float]] = {  # over pooled runs ("mean" is per task: aggregate_ci)
    "iqm": lambda v: float(trim_mean(v, 0.25)),
    "median": lambda v: float(np.median(v)),
}


def _tasks(scores: Scores) -> list[np.ndarray]:
    out = [np.asarray(v, dtype=float) for v in scores.values()]
    if not out or any(len(v) == 0 for v in out):
        raise ValueError("aggregates need at least one run in every task")
    if any(not np.isfinite(v).all() for v in out):
        raise ValueError("aggregates need a finite score for every run (a refused score has none)")
    return out


def _stratified(tasks: list[np.ndarray], rng: np.random.Generator, reps: int) -> list[np.ndarray]:
    """``reps`` stratified resamples: each task's runs resampled with replacement within the task."""
    return [v[rng.integers(0, len(v), size=(reps, len(v)))] for v in tasks]


def aggregate_ci(
    scores: Scores, stat: str = "iqm", reps: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """(point, low, high): ``stat`` over the tasks with a stratified-bootstrap percentile CI, as rliable's
    ``get_interval_estimates``: "iqm" and "median" of all runs of all tasks pooled, "mean" the mean of
    the per-task means (each task weighted equally whatever its number of runs)."""
    tasks = _tasks(scores)
    boot = _stratified(tasks, np.random.default_rng(seed), reps)
    if stat == "mean":
        point = float(np.mean([v.mean() for v in tasks]))
        dist = np.mean([b.mean(axis=1) for b in boot], axis=0)
    else:
        f = AGGREGATES[stat]
        point = f(np.concatenate(tasks))
        dist = np.array([f(row) for row in np.concatenate(boot, axis=1)])
    alpha = (1 - level) / 2
    return point, float(np.quantile(dist, alpha)), float(np.quantile(dist, 1 - alpha))


def _p_greater(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """P(X > Y) + P(X = Y) / 2 over the last axis pairs (Mann-Whitney U / (n m)); batched."""
    d = x[..., :, None] - y[..., None, :]
    return ((d > 0).mean(axis=(-2, -1))) + 0.5 * ((d == 0).mean(axis=(-2, -1)))


def probability_of_improvement(
    x: Scores, y: Scores, reps: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """(point, low, high) of P(X > Y): for each task, the probability that a run of X beats a run of
    Y (ties count half), averaged over the tasks both have; stratified-bootstrap CI (X's and Y's runs
    resampled within each task, independently)."""
    common = [t for t in x if t in y]
    if not common:
        raise ValueError("probability_of_improvement: the two methods share no task")
    xs, ys = _tasks({t: x[t] for t in common}), _tasks({t: y[t] for t in common})
    point = float(np.mean([_p_greater(a, b) for a, b in zip(xs, ys)]))
    rng = np.random.default_rng(seed)
    bx, by = _stratified(xs, rng, reps), _stratified(ys, rng, reps)
    dist = np.mean([_p_greater(a, b) for a, b in zip(bx, by)], axis=0)
    alpha = (1 - level) / 2
    return point, float(np.quantile(dist, alpha)), float(np.quantile(dist, 1 - alpha))


def performance_profile(
    scores: Scores, taus: Sequence[float], reps: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fraction, low, high) per threshold τ: the fraction of runs scoring above τ, each task weighted
    equally (the mean over tasks of the task's fraction, as rliable's run-score distributions), with a
    stratified-bootstrap band."""
    tasks = _tasks(scores)
    taus = np.asarray(taus, dtype=float)

    def frac(per_task: list[np.ndarray]) -> np.ndarray:  # (..., runs) per task -> (..., len(taus))
        return np.mean([(v[..., None] > taus).mean(axis=-2) for v in per_task], axis=0)

    point = frac(tasks)
    dist = frac(_stratified(tasks, np.random.default_rng(seed), reps))
    alpha = (1 - level) / 2
    return point, np.quantile(dist, alpha, axis=0), np.quantile(dist, 1 - alpha, axis=0)


# the budget tables' plateau margin: a doubling of updates must add at most this much normalised score
PLATEAU_MARGIN = 0.05


class Slope(NamedTuple):
    slope: float  # per unit of x (for budgets: per doubling when x is log2 of the budget)
    low: float
    high: float
    n: int  # runs the fit used

    @property
    def flat(self) -> bool:
        """No rise or fall the runs can tell from zero (the 95% interval of the slope covers 0)."""
        return bool(self.low <= 0.0 <= self.high)

    def stopped_rising(self, margin: float) -> bool | None:
        """True: the 95% interval rules out a rise above ``margin`` (a one-sided equivalence test: more
        budget adds at most ``margin``); False: it excludes 0 from below (still rising); None: neither, the
        runs are too few to tell. An interval merely covering 0 (``flat``) is not enough: with 3 seeds it
        covers 0 for rises of +0.3 per doubling."""
        if not (np.isfinite(self.low) and np.isfinite(self.high)):
            return None
        if self.high <= margin:
            return True
        return False if self.low > 0 else None


def _ols_slope(x: np.ndarray, y: np.ndarray) -> float:
    """Ordinary least squares slope of ``y`` on ``x`` (finite arrays, at least 2 distinct x)."""
    dx = x - x.mean()
    return float(dx @ (y - y.mean())) / float(dx @ dx)


def _tail_start(points: np.ndarray, tail: float) -> float:
    """Where the last ``tail`` of a sweep starts: the top ``tail`` of the range of ``points`` (sorted,
    distinct, at least 2), and at least its two largest points."""
    return min(points.max() - tail * (points.max() - points.min()), points[-2])


def slope_ci(x: Sequence[float], y: Sequence[float], level: float = 0.95, blocks: Sequence[Any] | None = None) -> Slope:
    """Ordinary least squares slope of ``y`` on ``x`` (one point per run) with its Student-t interval;
    nan where fewer than 3 runs or fewer than 2 distinct x.

    ``blocks`` (one label per run, e.g. its seed where each seed ran at every x with its own teacher): the
    slope within blocks, each block's own mean taken out of x and y, so what sets one block's level (its
    teacher) leaves the interval; the residual degrees of freedom are runs - blocks - 1 (two x per block: the
    paired t interval of the per-block differences). Blocks with one finite run tell nothing and are left out;
    nan where fewer than 2 blocks remain."""
    xv, yv = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = np.isfinite(xv) & np.isfinite(yv)
    if blocks is None:
        labels = np.zeros(len(xv), dtype=int)
    else:
        codes: dict[Any, int] = {}
        labels = np.array([codes.setdefault(v, len(codes)) for v in blocks], dtype=int)
    xv, yv, labels = xv[ok], yv[ok], labels[ok]
    if blocks is not None:
        keep = np.isin(labels, [b for b in np.unique(labels) if (labels == b).sum() >= 2])
        xv, yv, labels = xv[keep], yv[keep], labels[keep]
    n, k = len(xv), len(np.unique(labels))
    enough = n >= 3 if blocks is None else k >= 2
    if not enough or len(np.unique(xv)) < 2:
        return Slope(np.nan, np.nan, np.nan, n)
    _, at = np.unique(labels, return_inverse=True)
    count = np.bincount(at)
    dx = xv - (np.bincount(at, weights=xv) / count)[at]
    dy = yv - (np.bincount(at, weights=yv) / count)[at]
    sxx = float(dx @ dx)
    if sxx == 0.0:  # every block ran at one x only
        return Slope(np.nan, np.nan, np.nan, n)
    b = _ols_slope(dx, dy)  # dx and dy have mean 0 (each block's mean taken out), so this is the within slope
    resid = dy - b * dx
    df = n - k - 1
    se = np.sqrt(float(resid @ resid) / df / sxx)
    half = float(student_t.ppf(0.5 + level / 2, df)) * se
    return Slope(b, b - half, b + half, n)


def plateau(
    budgets: Sequence[float],
    scores: Sequence[float],
    tail: float = 1 / 3,
    margin: float = PLATEAU_MARGIN,
    blocks: Sequence[Any] | None = None,
) -> tuple[Slope, float | None]:
    """Has the score stopped rising with the budget? ``budgets`` and ``scores``: one pair per run
    (several seeds per budget point). Budgets grow geometrically, so the fit is on log2(budget).
    ``blocks``: one label per run (its seed) to take each slope within blocks (``slope_ci``).

    Returns the slope over the last ``tail`` of the sweep (the budget points whose log2 lies in the
    top ``tail`` of the log2 range, at least the two largest), and the cheapest budget on the plateau:
    the smallest budget b such that the slope over every budget >= b has stopped rising (its 95%
    interval rules out a rise above ``margin`` per doubling; None: from no budget on it does)."""
    raw = np.asarray(budgets, dtype=float)
    b, y = np.log2(raw), np.asarray(scores, dtype=float)
    labels = None if blocks is None else np.asarray(list(blocks), dtype=object)
    values = np.unique(raw)
    points = np.log2(values)
    if len(points) < 2:
        return Slope(np.nan, np.nan, np.nan, len(b)), None

    def fit(at: np.ndarray) -> Slope:
        return slope_ci(b[at], y[at], blocks=None if labels is None else labels[at])

    last = fit(b >= _tail_start(points, tail))
    cheapest = None
    for value, p in zip(values[:-1], points[:-1]):
        if fit(b >= p).stopped_rising(margin):
            cheapest = float(value)
            break
    return last, cheapest


def run_end_slope(x: Sequence[float], y: Sequence[float], tail: float = 1 / 3) -> float | None:
    """One run's least-squares slope of ``y`` on log2(``x``) over its points in the last ``tail`` of its
    log2 range of x (at least its last two x; the window is set by x alone, so a missing score does not
    move it); None without two scored points there."""
    xv, yv = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = np.isfinite(xv) & (xv > 0)
    b, yv = np.log2(xv[ok]), yv[ok]
    points = np.unique(b)
    if len(points) < 2:
        return None
    keep = (b >= _tail_start(points, tail)) & np.isfinite(yv)
    if len(np.unique(b[keep])) < 2:
        return None
    return _ols_slope(b[keep], yv[keep])


def end_slope(curves: Sequence[tuple[Sequence[float], Sequence[float]]], tail: float = 1 / 3) -> Slope:
    """Was each run still improving when its budget ended? ``curves``: one (x, y) per run, its periodic
    evaluations (x: env steps or updates). Each run's own slope (``run_end_slope``), then the mean of those
    slopes with its 95% interval over the runs (``mean_ci``): the points within a run are not independent,
    so the runs are the sample (runs that share a teacher are not fully independent either: the interval is
    then optimistic). ``n``: runs with a slope (two scored points in their window). Bounds: nan below 2 runs; where every run has
    the same slope, that point."""
    return mean_slope([s for s in (run_end_slope(x, y, tail) for x, y in curves) if s is not None])


def mean_slope(slopes: Sequence[float]) -> Slope:
    """The mean of per-run slopes with its 95% interval (``mean_ci``, unbounded); bounds nan below 2 runs;
    where every run has the same slope, that point (no spread is not a flagged tie here)."""
    slopes = list(slopes)
    if len(slopes) < 2:
        return Slope(float(np.mean(slopes)) if slopes else np.nan, np.nan, np.nan, len(slopes))
    ci = mean_ci(slopes)
    if ci.flag == FLAG_NO_SPREAD:  # every run the same slope (curves pinned at a ceiling): the interval is that point
        return Slope(ci.mean, ci.mean, ci.mean, len(slopes))
    return Slope(ci.mean, ci.low, ci.high, len(slopes))


def seeds_to_rule_out(
    sd: float, margin: float, slope: float = 0.0, level: float = 0.95, most: int = 10_000
) -> int | None:
    """How many seeds a paired slope needs before its interval can rule out a rise above ``margin``:
    the smallest n >= 2 with ``slope + t(n - 1) * sd / sqrt(n) <= margin`` (``sd``: the spread of the
    per-seed differences, ``slope``: the true mean difference). None when ``slope >= margin`` (no n
    rules it out) or more than ``most`` seeds would be needed."""
    if not (np.isfinite(sd) and sd >= 0 and np.isfinite(slope)) or slope >= margin:
        return None
    if sd == 0:
        return 2
    for n in range(2, most + 1):
        if slope + float(student_t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n) <= margin:
            return n
    return None
