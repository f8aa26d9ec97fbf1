"""Intervals on the shapes kdrl's data has (ceiling ties, one outlier), cross-task aggregates against
hand values, and speed censored at the budget (docs/protocol.md)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from kdrl.scores import normalized_bounds, return_range
from kdrl.statistics import (
    FLAG_AT_BOUND,
    FLAG_NO_SPREAD,
    aggregate_ci,
    mean_ci,
    performance_profile,
    probability_of_improvement,
)


# ---- the mean's interval --------------------------------------------------------------------------------------
def test_seeds_tied_at_the_ceiling_are_flagged_not_given_a_false_interval():
    # the old bootstrap-t gave [0.980, 1.013]: its lower bound sat on the mean, above the 0.9 seed's pull
    ci = mean_ci([1, 1, 1, 1, 0.9], bounds=(0.0, 1.0))
    assert ci.flag == FLAG_AT_BOUND and math.isnan(ci.low) and ci.mean == pytest.approx(0.98)
    assert mean_ci([1, 1, 1, 1, 1], bounds=(0.0, 1.0)).flag == FLAG_NO_SPREAD
    # a minority at the ceiling: an interval, inside the range
    ci = mean_ci([1, 0.97, 0.95, 1, 0.9], bounds=(0.0, 1.0))
    assert not ci.flag and ci.low < 0.964 < ci.high <= 1.0


def test_one_outlying_seed_does_not_blow_the_upper_bound_up():
    # Asterix 25% (docs/minatar/compression): the old bootstrap-t upper bound was 6.64, 9.5x the best seed
    seeds = [0.335, 0.699, 0.393, 0.330, 0.335]
    ci = mean_ci(seeds, bounds=(-0.029, math.inf))
    assert not ci.flag and ci.low < np.mean(seeds) < ci.high < 1.5 * max(seeds)


def test_the_interval_never_leaves_what_the_score_can_take():
    x = [0.0, 0.0, 0.5, 0.0, 0.2]  # three of five at the floor: flagged
    assert mean_ci(x, bounds=(0.0, 1.0)).flag == FLAG_AT_BOUND
    ci = mean_ci([0.02, 0.01, 0.6, 0.05, 0.03], bounds=(0.0, 1.0))
    assert ci.low >= 0.0 and mean_ci([0.02, 0.01, 0.6, 0.05, 0.03]).low < 0.0  # unclipped, it goes below 0


@pytest.mark.parametrize(
    "x", [[0.2, 0.9, 1.0], [0.3, 0.5, 0.4, 0.45], [0.33, 0.7, 0.39, 0.33, 0.34], list(np.linspace(0, 1, 10) ** 2)]
)
def test_the_interval_is_the_same_in_any_unit_and_deterministic(x):
    frac, pct = mean_ci(x), mean_ci([100 * v for v in x])
    assert (pct.low, pct.high) == pytest.approx((100 * frac.low, 100 * frac.high), rel=1e-12)
    shifted = mean_ci([v + 7.0 for v in x])
    assert (shifted.low, shifted.high) == pytest.approx((frac.low + 7.0, frac.high + 7.0), rel=1e-12)
    assert mean_ci(x) == mean_ci(x)


def test_identical_seeds_are_no_spread_in_every_unit():
    # 0.1 * 3 != 0.3 in floating point: the old code saw a spread of 1e-17 and gave |t| ~ 1e16
    x = [0.1 + 0.2] * 4 + [0.3]
    assert mean_ci(x).flag == FLAG_NO_SPREAD and mean_ci([100 * v for v in x]).flag == FLAG_NO_SPREAD


def _coverage(draw, true, n, bounds, trials=2000):
    rng = np.random.default_rng(7)
    hits = counted = 0
    for _ in range(trials):
        ci = mean_ci(draw(rng, n), bounds=bounds)
        if not ci.flag:
            counted += 1
            hits += ci.low <= true <= ci.high
    return hits / counted, counted / trials


@pytest.mark.parametrize("n", [5, 10])
def test_coverage_on_a_point_mass_at_the_ceiling_holds_where_the_cell_is_not_flagged(n):
    # 30% of seeds at the ceiling, the rest beta(8, 2): the mean's interval covers >= 0.93 where it is
    # given (with ">= 2 ties" as the flag rule it covered 0.92 at n = 10), and it is given mostly
    def draw(r, k):
        return np.where(r.random(k) < 0.3, 1.0, r.beta(8, 2, k))

    true = 0.3 + 0.7 * 0.8
    cov, shown = _coverage(draw, true, n, (0.0, 1.0))
    assert cov >= 0.93 and shown > 0.8


# ---- score bounds ----------------------------------------------------------------------------------------------
def test_normalised_bounds_come_from_the_envs_return_range():
    assert return_range("CartPole-v1") == (0.0, 500.0) and return_range("MinAtar/Breakout-v1") == (0.0, math.inf)
    assert return_range("ALE/Pong-v5") == (-21.0, 21.0) and return_range("LunarLander-v3") == (-math.inf, math.inf)
    lo, hi = normalized_bounds("CartPole-v1", [500.0, 480.0], [20.0, 20.0])
    assert lo == pytest.approx(-20 / 460) and hi == pytest.approx(480 / 460)
    assert normalized_bounds("MinAtar/Breakout-v1", [10.0], [0.5])[1] == math.inf


# ---- across tasks ----------------------------------------------------------------------------------------------
def test_probability_of_improvement_by_hand():
    # task a: (1 > 0) (1 < 3) (2 > 0) (2 < 3) -> 0.5; task b: 5 > 4 always -> 1.0, tie counts half in c
    x = {"a": [1.0, 2.0], "b": [5.0], "c": [1.0]}
    y = {"a": [0.0, 3.0], "b": [4.0, 4.5], "c": [1.0]}
    p, lo, hi = probability_of_improvement(x, y)
    assert p == pytest.approx((0.5 + 1.0 + 0.5) / 3) and lo <= p <= hi
    assert probability_of_improvement(x, y) == probability_of_improvement(x, y)  # seeded: deterministic


def test_stratified_bootstrap_resamples_within_each_task():
    # each task's runs are identical, so every stratified resample is the original: a zero-width CI.
    # Pooled resampling across tasks would mix the tasks and give a wide one.
    scores = {"a": [0.0] * 4, "b": [1.0] * 4}
    for stat in ("iqm", "mean"):
        point, lo, hi = aggregate_ci(scores, stat)
        assert point == lo == hi == pytest.approx(0.5)
    point, lo, hi = aggregate_ci({"a": [0.1, 0.2, 0.3, 0.4], "b": [0.9, 1.0, 1.1, 1.2]}, "iqm")
    assert point == pytest.approx(np.mean([0.3, 0.4, 0.9, 1.0])) and lo < point < hi  # IQM of the 8 pooled runs


def test_performance_profile_by_hand():
    scores = {"a": [0.2, 0.6], "b": [1.0, 1.0, 1.0, 0.0]}
    frac, lo, hi = performance_profile(scores, [0.1, 0.5, 0.9, 1.0])
    # a: 2/2, 1/2, 0, 0; b: 3/4, 3/4, 3/4, 0 -> the tasks weighted equally
    assert frac == pytest.approx([(1 + 0.75) / 2, (0.5 + 0.75) / 2, 0.375, 0.0])
    assert np.all(lo <= frac) and np.all(frac <= hi)


def test_aggregates_refuse_tasks_without_scores():
    with pytest.raises(ValueError, match="finite score"):
        aggregate_ci({"a": [0.5, float("nan")]})
    with pytest.raises(ValueError, match="share no task"):
        probability_of_improvement({"a": [1.0]}, {"b": [1.0]})


def _student(root, env, size, seed, score):
    d = root / f"{env.replace('/', '_')}-{size}-s{seed}"
    d.mkdir(parents=True)
    body = {"kind": "student", "status": "ok", "env_id": env, "seed": seed, "student_size": size, "loss": "kl_rusu",
            "normalized_score": score, "teacher_return_mean": 10.0, "random_return_mean": 0.5, "param_ratio": 0.1}  # fmt: skip
    (d / "results.json").write_text(json.dumps(body))


def test_kdrl_table_aggregate_prints_iqm_improvement_and_draws_profiles(tmp_path, capsys):
    from kdrl.cli.table import main

    rng = np.random.default_rng(0)
    for env in ("MinAtar/Breakout-v1", "MinAtar/Asterix-v1", "MinAtar/Freeway-v1"):
        for s in range(5):
            _student(tmp_path / "runs", env, "rusu_25", s, 0.9 + 0.05 * rng.standard_normal())
            _student(tmp_path / "runs", env, "rusu_7", s, 0.6 + 0.05 * rng.standard_normal())
    out = tmp_path / "table"
    argv = [str(tmp_path / "runs"), "--rows", "env_id", "--cols", "student_size", "--out", str(out)]
    assert main([*argv, "--aggregate", "--compare", "rusu_25,rusu_7"]) == 0
    text = capsys.readouterr().out
    assert "| rusu_25 | 3 | 15 |" in text and "| rusu_25 | rusu_7 | 1.00 [1.00, 1.00] |" in text
    assert (out / "profiles.png").exists() and (out / "aggregate.csv").exists()
    cells = pd.read_csv(out / "aggregate.csv").set_index("method")
    assert cells.loc["rusu_7", "iqm_low"] < cells.loc["rusu_7", "iqm"] < cells.loc["rusu_7", "iqm_high"] < 0.7
    assert main([*argv, "--compare", "rusu_25"]) == 1  # one line, not a traceback
    assert "takes two --cols values" in capsys.readouterr().err


# ---- audit 2: speed censored at the budget, not at the run's own env steps ------------------------------------------
def test_speed_of_an_early_stopped_seed_is_censored_at_its_budget():
    from kdrl.tables import aggregate, flatten

    def run(seed, hit, env_steps):
        return flatten(
            {"kind": "student", "status": "ok", "loss": "kl", "width": 64, "seed": seed, "env_steps": env_steps,
             "train_wall_time_s": env_steps / 1000, "config": {"distill": {"total_timesteps": 40_000}},
             "speed": {"to_90pct": hit}}
        )  # fmt: skip

    reached = {"env_steps": 40_000, "train_wall_s": 40.0}
    # three seeds reached the level at 40k; two stopped early at 20k below it (early stop at a plateau)
    df = pd.DataFrame([run(s, reached, 40_000) for s in range(3)] + [run(s, None, 20_000) for s in (3, 4)])
    cell = aggregate(df, ["loss"], "to_90pct_env_steps").iloc[0]
    assert cell["mean"] == 40_000 and cell["ci_low"] == 40_000  # was [20k, 40k]: faster than every seed that reached
    wall = aggregate(df, ["loss"], "to_90pct_wall_s").iloc[0]
    assert wall["mean"] == pytest.approx(40.0)  # the 20 s runs extrapolated to the budget at their own pace


def test_a_cells_bounds_and_caption_come_from_the_teacher_reference():
    from kdrl.tables import aggregate, summary_table

    def run(seed, score):
        return {"kind": "student", "status": "ok", "env_id": "CartPole-v1", "seed": seed, "loss": "kl", "width": 64,
                "normalized_score": score, "teacher_return_mean": 480.0, "random_return_mean": 20.0,
                "reference_episodes": 100, "reference_teacher_mean": 500.0, "reference_teacher_se": 0.0,
                "reference_random_mean": 20.0}  # fmt: skip

    # against the reference (T = 500) a score of 1.0 is CartPole's ceiling: 3 of 5 there is flagged. Against the
    # 20-episode teacher (480) the ceiling would be 1.043 and the cell would get an interval through it.
    df = pd.DataFrame([run(s, v) for s, v in enumerate([1.0, 1.0, 1.0, 0.9, 0.95])])
    cell = aggregate(df, ["loss"], "normalized_score").iloc[0]
    assert cell["flag"] == FLAG_AT_BOUND and cell["at_bound"] == 3
    caption = summary_table(df, "loss", "width", "normalized_score").caption
    assert "teacher reference (100 held-out episodes per teacher): CartPole-v1 T = 500.0 ± 0.0" in caption


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_aggregate_points_match_rliable(seed):
    # rliable's metrics module still imports (its library module, with the bootstrap, does not with pandas 3)
    metrics = pytest.importorskip("rliable.metrics")
    rng = np.random.default_rng(seed)
    x, y = rng.normal(0.8, 0.3, size=(5, 4)), rng.normal(0.7, 0.3, size=(5, 4))  # runs x tasks, as rliable takes
    xs, ys = ({t: m[:, t] for t in range(4)} for m in (x, y))
    assert aggregate_ci(xs, "iqm")[0] == pytest.approx(metrics.aggregate_iqm(x))
    assert aggregate_ci(xs, "mean")[0] == pytest.approx(metrics.aggregate_mean(x))
    assert probability_of_improvement(xs, ys)[0] == pytest.approx(metrics.probability_of_improvement(x, y))


def test_the_mean_across_tasks_weights_each_task_equally():
    # 4 runs of task a at 0 and 1 run of task b at 1: the mean over tasks is 0.5, not the pooled 0.2
    assert aggregate_ci({"a": [0.0] * 4, "b": [1.0]}, "mean")[0] == pytest.approx(0.5)


def test_plateau_finds_where_the_score_stops_rising_with_the_budget():
    """issue 26: a budget is enough only where the score has stopped rising: the slope per doubling
    over the sweep's last third has a 95% interval covering 0; the cheapest budget on the plateau is
    the first from which on the slope is flat."""
    from kdrl.statistics import plateau, slope_ci

    s = slope_ci([0, 1, 2, 3], [1.0, 3.0, 5.0, 7.0])  # exact line: zero-width interval
    assert s.slope == pytest.approx(2.0) and s.low == pytest.approx(2.0) and not s.flat
    noise = [0.01, -0.01, 0.0]
    budgets, scores = [], []
    for b, level in [(1, 0.5), (2, 0.7), (4, 0.85), (8, 0.9), (16, 0.9), (32, 0.9)]:
        for e in noise:
            budgets.append(b * 24_000)
            scores.append(level + e)
    last, cheapest = plateau(budgets, scores)
    assert last.flat and last.n == 6  # 16x and 32x: log2 within the top third of the 5-doubling range
    assert cheapest == pytest.approx(4 * 24_000)  # from 4x on: +0.015 per doubling, below the 0.05 margin
    assert plateau(budgets, scores, margin=0.01)[1] == pytest.approx(8 * 24_000)  # a stricter margin: 8x
    rising = [0.1 * np.log2(b) + e for b, e in zip(budgets, noise * 6)]
    last, cheapest = plateau(budgets, rising)
    assert not last.flat and last.slope == pytest.approx(0.1, abs=0.01) and cheapest is None
    assert last.stopped_rising(0.05) is False  # still rising


def test_an_interval_covering_zero_is_not_a_plateau_when_it_also_covers_a_real_rise():
    """Found on the first budget sweep (3 seeds, SpaceInvaders 7%): +0.27 per doubling, 95% CI
    [-0.08, +0.63], covers 0, so 'flat'; but a rise of +0.6 a doubling is as compatible with the runs.
    Stopped rising means the interval rules out a rise above the margin; else it is 'can't tell'."""
    from kdrl.statistics import Slope, plateau

    assert Slope(0.27, -0.08, 0.63, 6).flat and Slope(0.27, -0.08, 0.63, 6).stopped_rising(0.05) is None
    assert Slope(0.01, -0.02, 0.04, 6).stopped_rising(0.05) is True
    assert Slope(-0.3, -0.5, -0.1, 6).stopped_rising(0.05) is True  # falling: more budget does not help
    assert Slope(0.2, 0.1, 0.3, 6).stopped_rising(0.05) is False
    assert Slope(np.nan, np.nan, np.nan, 2).stopped_rising(0.05) is None
    budgets = [b for b in (1, 2, 4, 8) for _ in range(3)]
    noisy = [0.5, 0.6, 0.4, 0.55, 0.6, 0.5, 0.6, 0.8, 0.55, 1.0, 0.9, 0.7]  # rising under wide seed noise
    last, cheapest = plateau(budgets, noisy)
    assert last.flat and last.stopped_rising(0.05) is None and cheapest is None
    last, cheapest = plateau(budgets, noisy, margin=1.0)  # a margin that wide calls it flat from the start
    assert last.stopped_rising(1.0) is True and cheapest == 1


def test_end_slope_takes_the_runs_not_their_points_as_the_sample_and_reads_only_each_runs_last_third():
    """issue 27: were the students still improving when their budget ended? Each run's own slope per
    doubling over the last third of its periodic evaluations; the interval is over the runs (n = runs)."""
    from kdrl.statistics import end_slope

    steps = [10_000 * k for k in range(1, 11)]  # 10k..100k: the last third of log2 is 50k..100k
    # steep early rise, flat from 50k: only the flat part is read
    wiggle = [0, 0.01, -0.01, 0.02, 0.0, -0.02, 0.01, 0.0, 0.01, -0.01]
    flat_late = [(steps, [0.1 * min(k, 5) + wiggle[(k + r) % 10] for k in range(1, 11)]) for r in range(5)]
    s = end_slope(flat_late)
    assert s.n == 5 and abs(s.slope) < 0.02 and s.stopped_rising(0.05) is True
    # every run pinned at the ceiling: slopes all exactly 0, the interval that point, not a flagged tie
    pinned = end_slope([(steps, [1.0] * 10)] * 5)
    assert (pinned.slope, pinned.low, pinned.high, pinned.n) == (0.0, 0.0, 0.0, 5) and pinned.stopped_rising(0.05)
    # rising by 0.2 a doubling to the end, seeds a little apart: still rising
    rising = [(steps, [0.2 * np.log2(x) + 0.01 * r for x in steps]) for r in range(5)]
    s = end_slope([(x, np.asarray(y) + 0.01 * np.arange(10) * (i % 2)) for i, (x, y) in enumerate(rising)])
    assert s.n == 5 and s.slope == pytest.approx(0.2, abs=0.03) and s.stopped_rising(0.05) is False
    # one run is no interval, however many points it has
    one = end_slope(rising[:1])
    assert one.n == 1 and one.slope == pytest.approx(0.2) and np.isnan(one.low) and one.stopped_rising(0.05) is None
    # missing and non-positive points are dropped; a run left with one point gives no slope
    assert end_slope([([0, np.nan, 10_000], [0.3, 0.5, 0.4]), (steps, [0.5] * 10), (steps, [0.5] * 10)]).n == 2
    # a missing score does not move a run's window back: with 5 of its last 6 scores missing it has no slope
    late_gap = [0.1 * k for k in range(1, 6)] + [np.nan] * 5
    assert end_slope([(steps, late_gap), (steps, [0.5] * 10), (steps, [0.5] * 10)]).n == 2


def test_a_runs_end_slope_is_the_least_squares_slope_on_log2_x_over_its_last_third():
    """run_end_slope (one run's value in the end_slope table and in scripts/ci_coverage.py --slopes) against
    numpy's own fit on the window by hand: 10k..100k env steps, the last third of log2 is 50k..100k."""
    from kdrl.statistics import run_end_slope

    rng = np.random.default_rng(3)
    steps = np.array([10_000 * k for k in range(1, 11)], dtype=float)
    y = rng.normal(size=10)
    window = steps >= 50_000
    assert run_end_slope(steps, y) == pytest.approx(np.polyfit(np.log2(steps[window]), y[window], 1)[0])
    assert run_end_slope(steps, y, tail=1.0) == pytest.approx(np.polyfit(np.log2(steps), y, 1)[0])
    assert run_end_slope([10_000], [0.5]) is None and run_end_slope(steps, [np.nan] * 10) is None
