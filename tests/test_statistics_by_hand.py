"""kdrl.statistics against independent computations (issue 29, the statistics room's survivors:
docs/mutation.md). Every published interval goes through these functions; each test pins values,
computed here another way (root-finding for Hall's interval, scipy's t interval and skewness, plain
loops over the same seeded resamples for the bootstraps), that a one-line change would move.
Each test names the mutants it was written for (mutmut's numbers, ``survivors-statistics.txt``)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import brentq
from scipy.stats import skew
from scipy.stats import t as student_t

from kdrl.statistics import (
    FLAG_AT_BOUND,
    FLAG_NO_SPREAD,
    MeanCI,
    _hall_inverse,
    _hall_skew_cap,
    aggregate_ci,
    bootstrap_ci,
    iqm,
    mean_ci,
    performance_profile,
    probability_of_improvement,
)


def _nan_ci(ci: MeanCI, flag: str) -> bool:
    return math.isnan(ci.low) and math.isnan(ci.high) and ci.flag == flag


# ---- mean_ci: the cells without an interval ------------------------------------------------------------------------
def test_mean_ci_of_no_seeds_one_seed_and_undefined_scores():
    """(mean_ci 8, 10, 13-21, 25-33, 41) no seeds: nan throughout, no flag; one seed: its score,
    "no spread"; any undefined score: nan throughout, no flag, whatever the number of seeds;
    a flagged cell has nan at both ends."""
    ci = mean_ci([])
    assert math.isnan(ci.mean) and _nan_ci(ci, "")
    ci = mean_ci([0.7])
    assert ci.mean == 0.7 and _nan_ci(ci, FLAG_NO_SPREAD)
    for x in ([math.nan], [0.5, math.nan, 0.7], [math.inf, 1.0, 2.0], [0.1, 0.2, 0.3, 0.4, -math.inf]):
        ci = mean_ci(x)
        assert math.isnan(ci.mean) and _nan_ci(ci, ""), x
    ci = mean_ci([1.0, 1.0, 1.0, 0.9], bounds=(0.0, 1.0))
    assert ci.mean == pytest.approx(0.975) and _nan_ci(ci, FLAG_AT_BOUND)
    ci = mean_ci([0.4] * 6)
    assert ci.mean == pytest.approx(0.4) and _nan_ci(ci, FLAG_NO_SPREAD)


def test_at_bound_needs_a_strict_majority_at_the_bound():
    """(ci_flag 30: ``>`` -> ``>=``) half the seeds at the ceiling is not a majority: an interval."""
    for x in ([1.0, 1.0, 0.9, 0.8], [1.0, 0.95, 1.0, 0.9, 1.0, 0.85], [0.0, 0.0, 0.3, 0.1]):
        ci = mean_ci(x, bounds=(0.0, 1.0))
        assert ci.flag == "" and ci.low < ci.mean < ci.high, x
    for x in ([1.0, 1.0, 1.0, 0.9], [1.0, 1.0, 1.0, 0.9, 0.8], [0.0, 0.0, 0.0, 0.3, 0.1]):
        assert mean_ci(x, bounds=(0.0, 1.0)).flag == FLAG_AT_BOUND, x


def test_ties_are_within_1e_9_of_the_largest_score_and_absolute_below_one():
    """(_same 4: ``* scale`` -> ``/ scale``; ci_flag 9: the scale's floor 1 -> 2) scores within 1e-9 of
    each other, relative to the largest |score| (at least 1), are one score: no spread."""
    for v in (500.0, 5e6, -2e4):  # 1e-10 of the score apart: one score in any unit
        assert mean_ci([v] * 4 + [v * (1 + 1e-10)]).flag == FLAG_NO_SPREAD, v
        assert mean_ci([v] * 4 + [v * (1 + 1e-8)]).flag == "", v
    assert mean_ci([0.5] * 4 + [0.5 + 0.5e-9]).flag == FLAG_NO_SPREAD  # below 1 the tolerance is 1e-9 itself
    assert mean_ci([0.5] * 4 + [0.5 + 1.5e-9]).flag == ""


# ---- mean_ci: the intervals --------------------------------------------------------------------------------------
@pytest.mark.parametrize("x", [[0.2, 0.4], [0.2, 0.9, 1.0], [0.3, 0.5, 0.4, 0.45], [-3.0, 10.0, 4.0, 4.5]])
def test_below_five_seeds_the_interval_is_students_t(x):
    """(mean_ci 25, 50, 63, 65, 69, 71, 122, 125) scipy's t interval at n - 1 degrees of freedom
    around the mean, with the sample's standard error; the flag is the empty string."""
    n, m = len(x), float(np.mean(x))
    lo, hi = student_t.interval(0.95, n - 1, loc=m, scale=np.std(x, ddof=1) / math.sqrt(n))
    ci = mean_ci(x)
    assert ci.flag == "" and ci.mean == pytest.approx(m, rel=1e-12)
    assert (ci.low, ci.high) == pytest.approx((lo, hi), rel=1e-9)
    lo90, hi90 = student_t.interval(0.9, n - 1, loc=m, scale=np.std(x, ddof=1) / math.sqrt(n))
    assert mean_ci(x, level=0.9)[1:3] == pytest.approx((lo90, hi90), rel=1e-9)


def _hall_by_root_finding(x, level=0.95):
    """Hall's transformed t built from its definition: the skewness is scipy's adjusted
    Fisher-Pearson g, capped where the cube root of the inverse reaches 1/4 (g q + g^2/6n = 3/4, found
    by bisection), and each end inverts T(t) = t + g t^2/3 + g^2 t^3/27 + g/(6n) numerically."""
    x = np.asarray(x, dtype=float)
    n, m, s = len(x), x.mean(), x.std(ddof=1)
    q = student_t.ppf(1 - (1 - level) / 2, n - 1) / math.sqrt(n)
    cap = brentq(lambda c: c * q + c * c / (6 * n) - 0.75, 0.0, 100.0, xtol=1e-14)
    g = float(np.clip(skew(x, bias=False), -cap, cap))

    def inverse(v):
        return brentq(lambda t: t + g * t * t / 3 + g * g * t**3 / 27 + g / (6 * n) - v, -1e3, 1e3, xtol=1e-14)

    return m, m - inverse(q) * s, m - inverse(-q) * s, g, cap


HALL_CASES = {
    "Asterix 25%": [0.335, 0.699, 0.393, 0.330, 0.335],
    "mild right skew": [0.31, 0.42, 0.35, 0.52, 0.38],
    "mild left skew": [0.69, 0.58, 0.65, 0.48, 0.62],
    "past the cap, right": [0.0, 0.1, 0.0, 0.05, 1.0],
    "past the cap, left": [0.0, -0.1, 0.0, -0.05, -1.0],
    "ten seeds": list(np.linspace(0, 1, 10) ** 2),
    "ten, left": list(1 - np.linspace(0, 1, 10) ** 3),
}


@pytest.mark.parametrize("name", HALL_CASES)
def test_from_five_seeds_the_interval_is_halls_transformed_t(name):
    """(mean_ci 50, 63, 65, 78-83, 90, 91, 122, 125; _hall_inverse 6, 13, 16; _hall_skew_cap 1, 4,
    8, 9) against the transformation inverted by root-finding; the cases include skewness past the
    cap on each side (mean_ci 90 and 91 drop one side of the clip)."""
    x = HALL_CASES[name]
    m, lo, hi, g, cap = _hall_by_root_finding(x)
    ci = mean_ci(x)
    assert ci.flag == "" and ci.mean == pytest.approx(m, rel=1e-12)
    assert (ci.low, ci.high) == pytest.approx((lo, hi), rel=1e-9, abs=1e-12)
    assert mean_ci(x, level=0.9)[1:3] == pytest.approx(_hall_by_root_finding(x, 0.9)[1:3], rel=1e-9, abs=1e-12)
    if "past the cap" in name:
        assert abs(g) == pytest.approx(cap)


def test_the_skew_cap_puts_the_cube_root_at_a_quarter():
    """(_hall_skew_cap 1, 4, 8, 9) at |g| = cap the cube root's argument 1 - |g| q - g^2/6n is 1/4."""
    for n in (5, 7, 10, 30):
        q = student_t.ppf(0.975, n - 1) / math.sqrt(n)
        c = _hall_skew_cap(q, n)
        assert c > 0 and 1 - c * q - c * c / (6 * n) == pytest.approx(0.25, rel=1e-12)
        # Hall's transformation at the inverse gives the value back (both signs of g)
        for g in (c, -c, 0.3 * c):
            for v in (q, -q):
                t = _hall_inverse(v, g, n)
                assert t + g * t * t / 3 + g * g * t**3 / 27 + g / (6 * n) == pytest.approx(v, rel=1e-9)
    assert _hall_inverse(1.7, 0.0, 5) == 1.7


def test_mean_ci_text_is_how_tables_print_a_cell():
    """(MeanCI.text 1, 3-17: no test reached it) 'mean [low, high]' in the given format, three
    decimals by default; a flagged cell 'mean ‡ (why)'."""
    assert MeanCI(0.5, 0.25, 0.75, "").text() == "0.500 [0.250, 0.750]"
    assert MeanCI(50.0, 25.04, 74.96, "").text(".1f") == "50.0 [25.0, 75.0]"
    assert MeanCI(0.98, math.nan, math.nan, FLAG_AT_BOUND).text() == "0.980 ‡ (at bound)"
    assert MeanCI(7.0, math.nan, math.nan, FLAG_NO_SPREAD).text(".1f") == "7.0 ‡ (no spread)"


def test_iqm_is_scipys_quarter_trimmed_mean():
    """(iqm 6: always nan) a quarter cut from each end, whole observations only; nan with no runs."""
    assert iqm([4.0, 1.0, 3.0, 2.0]) == 2.5
    assert iqm([0.0, 10.0, 1.0, 2.0, 3.0, 4.0, 100.0, -50.0]) == pytest.approx(2.5)
    assert iqm([0.2, 0.9, 1.0]) == pytest.approx(0.7)  # n = 3: nothing cut
    assert math.isnan(iqm([]))


# ---- the bootstraps, against plain loops over the same seeded resamples --------------------------------------------
def _quantiles(dist, level):
    alpha = (1 - level) / 2
    return np.quantile(dist, alpha, axis=0), np.quantile(dist, 1 - alpha, axis=0)


def _stratified_draws(tasks, rng, reps):
    """The draws the functions make, in their order: for each task, reps x runs indices in [0, runs)."""
    return [rng.integers(0, len(v), size=(reps, len(v))) for v in tasks]


@pytest.mark.parametrize("stat", [np.mean, np.median])
@pytest.mark.parametrize("level", [0.95, 0.8])
def test_bootstrap_ci_by_loop(stat, level):
    """(bootstrap_ci 18, 26, 29-32, 41-44) the percentile interval of ``stat`` over ``reps`` resamples
    drawn from ``default_rng(seed)``; the mean's fast path gives the same numbers as the loop."""
    x = np.array([0.3, 0.9, 0.1, 0.4, 0.75, 0.2])
    idx = np.random.default_rng(3).integers(0, len(x), size=(300, len(x)))
    dist = np.array([stat([x[i] for i in row]) for row in idx])
    got = bootstrap_ci(list(x), stat, reps=300, level=level, seed=3)
    assert got == pytest.approx(_quantiles(dist, level), rel=1e-12)


def test_bootstrap_ci_of_no_one_and_two_runs():
    """(bootstrap_ci 10-16) nan without runs; one run is its own interval; two runs resample to
    {a, (a + b) / 2, b}, whose 2.5% and 97.5% points are a and b."""
    assert all(math.isnan(v) for v in bootstrap_ci([]))
    assert bootstrap_ci([0.7]) == (0.7, 0.7) and bootstrap_ci([0.7], np.median) == (0.7, 0.7)
    assert bootstrap_ci([0.0, 1.0]) == (0.0, 1.0)


def test_the_resampling_defaults_are_the_published_ones():
    """(bootstrap_ci 1, 3; aggregate_ci 1, 2, 3, 5; probability_of_improvement 1, 3;
    performance_profile 1, 3) tables call these with their defaults: IQM, seed 0, 5,000 resamples
    for bootstrap_ci and 2,000 for the aggregates, 95%. A changed default moves every published CI."""
    x = list(np.random.default_rng(1).random(23))  # 23 runs: resampled means fine enough to move with reps
    assert bootstrap_ci(x) == bootstrap_ci(x, np.mean, reps=5000, level=0.95, seed=0)
    assert bootstrap_ci(x) != bootstrap_ci(x, reps=5001) and bootstrap_ci(x) != bootstrap_ci(x, seed=1)
    rng = np.random.default_rng(0)  # 37, 41 and 43 runs: the profile's fractions fine enough too
    a = {t: list(rng.random(k)) for t, k in zip("abc", (37, 41, 43))}
    b = {t: list(rng.random(k)) for t, k in zip("abc", (37, 41, 43))}
    taus = [0.1, 0.3, 0.5, 0.7, 0.9]
    calls = {
        "aggregate_ci": (lambda **kw: aggregate_ci(a, **kw), dict(stat="iqm")),
        "probability_of_improvement": (lambda **kw: probability_of_improvement(a, b, **kw), {}),
        "performance_profile": (lambda **kw: np.concatenate(performance_profile(a, taus, **kw)), {}),
    }
    for name, (f, extra) in calls.items():
        published = np.asarray(f())
        assert np.array_equal(published, np.asarray(f(reps=2000, level=0.95, seed=0, **extra))), name
        assert not np.array_equal(published, np.asarray(f(reps=2001))), name
        assert not np.array_equal(published, np.asarray(f(seed=1))), name


SCORES = {"a": [0.1, 0.5, 0.2, 0.9], "b": [0.4, 0.3, 0.8], "c": [1.0, 0.2, 0.6, 0.6, 0.3]}
OTHER = {"a": [0.2, 0.5, 0.3, 0.35, 0.9], "b": [0.4, 0.45, 0.2], "c": [0.6, 0.7, 0.1, 0.3], "d": [9.0]}


@pytest.mark.parametrize("stat", ["iqm", "median", "mean"])
@pytest.mark.parametrize("level", [0.95, 0.8])
def test_aggregate_ci_by_loop(stat, level):
    """(aggregate_ci 15, 24, 26, 27, 43, 46) each resample: every task's runs drawn with replacement
    within the task; IQM and median of the pooled runs, mean the mean of the task means."""
    tasks = [np.array(v) for v in SCORES.values()]
    draws = _stratified_draws(tasks, np.random.default_rng(5), 250)
    dist = []
    for r in range(250):
        per_task = [[v[i] for i in d[r]] for v, d in zip(tasks, draws)]
        pooled = sorted(s for t in per_task for s in t)
        if stat == "mean":
            dist.append(sum(sum(t) / len(t) for t in per_task) / len(per_task))
        elif stat == "median":
            dist.append(float(np.median(pooled)))
        else:  # 12 pooled runs: the middle 6
            dist.append(sum(pooled[3:9]) / 6)
    point, lo, hi = aggregate_ci(SCORES, stat, reps=250, level=level, seed=5)
    assert (lo, hi) == pytest.approx(_quantiles(np.array(dist), level), rel=1e-12)
    pooled = sorted(s for v in SCORES.values() for s in v)
    want = {
        "iqm": sum(pooled[3:9]) / 6,
        "median": float(np.median(pooled)),
        "mean": np.mean([np.mean(v) for v in tasks]),
    }
    assert point == pytest.approx(want[stat], rel=1e-12)


def _p_by_loop(x, y):
    wins = sum((a > b) + 0.5 * (a == b) for a in x for b in y)
    return wins / (len(x) * len(y))


@pytest.mark.parametrize("level", [0.95, 0.8])
def test_probability_of_improvement_by_loop(level):
    """(probability_of_improvement 25, 52, 54, 56, 57; _p_greater 13) P(X > Y) + P(X = Y)/2 per
    task, averaged over the shared tasks; X's resamples drawn before Y's from one seeded generator.
    The scores have ties, so the tie term of each resample counts (_p_greater 13 averages it over
    every resample at once)."""
    common = ["a", "b", "c"]  # "d" only in OTHER
    xs, ys = [np.array(SCORES[t]) for t in common], [np.array(OTHER[t]) for t in common]
    rng = np.random.default_rng(11)
    dx, dy = _stratified_draws(xs, rng, 200), _stratified_draws(ys, rng, 200)
    dist = [np.mean([_p_by_loop(vx[ix[r]], vy[iy[r]]) for vx, vy, ix, iy in zip(xs, ys, dx, dy)]) for r in range(200)]
    point, lo, hi = probability_of_improvement(SCORES, OTHER, reps=200, level=level, seed=11)
    assert point == pytest.approx(np.mean([_p_by_loop(a, b) for a, b in zip(xs, ys)]), rel=1e-12)
    assert (lo, hi) == pytest.approx(_quantiles(np.array(dist), level), rel=1e-12)


@pytest.mark.parametrize("level", [0.95, 0.8])
def test_performance_profile_band_by_loop(level):
    """(performance_profile 30, 32, 34, 35, 38, 41, 45, 48) one band per threshold: the quantiles of
    each τ's resampled fraction (the task fractions averaged), not of all τ pooled."""
    taus = [0.15, 0.35, 0.55, 0.85]
    tasks = [np.array(v) for v in SCORES.values()]
    draws = _stratified_draws(tasks, np.random.default_rng(2), 300)
    dist = np.array(
        [
            [np.mean([np.mean([v[i] > tau for i in d[r]]) for v, d in zip(tasks, draws)]) for tau in taus]
            for r in range(300)
        ]
    )
    frac, lo, hi = performance_profile(SCORES, taus, reps=300, level=level, seed=2)
    assert lo.shape == hi.shape == (4,)
    want_lo, want_hi = _quantiles(dist, level)
    assert lo == pytest.approx(want_lo, rel=1e-12) and hi == pytest.approx(want_hi, rel=1e-12)


def test_aggregates_refuse_with_their_messages_word_for_word():
    """(_tasks 6, 11, 12, 13, 18; probability_of_improvement 8) an empty task, no task, a nan run."""
    for bad in ({"a": [0.5], "b": []}, {}):
        with pytest.raises(ValueError, match=r"^aggregates need at least one run in every task$"):
            aggregate_ci(bad)
    with pytest.raises(
        ValueError, match=r"^aggregates need a finite score for every run \(a refused score has none\)$"
    ):
        performance_profile({"a": [0.5, math.nan]}, [0.5])
    with pytest.raises(ValueError, match=r"^probability_of_improvement: the two methods share no task$"):
        probability_of_improvement({"a": [1.0]}, {"b": [1.0]})
