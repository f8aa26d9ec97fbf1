"""kdrl/scores.py by hand (the scores room of docs/mutation.md, issue 29): every number a results.json
and a table report from returns (the normalised score, % of teacher, the geometric mean, the
teacher-beats-random test, the return ranges and the score bounds), each computed here another way,
edges included."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import ttest_ind

from kdrl.scores import (
    GEOMEAN_FLOOR_PCT,
    geometric_mean,
    mean_pcts,
    normalized_bounds,
    normalized_score,
    pct_of_teacher,
    return_range,
    teacher_beats_random,
)

INF = math.inf


def test_normalized_score_by_hand_and_its_refusals():
    assert normalized_score(300.0, 500.0, 20.0) == (300.0 - 20.0) / (500.0 - 20.0)
    assert normalized_score(-100.0, -80.0, -500.0) == pytest.approx(400.0 / 420.0)  # negative returns
    assert normalized_score(3.0, 5.0, 1.0, scale=100.0) == 100.0 * 2.0 / 4.0
    assert normalized_score(7.0, 5.0, 1.0) == 1.5  # a student above its teacher
    assert math.isnan(normalized_score(3.0, 5.0, 5.0))  # T == R
    assert math.isnan(normalized_score(3.0, 4.0, 5.0))  # T < R: refused when strict (the default)
    assert normalized_score(3.0, 4.0, 5.0, strict=False) == (3.0 - 5.0) / (4.0 - 5.0)
    assert math.isnan(normalized_score(3.0, 5.0, 5.0, strict=False))


def test_pct_of_teacher_is_the_normalised_score_in_percent():
    assert pct_of_teacher(3.0, 5.0, 1.0) == 50.0
    assert pct_of_teacher(-90.0, -80.0, -500.0) == pytest.approx(100.0 * 410.0 / 420.0)
    assert math.isnan(pct_of_teacher(1.0, 2.0, 2.0)) and math.isnan(pct_of_teacher(1.0, 1.0, 2.0))


def test_geometric_mean_by_hand_and_its_edges():
    assert geometric_mean([1.0, 4.0, 16.0]) == pytest.approx(4.0)
    assert geometric_mean(np.array([2.0, 8.0])) == pytest.approx(4.0)
    for bad in ([], [1.0, math.nan], [1.0, INF], [1.0, -INF], [2.0, 0.0], [2.0, -1.0]):
        assert math.isnan(geometric_mean(bad)), bad
    assert geometric_mean([0.5, 100.0], floor=1.0) == pytest.approx(10.0)  # 0.5 counts as 1
    assert geometric_mean([-3.0, 100.0], floor=1.0) == pytest.approx(10.0)
    assert geometric_mean([4.0, 9.0], floor=1.0) == pytest.approx(6.0)  # above the floor: unchanged
    assert math.isnan(geometric_mean([], floor=1.0)) and math.isnan(geometric_mean([math.nan], floor=1.0))
    for floor in (0.0, -1.0):
        with pytest.raises(ValueError, match=rf"^geometric_mean: floor must be > 0 or None, got {floor!r}$"):
            geometric_mean([1.0], floor=floor)


def test_mean_pcts_arithmetic_and_floored_geometric():
    mean, geo = mean_pcts([0.5, 100.0])
    assert mean == 50.25 and geo == pytest.approx(10.0) and GEOMEAN_FLOOR_PCT == 1.0
    mean, geo = mean_pcts([50.0, 200.0])
    assert mean == 125.0 and geo == pytest.approx(100.0)
    for bad in ([], [1.0, math.nan], [INF, 2.0]):
        mean, geo = mean_pcts(bad)
        assert math.isnan(mean) and math.isnan(geo), bad


def welch_p(t, r) -> float:
    return ttest_ind(np.asarray(t, float), np.asarray(r, float), equal_var=False, alternative="greater").pvalue


def test_teacher_beats_random_is_a_one_sided_welch_test_at_1_percent():
    random = [0.0, 1.0, 0.0, 2.0, 1.0, 0.0, 1.0, 1.0]
    clear = [9.0, 10.0, 11.0, 10.0, 9.0, 12.0, 10.0, 11.0]
    assert welch_p(clear, random) < 1e-6 and teacher_beats_random(clear, random)
    # a teacher whose p lies between 1% and 5%: not clear at the default alpha, clear at 5%
    marginal = [1.0, 3.0, 0.0, 4.0, 2.0, 1.0, 3.0, 2.0]
    p = welch_p(marginal, random)
    assert 0.01 < p < 0.05, p
    assert not teacher_beats_random(marginal, random)
    assert teacher_beats_random(marginal, random, alpha=0.05)
    assert not teacher_beats_random(marginal, random, alpha=p)  # strictly below alpha
    assert teacher_beats_random(marginal, random, alpha=p * 1.0001)


def test_teacher_beats_random_edges():
    assert not teacher_beats_random([5.0], [0.0, 1.0])  # fewer than 2 episodes: no test
    assert not teacher_beats_random([5.0, 6.0], [0.0])
    assert not teacher_beats_random([1.0, 1.0], [1.0, 1.0])  # equal means
    assert not teacher_beats_random([0.0, 1.0], [2.0, 3.0])  # worse
    assert teacher_beats_random([500.0, 500.0, 500.0], [22.0, 22.0])  # both deterministic, the teacher higher
    assert teacher_beats_random([500.0] * 20, [20.0 + i % 5 for i in range(20)])  # a constant teacher
    assert teacher_beats_random([500.0, 500.0], [22.0, 22.0])  # two episodes each are enough
    assert not teacher_beats_random([5.0], [0.0, 0.0])  # one teacher episode: no test even when both are constant
    # the shortcut is for two constant samples only; otherwise Welch's test decides (here: not clear)
    assert not teacher_beats_random([1.0, 1.0, 1.0], [0.0, 2.0, 0.0, 1.8])  # constant teacher, noisy random
    assert not teacher_beats_random([1.2, 1.2], [0.0, 2.0])  # random's std exactly 1
    assert not teacher_beats_random([1.0, 3.0], [0.0, 0.0, 0.0])  # noisy teacher (std exactly 1), constant random


@pytest.mark.parametrize(
    "env_id, expected",
    [
        ("CartPole-v1", (0.0, 500.0)),
        ("CartPole-v0", (0.0, 200.0)),
        ("Acrobot-v1", (-500.0, 0.0)),
        ("MountainCar-v0", (-200.0, 0.0)),
        ("ALE/Pong-v5", (-21.0, 21.0)),  # before the generic ALE/ prefix
        ("ALE/Breakout-v5", (0.0, INF)),
        ("MinAtar/Asterix-v1", (0.0, INF)),
        ("LunarLander-v3", (-INF, INF)),
        (None, (-INF, INF)),
        ("", (-INF, INF)),
    ],
)
def test_return_ranges(env_id, expected):
    assert return_range(env_id) == expected


def test_normalized_bounds_map_the_return_range_through_each_runs_teacher_and_random():
    # CartPole [0, 500]: run 1 T=500 R=20 -> [-20/480, 1]; run 2 T=400 R=25 -> [-25/375, 475/375]
    low, high = normalized_bounds("CartPole-v1", [500.0, 400.0], [20.0, 25.0])
    assert low == pytest.approx(min(-20 / 480, -25 / 375)) and high == pytest.approx(max(480 / 480, 475 / 375))
    low, high = normalized_bounds("Acrobot-v1", [-80.0], [-500.0])  # [-500, 0] -> [0, 500/420]
    assert low == 0.0 and high == pytest.approx(500 / 420)
    low, high = normalized_bounds("MinAtar/Breakout-v1", [10.0, 8.0], [0.5, 1.0])  # [0, inf)
    assert low == pytest.approx(min(-0.5 / 9.5, -1.0 / 7.0)) and high == INF
    assert normalized_bounds("LunarLander-v3", [200.0], [-150.0]) == (-INF, INF)
    assert normalized_bounds("CartPole-v1", [1.5], [1.0]) == ((0.0 - 1.0) / 0.5, (500.0 - 1.0) / 0.5)  # a gap below 1
    assert normalized_bounds("CartPole-v1", [0.0], [0.0]) == (-INF, INF)  # no gap: unbounded, not nan
    for teacher, random in (([], []), ([5.0, 1.0], [1.0, 1.0]), ([5.0, 0.5], [1.0, 1.0]), ([math.nan], [0.0])):
        assert normalized_bounds("CartPole-v1", teacher, random) == (-INF, INF), (teacher, random)
