import json

import numpy as np
import pytest

from kdrl.cli.table import main as table_main
from kdrl.statistics import bootstrap_ci, iqm
from kdrl.tables import aggregate, collect
from tests.zygote import run_app


def test_iqm_by_hand():
    assert iqm([1, 2, 3, 4]) == pytest.approx(2.5)  # middle two
    assert iqm([0, 1, 2, 3, 100, 4, 5, 6]) == pytest.approx(np.mean([2, 3, 4, 5]))
    # n=5: scipy's trim_mean (rliable's IQM) cuts whole observations, one from each end
    assert iqm([1, 2, 3, 4, 50]) == pytest.approx(3.0)


def test_bootstrap_ci_brackets_the_mean_and_shrinks_with_n():
    rng = np.random.default_rng(0)
    small, big = rng.normal(1.0, 1.0, 5), rng.normal(1.0, 1.0, 200)
    lo, hi = bootstrap_ci(small)
    assert lo < small.mean() < hi
    blo, bhi = bootstrap_ci(big)
    assert (bhi - blo) < (hi - lo)
    assert 0.7 < blo < 1.0 < bhi < 1.3
    assert bootstrap_ci([3.0]) == (3.0, 3.0)


def _write(d, **fields):
    d.mkdir(parents=True)
    base = {
        "kind": "student",
        "status": "ok",
        "env_id": "CartPole-v1",
        "param_ratio": 0.07,
        "temperature": 0.01,
        "eval_history": [{"env_steps": 1000, "return_mean": 100.0}, {"env_steps": 2000, "return_mean": 500.0}],
    }
    (d / "results.json").write_text(json.dumps({**base, **fields}))


def test_table_tool_end_to_end(tmp_path, capsys):
    for seed in range(3):
        _write(tmp_path / f"kl{seed}", loss="kl", width=64, seed=seed, normalized_score=1.0 - 0.1 * seed)
        _write(tmp_path / f"mse{seed}", loss="mse", width=64, seed=seed, normalized_score=0.5, temperature=1.0)
    _write(tmp_path / "bad", loss="kl", width=64, seed=9, status="failed", error="RuntimeError: boom")
    df = collect([tmp_path])
    assert len(df) == 7 and set(df["method"]) == {"kl (tau=0.01)", "mse"}
    agg = aggregate(df, ["method", "width"], "normalized_score")
    kl = agg[agg["method"] == "kl (tau=0.01)"].iloc[0]
    assert kl["n"] == 3 and kl["mean"] == pytest.approx(0.9) and kl["ci_low"] <= 0.9 <= kl["ci_high"]
    out = tmp_path / "table"
    assert table_main([str(tmp_path), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "90.0 [" in printed and "1 failed" in printed and "RuntimeError: boom" in printed
    for name in ("results.csv", "table.md", "table.tex", "ratio_vs_params.png", "curves_by_method.svg"):
        assert (out / name).exists(), name
    assert "\\begin{tabular}" in (out / "table.tex").read_text()


def test_table_tool_errors_clearly(tmp_path, capsys):
    assert table_main([str(tmp_path)]) == 1
    assert "no results.json" in capsys.readouterr().err
    missing = collect([tmp_path / "missing"])  # named and counted, not raised (issue 16)
    assert missing["status"].tolist() == ["unreadable"] and "no such file" in missing["error"][0]


def _results_dirs(tmp_path, good_result):
    """A sweep of three run dirs: one good results.json, one empty, one truncated mid-write."""
    for name in ("good", "empty", "truncated"):
        (tmp_path / "sweep" / name).mkdir(parents=True)
    text = json.dumps(good_result)
    (tmp_path / "sweep" / "good" / "results.json").write_text(text)
    (tmp_path / "sweep" / "empty" / "results.json").write_text("")
    (tmp_path / "sweep" / "truncated" / "results.json").write_text(text[: len(text) // 2])
    return tmp_path / "sweep"


@pytest.fixture()
def good_result():
    return {
        "kind": "student", "status": "ok", "env_id": "CartPole-v1", "seed": 0, "run_dir": "x", "loss": "kl",
        "temperature": 0.01, "width": 16, "student_size": None, "depth": 2, "control": "teacher", "baseline": None,
        "lambda": None, "feature_weight": 0.0, "normalized_score": 0.9, "param_ratio": 0.07, "config": {},
    }  # fmt: skip


def test_kdrl_table_names_unreadable_files_and_goes_on(tmp_path, good_result, capsys):
    from kdrl.cli.table import main

    sweep = _results_dirs(tmp_path, good_result)
    rc = main([str(sweep), str(tmp_path / "missing"), "--no-plots", "--out", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert rc == 0 and "3 unreadable results file(s) skipped" in out
    assert "empty/results.json: empty file" in err and "truncated?" in err and "missing: no such file" in err
    assert "Traceback" not in err and (tmp_path / "out" / "table.md").is_file()


def test_kdrl_table_fails_in_one_line_when_nothing_is_readable(tmp_path, good_result):
    sweep = _results_dirs(tmp_path, good_result)
    (sweep / "good" / "results.json").unlink()
    for args in ([str(sweep)], [str(tmp_path / "nowhere")]):
        done = run_app("table", args)
        assert done.returncode == 1 and "Traceback" not in done.stderr
        assert done.stderr.strip().splitlines()[-1].startswith("kdrl-table: error: none of the")


def test_a_table_of_only_failed_runs_says_so(good_result):
    import pandas as pd

    from kdrl.tables import summary_table

    df = pd.DataFrame([{**good_result, "status": "failed", "normalized_score": None}])
    tab = summary_table(df, "loss", "width", "normalized_score")
    assert "no ok runs (1 failed)" in tab.caption and tab.cells.empty


def test_time_to_score_reads_the_first_evaluation_at_the_score_and_counts_runs_that_never_got_there(tmp_path):
    """Teachers' time to a score (issue 26): since the process started where the run recorded it, else
    the fit's wall plus setup (marked ≈); a run that never reached it stays in the row's count."""
    from kdrl.tables import time_to_score, time_to_score_markdown

    def run(name: str, seed: int, hist: list, final: float, env: str = "MinAtar/Breakout-v1") -> None:
        d = tmp_path / name
        d.mkdir()
        body = {"kind": "teacher", "env_id": env, "seed": seed, "eval_history": hist, "eval_return_mean": final,
                "env_steps": 100, "job_wall_time_s": 600.0, "setup_s": 2.0}  # fmt: skip
        (d / "results.json").write_text(json.dumps(body))

    run("a", 1, [{"env_steps": 25, "return_mean": 9.0, "wall_s": 10.0, "process_s": 16.0},
                 {"env_steps": 50, "return_mean": 10.0, "wall_s": 20.0, "process_s": 26.0},
                 {"env_steps": 75, "return_mean": 12.0, "wall_s": 30.0, "process_s": 36.0}], 11.0)  # fmt: skip
    run("b", 2, [{"env_steps": 25, "return_mean": 11.0, "wall_s": 12.0, "process_s": 19.0}], 13.0)
    run("c", 3, [{"env_steps": 25, "return_mean": 3.0, "wall_s": 12.0, "process_s": 19.0}], 4.0)
    run("old", 0, [{"env_steps": 25, "return_mean": 60.0, "wall_s": 40.0}], 61.0, env="MinAtar/Freeway-v1")
    run("other", 0, [{"env_steps": 25, "return_mean": 60.0, "wall_s": 40.0}], 61.0, env="CartPole-v1")
    df = time_to_score([tmp_path], {"MinAtar/Breakout-v1": 10, "MinAtar/Freeway-v1": 50})
    by_seed = df[df["env_id"] == "MinAtar/Breakout-v1"].set_index("seed")
    assert by_seed.loc[1, "time_to_score_s"] == 26.0 and by_seed.loc[1, "steps_to_score"] == 50
    assert by_seed.loc[2, "time_to_score_s"] == 19.0 and not by_seed.loc[2, "approx"]
    assert not by_seed.loc[3, "reached"] and np.isnan(by_seed.loc[3, "time_to_score_s"])
    old = df[df["env_id"] == "MinAtar/Freeway-v1"].iloc[0]
    assert old["approx"] and old["time_to_score_s"] == 42.0  # wall 40 + setup 2
    assert "CartPole-v1" not in set(df["env_id"])
    md = time_to_score_markdown(df)
    breakout = next(line for line in md.splitlines() if line.startswith("| MinAtar/Breakout-v1"))
    assert "| 3 (1, 2, 3) | 2/3 |" in breakout and "0.4 [0.3–0.4] min" in breakout  # median of 26 s and 19 s
    assert "| 2/3 | 0.4 min |" in breakout  # of all three: 19 s, 26 s and never
    assert "38 [25–50]" in breakout and "9.3 [" in breakout  # steps; the final mean of 11, 13, 4
    assert "min ≈" in next(line for line in md.splitlines() if "Freeway" in line)


def test_budget_table_names_the_cheapest_budget_on_the_plateau_and_plots_it(tmp_path):

    from kdrl.tables import budget_markdown, budget_table, plot_budgets
    from tests.helpers import budget_frame

    df = budget_frame()
    tab = budget_table(df, ["env_id", "student_size"]).set_index("student_size")
    assert tab.loc["rusu_7", "plateau"] and tab.loc["rusu_7", "cheapest_on_plateau"] == 96_000
    assert tab.loc["rusu_7", "job_wall_s_at_cheapest"] == 240.0
    assert tab.loc["rusu_4", "plateau"] is not None and not tab.loc["rusu_4", "plateau"]  # still rising
    assert np.isnan(tab.loc["rusu_4", "cheapest_on_plateau"])
    md = budget_markdown(tab.reset_index(), ["env_id", "student_size"], "normalized_score")
    assert "| yes | 96,000 | 4.0 min |" in md and "24,000: 0.500 (n=3)" in md and "| no: still rising |" in md
    assert "stopped rising (rise ≤ 0.05 per doubling)" in md
    assert plot_budgets(df, "env_id", "student_size", "grad_steps", "normalized_score", tmp_path).is_file()


def test_end_slope_table_normalises_periodic_returns_by_the_reference_and_orders_sizes_largest_first(tmp_path):
    """issue 27: the convergence table reads each run's eval_history, rescored with the run's held-out
    reference (T, R): the periodic score divides by 10 teacher episodes, nan where they do not clearly
    beat random. A run whose teacher does not clearly beat random has no score (as its final one), a
    teacher run is not a student. Sizes largest first; the verdict per group; the plot written."""
    import json

    from kdrl.tables import end_slope_curves, end_slope_markdown, end_slope_table, plot_budgets

    steps = [10_000 * k for k in range(1, 11)]

    def write(name, size, ratio, rise, seed, **extra):
        hist = [
            {"env_steps": x, "return_mean": 10.0 + rise * np.log2(x / 10_000) + 0.1 * seed,
             "normalized_score": float("nan")}  # the periodic score: nan, as when 10 teacher episodes are too few
            for x in steps
        ]  # fmt: skip
        res = {
            "kind": "student", "status": "ok", "env_id": "MinAtar/Breakout-v1", "seed": seed,
            "student_size": size, "param_ratio": ratio, "eval_history": hist,
            "teacher_reference": {"return_mean": 20.0, "random_mean": 0.0}, **extra,
        }  # fmt: skip
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(res))

    for seed, rise in enumerate((3.0, 4.0, 5.0)):  # 0.15, 0.20, 0.25 normalised a doubling: mean 0.20
        write(f"rusu_4-{seed}", "rusu_4", 0.04, rise, seed)
    for seed in range(3):  # flat: every run the same slope, 0
        write(f"full-{seed}", "full", 1.0, 0.0, seed)
    write("full-weak-teacher", "full", 1.0, 9.0, 3, teacher_beats_random=False)  # no score: not in the slope
    write("teacher", "full", 1.0, 9.0, 4, kind="teacher")  # a teacher's curve: not a student's
    curves = end_slope_curves([tmp_path], ["env_id", "student_size"])
    assert len(curves) == 70 and curves["normalized_score"].isna().sum() == 10
    first = curves[(curves.student_size == "full") & (curves.seed == 0)].sort_values("env_steps")
    assert first["normalized_score"].iloc[0] == pytest.approx(10.0 / 20.0)  # (S - R) / (T - R) with the reference
    tab = end_slope_table(curves, ["env_id", "student_size"])
    assert list(tab.student_size) == ["full", "rusu_4"] and list(tab.runs) == [3, 3] and list(tab.last_n) == [3, 3]
    assert tab.slope_per_doubling.tolist() == pytest.approx([0.0, 4.0 / 20.0], abs=1e-9)
    assert tab.slope_low[0] == tab.slope_high[0] == pytest.approx(0.0)  # the point interval of identical slopes
    assert tab.slope_low[1] < 0.2 < tab.slope_high[1] and tab.slope_low[1] > 0  # a real interval, above 0
    assert tab.stopped_rising.tolist() == [True, False]
    assert tab.last_mean.tolist() == pytest.approx([(10.0 + 0.1) / 20.0, (10.0 + 4.0 * np.log2(10) + 0.1) / 20.0])
    md = end_slope_markdown(tab, ["env_id", "student_size"], "env_steps", "normalized_score")
    assert "| MinAtar/Breakout-v1 | rusu_4 | 3 |" in md and "no: still rising" in md
    assert "+0.000 ‡ (every run the same slope)" in md
    assert "1 of 2 cells stopped rising, 1 still rising, 0 can't tell." in md
    png = plot_budgets(curves, "env_id", "student_size", "env_steps", "normalized_score", tmp_path, filename="c.png")
    assert png.name == "c.png" and png.is_file()
