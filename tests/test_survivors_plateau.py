"""The budget plateau rule by hand (kdrl.statistics: slope_ci, Slope, plateau; the statistics room of
docs/mutation.md): the slope's interval against scipy's regression, the one-sided stopping rule at its
edges, and the plateau's tail and cheapest budget against a loop written here."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import linregress
from scipy.stats import t as student_t

from kdrl.statistics import PLATEAU_MARGIN, Slope, plateau, slope_ci


def by_scipy(x, y, level=0.95):
    fit = linregress(np.asarray(x, float), np.asarray(y, float))
    half = student_t.ppf(0.5 + level / 2, len(x) - 2) * fit.stderr
    return fit.slope, fit.slope - half, fit.slope + half


@pytest.mark.parametrize("level", [0.95, 0.9])
def test_slope_ci_is_ols_with_students_t(level):
    x = [0.0, 0.0, 1.0, 1.0, 2.0, 2.0, 3.0]
    y = [0.10, 0.30, 0.35, 0.20, 0.60, 0.50, 0.71]
    s = slope_ci(x, y, level) if level != 0.95 else slope_ci(x, y)
    assert s.n == 7
    np.testing.assert_allclose((s.slope, s.low, s.high), by_scipy(x, y, level), rtol=1e-12, atol=1e-12)


def test_slope_ci_drops_non_finite_runs_and_needs_three_runs_over_two_budgets():
    s = slope_ci([0.0, 1.0, 2.0, math.nan, 3.0], [0.1, 0.2, 0.4, 0.5, math.inf])
    assert s.n == 3
    np.testing.assert_allclose((s.slope, s.low, s.high), by_scipy([0, 1, 2], [0.1, 0.2, 0.4]), rtol=1e-12)
    for x, y in (([0.0, 1.0], [0.1, 0.2]), ([1.0, 1.0, 1.0], [0.1, 0.2, 0.3])):
        s = slope_ci(x, y)
        assert s.n == len(x) and all(math.isnan(v) for v in (s.slope, s.low, s.high))


def test_stopped_rising_is_a_one_sided_rule_at_its_edges():
    assert Slope(0.0, -0.02, 0.05, 9).stopped_rising(0.05) is True  # the high end at the margin counts
    assert Slope(0.0, -0.02, 0.0500001, 9).stopped_rising(0.05) is None
    assert Slope(0.2, 0.1, 0.3, 9).stopped_rising(0.05) is False  # still rising: the interval excludes 0
    assert Slope(0.2, 0.0, 0.3, 9).stopped_rising(0.05) is None  # touching 0 is not excluding it
    assert Slope(0.04, 0.01, 0.06, 9).stopped_rising(0.05) is False
    assert Slope(0.04, 0.01, 0.06, 9).stopped_rising(0.1) is True
    for bad in (Slope(math.nan, math.nan, math.nan, 2), Slope(0.0, -math.inf, 0.01, 3), Slope(0.0, -0.1, math.inf, 3)):
        assert bad.stopped_rising(0.05) is None
    assert Slope(0.0, 0.0, 0.1, 3).flat and Slope(0.0, -0.1, 0.0, 3).flat and not Slope(0.1, 0.01, 0.2, 3).flat


def plateau_by_loop(budgets, scores, tail=1 / 3, margin=0.05):
    b, y = np.log2(np.asarray(budgets, float)), np.asarray(scores, float)
    pts = sorted(set(b.tolist()))
    cut = min(pts[-1] - tail * (pts[-1] - pts[0]), pts[-2])
    keep = [i for i in range(len(b)) if b[i] >= cut]
    last = by_scipy(b[keep], y[keep])
    cheapest = None
    for p in pts[:-1]:
        idx = [i for i in range(len(b)) if b[i] >= p]
        if len(idx) >= 3 and len(set(b[idx].tolist())) >= 2:
            _, _, high = by_scipy(b[idx], y[idx])
            if high <= margin:
                cheapest = 2.0**p
                break
    return last, cheapest


def test_plateau_fits_the_last_third_and_names_the_cheapest_flat_budget():
    budgets = [b for b in (1, 2, 4, 8, 16, 32) for _ in range(3)]
    noise = [0.01, -0.02, 0.015] * 6
    scores = [0.2 * min(math.log2(b), 3) + e for b, e in zip(budgets, noise)]  # rises to 8, flat after
    last, cheapest = plateau(budgets, scores)
    want_last, want_cheapest = plateau_by_loop(budgets, scores)
    np.testing.assert_allclose((last.slope, last.low, last.high), want_last, rtol=1e-10, atol=1e-12)
    assert last.n == 6  # log2 range 0..5: the last third is budgets >= 2 ** (5 - 5/3), i.e. 16 and 32
    assert cheapest == want_cheapest == 8.0
    assert PLATEAU_MARGIN == 0.05
    assert plateau(budgets, scores, margin=PLATEAU_MARGIN) == plateau(budgets, scores)
    # a looser margin finds the plateau earlier, a longer tail fits more points
    assert plateau(budgets, scores, margin=0.5)[1] == plateau_by_loop(budgets, scores, margin=0.5)[1] == 1.0
    wide, _ = plateau(budgets, scores, tail=0.8)
    np.testing.assert_allclose(
        (wide.slope, wide.low, wide.high), plateau_by_loop(budgets, scores, tail=0.8)[0], rtol=1e-10
    )
    assert wide.n == 15


def test_plateau_of_a_still_rising_sweep_and_of_two_or_one_budgets():
    budgets = [b for b in (1, 2, 4, 8) for _ in range(3)]
    rising = [0.25 * math.log2(b) + e for b, e in zip(budgets, [0.01, -0.01, 0.0] * 4)]
    last, cheapest = plateau(budgets, rising)
    assert cheapest is None and last.stopped_rising(PLATEAU_MARGIN) is False
    two = plateau([4, 4, 8, 8], [0.5, 0.52, 0.5, 0.51])  # two points: the tail is both
    assert two[0].n == 4 and two[1] == plateau_by_loop([4, 4, 8, 8], [0.5, 0.52, 0.5, 0.51])[1]
    one, none = plateau([8, 8, 8], [0.1, 0.2, 0.3])
    assert none is None and one.n == 3 and all(math.isnan(v) for v in one[:3])
    assert one.stopped_rising(PLATEAU_MARGIN) is None


def test_run_end_slope_at_its_edges_and_with_missing_values():
    """The statistics room's survivors in run_end_slope / mean_slope / end_slope (docs/mutation.md, s4)."""
    from kdrl.statistics import end_slope, mean_slope, run_end_slope

    # two distinct x are enough for a slope (a run evaluated twice in its window)
    assert run_end_slope([1000, 4000], [0.2, 0.6]) == pytest.approx(0.4 / 2)
    # x = 1 is log2 = 0, a valid point; x <= 0 and a non-finite x are dropped, not fitted as -inf or nan
    assert run_end_slope([1, 2, 4], [0.0, 0.1, 0.3], tail=1.0) == pytest.approx(
        np.polyfit([0, 1, 2], [0, 0.1, 0.3], 1)[0]
    )
    base = run_end_slope([1000, 2000, 4000, 8000], [0.1, 0.2, 0.4, 0.5])
    assert run_end_slope([0, 1000, 2000, 4000, 8000], [9.0, 0.1, 0.2, 0.4, 0.5]) == pytest.approx(base)
    # a missing score (None, as a results file writes it) or x: dropped, the window still set by x alone
    assert run_end_slope([1000, 2000, 4000, 8000, None], [0.1, 0.2, 0.4, 0.5, 0.9]) == pytest.approx(base)
    with_gap = run_end_slope([1000, 2000, 4000, 6000, 8000], [0.1, 0.2, 0.4, None, 0.5])
    assert with_gap == pytest.approx(np.polyfit(np.log2([4000, 8000]), [0.4, 0.5], 1)[0])
    # two runs give an interval; one run gives its slope and nan bounds (not None)
    two = mean_slope([0.1, 0.3])
    assert two.n == 2 and two.slope == pytest.approx(0.2) and np.isfinite(two.low) and np.isfinite(two.high)
    one = mean_slope([0.1])
    assert one.slope == pytest.approx(0.1) and np.isnan(one.low) and np.isnan(one.high) and one.n == 1
    # end_slope passes its tail on to every run
    curve = ([1000, 2000, 4000, 8000], [0.0, 0.4, 0.5, 0.5])
    assert end_slope([curve, curve], tail=1.0).slope == pytest.approx(run_end_slope(*curve, tail=1.0))
    assert end_slope([curve, curve], tail=1.0).slope != pytest.approx(end_slope([curve, curve]).slope)


# ---- slopes within seeds (blocks): each seed distils its own teacher at every budget ------------------------
def fixed_effects(x, y, blocks, level=0.95):
    """OLS of y on x with one intercept per block, by least squares on the design matrix, and the slope's
    Student-t interval from (X'X)^-1: the textbook fixed-effects fit the within slope must equal."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    names = sorted(set(blocks), key=str)
    X = np.column_stack([x] + [[1.0 if b == n else 0.0 for b in blocks] for n in names])
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    resid = y - X @ coef
    df = len(y) - X.shape[1]
    se = math.sqrt(float(resid @ resid) / df * np.linalg.inv(X.T @ X)[0, 0])
    half = student_t.ppf(0.5 + level / 2, df) * se
    return coef[0], coef[0] - half, coef[0] + half


def test_a_slope_within_seeds_at_two_budgets_is_the_paired_t_interval_of_the_differences():
    x = [1.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0]  # log2 budgets: one doubling
    y = [0.50, 0.70, 0.30, 0.90, 0.58, 0.74, 0.41, 0.93]
    seeds = [1, 2, 3, 4, 1, 2, 3, 4]
    d = np.array(y[4:]) - np.array(y[:4])
    half = student_t.ppf(0.975, 3) * d.std(ddof=1) / 2.0
    s = slope_ci(x, y, blocks=seeds)
    assert s.n == 8
    np.testing.assert_allclose((s.slope, s.low, s.high), (d.mean(), d.mean() - half, d.mean() + half), rtol=1e-12)
    # the pooled fit sees each seed's level as noise: the same slope, a far wider interval
    pooled = slope_ci(x, y)
    assert pooled.slope == pytest.approx(s.slope) and pooled.high - pooled.low > 5 * (s.high - s.low)


def test_a_slope_within_seeds_is_the_fixed_effects_fit_and_ignores_each_seeds_level():
    x = [0.0, 1.0, 2.0, 0.0, 1.0, 2.0, 0.0, 1.0, 2.0, 1.0]
    y = [0.10, 0.25, 0.28, 0.40, 0.47, 0.61, 0.05, 0.22, 0.30, 0.90]
    seeds = ["a", "a", "a", "b", "b", "b", "c", "c", "c", "d"]  # d: one run, tells nothing, left out
    s = slope_ci(x, y, blocks=seeds)
    assert s.n == 9
    np.testing.assert_allclose((s.slope, s.low, s.high), fixed_effects(x[:9], y[:9], seeds[:9]), rtol=1e-10)
    ninety = slope_ci(x, y, level=0.9, blocks=seeds)
    np.testing.assert_allclose((ninety.low, ninety.high), fixed_effects(x[:9], y[:9], seeds[:9], 0.9)[1:], rtol=1e-10)
    # a teacher that lifts one seed at every budget moves nothing within seeds
    lifted = [v + (5.0 if b == "b" else 0.0) for v, b in zip(y, seeds)]
    np.testing.assert_allclose(slope_ci(x, lifted, blocks=seeds)[:3], s[:3], rtol=1e-10)
    assert slope_ci(x[:9], lifted[:9]).high - slope_ci(x[:9], lifted[:9]).low > 10 * (s.high - s.low)


def test_a_slope_within_seeds_needs_two_seeds_each_run_twice_over_two_budgets():
    nan3 = lambda s: all(math.isnan(v) for v in s[:3])  # noqa: E731
    one_seed = slope_ci([1.0, 2.0, 3.0], [0.1, 0.2, 0.4], blocks=[7, 7, 7])
    assert nan3(one_seed) and one_seed.n == 3  # a pooled fit of the same runs has an interval
    assert not nan3(slope_ci([1.0, 2.0, 3.0], [0.1, 0.2, 0.4]))
    singles = slope_ci([1.0, 2.0, 1.0, 2.0], [0.1, 0.2, 0.3, 0.5], blocks=[1, 2, 3, 4])
    assert nan3(singles) and singles.n == 0  # every seed ran once
    same_x = slope_ci([1.0, 1.0, 2.0, 2.0], [0.1, 0.2, 0.3, 0.5], blocks=[1, 1, 2, 2])
    assert nan3(same_x) and same_x.n == 4  # each seed at one budget: nothing within seeds
    lost = slope_ci([1.0, 2.0, 1.0, 2.0, 1.0, 2.0], [0.1, 0.2, 0.3, math.nan, 0.5, 0.65], blocks=[1, 1, 2, 2, 3, 3])
    assert lost.n == 4 and lost.slope == pytest.approx(0.125)  # seed 2 lost its second run: left out whole
    two = slope_ci([1.0, 2.0, 1.0, 2.0], [0.1, 0.2, 0.3, 0.5], blocks=[1, 1, 2, 2])
    assert two.slope == pytest.approx(0.15) and two.low < 0.15 < two.high  # 1 degree of freedom


def test_plateau_within_seeds_fits_each_tail_within_seeds():
    budgets = [b for b in (1, 2, 4, 8) for _ in range(4)]
    seeds = [1, 2, 3, 4] * 4
    level = {1: 0.0, 2: 0.3, 3: -0.2, 4: 0.15}  # each teacher's own level
    wobble = [0.004, -0.006, 0.002, 0.0, -0.003, 0.005, 0.0, -0.002] * 2
    scores = [0.2 * min(math.log2(b), 2) + level[s] + e for b, s, e in zip(budgets, seeds, wobble)]
    last, cheapest = plateau(budgets, scores, blocks=seeds)
    b = np.log2(budgets)
    tail = b >= 2.0  # log2 range 0..3: the last third is 4 and 8
    want = slope_ci(b[tail], np.array(scores)[tail], blocks=np.array(seeds)[tail])
    np.testing.assert_allclose(last[:3], want[:3], rtol=1e-12)
    assert last.n == 8 and last.stopped_rising(PLATEAU_MARGIN) is True and cheapest == 4.0
    # pooled, the teachers' levels hide the same plateau
    pooled, none = plateau(budgets, scores)
    assert pooled.stopped_rising(PLATEAU_MARGIN) is None and none is None


def test_seeds_to_rule_out_is_the_first_n_whose_paired_upper_bound_is_under_the_margin():
    from kdrl.statistics import seeds_to_rule_out

    def by_loop(sd, margin, slope=0.0, level=0.95):
        for n in range(2, 10_001):
            if slope + student_t.ppf(0.5 + level / 2, n - 1) * sd / math.sqrt(n) <= margin:
                return n
        return None

    for sd, margin, slope in [(0.1, 0.05, 0.0), (0.2, 0.05, 0.0), (0.1, 0.05, -0.05), (0.08, 0.1, 0.02)]:
        n = seeds_to_rule_out(sd, margin, slope)
        assert n == by_loop(sd, margin, slope) and n > 2
        # n seeds are enough and n - 1 are not
        assert slope + student_t.ppf(0.975, n - 1) * sd / math.sqrt(n) <= margin
        assert slope + student_t.ppf(0.975, n - 2) * sd / math.sqrt(n - 1) > margin
    assert seeds_to_rule_out(0.1, 0.05) == 18 and seeds_to_rule_out(0.1, 0.05, level=0.9) == by_loop(
        0.1, 0.05, level=0.9
    )
    assert seeds_to_rule_out(0.1, 0.05, slope=0.05) is None and seeds_to_rule_out(0.1, 0.05, slope=0.06) is None
    assert seeds_to_rule_out(0.0, 0.05) == 2 and seeds_to_rule_out(math.nan, 0.05) is None
    assert seeds_to_rule_out(5.0, 0.05, most=100) is None and seeds_to_rule_out(-0.1, 0.05) is None


def test_plateau_power_splits_a_curves_differences_into_evaluation_error_and_training_noise():
    import importlib.util
    from pathlib import Path

    import pandas as pd

    spec = importlib.util.spec_from_file_location(
        "plateau_power", Path(__file__).resolve().parents[1] / "scripts" / "plateau_power.py"
    )
    power = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(power)
    rows = []
    diffs = [0.10, -0.10, 0.05, -0.05, 0.0]  # per seed, between 2,000 and 8,000 updates (two doublings)
    for seed, d in enumerate(diffs):
        for steps, extra in ((1000, 0.0), (2000, 0.3), (8000, 0.3 + d)):  # the lowest budget is not used
            rows.append({"env_id": "MinAtar/E-v1", "student_size": "s", "seed": seed, "grad_steps": steps,
                         "normalized_score": 0.1 * seed + extra, "eval_return_std": 4.0, "teacher_return_mean": 11.0,
                         "random_return_mean": 1.0})  # fmt: skip
    rows.append({**rows[-1], "seed": 9, "grad_steps": 8000})  # a seed at one budget only: not paired
    one_budget = {**rows[0], "student_size": "t"}  # a curve with one budget so far: no row
    (r,) = power.curve_rows(pd.DataFrame(rows + [one_budget]), episodes=16, margin=0.05)
    assert r["budgets"] == "2,000 -> 8,000" and r["seeds"] == 5
    sd = float(np.std(np.array(diffs) / 2, ddof=1))
    assert r["slope"] == pytest.approx(0.0) and r["sd"] == pytest.approx(sd)
    assert r["eval_error"] == pytest.approx(4.0 / 4 / 10)  # std / sqrt(16) over T - R
    assert r["train_sd"] == pytest.approx(0.0)  # the differences are smaller than two evaluations' error
    rows2 = [{**x, "eval_return_std": 0.4} for x in rows]
    (r2,) = power.curve_rows(pd.DataFrame(rows2), episodes=16, margin=0.05)
    assert r2["train_sd"] == pytest.approx(math.sqrt(sd**2 * 4 / 2 - 0.01**2))
    assert r2["seeds_needed"] == power.seeds_to_rule_out(sd, 0.05) == 5  # t(4) * 0.0395 / sqrt(5) = 0.049
    assert r2["seeds_needed_exact_eval"] == power.seeds_to_rule_out(math.sqrt(2) * r2["train_sd"] / 2, 0.05)


def test_ci_coverage_paired_measures_the_tables_interval_and_covers_on_normal_differences():
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "ci_coverage", Path(__file__).resolve().parents[1] / "scripts" / "ci_coverage.py"
    )
    cc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cc)
    d = np.array([0.12, -0.05, 0.30, 0.02, 0.08])
    half = student_t.ppf(0.975, 4) * d.std(ddof=1) / math.sqrt(5)
    np.testing.assert_allclose(cc.paired_interval(d), (d.mean() - half, d.mean() + half), rtol=1e-12)
    rng = np.random.default_rng(3)
    hits = sum(lo <= 0.0 <= hi for lo, hi in (cc.paired_interval(rng.normal(0.0, 0.1, 5)) for _ in range(600)))
    assert 0.92 <= hits / 600 <= 0.98  # Student's t on normal differences: 95%


def test_paired_by_teacher_takes_each_teachers_level_out_of_two_tables_on_different_teacher_mixes(tmp_path, capsys):
    """scripts/paired_by_teacher.py: table a cycles 5 students over teachers 1, 2, 3, 1, 2 at 1,000 updates, table b
    puts student s on teacher s (1-5) at 2,000. The teachers' levels differ by far more than the change, and b's
    teachers 4-5 are in no block of a: the slope is the paired t interval of the per-teacher differences."""
    import importlib.util
    from pathlib import Path

    import pandas as pd

    spec = importlib.util.spec_from_file_location(
        "paired_by_teacher", Path(__file__).resolve().parents[1] / "scripts" / "paired_by_teacher.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    level, diff = {1: 0.2, 2: 0.9, 3: 0.5, 4: -3.0, 5: 4.0}, {1: 0.10, 2: -0.02, 3: 0.07}
    base = {"status": "ok", "env_id": "MinAtar/E-v1", "student_size": "rusu_7"}
    a = [{**base, "seed": s, "grad_steps": 1000, "normalized_score": level[t]} for s, t in enumerate((1, 2, 3, 1, 2))]
    b = [{**base, "seed": t, "grad_steps": 2000, "normalized_score": level[t] + diff.get(t, 0.0)} for t in range(1, 6)]
    pd.DataFrame(a).to_csv(tmp_path / "a.csv", index=False)
    pd.DataFrame(b).to_csv(tmp_path / "b.csv", index=False)
    d = np.array(list(diff.values()))
    half = student_t.ppf(0.975, 2) * d.std(ddof=1) / math.sqrt(3)
    a3 = script.students(tmp_path / "a.csv", {0: 1, 1: 2, 2: 3, 3: 1, 4: 2}, ["rusu_7"])
    b5 = script.students(tmp_path / "b.csv", None, ["rusu_7"])
    # one student per teacher in a: the paired t interval of the three differences
    slope, lo, hi, blocks = script.within_teachers(pd.concat([a3[a3["seed"] < 3], b5]))
    assert blocks == 3 and slope == pytest.approx(d.mean())
    assert (lo, hi) == pytest.approx((d.mean() - half, d.mean() + half))
    # two on teachers 1 and 2: least squares within blocks weighs a block by n_a n_b / (n_a + n_b)
    weights = np.array([2 / 3, 2 / 3, 1 / 2])
    slope, _, _, blocks = script.within_teachers(pd.concat([a3, b5]))
    assert blocks == 3 and slope == pytest.approx((weights * d).sum() / weights.sum())
    assert script.main([str(tmp_path / "a.csv"), str(tmp_path / "b.csv"), "--teachers-a", "0:1,1:2,2:3,3:1,4:2",
                        "--sizes", "rusu_7"]) == 0  # fmt: skip
    assert f"| all | 3 | {slope:+.3f} [" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="seeds \\[3, 4\\] have no teacher in the map"):
        script.students(tmp_path / "a.csv", {0: 1, 1: 2, 2: 3}, ["rusu_7"])
