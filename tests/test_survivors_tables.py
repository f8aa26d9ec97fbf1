"""kdrl/tables.py against its surviving mutants (the scores room of docs/mutation.md): every number and
label kdrl-table publishes (rows, cells, captions, cross-task aggregates, budget and time-to-score
tables, the multi-task table) and what its plots draw, each checked against a computation written
here (a plain loop, numpy by hand, the documented formula) on small synthetic runs."""

from __future__ import annotations

import json
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from scipy.stats import trim_mean  # noqa: E402

from kdrl import tables as T  # noqa: E402
from kdrl.scores import normalized_bounds  # noqa: E402
from kdrl.statistics import (  # noqa: E402
    PLATEAU_MARGIN,
    aggregate_ci,
    bootstrap_ci,
    mean_ci,
    performance_profile,
    plateau,
    probability_of_improvement,
)
from tests.helpers import budget_frame  # noqa: E402

INF = math.inf
UNB = (-INF, INF)


# ---- helpers -----------------------------------------------------------------------------------------------
def write_json(d, body):
    d.mkdir(parents=True, exist_ok=True)
    (d / "results.json").write_text(json.dumps(body))
    return d / "results.json"


def write_cfg(d, text):
    (d / ".hydra").mkdir(parents=True, exist_ok=True)
    (d / ".hydra" / "config.yaml").write_text(text)
    return d


@pytest.fixture()
def figs(monkeypatch):
    """Keep the figures the plot functions close, so their artists can be read back."""
    real_close = plt.close
    real_close("all")
    monkeypatch.setattr(plt, "close", lambda *a, **k: None)
    yield lambda: [plt.figure(n) for n in plt.get_fignums()]
    real_close("all")


def p_greater(x, y):
    """P(X > Y) + P(X = Y) / 2 by a double loop."""
    s = sum((a > b) + 0.5 * (a == b) for a in x for b in y)
    return s / (len(x) * len(y))


# ---- one results body -> one row --------------------------------------------------------------------------
STUDENT = {
    "kind": "student",
    "status": "ok",
    "env_id": "CartPole-v1",
    "seed": 4,
    "loss": "kl",
    "temperature": 0.5,
    "width": 32,
    "env_steps": 800,
    "train_wall_time_s": 4.0,
    "normalized_score": 0.75,
    "config": {"distill": {"total_timesteps": 1000}, "algo": {"total_timesteps": 7}},
    "speed": {"to_90pct": {"env_steps": 300, "train_wall_s": 1.5}, "to_100pct": None},
    "teacher_reference": {"episodes": 100, "return_mean": 480.0, "return_se": 2.0, "random_mean": 21.0},
    "resources": {"student": {"params": 10, "bytes": 40}, "teacher": {"latency_us": 31.0}},
    "generalisation": {"heavy": {"student": 1.0, "teacher": 2.0}},
}


def test_flatten_row_by_hand():
    row = T.flatten(STUDENT)
    for k in T.FLAT_FIELDS:
        assert row[k] == STUDENT.get(k), k
    assert row["method"] == "kl (tau=0.5)"
    # reached: its own steps and wall; never reached: censored at the budget (distill's 1000), wall scaled
    assert row["to_90pct_reached"] is True and row["to_90pct_env_steps"] == 300 and row["to_90pct_wall_s"] == 1.5
    assert row["to_100pct_reached"] is False and row["to_100pct_env_steps"] == 1000.0
    assert row["to_100pct_wall_s"] == pytest.approx(4.0 * 1000 / 800)
    assert (row["reference_episodes"], row["reference_teacher_mean"], row["reference_teacher_se"]) == (100, 480.0, 2.0)
    assert row["reference_random_mean"] == 21.0
    assert row["student_params"] == 10 and row["student_bytes"] == 40 and row["teacher_latency_us"] == 31.0
    assert row["gen_heavy_student"] == 1.0 and row["gen_heavy_teacher"] == 2.0


@pytest.mark.parametrize(
    "wall, steps", [(None, 800), (4.0, None), (4.0, 0)]
)  # no wall time, or no steps to scale by: nan, not an error
def test_flatten_censored_wall_is_nan_without_wall_or_steps(wall, steps):
    body = {**STUDENT, "train_wall_time_s": wall, "env_steps": steps}
    row = T.flatten(body)
    assert math.isnan(row["to_100pct_wall_s"]) and row["to_90pct_wall_s"] == 1.5


def test_flatten_without_optional_sections():
    row = T.flatten({"kind": "teacher", "status": "ok", "loss": None})
    assert row["method"] == "teacher" and row["reference_random_mean"] is None
    assert not any(k.endswith("_reached") for k in row)


def test_budget_env_steps_reads_the_section_of_the_runs_kind():
    cfg = {"distill": {"total_timesteps": 1000}, "algo": {"total_timesteps": 5000}}
    assert T.budget_env_steps({"kind": "student", "config": cfg, "env_steps": 3}) == 1000.0
    assert T.budget_env_steps({"kind": "teacher", "config": cfg, "env_steps": 3}) == 5000.0
    # a student whose config has no distill budget: the steps it ran, not the teacher's budget
    assert T.budget_env_steps({"kind": "student", "config": {"algo": {"total_timesteps": 5}}, "env_steps": 3}) == 3.0
    assert T.budget_env_steps({"kind": "teacher", "env_steps": 12}) == 12.0
    assert math.isnan(T.budget_env_steps({"kind": "teacher"}))
    assert isinstance(T.budget_env_steps({"kind": "teacher", "config": {"algo": {"total_timesteps": 5}}}), float)


def test_method_name():
    assert T.method_name({"loss": "kl", "temperature": 1}) == "kl (tau=1)"
    assert T.method_name({"loss": "mse", "temperature": 1.0}) == "mse"  # not a tempered loss
    assert T.method_name({"loss": "kl", "temperature": float("nan")}) == "kl"
    assert T.method_name({"kind": "teacher"}) == "teacher" and T.method_name({"loss": None, "kind": "x"}) == "x"


# ---- files -------------------------------------------------------------------------------------------------
def test_read_result_refuses_bodies_without_kind_or_status(tmp_path):
    f = tmp_path / "results.json"
    for body in ({"kind": "student"}, {"status": "ok"}, [1, 2]):
        f.write_text(json.dumps(body))
        with pytest.raises(ValueError, match=r"^not a kdrl results file \(no kind/status\)$"):
            T.read_result(f)
    f.write_text(json.dumps({"kind": "k", "status": "s"}))
    assert T.read_result(f) == {"kind": "k", "status": "s"}


def test_find_results(tmp_path):
    a = write_json(tmp_path / "a", {"kind": "k", "status": "ok"})
    other = tmp_path / "other.json"
    other.write_text("{}")
    assert T.find_results([a]) == [a]
    assert T.find_results([tmp_path, a]) == [a]
    for bad in (other, tmp_path / "missing"):
        with pytest.raises(FileNotFoundError, match=f"^no such results file or directory: {bad}$"):
            T.find_results([bad])


def test_collect_reads_runs_a_results_file_itself_and_a_tidy_csv(tmp_path):
    tidy = pd.DataFrame({"status": ["ok", "ok"], "seed": [7, 8], "method": ["m", "m"], "normalized_score": [0.1, 0.2]})
    (tmp_path / "old").mkdir()
    csv = T.write_csv_atomic(tmp_path / "old" / "results.csv", tidy)
    assert list(pd.read_csv(csv).columns) == list(tidy.columns)  # no index column written
    pd.testing.assert_frame_equal(pd.read_csv(csv), tidy)
    d = write_json(tmp_path / "runs" / "r1", {**STUDENT, "seed": 1}).parent.parent
    direct = write_json(tmp_path / "r2", {**STUDENT, "seed": 2})
    df = T.collect([tmp_path / "nowhere", d, direct, csv])
    assert list(df.index) == list(range(5))
    assert df["status"].tolist() == ["unreadable", "ok", "ok", "ok", "ok"]
    assert df["seed"].iloc[1:].tolist() == [2, 1, 7, 8]  # results.json files in path order (r2 < runs), then the csv
    assert df["normalized_score"].iloc[3:].tolist() == [0.1, 0.2]
    # without a csv: the rows alone
    df = T.collect([d, direct])
    assert df["seed"].tolist() == [2, 1] and list(df.index) == [0, 1]


def test_disk_use_counts_files_and_checkpoints(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.pt").write_bytes(b"x" * (3 * 2**19))
    (tmp_path / "b.ckpt").write_bytes(b"x" * 2**19)
    (tmp_path / "c.txt").write_bytes(b"x" * 2**20)
    assert T.disk_use([tmp_path]) == "disk use: 3.0 MiB in 3 files (2.0 MiB checkpoints)"
    assert T.disk_use([tmp_path / "c.txt"]) == "disk use: 1.0 MiB in 1 files (0.0 MiB checkpoints)"


# ---- unfinished runs ---------------------------------------------------------------------------------------
DISTILL_CFG = """\
task: distill
seed: 3
env: {id: CartPole-v1}
loss: {name: kl, temperature: 0.5}
student: {width: 32, size: rusu_4, depth: 3}
control: teacher
baseline: null
alias: ${env.id}
distill: {total_timesteps: 5000}
"""


def test_job_config_resolves_what_it_can(tmp_path):
    assert T.job_config(write_cfg(tmp_path / "a", "x: 1\ny: ${x}\n")) == {"x": 1, "y": 1}
    # a resolver this process lacks: the whole config unresolved, not an error
    cfg = T.job_config(write_cfg(tmp_path / "b", "x: 1\ny: ${x}\nz: ${no_such_resolver:1}\n"))
    assert cfg == {"x": 1, "y": "${x}", "z": "${no_such_resolver:1}"}


def test_unfinished_row_from_a_distill_config(tmp_path):
    run = write_cfg(tmp_path / "run", DISTILL_CFG)
    row = T.unfinished_row(run)
    expect = {"kind": "student", "env_id": "CartPole-v1", "seed": 3, "loss": "kl", "temperature": 0.5, "width": 32,
              "student_size": "rusu_4", "depth": 3, "control": "teacher", "baseline": None}  # fmt: skip
    for k, v in expect.items():
        assert row[k] == v, k
    assert row["method"] == "kl (tau=0.5)" and row["status"] == "unfinished" and row["run_dir"] == str(run)
    assert "error" in row and row["error"] is None
    # the rest of the schema's columns are there, empty
    assert all(row[k] is None for k in T.FLAT_FIELDS if k not in (*expect, "status", "run_dir"))


@pytest.mark.parametrize(
    "text, kind, loss, temp, control",
    [
        (
            "task: distill\nbaseline: scratch\nloss: {name: kl, temperature: x}\ncontrol: 1\n",
            "student",
            "scratch",
            None,
            "1",
        ),
        ("task: distill\nbaseline: none_yet\nloss: {name: ce, temperature: 0.1}\n", "student", "ce", 0.1, "None"),
        ("task: multitask\nloss: {name: mse, temperature: 2}\n", "multitask", "mse", 2, "None"),
        ("task: teacher\nenv: {id: Acrobot-v1}\nseed: 1\nloss: {name: kl}\n", "teacher", None, None, None),
        ("task: search\n", "search", None, None, None),
        ("seed: 1\n", "None", None, None, None),
    ],
)
def test_unfinished_row_by_task(tmp_path, text, kind, loss, temp, control):
    row = T.unfinished_row(write_cfg(tmp_path / "r", text))
    baseline = next((ln.split(": ")[1] for ln in text.splitlines() if ln.startswith("baseline")), None)
    assert row["baseline"] == (baseline if kind in ("student", "multitask") else None)
    assert row["kind"] == kind and row["loss"] == loss and row["temperature"] == temp and row["control"] == control
    if kind == "teacher":
        assert row["env_id"] == "Acrobot-v1" and row["seed"] == 1 and row["method"] == "teacher"


def test_find_and_collect_unfinished(tmp_path):
    root = tmp_path / "sweep"
    a = write_cfg(root / "a", DISTILL_CFG)
    write_cfg(root / "b", DISTILL_CFG)
    write_json(root / "b", {"kind": "student", "status": "ok"})  # finished: not unfinished
    deep = write_cfg(root / "x" / "y" / "c", DISTILL_CFG.replace("seed: 3", "seed: 5"))
    broken = write_cfg(root / "0broken", "key: [unclosed\n")
    assert T.find_unfinished([tmp_path / "missing", root]) == sorted([a, deep, broken])
    assert T.find_unfinished([a]) == [a]
    assert T.find_unfinished([root / "b"]) == []
    df = T.collect_unfinished([root])  # the config being written is skipped, the others kept in order
    assert df["run_dir"].tolist() == [str(a), str(deep)] and df["seed"].tolist() == [3, 5]
    assert set(df["status"]) == {"unfinished"}


# ---- cells: bounds, aggregate, cell text ------------------------------------------------------------------
def test_metric_bounds():
    g = pd.DataFrame({"env_id": ["CartPole-v1"] * 3, "teacher_return_mean": [500.0, 400.0, 450.0],
                      "random_return_mean": [20.0, 25.0, 10.0],
                      "reference_teacher_mean": [480.0, np.nan, 300.0],
                      "reference_random_mean": [22.0, np.nan, 30.0]})  # fmt: skip
    want = normalized_bounds(
        "CartPole-v1", [480.0, 400.0, 300.0], [22.0, 25.0, 30.0]
    )  # the reference where there is one
    assert T.metric_bounds(g, "normalized_score") == pytest.approx(want)
    assert want != pytest.approx(normalized_bounds("CartPole-v1", [500.0, 400.0, 450.0], [20.0, 25.0, 10.0]))
    no_ref = g.drop(columns=["reference_teacher_mean", "reference_random_mean"])
    assert T.metric_bounds(no_ref, "normalized_score") == pytest.approx(
        normalized_bounds("CartPole-v1", [500.0, 400.0, 450.0], [20.0, 25.0, 10.0])
    )
    assert T.metric_bounds(g.drop(columns=["random_return_mean"]), "normalized_score") == UNB
    assert T.metric_bounds(g, "eval_return_mean") == (0.0, 500.0)
    assert T.metric_bounds(g, "teacher_return_mean") == (0.0, 500.0)
    assert T.metric_bounds(g, "action_agreement") == (0.0, 1.0)
    assert T.metric_bounds(g, "params") == UNB
    two = g.assign(env_id=["CartPole-v1", "Acrobot-v1", "CartPole-v1"])
    assert T.metric_bounds(two, "eval_return_mean") == UNB
    assert T.metric_bounds(g.assign(env_id=[np.nan, "Acrobot-v1", np.nan]), "eval_return_mean") == (-500.0, 0.0)
    assert T.metric_bounds(g.drop(columns=["env_id"]), "eval_return_mean") == UNB
    assert T.metric_bounds(g.assign(env_id=np.nan), "eval_return_mean") == UNB


def _ok(**kw):
    return {"status": "ok", "env_id": "CartPole-v1", "teacher_return_mean": 500.0, "random_return_mean": 0.0, **kw}


def test_aggregate_cells_by_hand():
    groups = {
        # (method, width): scores; CartPole with T=500 R=0: the score lies in [0, 1]
        ("b", 64.0): [0.99, 1.0, 0.6, 0.97, 0.98],  # the interval's top clipped at 1
        ("a", 64.0): [1e-9, 1e-9, 0.5, 0.7, 1.5e-9],  # two at the bound 0 (within 1e-9), the 1.5e-9 not
        ("a", np.nan): [0.2, 0.4, np.nan],  # a width-less group is kept; one refused score
        ("c", 64.0): [np.nan, np.nan],  # every score refused
    }
    rows = [_ok(method=m, width=w, normalized_score=v, param_ratio=0.25 if m == "a" else 0.5)
            for (m, w), vals in groups.items() for v in vals]  # fmt: skip
    rows.append({**_ok(method="a", width=64.0, normalized_score=0.0), "status": "failed"})
    agg = T.aggregate(pd.DataFrame(rows), ["method", "width"], "normalized_score")
    assert agg["method"].tolist() == ["a", "a", "b", "c"]  # sorted, nan width last
    assert agg["width"].iloc[0] == 64.0 and math.isnan(agg["width"].iloc[1])
    for (m, w), vals in groups.items():
        r = agg[(agg["method"] == m) & ((agg["width"] == w) if w == w else agg["width"].isna())].iloc[0]
        v = np.array([x for x in vals if not math.isnan(x)])
        assert r["n"] == len(v) and r["refused"] == len(vals) - len(v)
        if not len(v):
            assert math.isnan(r["mean"]) and math.isnan(r["iqm"]) and r["at_bound"] == 0
            continue
        ci = mean_ci(v, bounds=(0.0, 1.0))
        assert r["mean"] == pytest.approx(v.mean()) and r["iqm"] == pytest.approx(trim_mean(v, 0.25))
        assert (r["ci_low"], r["ci_high"], r["flag"]) == (pytest.approx(ci.low), pytest.approx(ci.high), ci.flag)
        assert r["param_ratio"] == pytest.approx(0.25 if m == "a" else 0.5)
    b = agg[agg["method"] == "b"].iloc[0]
    assert b["ci_high"] == 1.0 and mean_ci([0.99, 1.0, 0.6, 0.97, 0.98]).high > 1.0  # clipping mattered
    a = agg.iloc[0]
    assert a["at_bound"] == 2 and a["flag"] == ""  # |1e-9 - 0| <= 1e-9 x max(|x|, 1); 1.5e-9 is not
    assert agg[agg["method"] == "b"]["at_bound"].iloc[0] == 1
    assert {"flag", "at_bound", "refused", "iqm", "ci_low", "ci_high", "n", "mean"} <= set(agg.columns)


def test_aggregate_at_bound_tolerance_scales_with_the_values():
    # eval returns on CartPole [0, 500]: the tolerance is 1e-9 x 500, so 500 - 1e-7 is at the bound
    vals = [500.0, 500.0, 500.0 - 1e-7, 300.0, 400.0]
    df = pd.DataFrame([_ok(method="m", eval_return_mean=v) for v in vals])
    r = T.aggregate(df, ["method"], "eval_return_mean").iloc[0]
    assert r["at_bound"] == 3 and r["flag"] == "at bound" and math.isnan(r["param_ratio"])
    # unbounded metric: nothing is at a bound
    df = pd.DataFrame([_ok(method="m", params=v) for v in (1.0, 1.0, 2.0)])
    r = T.aggregate(df, ["method"], "params").iloc[0]
    assert r["at_bound"] == 0 and r["mean"] == pytest.approx(4 / 3)


def test_aggregate_speed_metric_is_a_median_with_a_bootstrap_interval():
    steps = [100.0, 200.0, 250.0, 900.0, 1000.0]
    reached = [True, True, True, False, False]
    df = pd.DataFrame([_ok(method="m", to_90pct_env_steps=s, to_90pct_reached=h, to_90pct_wall_s=s / 100)
                       for s, h in zip(steps, reached)])  # fmt: skip
    r = T.aggregate(df, ["method"], "to_90pct_env_steps").iloc[0]
    assert r["mean"] == 250.0 and np.mean(steps) != 250.0
    lo, hi = bootstrap_ci(steps, np.median)
    assert (r["ci_low"], r["ci_high"]) == (lo, hi) and (lo, hi) != bootstrap_ci(steps)
    assert r["flag"] == "" and r["reached"] == pytest.approx(0.6)
    w = T.aggregate(df, ["method"], "to_90pct_wall_s").iloc[0]
    assert w["mean"] == 2.5 and w["reached"] == pytest.approx(0.6)
    no_reached = T.aggregate(df.drop(columns=["to_90pct_reached"]), ["method"], "to_90pct_env_steps").iloc[0]
    assert math.isnan(no_reached["reached"])
    assert "reached" not in T.aggregate(df.assign(x=1.0), ["method"], "x").columns  # not a speed metric


def _cell_row(**kw):
    base = {"mean": 0.5, "ci_low": 0.4, "ci_high": 0.625, "flag": "", "n": 5, "at_bound": 0, "refused": 0}
    return pd.Series({**base, **kw})


def test_cell_text():
    assert T._cell(_cell_row(), True) == "50.0 [40.0, 62.5]"
    assert T._cell(_cell_row(mean=123.456, ci_low=100.0, ci_high=150.25), False) == "123 [100, 150]"
    assert T._cell(_cell_row(flag="at bound", at_bound=3, mean=1.0), True) == "100.0 ‡ (3/5 at the bound)"
    assert T._cell(_cell_row(flag="no spread"), True) == "50.0 ‡ (no spread)"
    assert T._cell(_cell_row(reached=0.6), True) == "50.0 [40.0, 62.5] (3/5 reached)"
    assert T._cell(_cell_row(reached=np.nan), True) == "50.0 [40.0, 62.5]"
    assert T._cell(_cell_row(refused=2), True) == "50.0 [40.0, 62.5] (2 refused)"
    assert T._cell(_cell_row(n=4), True) == "50.0 [40.0, 62.5] †"  # fewer than MIN_SEEDS = 5
    assert T._cell(_cell_row(n=6), True) == "50.0 [40.0, 62.5]"
    no_refused = _cell_row().drop("refused")
    assert T._cell(no_refused, True) == "50.0 [40.0, 62.5]"
    everything = _cell_row(n=4, reached=0.5, refused=1, flag="no spread")
    assert T._cell(everything, False) == "0.5 ‡ (no spread) (2/4 reached) (1 refused) †"


# ---- the table ---------------------------------------------------------------------------------------------
def _agg(cols, ratios):
    rows = []
    for m in ("kl", "mse"):
        for c, ratio in ratios.items():
            rows.append({"method": m, cols: c, "n": 5, "refused": 0, "mean": 0.5, "ci_low": 0.4, "ci_high": 0.6,
                         "flag": "", "at_bound": 0, "param_ratio": ratio, "iqm": 0.5})  # fmt: skip
    return pd.DataFrame(rows)


def test_pivot_orders_named_sizes_largest_first_and_widths_by_value():
    sizes = {"a_small": 0.1, "b_big": 0.9, "c_mid": 0.5}
    table = T.pivot(_agg("student_size", sizes), "method", "student_size", True)
    assert list(table.columns) == sorted(sizes, key=lambda s: -sizes[s]) == ["b_big", "c_mid", "a_small"]
    assert list(table.index) == ["kl", "mse"] and table.at["kl", "b_big"] == "50.0 [40.0, 60.0]"
    widths = {16: 0.1, 64: 0.9, 32: 0.5}
    table = T.pivot(_agg("width", widths), "method", "width", False)
    assert list(table.columns) == [16, 32, 64] and table.at["mse", 32] == "0.5 [0.4, 0.6]"
    no_ratio = _agg("student_size", sizes).drop(columns=["param_ratio"])
    assert list(T.pivot(no_ratio, "method", "student_size", True).columns) == ["a_small", "b_big", "c_mid"]
    assert T.pivot(pd.DataFrame(), "method", "width", True).empty


def test_col_label():
    df = pd.DataFrame({"width": [64, 64, 128], "student_size": ["s", "s", "u"], "param_ratio": [0.07, 0.08, np.nan]})
    assert T.col_label(df, "width", 64) == "width 64 (7.5% params)"
    assert T.col_label(df, "student_size", "s") == "s (7.5% params)"
    assert T.col_label(df, "width", 128) == "width 128" and T.col_label(df, "student_size", "u") == "u"
    assert T.col_label(df, "seed", 3) == "seed 3"
    assert T.col_label(df.drop(columns=["param_ratio"]), "student_size", "s") == "student_size s"


def test_to_markdown_and_to_latex():
    df = pd.DataFrame({"width": [64, 128], "param_ratio": [0.05, 0.2]})
    table = pd.DataFrame({64: ["50.0 [40.0, 60.0]", None], 128: ["90.0 ‡ (no spread)", "10_0%"]}, index=["kl", "m_x"])
    md = T.to_markdown(table, df, "method", "width")
    assert md.split("\n") == [
        "| method | width 64 (5.0% params) | width 128 (20.0% params) |",
        "|---|---|---|",
        "| kl | 50.0 [40.0, 60.0] | 90.0 ‡ (no spread) |",
        "| m_x | – | 10_0% |",
    ]
    tex = T.to_latex(table, df, "row_key", "width", "a_b 5%")
    assert tex == (
        "\\begin{table}[t]\n\\centering\n\\caption{a\\_b 5\\%}\n\\begin{tabular}{lcc}\n\\toprule\n"
        "row\\_key & width 64 (5.0\\% params) & width 128 (20.0\\% params) \\\\\n\\midrule\n"
        "kl & 50.0 [40.0, 60.0] & 90.0 ‡ (no spread) \\\\\nm\\_x & -- & 10\\_0\\% \\\\\n"
        "\\bottomrule\n\\end{tabular}\n\\end{table}\n"
    )


def test_mark_incomplete_counts_finished_runs_of_each_cell():
    def run(method, width, status, score=0.5):
        return {"status": status, "method": method, "width": width, "env_id": "CartPole-v1", "normalized_score": score}

    rows = [run("kl", 64, "ok", s) for s in (0.4, 0.5, 0.6)] + [run("kl", 64, "unfinished"), run("kl", 64, "pruned")]
    rows += [run("kl", 256, "ok", s) for s in (0.1, 0.2)]
    rows += [run("kl", 128, "unfinished"), run("kl", 128, "unfinished")]  # a column no run finished yet
    rows += [run("mse", 64, "failed"), run("mse", 64, "unfinished")]  # a row no ok run has
    df = pd.DataFrame(rows)
    table = T.pivot(T.aggregate(df, ["method", "width"], "normalized_score"), "method", "width", True)
    assert list(table.columns) == [64, 256]
    marked = T.mark_incomplete(table, df, "method", "width")
    c = mean_ci([0.4, 0.5, 0.6])  # no teacher/random columns: the score is unbounded
    assert table.at["kl", 64] == f"{100 * c.mean:.1f} [{100 * c.low:.1f}, {100 * c.high:.1f}] †"
    assert marked.at["kl", 64] == f"{table.at['kl', 64]} ⧗ n=3 of 4"  # 3 ok + 1 unfinished, the pruned run not counted
    assert marked.at["kl", 128] == "⧗ n=0 of 2" and marked.at["mse", 64] == "⧗ n=1 of 2"
    assert marked.at["kl", 256] == table.at["kl", 256]
    assert not isinstance(marked.at["mse", 128], str) and not isinstance(marked.at["mse", 256], str)
    assert list(marked.index) == ["kl", "mse"] and list(marked.columns)[:3] == [64, 128, 256]
    # nothing unfinished: the same table back
    done = df[df["status"] != "unfinished"]
    assert T.mark_incomplete(table, done, "method", "width") is table
    assert list(table.columns) == [64, 256]  # the input is not changed


def test_mark_incomplete_keeps_named_sizes_largest_first():
    """A partial compression table (one run still going) keeps pivot()'s order 25%, 7%, 4%, not a-z."""
    rows = [
        {"status": "ok", "env_id": "E", "student_size": size, "normalized_score": 0.5, "param_ratio": ratio}
        for size, ratio in (("rusu_25", 0.25), ("rusu_7", 0.065), ("rusu_4", 0.037))
        for _ in range(2)
    ] + [{"status": "unfinished", "env_id": "E", "student_size": "rusu_7", "param_ratio": 0.065}]
    df = pd.DataFrame(rows)
    table = T.pivot(T.aggregate(df[df["status"] == "ok"], ["env_id", "student_size"], "normalized_score"),
                    "env_id", "student_size", True)  # fmt: skip
    assert list(table.columns) == ["rusu_25", "rusu_7", "rusu_4"]
    marked = T.mark_incomplete(table, df, "env_id", "student_size")
    assert list(marked.columns) == ["rusu_25", "rusu_7", "rusu_4"] and "⧗ n=2 of 3" in marked.at["E", "rusu_7"]


def test_mark_incomplete_leaves_mixed_labels_unsorted():
    table = pd.DataFrame({"b": ["x"]}, index=["r"])
    df = pd.DataFrame([{"status": "unfinished", "m": "r", "c": 1}, {"status": "ok", "m": "r", "c": "b"}])
    marked = T.mark_incomplete(table, df, "m", "c")
    assert list(marked.columns) == ["b", 1] and marked.at["r", 1] == "⧗ n=0 of 1"


def _runs(spec, env="CartPole-v1", metric="normalized_score", **extra):
    """spec: {(method, width): [scores]} -> ok rows."""
    return [{"status": "ok", "method": m, "width": w, "env_id": env, metric: v, "param_ratio": w / 1000, **extra}
            for (m, w), vals in spec.items() for v in vals]  # fmt: skip


def test_summary_table_caption_counts_and_cells():
    rows = _runs(
        {("kl", 64): [0.5, 0.6, 0.7, 0.55, 0.65], ("kl", 128): [0.8, 0.9, np.nan], ("mse", 64): [0.3, 0.35, 0.4]}
    )
    rows += [{"status": "failed", "method": "kl", "width": 64, "env_id": "CartPole-v1"}] * 2
    rows += [{"status": "pruned", "method": "kl", "width": 64, "env_id": "CartPole-v1"}]
    df = pd.DataFrame(rows)
    tab = T.summary_table(df, "method", "width", "normalized_score")
    ok = 11  # 5 + 3 + 3 ok runs (one with a refused score)
    assert tab.caption == (
        "normalized_score (% of teacher): mean [95% CI] over n = 2/3/5 seeds; CI: " + T.CI_NAME + "; † n < 5; "
        "‡ no reliable interval (most seeds tied at a bound of the score, e.g. CartPole's 500, or no spread); "
        f"{ok} ok runs, 2 failed, 1 pruned by a search (stopped early; not in the table), 1 with the score refused "
        "(teacher not better than random); teacher T and random R from each run's own final held-out episodes "
        "(no stored teacher reference)"
    )
    lines = tab.markdown.split("\n")
    assert lines[0] == "| method | width 64 (6.4% params) | width 128 (12.8% params) |" and len(lines) == 4
    assert "geometric mean" not in tab.markdown  # rows are methods, not envs
    assert "\\caption{normalized\\_score (\\% of teacher)" in tab.latex and "method & width 64" in tab.latex
    # the IQM table: rows x cols in % (1 decimal)
    for (m, w), vals in {("kl", 64): [0.5, 0.6, 0.7, 0.55, 0.65], ("mse", 64): [0.3, 0.35, 0.4]}.items():
        assert tab.iqm.at[m, w] == round(100 * trim_mean(vals, 0.25), 1)
    assert tab.cells.set_index(["method", "width"]).at[("kl", 128), "refused"] == 1


def test_summary_table_iqm_is_rounded_to_one_decimal_and_plain_metrics_stay_as_they_are():
    vals = [0.123456, 0.2, 0.3]
    df = pd.DataFrame(_runs({("kl", 64): vals}))
    tab = T.summary_table(df, "method", "width", "normalized_score")
    assert tab.iqm.at["kl", 64] == 20.8 and tab.iqm.shape == (1, 1)  # trim_mean of 3 cuts nothing: 62.3456 / 3 = 20.78
    df = pd.DataFrame(_runs({("kl", 64): [1.23456, 2.0, 3.0]}, metric="params"))
    tab = T.summary_table(df, "method", "width", "params")
    assert tab.iqm.at["kl", 64] == round(np.mean([1.23456, 2.0, 3.0]), 1) == 2.1
    assert tab.caption.startswith("params: mean [95% CI] over n = 3 seeds;")
    df = pd.DataFrame(_runs({("kl", 64): [0.12345, 0.12345, 0.12345, 0.13, 0.11]}))
    tab = T.summary_table(df, "method", "width", "normalized_score")
    assert tab.iqm.at["kl", 64] == round(100 * trim_mean([0.12345] * 3 + [0.13, 0.11], 0.25), 1) == 12.3


def test_summary_table_geometric_mean_row_only_for_a_fraction_over_several_envs():
    rows = _runs({("kl", 64): [0.5, 0.5]}, env="CartPole-v1") + _runs({("kl", 64): [2.0, 2.0]}, env="Acrobot-v1")
    df = pd.DataFrame(rows)
    md = T.summary_table(df, "env_id", "width", "normalized_score").markdown.split("\n")
    assert md[-1] == "| geometric mean | 100.0 |" and md[0].startswith("| env_id |") and len(md) == 5
    one_env = pd.DataFrame(_runs({("kl", 64): [0.5, 0.5]}))
    assert "geometric" not in T.summary_table(one_env, "env_id", "width", "normalized_score").markdown
    raw = df.rename(columns={"normalized_score": "params"})
    assert "geometric" not in T.summary_table(raw, "env_id", "width", "params").markdown
    two_methods = pd.DataFrame(_runs({("kl", 64): [0.5, 0.5], ("mse", 64): [0.5, 0.5]}))
    assert "geometric" not in T.summary_table(two_methods, "method", "width", "normalized_score").markdown


def test_summary_table_speed_metric_caption():
    df = pd.DataFrame(_runs({("kl", 64): [100.0, 200.0, 300.0]}, metric="to_90pct_env_steps", to_90pct_reached=True))
    tab = T.summary_table(df, "method", "width", "to_90pct_env_steps")
    assert tab.caption.startswith(
        "to_90pct_env_steps: median (censored at the budget) [95% CI] over n = 3 seeds; CI: percentile bootstrap; † n < 5;"
    )
    assert "3 ok runs, 0 failed;" in tab.caption and "pruned" not in tab.caption and "refused" not in tab.caption
    assert "(3/3 reached)" in tab.markdown


def test_summary_table_with_only_unfinished_and_failed_runs():
    rows = [{"status": "unfinished", "method": "kl", "width": 64, "env_id": "CartPole-v1"}] * 2
    rows += [{"status": "failed", "method": "kl", "width": 64, "env_id": "CartPole-v1"}]
    df = pd.DataFrame(rows)
    tab = T.summary_table(df, "method", "width", "normalized_score")
    caption = f"normalized_score: no ok runs yet (1 failed); 2 run(s) not finished yet ({T.incomplete_legend()})"
    assert tab.caption == caption
    assert tab.markdown.split("\n") == ["| method | width 64 |", "|---|---|", "| kl | ⧗ n=1 of 3 |"]
    assert tab.latex == T.to_latex(pd.DataFrame({64: ["⧗ n=1 of 3"]}, index=["kl"]), df, "method", "width", caption)
    assert tab.cells.empty and isinstance(tab.iqm, pd.DataFrame) and tab.iqm.empty
    assert T.incomplete_legend().endswith("(the others still running or not started): its numbers will change")
    # nothing finished, nothing running: the caption is the table
    failed = T.summary_table(df.assign(status="failed"), "method", "width", "normalized_score")
    assert failed.caption == "normalized_score: no ok runs (3 failed)"
    assert failed.markdown == f"_{failed.caption}_" and failed.latex == f"% {failed.caption}\n"
    assert isinstance(failed.iqm, pd.DataFrame) and failed.iqm.empty


def test_summary_table_marks_incomplete_cells():
    rows = _runs({("kl", 64): [0.5, 0.6], ("mse", 64): [0.3, 0.4]})
    rows += [{"status": "unfinished", "method": "mse", "width": 128, "env_id": "CartPole-v1", "param_ratio": np.nan}]
    tab = T.summary_table(pd.DataFrame(rows), "method", "width", "normalized_score")
    assert tab.markdown.split("\n")[0] == "| method | width 64 (6.4% params) | width 128 |"
    assert tab.markdown.split("\n")[3].endswith("| ⧗ n=0 of 1 |") and "1 run(s) not finished yet" in tab.caption
    assert tab.markdown.split("\n")[2].endswith("] † | – |")


def test_an_unfinished_run_without_a_column_value_is_marked_not_a_crash():
    rows = _runs({("kl", 64): [0.5, 0.6]}) + [{"status": "unfinished", "method": "kl", "width": np.nan}]
    tab = T.summary_table(pd.DataFrame(rows), "method", "width", "normalized_score")
    assert "⧗ n=0 of 1" in tab.markdown


def test_summary_table_does_not_count_unfinished_runs_as_ok():
    rows = _runs({("kl", 64): [0.5, 0.6]}) + [{"status": "unfinished", "method": "kl", "width": 64}]
    assert "2 ok runs, 0 failed" in T.summary_table(pd.DataFrame(rows), "method", "width", "normalized_score").caption


def test_reference_note():
    ref = {"reference_episodes": 100, "reference_teacher_se": 2.0}
    rows = [
        {"status": "ok", "env_id": "CartPole-v1", "reference_teacher_mean": 480.0, "seed": s, **ref} for s in (0, 1)
    ]
    rows += [{"status": "ok", "env_id": "CartPole-v1", "reference_teacher_mean": 470.0, "seed": 2, **ref}]
    rows += [{"status": "ok", "env_id": "Acrobot-v1", "reference_teacher_mean": -80.0, "seed": 0,
              "reference_episodes": 50, "reference_teacher_se": 0.5}]  # fmt: skip
    rows += [{"status": "ok", "env_id": "Acrobot-v1", "reference_teacher_mean": np.nan, "seed": 1}]
    rows += [{"status": "failed", "env_id": "Pong", "reference_teacher_mean": 1.0, "seed": 1, **ref}]
    assert T.reference_note(pd.DataFrame(rows)) == (
        "; teacher reference (50/100 held-out episodes per teacher): Acrobot-v1 T = -80.0 ± 0.5 (± se); "
        "CartPole-v1 T = 480.0 ± 2.0, 470.0 ± 2.0 (± se); 1 runs without one (T from their final episodes)"
    )
    old = "; teacher T and random R from each run's own final held-out episodes (no stored teacher reference)"
    assert T.reference_note(pd.DataFrame([{"status": "ok", "env_id": "x"}])) == old
    assert T.reference_note(pd.DataFrame([{"status": "ok", "reference_teacher_mean": np.nan}])) == old


def test_geomean_row_scales_the_geometric_mean_to_percent():
    agg = pd.DataFrame({"width": [1, 1, 2], "mean": [0.25, 1.0, 0.5]})
    assert T.geomean_row(agg, "width", [1, 2]) == "| geometric mean | 50.0 | 50.0 |"


def test_metric_kinds():
    assert T.is_speed_metric("to_90pct_env_steps") and T.is_speed_metric("to_90pct_wall_s")
    assert not T.is_speed_metric("to_90pct_reached") and not T.is_speed_metric("x_env_steps")
    assert not T.is_speed_metric("top_wall_s") and T.is_speed_metric("to_x_wall_s")
    assert T.is_fraction_of_teacher("normalized_score") and T.is_fraction_of_teacher("raw_return_ratio")
    assert not T.is_fraction_of_teacher("eval_return_mean")


# ---- across tasks ------------------------------------------------------------------------------------------
CROSS = {
    # method -> env -> scores; "b_big" has the larger students (param_ratio), so it comes first though b > a
    "a_small": {"A": [0.2, 0.4, 0.3], "B": [0.9, 1.1]},
    "b_big": {"A": [0.5, 0.6, 0.7, 0.5], "B": [1.2, 1.0, 1.3]},
}


def _cross_df():
    rows = [{"status": "ok", "m": m, "env": t, "score": v, "param_ratio": 0.1 if m == "a_small" else 0.5}
            for m, per in CROSS.items() for t, vals in per.items() for v in vals]  # fmt: skip
    rows += [{"status": "failed", "m": "a_small", "env": "A", "score": 5.0, "param_ratio": 0.1}]
    rows += [{"status": "ok", "m": "a_small", "env": "B", "score": np.nan, "param_ratio": 0.1}]
    rows += [{"status": "ok", "m": "c_none", "env": "A", "score": np.inf, "param_ratio": np.nan}]
    return pd.DataFrame(rows[::-1])


def test_task_scores_are_the_finite_scores_of_ok_runs():
    got = T.task_scores(_cross_df(), "env", "m", "score")
    assert list(got) == ["a_small", "b_big"]
    for m, per in CROSS.items():
        assert list(got[m]) == ["A", "B"]
        for t, vals in per.items():
            assert sorted(got[m][t].tolist()) == sorted(vals) and got[m][t].dtype == float


def test_cross_task_by_hand():
    ct = T.cross_task(_cross_df(), "env", "m", "score")
    assert ct.cells["method"].tolist() == ["b_big", "a_small"]  # larger students first
    for _, r in ct.cells.iterrows():
        per = {t: np.array(v[::-1]) for t, v in CROSS[r["method"]].items()}  # the frame lists runs reversed
        pooled = np.concatenate(list(per.values()))
        assert r["tasks"] == 2 and r["runs"] == len(pooled)
        assert r["iqm"] == pytest.approx(trim_mean(pooled, 0.25))
        assert r["mean"] == pytest.approx(np.mean([v.mean() for v in per.values()]))
        i, a = aggregate_ci(per, "iqm"), aggregate_ci(per, "mean")
        assert (r["iqm_low"], r["iqm_high"]) == pytest.approx(i[1:]) and (
            r["mean_low"],
            r["mean_high"],
        ) == pytest.approx(a[1:])
        assert r["iqm_low"] <= r["iqm"] <= r["iqm_high"] and r["mean_low"] <= r["mean"] <= r["mean_high"]
    # P(b > a): per task by a double loop, averaged over the tasks
    assert ct.improvement[["x", "y"]].values.tolist() == [["b_big", "a_small"]]
    want = np.mean([p_greater(CROSS["b_big"][t], CROSS["a_small"][t]) for t in ("A", "B")])
    imp = ct.improvement.iloc[0]
    assert imp["p"] == pytest.approx(want)
    rev = {m: {t: v[::-1] for t, v in per.items()} for m, per in CROSS.items()}
    _, lo, hi = probability_of_improvement(rev["b_big"], rev["a_small"])
    assert (imp["low"], imp["high"]) == pytest.approx((lo, hi))
    # profiles: 101 thresholds from 0 to 1.02 x the best score; the fraction above each, tasks weighted equally
    top = 1.3
    for m, (taus, frac, flo, fhi) in ct.profiles.items():
        assert taus == pytest.approx(np.linspace(0.0, top * 1.02, 101))
        for k in (0, 30, 60, 100):
            by_hand = np.mean([np.mean(np.array(v) > taus[k]) for v in CROSS[m].values()])
            assert frac[k] == pytest.approx(by_hand)
        _, plo, phi = performance_profile(rev[m], taus)
        assert flo == pytest.approx(plo) and fhi == pytest.approx(phi)
    assert list(ct.profiles) == ["b_big", "a_small"]
    # the Markdown: a plain metric with 3 significant digits
    lines = ct.markdown.split("\n")
    assert lines[0] == (
        "score over env: IQM of all runs and mean of the per-task means, 95% stratified-bootstrap CI "
        "(runs resampled within each task, 2,000 resamples, seed 0)"
    )
    assert lines[1:4] == ["", "| m | tasks | runs | IQM [95% CI] | mean [95% CI] |", "|---|---|---|---|---|"]
    b = ct.cells.iloc[0]
    assert lines[4] == (
        f"| b_big | 2 | 7 | {b['iqm']:.3g} [{b['iqm_low']:.3g}, {b['iqm_high']:.3g}] | "
        f"{b['mean']:.3g} [{b['mean_low']:.3g}, {b['mean_high']:.3g}] |"
    )
    assert lines[6:] == [
        "",
        "P(X > Y): a run of X beats a run of Y on the same task (ties count half), averaged over tasks",
        "",
        "| X | Y | P(X > Y) [95% CI] |",
        "|---|---|---|",
        f"| b_big | a_small | {imp['p']:.2f} [{imp['low']:.2f}, {imp['high']:.2f}] |",
    ]


def test_cross_task_in_percent_of_teacher_compare_and_order():
    df = _cross_df().rename(columns={"score": "normalized_score"}).drop(columns=["param_ratio"])
    ct = T.cross_task(df, "env", "m", "normalized_score", compare=[("a_small", "b_big")])
    assert ct.cells["method"].tolist() == ["a_small", "b_big"]  # no sizes: a-z
    assert ct.improvement[["x", "y"]].values.tolist() == [["a_small", "b_big"]]
    lines = ct.markdown.split("\n")
    assert lines[0].startswith("normalized_score (% of teacher) over env: IQM")
    a = ct.cells.iloc[0]
    assert lines[4] == (
        f"| a_small | 2 | 5 | {100 * a['iqm']:.1f} [{100 * a['iqm_low']:.1f}, {100 * a['iqm_high']:.1f}] | "
        f"{100 * a['mean']:.1f} [{100 * a['mean_low']:.1f}, {100 * a['mean_high']:.1f}] |"
    )
    with pytest.raises(ValueError, match=r"^--compare: no runs of 'zz' \(have: a_small, b_big\)$"):
        T.cross_task(df, "env", "m", "normalized_score", compare=[("a_small", "zz")])
    with pytest.raises(ValueError, match=r"^--compare: no runs of 'zz' \(have: a_small, b_big\)$"):
        T.cross_task(df, "env", "m", "normalized_score", compare=[("zz", "a_small")])


def test_cross_task_of_one_method_has_no_comparison():
    df = _cross_df()
    ct = T.cross_task(df[df["m"] == "a_small"], "env", "m", "score")
    assert ct.improvement.empty and list(ct.improvement.columns) == ["x", "y", "p", "low", "high"]
    assert "P(X > Y)" not in ct.markdown and len(ct.markdown.split("\n")) == 5
    # scores below 1: thresholds up to 1.02
    small = pd.DataFrame([{"status": "ok", "m": "x", "env": "A", "score": v} for v in (0.1, 0.2)])
    taus = T.cross_task(small, "env", "m", "score").profiles["x"][0]
    assert taus[-1] == pytest.approx(1.02) and len(taus) == 101 and taus[0] == 0.0


def test_plot_profiles_draws_each_methods_profile_and_band(tmp_path, figs):
    df = _cross_df().rename(columns={"score": "normalized_score"})
    ct = T.cross_task(df, "env", "m", "normalized_score")
    paths = T.plot_profiles(ct, tmp_path, "normalized_score")
    assert paths == [tmp_path / "profiles.png", tmp_path / "profiles.svg"] and all(p.is_file() for p in paths)
    (fig,) = figs()
    ax = fig.axes[0]
    lines = [ln for ln in ax.get_lines() if ln.get_label() in ct.profiles]
    assert [ln.get_label() for ln in lines] == ["b_big", "a_small"]
    for ln, (taus, frac, _lo, _hi) in zip(lines, ct.profiles.values()):
        assert np.asarray(ln.get_xdata()) == pytest.approx(100 * taus) and np.asarray(ln.get_ydata()) == pytest.approx(
            frac
        )
    bands = ax.collections
    assert len(bands) == 2
    for band, (taus, _frac, lo, hi) in zip(bands, ct.profiles.values()):
        v = band.get_paths()[0].vertices
        assert v[:, 0].min() == pytest.approx(0.0) and v[:, 0].max() == pytest.approx(100 * taus[-1])
        assert v[:, 1].min() == pytest.approx(lo.min()) and v[:, 1].max() == pytest.approx(hi.max())
        assert band.get_alpha() == pytest.approx(0.2)
    ref = [ln for ln in ax.get_lines() if ln.get_label() not in ct.profiles]
    assert len(ref) == 1 and list(ref[0].get_xdata()) == [100, 100] and ref[0].get_linestyle() == "--"
    assert ax.get_xlabel() == "normalized_score (% of teacher) threshold τ"
    assert ax.get_ylabel() == "fraction of runs with score > τ" and ax.get_ylim() == pytest.approx((0, 1.02))
    assert ax.get_title() == "Performance profiles (95% stratified-bootstrap bands)"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["b_big", "a_small"]
    assert tuple(fig.get_size_inches()) == pytest.approx((5.5, 3.8))


def test_plot_profiles_of_a_plain_metric(tmp_path, figs):
    ct = T.cross_task(_cross_df(), "env", "m", "score")
    T.plot_profiles(ct, tmp_path, "score")
    ax = figs()[0].axes[0]
    assert len(ax.get_lines()) == 2 and ax.get_xlabel() == "score threshold τ"
    taus = ct.profiles["b_big"][0]
    assert np.asarray(ax.get_lines()[0].get_xdata()) == pytest.approx(taus)


def test_save_writes_png_and_svg_at_130_dpi(tmp_path):
    fig, _ = plt.subplots(figsize=(2.0, 1.0))
    paths = T._save(fig, tmp_path / "x")
    plt.close(fig)
    assert paths == [tmp_path / "x.png", tmp_path / "x.svg"] and paths[1].read_text().lstrip().startswith("<?xml")
    h, w = plt.imread(paths[0]).shape[:2]
    assert (w, h) == (260, 130)  # 2 x 1 inches at 130 dpi


# ---- time to a score ---------------------------------------------------------------------------------------
def _teacher(d, seed, hist, final, env="MinAtar/Breakout-v1", **kw):
    body = {"kind": "teacher", "env_id": env, "seed": seed, "eval_history": hist, "eval_return_mean": final,
            "env_steps": 100 + seed, "job_wall_time_s": 600.0 + 60 * seed, **kw}  # fmt: skip
    return write_json(d, body)


def test_time_to_score_rows(tmp_path):
    _teacher(tmp_path / "0other", 9, [{"env_steps": 5, "return_mean": 99.0, "wall_s": 1.0}], 1.0, env="CartPole-v1")
    _teacher(tmp_path / "a", 1, [{"env_steps": 25, "return_mean": 12.0, "wall_s": 40.0}], 13.0)  # no setup_s: + 0
    _teacher(tmp_path / "b", 2, [{"env_steps": 25, "return_mean": 1.0, "wall_s": 4.0, "process_s": 9.0}], None)
    df = T.time_to_score([tmp_path], {"MinAtar/Breakout-v1": 10})
    assert df["seed"].tolist() == [1, 2]
    a, b = df.iloc[0], df.iloc[1]
    assert a["time_to_score_s"] == 40.0 and a["approx"] and a["reached"] and a["steps_to_score"] == 25
    assert a["env_steps"] == 101 and a["job_wall_time_s"] == 660.0 and a["run_dir"] == str(tmp_path / "a")
    assert a["target"] == 10.0 and a["final_return"] == 13.0
    assert not b["reached"] and not b["approx"] and math.isnan(b["steps_to_score"]) and b["env_steps"] == 102
    md = T.time_to_score_markdown(df).split("\n")
    assert md[0] == (
        "| env | target | seeds | reached | time to score, median of all seeds | time to score, median [min–max] "
        "of those that reached it | env steps to score, median [min–max] | final return, mean [95% CI] | "
        "job wall, median |"
    )
    assert md[1] == "|---|---|---|---|---|---|---|---|---|"
    # one reached (40 s = 0.7 min, approximate), the other never: the median of both is beyond 0.7 min; job
    # wall median (660 + 720) / 2 s = 11.5 min; final 13 and nan
    assert md[2] == (
        "| MinAtar/Breakout-v1 | 10 | 2 (1, 2) | 1/2 | > 0.7 min ≈ | 0.7 [0.7–0.7] min ≈ | 25 [25–25] | nan [nan, nan] "
        "| 11.5 min |"
    )


def test_time_to_score_markdown_of_an_env_no_run_reached(tmp_path):
    df = pd.DataFrame([{"env_id": "E", "seed": s, "target": 2.5, "reached": False, "time_to_score_s": np.nan,
                        "approx": False, "steps_to_score": np.nan, "final_return": f, "job_wall_time_s": w}
                       for s, f, w in ((1, 1.0, 120.0), (0, 1.0, 60.0), (2, 1.0, 6000.0))])  # fmt: skip
    md = T.time_to_score_markdown(df).split("\n")
    assert md[2] == "| E | 2.5 | 3 (0, 1, 2) | 0/3 | not reached | – | – | 1.0 ‡ (no spread) | 2.0 min |"
    df2 = df.assign(reached=True, time_to_score_s=[600.0, 61.0, 6100.0], steps_to_score=[1000.0, 2000.0, 3000.0])
    md = T.time_to_score_markdown(df2).split("\n")
    # times 61, 600, 6100 s: median 10.0 min [1.0–101.7]; steps median 2,000 [1,000–3,000]
    assert md[2] == (
        "| E | 2.5 | 3 (0, 1, 2) | 3/3 | 10.0 min | 10.0 [1.0–101.7] min | 2,000 [1,000–3,000] | 1.0 ‡ (no spread) "
        "| 2.0 min |"
    )
    # the median run never got there: not reached, however fast the others were
    md = T.time_to_score_markdown(df2.assign(reached=[True, False, False])).split("\n")
    assert md[2].startswith("| E | 2.5 | 3 (0, 1, 2) | 1/3 | not reached | 10.0 [10.0–10.0] min |")
    md = T.time_to_score_markdown(df2.assign(reached=[True, True, False])).split("\n")  # 61 s, 600 s, never
    assert md[2].startswith("| E | 2.5 | 3 (0, 1, 2) | 2/3 | 10.0 min | 5.5 [1.0–10.0] min |")


# ---- budgets -----------------------------------------------------------------------------------------------


def test_budget_table_with_a_margin_and_without_wall_times():
    df = budget_frame()
    tab = T.budget_table(df, ["student_size"], margin=0.5).set_index("student_size")
    g = df[df["student_size"] == "rusu_4"]
    last, cheapest = plateau(g["grad_steps"].astype(float), g["normalized_score"].astype(float), margin=0.5)
    assert last.high <= 0.5 and tab.loc["rusu_4", "plateau"]  # a rise of 0.2 per doubling is under 0.5
    assert tab.loc["rusu_4", "cheapest_on_plateau"] == cheapest
    assert (
        tab.loc["rusu_4", "slope_per_doubling"] == pytest.approx(last.slope) and tab.loc["rusu_4", "slope_n"] == last.n
    )
    assert (
        tab.loc["rusu_4", "points"]
        == "24,000: 0.200 (n=3); 48,000: 0.400 (n=3); 96,000: 0.600 (n=3); 192,000: 0.800 (n=3)"
    )
    default = T.budget_table(df, ["student_size"]).set_index("student_size")
    assert not default.loc["rusu_4", "plateau"] and PLATEAU_MARGIN < 0.2
    no_wall = T.budget_table(df.drop(columns=["job_wall_time_s"]), ["student_size"]).set_index("student_size")
    assert (
        no_wall.loc["rusu_7", "job_wall_s_at_cheapest"] is None
        and no_wall.loc["rusu_7", "cheapest_on_plateau"] == 96_000
    )


def test_budget_markdown_rows():
    tab = pd.DataFrame([
        {"env": "E", "size": "s", "points": "p1", "slope_per_doubling": 0.0123, "slope_low": -0.02, "slope_high": 0.04,
         "slope_n": 6, "plateau": True, "cheapest_on_plateau": 96000.0, "job_wall_s_at_cheapest": 90.0},
        {"env": "E", "size": "t", "points": "p2", "slope_per_doubling": np.nan, "slope_low": np.nan,
         "slope_high": np.nan, "slope_n": 1, "plateau": None, "cheapest_on_plateau": np.nan,
         "job_wall_s_at_cheapest": None},
        {"env": "F", "size": "u", "points": "p3", "slope_per_doubling": 0.3, "slope_low": 0.1, "slope_high": 0.5,
         "slope_n": 6, "plateau": False, "cheapest_on_plateau": None, "job_wall_s_at_cheapest": np.nan},
    ])  # fmt: skip
    md = T.budget_markdown(tab, ["env", "size"], "score", margin=0.1).split("\n")
    assert md[0] == (
        "| env | size | score by budget (mean, n) | slope per doubling, last third [95% CI] | stopped rising "
        "(rise ≤ 0.1 per doubling) | cheapest budget on the plateau | job wall there |"
    )
    assert md[1] == "|---|---|---|---|---|---|---|"
    assert md[2] == "| E | s | p1 | +0.012 [-0.020, +0.040] (n=6) | yes | 96,000 | 1.5 min |"
    assert md[3] == "| E | t | p2 | – | can't tell: too few runs | – | – |"
    assert md[4] == "| F | u | p3 | +0.300 [+0.100, +0.500] (n=6) | no: still rising | – | – |" and len(md) == 5
    assert "(rise ≤ 0.05 per doubling)" in T.budget_markdown(tab, ["env", "size"], "score")


def test_plot_budgets_draws_means_and_bands_of_the_finite_runs(tmp_path, figs):
    rows = []
    data = {  # (panel, line) -> budget -> scores
        ("E2", "big"): {1000: [0.5, 0.6, 0.7, np.nan], 2000: [0.8, 0.9]},
        ("E2", "a_small"): {1000: [0.1, 0.2, 0.4], 4000: [0.3, 0.5, 0.4]},
        ("E1", "big"): {1000: [1.0, 1.0, 1.0], 2000: [0.2, 0.4, 0.9]},
    }
    for (p, ln), per in data.items():
        for b, vals in per.items():
            rows += [{"env_id": p, "size": ln, "grad_steps": b, "normalized_score": v} for v in vals]
    path = T.plot_budgets(pd.DataFrame(rows), "env_id", "size", "grad_steps", "normalized_score", tmp_path)
    assert path == tmp_path / "score_vs_budget.png" and path.is_file()
    (fig,) = figs()
    assert [ax.get_title() for ax in fig.axes] == ["E1", "E2"]
    assert tuple(fig.get_size_inches()) == pytest.approx((9.0, 3.6))
    for ax in fig.axes:
        assert ax.get_xscale() == "log" and ax.xaxis.get_transform().base == 2
        assert ax.get_xlabel() == "grad steps" and ax.get_ylabel() == "normalized score"
        assert ax.get_legend().get_title().get_text() == "size"
        names = sorted({ln for (p, ln) in data if p == ax.get_title()})
        assert [t.get_text() for t in ax.get_legend().get_texts()] == names
        mains = [ln for ln in ax.get_lines() if ln.get_label() in names]
        assert [ln.get_label() for ln in mains] == names
        for ln, name, band in zip(mains, names, ax.collections):
            per = data[(ax.get_title(), name)]
            pts = sorted(per)
            finite = [np.array([v for v in per[b] if not np.isnan(v)]) for b in pts]
            assert list(ln.get_xdata()) == pts and ln.get_marker() == "o"
            assert np.asarray(ln.get_ydata()) == pytest.approx([v.mean() for v in finite])
            few = [len(v) < 3 for v in finite]
            hollow = [h for h in ax.get_lines() if h.get_label().startswith("_") and h.get_color() == ln.get_color()]
            if any(few):
                assert len(hollow) == 1 and list(hollow[0].get_xdata()) == [b for b, f in zip(pts, few) if f]
                assert hollow[0].get_markerfacecolor() == "white" and hollow[0].get_marker() == "o"
                assert hollow[0].get_linestyle() == "None"
            else:
                assert not hollow
            # the band: the CI where 3+ runs give one (the mean where it is flagged), none below 3 runs
            lo, hi = [], []
            for v, f in zip(finite, few):
                if f:
                    continue
                c = mean_ci(v)
                lo.append(c.low if np.isfinite(c.low) else c.mean)
                hi.append(c.high if np.isfinite(c.high) else c.mean)
            ys = np.concatenate([p.vertices[:, 1] for p in band.get_paths()]) if band.get_paths() else np.array([])
            assert ys.min() == pytest.approx(min(lo)) and ys.max() == pytest.approx(max(hi))
            assert band.get_alpha() == pytest.approx(0.2)


# ---- learning curves and the kdrl-table plots ------------------------------------------------------------
def _student(d, env="CartPole-v1", status="ok", hist=None, **kw):
    body = {"kind": "student", "status": status, "env_id": env, "loss": "kl", "temperature": 0.01, "width": 64,
            "param_ratio": 0.07, "eval_history": hist, **kw}  # fmt: skip
    return write_json(d, body)


def H(steps, rets):
    return [{"env_steps": s, "return_mean": r} for s, r in zip(steps, rets)]


def test_learning_curves_by_hand(tmp_path):
    (tmp_path / "0bad").mkdir()
    (tmp_path / "0bad" / "results.json").write_text("")  # unreadable: skipped, not the end of the loop
    _student(tmp_path / "r1", seed=1, hist=H([1000, 2000, 3000, 4000], [480.0, 490.0, 495.0, 499.0]))
    _student(tmp_path / "r2", seed=2, hist=H([1000, 2000, 3000], [470.0, 500.0, 488.0]))  # stopped early: held at 488
    _student(tmp_path / "r3", seed=3, hist=H([2000, 3000, 4000], [495.0, 500.0, 500.0]))  # starts late: nan before
    _student(tmp_path / "r4", seed=4, status="failed", hist=H([1000], [0.0]))
    _student(tmp_path / "r5", seed=5, hist=[])
    _student(tmp_path / "r6", seed=6, loss="mse", env="Acrobot-v1", hist=H([1000, 2000], [-100.0, -90.0]))
    _student(tmp_path / "r7", seed=7, loss="mse", hist=H([1000, 2000], [495.0, 500.0]))
    _student(tmp_path / "r8", seed=8, loss="mse", env="Acrobot-v1", hist=H([1000, 2000], [-95.0, -96.0]))
    csv = tmp_path / "results.csv"
    csv.write_text("status\nok\n")
    curves = T.learning_curves([tmp_path, csv, tmp_path / "missing"], "method")
    assert set(curves) == {"kl (tau=0.01)", "mse"}
    grid, mean, lo, hi = curves["kl (tau=0.01)"]
    assert list(grid) == [1000, 2000, 3000, 4000]
    ys = np.array([[480.0, 490.0, 495.0, 499.0], [470.0, 500.0, 488.0, 488.0], [np.nan, 495.0, 500.0, 500.0]])
    assert mean == pytest.approx(np.nanmean(ys, axis=0))
    for k in range(4):
        col = ys[:, k][~np.isnan(ys[:, k])]
        c = mean_ci(col, bounds=(0.0, 500.0))
        assert (lo[k], hi[k]) == (pytest.approx(c.low, nan_ok=True), pytest.approx(c.high, nan_ok=True))
    assert hi[2] == 500.0 and mean_ci(ys[:, 2]).high > 500.0  # clipped to CartPole's range
    assert lo.dtype == float and hi.dtype == float
    # mixed envs (CartPole and Acrobot): no common range, nothing clipped
    grid, mean, lo, hi = curves["mse"]
    col = np.array([-90.0, 500.0, -96.0])
    assert mean[1] == pytest.approx(col.mean()) and hi[1] == pytest.approx(mean_ci(col).high) and hi[1] > 0.0
    by_seed = T.learning_curves([tmp_path], "seed")
    assert set(by_seed) == {1, 2, 3, 6, 7, 8} and list(by_seed[2][0]) == [1000, 2000, 3000]


def test_learning_curves_of_one_env_group_are_clipped_to_its_range(tmp_path):
    for s, r in ((1, -1.0), (2, -3.0), (3, -20.0)):  # Acrobot [-500, 0]
        _student(tmp_path / f"r{s}", env="Acrobot-v1", seed=s, hist=H([1000], [r]))
    ((grid, mean, lo, hi),) = T.learning_curves([tmp_path], "width").values()
    assert hi[0] == 0.0 and mean_ci([-1.0, -3.0, -20.0]).high > 0.0


def _errorbars(ax):
    """label -> (x, y, lower err, upper err) of each errorbar container."""
    out = {}
    for c in ax.containers:
        line, _, (bars,) = c.lines
        segs = bars.get_segments()
        y = np.asarray(line.get_ydata(), dtype=float)
        out[c.get_label()] = (
            np.asarray(line.get_xdata(), dtype=float),
            y,
            np.array([y[i] - s[0][1] for i, s in enumerate(segs)]),
            np.array([s[1][1] - y[i] for i, s in enumerate(segs)]),
        )
    return out


def test_plot_all_draws_return_vs_size_temperature_and_curves(tmp_path, figs):
    runs = tmp_path / "runs"
    spec = {  # (loss, width, temperature, param_ratio): scores
        ("kl", 16, 0.1, 0.02): [0.5, 0.6, 0.7],
        ("kl", 64, 0.1, 0.07): [0.8, 0.9, 1.0],
        ("kl", 64, 1.0, 0.07): [0.6, 0.6, 0.6],  # no spread: no bar
        ("mse", 16, None, 0.021): [0.2, 0.3, 0.4],
        ("mse", 64, None, 0.069): [0.4, 0.6, 0.65],
    }
    k = 0
    for (loss, width, temp, ratio), vals in spec.items():
        for v in vals:
            k += 1
            hist = H([1000, 2000], [100.0 + k, 200.0 + 2 * k])
            _student(runs / f"r{k}", loss=loss, width=width, temperature=temp, param_ratio=ratio,
                     normalized_score=v, seed=k, hist=hist)  # fmt: skip
    df = T.collect([runs])
    agg = T.aggregate(df, ["method", "width"], "normalized_score")
    out = tmp_path / "out"
    out.mkdir()
    written = T.plot_all(df, agg, [runs], out, "method", "width", "normalized_score", "method")
    stems = ["ratio_vs_params", "ratio_vs_temperature", "curves_by_method"]
    assert written == [out / f"{s}.{e}" for s in stems for e in ("png", "svg")] and all(p.is_file() for p in written)
    size, temp, curves = figs()
    # 1. return vs size: per method, x = 100 x param_ratio (ascending), y = 100 x mean, bars from the CI
    ax = size.axes[0]
    bars = _errorbars(ax)
    assert list(bars) == ["kl (tau=0.1)", "kl (tau=1)", "mse"]
    for method, (x, y, elo, ehi) in bars.items():
        cells = agg[agg["method"] == method].sort_values("param_ratio")
        assert x == pytest.approx(100 * cells["param_ratio"].to_numpy())
        assert y == pytest.approx(100 * cells["mean"].to_numpy())
        want_lo = np.nan_to_num(100 * (cells["mean"] - cells["ci_low"]).to_numpy(dtype=float))
        want_hi = np.nan_to_num(100 * (cells["ci_high"] - cells["mean"]).to_numpy(dtype=float))
        assert elo == pytest.approx(want_lo) and ehi == pytest.approx(want_hi)
    assert bars["kl (tau=1)"][2] == pytest.approx([0.0]) and bars["mse"][2][0] > 0.0
    assert ax.get_xscale() == "log" and ax.get_xlabel() == "student parameters (% of teacher)"
    assert ax.get_ylabel() == "normalized_score (% of teacher)"
    assert ax.get_title() == "Student return vs size (mean, 95% CI over seeds)"
    # one tick per width: its mean fraction over methods, in %, 1 decimal
    assert list(ax.get_xticks()) == pytest.approx(sorted({round(100 * np.mean([0.02, 0.021]), 1),
                                                          round(100 * np.mean([0.07, 0.07, 0.069]), 1)}))  # fmt: skip
    assert ax.xaxis.get_major_formatter()(7.0, 0) == "7"
    ref = [ln for ln in ax.get_lines() if list(ln.get_ydata()) == [100, 100]]
    assert len(ref) == 1 and ref[0].get_linestyle() == "--"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(bars)
    # 2. KL temperatures: per width, the cells over temperature
    ax = temp.axes[0]
    bars = _errorbars(ax)
    assert list(bars) == ["width 16", "width 64"]
    x, y, elo, ehi = bars["width 64"]
    assert list(x) == [0.1, 1.0] and y == pytest.approx([90.0, 60.0])
    c = mean_ci([0.8, 0.9, 1.0], bounds=(-INF, INF))
    assert elo[1] == 0.0 and ehi[1] == 0.0 and ehi[0] > 0 and elo[0] > 0
    assert ax.get_xscale() == "log" and ax.get_xlabel() == "temperature tau"
    assert ax.get_ylabel() == "normalized_score (% of teacher)" and c.mean == pytest.approx(0.9)
    assert ax.get_title() == "KL (tau_S = tau, x tau^2): tau sets sharpness AND step size"
    # 3. learning curves, one per method, sorted by name, with their bands
    ax = curves.axes[0]
    ref = T.learning_curves([runs], "method")
    lines = ax.get_lines()
    assert [ln.get_label() for ln in lines] == sorted(ref, key=str)
    for ln in lines:
        g, m, lo, hi = ref[ln.get_label()]
        assert list(ln.get_xdata()) == list(g) and np.asarray(ln.get_ydata()) == pytest.approx(m)
    assert len(ax.collections) == 3
    assert ax.get_xlabel() == "env steps" and ax.get_ylabel() == "greedy return (periodic eval)"
    assert ax.get_legend().get_title().get_text() == "method"
    assert ax.get_title() == "Learning curves (mean, 95% CI over seeds)"


def test_plot_all_leaves_out_what_the_runs_do_not_have(tmp_path, figs):
    rows = _runs({("kl", 64): [0.5, 0.6]}, loss="kl", temperature=0.1)
    df = pd.DataFrame(rows)
    agg = T.aggregate(df, ["method", "width"], "normalized_score")
    # cols not a size, one temperature, no learning curves: nothing drawn
    assert T.plot_all(df, agg, [tmp_path], tmp_path, "method", "seed", "normalized_score", "method") == []
    assert T.plot_all(df.drop(columns=["loss"]), agg.drop(columns=["param_ratio"]), [tmp_path], tmp_path, "method",
                      "width", "normalized_score", "width") == []  # fmt: skip
    # only failed KL runs at two temperatures: no temperature plot
    bad = pd.DataFrame(
        _runs({("kl", 64): [0.5]}, loss="kl", temperature=0.1) + _runs({("kl", 64): [0.5]}, loss="kl", temperature=1.0)
    )
    assert (
        T.plot_all(
            bad.assign(status="failed"), agg, [tmp_path], tmp_path, "method", "seed", "normalized_score", "method"
        )
        == []
    )
    (out,) = [T.plot_all(bad, agg, [tmp_path], tmp_path, "method", "seed", "normalized_score", "method")]
    assert out == [tmp_path / "ratio_vs_temperature.png", tmp_path / "ratio_vs_temperature.svg"]
    rusu = bad.assign(loss="kl_rusu")
    assert len(T.plot_all(rusu, agg, [tmp_path], tmp_path, "method", "seed", "normalized_score", "method")) == 2


def test_yerr_from_the_cells_interval():
    cells = pd.DataFrame({"mean": [0.5, 0.6], "ci_low": [0.4, np.nan], "ci_high": [0.75, np.nan]})
    lo, hi = T._yerr(cells, 100)
    assert lo == pytest.approx([10.0, 0.0]) and hi == pytest.approx([25.0, 0.0])


# ---- the multi-task table ----------------------------------------------------------------------------------
def _mt_body(seed, method, pcts, status="ok"):
    from tests.test_results_schema import MULTITASK_FAILED, MULTITASK_OK, TASK

    if status != "ok":
        return {**MULTITASK_FAILED, "seed": seed, "method": method}
    tasks = {name: {**TASK, "pct_of_teacher": p, "eval_return_mean": 100.0 + p, "teacher_return_mean": 200.0 + p}
             for name, p in pcts.items()}  # fmt: skip
    vals = list(pcts.values())
    return {**MULTITASK_OK, "seed": seed, "method": method, "tasks": tasks, "task_names": list(pcts),
            "mean_pct_of_teacher": float(np.mean(vals)), "geomean_pct_of_teacher": float(np.min(vals))}  # fmt: skip


def test_collect_multitask_rows(tmp_path):
    write_json(tmp_path / "0teacher", {"kind": "teacher", "status": "ok"})
    (tmp_path / "1empty").mkdir()
    (tmp_path / "1empty" / "results.json").write_text("")
    write_json(tmp_path / "2ok", _mt_body(3, "m", {"zeta": 80.0, "alpha": 60.0}))
    write_json(tmp_path / "3failed", _mt_body(4, "m", {}, status="failed"))
    df = T.collect_multitask([tmp_path])
    assert list(df.columns) == [
        "run_dir",
        "status",
        "method",
        "seed",
        "column",
        "pct",
        "return",
        "teacher_return",
        "error",
    ]
    bad = df.iloc[0]
    assert bad["status"] == "unreadable" and bad["run_dir"] == str(tmp_path / "1empty")
    assert bad["error"] == f"{tmp_path / '1empty' / 'results.json'}: empty file"
    ok = df[df["status"] == "ok"]
    assert ok["column"].tolist() == ["zeta", "alpha", "mean over tasks", "geomean over tasks"]
    assert ok["pct"].tolist() == [80.0, 60.0, 70.0, 60.0] and set(ok["seed"]) == {3}
    assert ok["return"].tolist()[:2] == [180.0, 160.0] and ok["teacher_return"].tolist()[:2] == [280.0, 260.0]
    assert ok["return"].iloc[2:].isna().all()
    failed = df[df["status"] == "failed"].iloc[0]
    assert failed["seed"] == 4 and failed["run_dir"] == str(tmp_path / "3failed") and pd.isna(failed["column"])
    assert len(df) == 6


def test_multitask_cell():
    assert T.multitask_cell([]) == "–" and T.multitask_cell([np.nan, np.inf]) == "– (2 refused)"
    assert T.multitask_cell([50.0, 60.0, np.nan]) == mean_ci([50.0, 60.0]).text(".1f") + " (1 refused) †"
    assert T.multitask_cell([50.0, 60.0, np.nan]).startswith("55.0 [")
    five = [50.0, 60.0, 55.0, 52.0, 58.0]
    assert T.multitask_cell(five) == mean_ci(five).text(".1f") and "†" not in T.multitask_cell(five)
    assert T.multitask_cell(pd.Series([1, 2, 3], dtype="int64")) == mean_ci([1.0, 2.0, 3.0]).text(".1f") + " †"


def test_multitask_table_markdown_and_report(tmp_path):
    write_json(tmp_path / "a", _mt_body(1, "z_m", {"t1": 80.0, "t2": 60.0}))
    write_json(tmp_path / "b", _mt_body(2, "z_m", {"t1": 90.0, "t2": 50.0}))
    write_json(tmp_path / "c", _mt_body(1, "a_m", {"t1": 10.0, "t2": 20.0}))
    write_json(tmp_path / "d", _mt_body(5, "a_m", {}, status="failed"))
    df = T.collect_multitask([tmp_path])
    tab = T.multitask_table(df)
    assert list(tab.index) == ["a_m (n=1)", "z_m (n=2)"]
    assert list(tab.columns) == ["t1", "t2", "mean over tasks", "geomean over tasks"]
    assert tab.at["z_m (n=2)", "t1"] == T.multitask_cell([80.0, 90.0])
    assert tab.at["z_m (n=2)", "mean over tasks"] == T.multitask_cell([70.0, 70.0])
    md = T.multitask_markdown(tab).split("\n")
    assert md[0] == "| method | t1 | t2 | mean over tasks | geomean over tasks |" and md[1] == "|---|---|---|---|---|"
    assert md[3] == "| z_m (n=2) | " + " | ".join(tab.loc["z_m (n=2)"]) + " |" and len(md) == 4
    report = T.multitask_report(df)
    head, table = report.split("\n\n")
    assert head.endswith("does not beat random); 3 ok runs, 1 failed") and table == "\n".join(md)


# ---- what the figures look like (sizes, styles, ordering by name) ---------------------------------------
def _rgb(c):
    return tuple(np.round(matplotlib.colors.to_rgb(c), 6))


def test_plot_profiles_styles(tmp_path, figs):
    ct = T.cross_task(_cross_df().rename(columns={"score": "raw_return_ratio"}), "env", "m", "raw_return_ratio")
    T.plot_profiles(ct, tmp_path, "raw_return_ratio")
    (fig,) = figs()
    ax = fig.axes[0]
    ref = [ln for ln in ax.get_lines() if ln.get_label() not in ct.profiles][0]
    assert _rgb(ref.get_color()) == _rgb("grey") and ref.get_linewidth() == 0.8
    assert all(t.get_fontsize() == 8 for t in ax.get_legend().get_texts())
    assert ax.title.get_fontsize() == 9 and ax.get_xlabel() == "raw_return_ratio (% of teacher) threshold τ"


def test_plot_all_styles_and_closes_its_figures(tmp_path, figs):
    runs = tmp_path / "runs"
    k = 0
    for temp in (0.1, 1.0):
        for v in (0.5, 0.6, 0.8):
            k += 1
            _student(runs / f"r{k}", seed=k, temperature=temp, normalized_score=v, hist=H([1000], [float(k)]))
    df = T.collect([runs])
    agg = T.aggregate(df, ["method", "width"], "normalized_score")
    T.plot_all(df, agg, [runs], tmp_path, "method", "width", "normalized_score", "method")
    figures = figs()
    assert len(figures) == 3
    for fig in figures:
        assert tuple(fig.get_size_inches()) == pytest.approx((5.5, 3.8))
        ax = fig.axes[0]
        assert all(t.get_fontsize() == 8 for t in ax.get_legend().get_texts())
    size, temp, _ = figures
    for ax in (size.axes[0], temp.axes[0]):
        for c in ax.containers:
            data, caps, _ = c.lines
            assert data.get_marker() == "o" and caps and caps[0].get_markersize() == 6  # capsize 3
    ax = size.axes[0]
    ref = [ln for ln in ax.get_lines() if list(ln.get_ydata()) == [100, 100]][0]
    assert _rgb(ref.get_color()) == _rgb("grey") and ref.get_linewidth() == 0.8
    assert isinstance(ax.xaxis.get_minor_formatter(), matplotlib.ticker.NullFormatter)
    assert temp.axes[0].title.get_fontsize() == 9


def test_plot_all_closes_every_figure(tmp_path):
    plt.close("all")
    runs = tmp_path / "runs"
    for k, temp in enumerate((0.1, 1.0, 0.1, 1.0)):
        _student(runs / f"r{k}", seed=k, temperature=temp, normalized_score=0.5 + k / 10, hist=H([1000], [1.0 + k]))
    df = T.collect([runs])
    agg = T.aggregate(df, ["method", "width"], "normalized_score")
    assert len(T.plot_all(df, agg, [runs], tmp_path, "method", "width", "normalized_score", "method")) == 6
    assert plt.get_fignums() == []


def test_plot_all_orders_curves_by_name(tmp_path, figs):
    # seeds 9 and 10: by name "10" comes before "9" (the file order is 9 first)
    _student(tmp_path / "a", seed=9, hist=H([1000, 2000], [1.0, 2.0]))
    _student(tmp_path / "b", seed=10, hist=H([1000, 2000], [3.0, 5.0]))
    df = T.collect([tmp_path])
    written = T.plot_all(df, df.iloc[0:0], [tmp_path], tmp_path, "method", "seed", "normalized_score", "seed")
    assert written == [tmp_path / "curves_by_seed.png", tmp_path / "curves_by_seed.svg"]
    ax = figs()[0].axes[0]
    assert [ln.get_label() for ln in ax.get_lines()] == ["10", "9"]
    assert list(ax.get_lines()[0].get_ydata()) == [3.0, 5.0] and ax.get_legend().get_title().get_text() == "seed"


def test_plot_all_draws_one_curve_panel_per_game_not_returns_pooled_across_games(tmp_path, figs):
    # two games on different scales: each panel holds its own game's mean, a method keeps its colour
    _student(tmp_path / "a", seed=0, env="MinAtar/Breakout-v1", hist=H([1000, 2000], [1.0, 3.0]))
    _student(tmp_path / "b", seed=1, env="MinAtar/Breakout-v1", hist=H([1000, 2000], [3.0, 5.0]))
    _student(tmp_path / "c", seed=0, env="MinAtar/Freeway-v1", hist=H([1000, 2000], [50.0, 60.0]))
    _student(tmp_path / "d", seed=0, loss="nll", env="MinAtar/Freeway-v1", hist=H([1000, 2000], [40.0, 44.0]))
    df = T.collect([tmp_path])
    written = T.plot_all(df, df.iloc[0:0], [tmp_path], tmp_path, "env_id", "method", "normalized_score", "method")
    assert written == [tmp_path / "curves_by_method.png", tmp_path / "curves_by_method.svg"]
    (fig,) = figs()
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["MinAtar/Breakout-v1", "MinAtar/Freeway-v1"]
    lines = {ax.get_title(): {ln.get_label(): list(ln.get_ydata()) for ln in ax.get_lines()} for ax in axes}
    assert lines["MinAtar/Breakout-v1"] == {"kl (tau=0.01)": [2.0, 4.0]}
    assert lines["MinAtar/Freeway-v1"] == {"kl (tau=0.01)": [50.0, 60.0], "nll": [40.0, 44.0]}
    colour = {ax.get_title(): ax.get_lines()[0].get_color() for ax in axes}
    assert colour["MinAtar/Breakout-v1"] == colour["MinAtar/Freeway-v1"]
    keyed = T.learning_curves([tmp_path], "method", split="env_id")
    assert set(keyed) == {("MinAtar/Breakout-v1", "kl (tau=0.01)"), ("MinAtar/Freeway-v1", "kl (tau=0.01)"),
                          ("MinAtar/Freeway-v1", "nll")}  # fmt: skip


def test_stage_curves_get_one_panel_per_game(tmp_path, figs):
    from kdrl.study import plot_stage_curves

    a = _student(tmp_path / "a", seed=0, env="MinAtar/Breakout-v1", hist=H([1000, 2000], [1.0, 3.0]))
    b = _student(tmp_path / "b", seed=0, env="MinAtar/Freeway-v1", hist=H([1000, 2000], [50.0, 60.0]))
    c = _student(tmp_path / "c", seed=0, env="MinAtar/Freeway-v1", hist=H([1000, 2000], [10.0, 20.0]))
    plot_stage_curves({"scratch": [a.parent, b.parent], "qdagger": [c.parent]}, tmp_path)
    (fig,) = figs()
    axes = [ax for ax in fig.axes if ax.get_visible()]
    lines = {ax.get_title(): {ln.get_label(): list(ln.get_ydata()) for ln in ax.get_lines()} for ax in axes}
    assert lines == {"MinAtar/Breakout-v1": {"scratch": [1.0, 3.0]},
                     "MinAtar/Freeway-v1": {"scratch": [50.0, 60.0], "qdagger": [10.0, 20.0]}}  # fmt: skip
    assert (tmp_path / "curves_by_stage.png").is_file()


def test_plot_budgets_orders_panels_and_lines_by_name_and_saves_at_110_dpi(tmp_path, figs):
    rows = [{"p": p, "l": ln, "b": b, "s": float(p + ln + b + e)}
            for p in (9, 10) for ln in (9, 10) for b in (1, 2) for e in (0.0, 0.5, 1.5)]  # fmt: skip
    path = T.plot_budgets(pd.DataFrame(rows), "p", "l", "b", "s", tmp_path)
    (fig,) = figs()
    assert [ax.get_title() for ax in fig.axes] == ["10", "9"]
    for ax in fig.axes:
        p = int(ax.get_title())
        mains = [ln for ln in ax.get_lines() if not ln.get_label().startswith("_")]
        assert [ln.get_label() for ln in mains] == ["10", "9"]
        for ln in mains:
            want = [p + int(ln.get_label()) + b + 2 / 3 for b in (1, 2)]
            assert list(ln.get_xdata()) == [1, 2] and np.asarray(ln.get_ydata()) == pytest.approx(want)
        for ln, band in zip(mains, ax.collections):
            assert _rgb(band.get_facecolor()[0][:3]) == _rgb(ln.get_color())
        assert all(t.get_fontsize() == 8 for t in ax.get_legend().get_texts())
        assert ax.get_xlabel() == "b" and ax.get_ylabel() == "s"
    h, w = plt.imread(path).shape[:2]
    assert (w, h) == (990, 396)  # 9 x 3.6 inches at 110 dpi


def test_cross_task_without_ok_runs_is_empty_not_an_error():
    df = _cross_df().assign(status="failed")
    ct = T.cross_task(df, "env", "m", "score")
    assert ct.cells.empty and ct.improvement.empty and ct.profiles == {}
    assert ct.markdown.split("\n")[2:] == [
        "| m | tasks | runs | IQM [95% CI] | mean [95% CI] |",
        "|---|---|---|---|---|",
    ]


def _has_vertex(band, x, y):
    v = np.concatenate([p.vertices for p in band.get_paths()])
    return bool(np.any(np.isclose(v[:, 0], x) & np.isclose(v[:, 1], y)))


def test_bands_run_between_the_low_and_high_ends(tmp_path, figs):
    # performance profiles: at a threshold where 0 < low < high, the band holds (x, low) and (x, high), not (x, 0)
    ct = T.cross_task(_cross_df(), "env", "m", "score")
    T.plot_profiles(ct, tmp_path, "score")
    ax = figs()[0].axes[0]
    for band, (taus, _frac, lo, hi) in zip(ax.collections, ct.profiles.values()):
        k = int(np.argmax((lo > 0) & (lo < hi)))
        assert 0 < lo[k] < hi[k]
        assert (
            _has_vertex(band, taus[k], lo[k])
            and _has_vertex(band, taus[k], hi[k])
            and not _has_vertex(band, taus[k], 0.0)
        )
    # learning curves in kdrl-table's plots (the profiles' figure stays open: figs keeps them)
    for k, r in enumerate((10.0, 12.0, 17.0)):
        _student(tmp_path / "runs" / f"r{k}", seed=k, hist=H([1000, 2000], [r, 2 * r]))
    df = T.collect([tmp_path / "runs"])
    T.plot_all(df, df.iloc[0:0], [tmp_path / "runs"], tmp_path, "method", "seed", "x", "method")
    ax = figs()[-1].axes[0]
    ((g, m, lo, hi),) = T.learning_curves([tmp_path / "runs"], "method").values()
    (band,) = ax.collections
    assert band.get_alpha() == pytest.approx(0.2)
    for k in range(2):
        assert 0 < lo[k] < hi[k]
        assert _has_vertex(band, g[k], lo[k]) and _has_vertex(band, g[k], hi[k]) and not _has_vertex(band, g[k], 0.0)


def test_plot_budgets_band_touches_a_flagged_point_at_its_mean(tmp_path, figs):
    rows = [{"p": "E", "l": "x", "b": 1000, "s": 1.0}] * 3  # no spread: the band is the mean there
    rows += [{"p": "E", "l": "x", "b": 2000, "s": v} for v in (0.2, 0.4, 0.9)]
    T.plot_budgets(pd.DataFrame(rows), "p", "l", "b", "s", tmp_path)
    (band,) = figs()[0].axes[0].collections
    c = mean_ci([0.2, 0.4, 0.9])
    assert _has_vertex(band, 1000, 1.0) and _has_vertex(band, 2000, c.low) and _has_vertex(band, 2000, c.high)


def test_plot_budgets_orders_lines_by_their_name(tmp_path, figs):
    # the rows of line "b" come first in the frame; the lines are drawn a, b
    rows = [{"p": "E", "l": name, "b": b, "s": 0.5 + e} for name in ("b", "a") for b in (1, 2) for e in (0.0, 0.25)]
    T.plot_budgets(pd.DataFrame(rows), "p", "l", "b", "s", tmp_path)
    ax = figs()[0].axes[0]
    assert [ln.get_label() for ln in ax.get_lines() if not ln.get_label().startswith("_")] == ["a", "b"]


def test_plot_all_by_named_student_size_with_its_ticks_and_temperature_bars(tmp_path, figs):
    runs = tmp_path / "runs"
    k = 0
    spec = {
        ("rusu_4", 0.25, 0.1): [0.5, 0.6, 0.8],
        ("rusu_7", 0.5, 0.1): [0.7, 0.9, 1.0],
        ("rusu_7", 0.5, 1.0): [0.2, 0.4, 0.3],
    }
    for (size, ratio, temp), vals in spec.items():
        for v in vals:
            k += 1
            _student(runs / f"r{k}", seed=k, student_size=size, width=64, param_ratio=ratio, temperature=temp,
                     normalized_score=v, hist=H([1000], [float(k)]))  # fmt: skip
    df = T.collect([runs])
    agg = T.aggregate(df, ["method", "student_size"], "normalized_score")
    written = T.plot_all(df, agg, [runs], tmp_path, "method", "student_size", "normalized_score", "method")
    assert written[:2] == [tmp_path / "ratio_vs_params.png", tmp_path / "ratio_vs_params.svg"] and len(written) == 6
    size, temp, _ = figs()
    ax = size.axes[0]
    assert list(ax.get_xticks()) == pytest.approx([25.0, 50.0])
    bars = _errorbars(ax)
    assert bars["kl (tau=0.1)"][0] == pytest.approx([25.0, 50.0])
    # the temperature plot of width 64: tau 0.1 pools both sizes, tau 1.0 one; bars are 100 x the CI's arms
    x, y, elo, ehi = _errorbars(temp.axes[0])["width 64"]
    for i, vals in enumerate(([0.5, 0.6, 0.8, 0.7, 0.9, 1.0], [0.2, 0.4, 0.3])):
        c = mean_ci(vals)
        assert y[i] == pytest.approx(100 * c.mean)
        assert elo[i] == pytest.approx(100 * (c.mean - c.low)) and ehi[i] == pytest.approx(100 * (c.high - c.mean))


def test_multitask_cell_reads_none_as_refused_and_an_empty_table_keeps_its_columns():
    assert T.multitask_cell([50.0, None]) == "50.0 ‡ (no spread) (1 refused) †"
    df = pd.DataFrame([{"run_dir": "a", "status": "failed", "method": "m", "column": None, "pct": None}])
    tab = T.multitask_table(df)
    assert tab.empty and list(tab.columns) == ["mean over tasks", "geomean over tasks"]


def test_task_scores_are_floats_even_from_an_integer_column():
    df = pd.DataFrame({"status": ["ok"] * 3, "m": ["x"] * 3, "env": ["A", "A", "B"], "steps": [3, 5, 8]})
    got = T.task_scores(df, "env", "m", "steps")
    assert got["x"]["A"].dtype == float and got["x"]["A"].tolist() == [3.0, 5.0] and got["x"]["B"].tolist() == [8.0]


def test_time_to_score_markdown_of_two_stages_has_a_row_per_stage_in_their_order():
    """Recipes side by side (study minatar_seaquest): one row per stage and env, stages in the order
    given, never pooled into one row."""
    rows = [
        ("z_default", 0, False, np.nan, 6.0),
        ("z_default", 1, True, 600.0, 30.0),
        ("a_more_updates", 0, True, 1200.0, 20.0),
        ("a_more_updates", 1, True, 1800.0, 30.0),
    ]
    df = pd.DataFrame([{"stage": st, "env_id": "E", "seed": s, "target": 20.0, "reached": r, "time_to_score_s": t,
                        "approx": False, "steps_to_score": t * 100, "final_return": f, "job_wall_time_s": 60.0}
                       for st, s, r, t, f in rows])  # fmt: skip
    md = T.time_to_score_markdown(df).split("\n")
    assert md[0].startswith("| stage | env | target |") and md[1] == "|---" * 10 + "|"
    assert md[2].startswith(
        "| z_default | E | 20 | 2 (0, 1) | 1/2 | > 10.0 min | 10.0 [10.0–10.0] min | 60,000 [60,000–60,000] |"
    )
    assert md[3].startswith("| a_more_updates | E | 20 | 2 (0, 1) | 2/2 | 25.0 min | 25.0 [20.0–30.0] min |")
    assert len(md) == 4
    one = T.time_to_score_markdown(df[df["stage"] == "z_default"]).split("\n")  # one stage: no stage column
    assert one[0].startswith("| env | target |") and one[2].startswith("| E | 20 | 2 (0, 1) | 1/2 |")


def test_time_to_score_plot_draws_every_run_of_every_stage(tmp_path, monkeypatch):
    """Each run's periodic returns are read from its results.json and drawn, one colour per stage."""
    drawn: list[tuple[list, list, str]] = []
    import matplotlib.axes

    real_plot = matplotlib.axes.Axes.plot
    monkeypatch.setattr(
        matplotlib.axes.Axes,
        "plot",
        lambda self, x, y, **kw: drawn.append((list(x), list(y), kw.get("color"))) or real_plot(self, x, y, **kw),
    )
    rows = []
    for stage, seed, returns in (("slow", 0, [1.0, 2.0]), ("slow", 1, [3.0, 30.0]), ("fast", 0, [5.0, 25.0])):
        d = tmp_path / f"{stage}{seed}"
        write_json(d, {"eval_history": [{"env_steps": 10 * (i + 1), "return_mean": r} for i, r in enumerate(returns)]})
        rows.append({"stage": stage, "env_id": "E", "seed": seed, "target": 20.0, "run_dir": str(d)})
    path = T.plot_time_to_score(pd.DataFrame(rows), tmp_path)
    assert path == tmp_path / "curves.png" and path.read_bytes()[:4] == b"\x89PNG"
    assert drawn == [([10, 20], [1.0, 2.0], "C0"), ([10, 20], [3.0, 30.0], "C0"), ([10, 20], [5.0, 25.0], "C1")]
