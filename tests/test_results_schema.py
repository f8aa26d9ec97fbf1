"""The results.json schema (kdrl.results), the score maths (kdrl.scores) and what the table tools
derive from them.

The dict literals below carry exactly the keys the three writers put in results.json before the
schema existed (kdrl.cli.train.train_teacher, kdrl.cli.distill.distill_student,
kdrl.cli.multitask.run_fields / task_result / multitask_job, plus recorded_job's error, traceback
and job_wall_time_s and write_results' provenance): the schema must read them back unchanged and
a runner filling the dataclasses must write the same bodies.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from kdrl.results import (
    MultiTaskResult,
    RunResult,
    StudentResult,
    TaskResult,
    TeacherReference,
    TeacherResult,
    load_result,
    write_results,
)
from kdrl.scores import GEOMEAN_FLOOR_PCT, geometric_mean, mean_pcts, normalized_score, pct_of_teacher
from kdrl.tables import FLAT_FIELDS, collect, collect_multitask, flatten, geomean_row, multitask_report, summary_table

CONFIG = {"env": {"id": "CartPole-v1"}, "seed": 0}
PROVENANCE = {
    "git_sha": "0123abc",
    "versions": {"kdrl": "0.1.0", "python": "3.11.7"},
    "host": "node1",
    "cpu": {"model": "Intel(R) Xeon(R) Processor", "torch_capability": "AVX512"},
}
HISTORY = [
    {"env_steps": 1000, "grad_steps": 10, "wall_s": 1.0, "train_wall_s": 0.9, "return_mean": 100.0},
    {"env_steps": 2000, "grad_steps": 20, "wall_s": 2.0, "train_wall_s": 1.8, "return_mean": 500.0},
]

# ---- today's bodies, key for key ------------------------------------------------------------------------
TEACHER_START = {
    "kind": "teacher",
    "status": "failed",
    "env_id": "CartPole-v1",
    "seed": 0,
    "run_dir": "/runs/t",
    "resumed_from_env_steps": None,
    "config": CONFIG,
}
TEACHER_OK_FIELDS = {
    "status": "ok",
    "params": 67586,
    "env_steps": 50000,
    "grad_steps": 12000,
    "episodes": 310,
    "wall_time_s": 20.5,
    "train_wall_time_s": 18.25,
    "sps": 2439.0,
    "eval_return_mean": 500.0,
    "eval_return_std": 0.0,
    "eval_returns": [500.0, 500.0],
    "eval_policy": "best",
    "eval_history": HISTORY,
    "best_periodic_eval": 500.0,
    "checkpoint": "/runs/t/teacher.pt",
    "reference": {
        "version": 1,
        "env_id": "CartPole-v1",
        "episodes": 2,
        "first_seed": 2000000,
        "epsilon": 0.0,
        "env_kwargs": {},
        "seeds": "2000000 + i, i < 2",
        "teacher": {"mean": 500.0, "std": 0.0, "se": 0.0, "returns": [500.0, 500.0]},
        "random": {"mean": 22.0, "std": 2.0, "se": 1.0, "returns": [20.0, 24.0]},
        "computed_by": "teacher job",
        "wall_s": 0.5,
        "stored_at": "/runs/t/teacher.pt.reference.json",
    },
}
TEACHER_OK = {
    **TEACHER_START,
    "setup_s": 1.5,
    "resumed_from_env_steps": 25000,
    **TEACHER_OK_FIELDS,
    "job_wall_time_s": 23.0,
    **PROVENANCE,
}
TEACHER_FAILED = {
    **TEACHER_START,
    "error": "ConfigError: eval.freq must be > 0",
    "traceback": "Traceback ...",
    "job_wall_time_s": 0.25,
    **PROVENANCE,
}

STUDENT_START = {
    "kind": "student",
    "status": "failed",
    "env_id": "Acrobot-v1",
    "seed": 2,
    "run_dir": "/runs/s",
    "resumed_from_env_steps": None,
    "loss": "kl",
    "temperature": 0.01,
    "width": 48,
    "student_size": None,
    "depth": 2,
    "control": "teacher",
    "baseline": None,
    "lambda": None,
    "feature_weight": 0.0,
    "config": CONFIG,
}
STUDENT_OK_FIELDS = {
    "status": "ok",
    "params": 2691,
    "teacher_params": 67586,
    "param_ratio": 2691 / 67586,
    "env_steps": 10000,
    "grad_steps": 2000,
    "wall_time_s": 9.5,
    "train_wall_time_s": 8.0,
    "sps": 1052.6,
    "eval_return_mean": -95.0,
    "eval_return_std": 4.0,
    "eval_returns": [-91.0, -99.0],
    "teacher_return_mean": -80.0,
    "teacher_returns": [-79.0, -81.0],
    "raw_return_ratio": -95.0 / -80.0,
    "random_return_mean": -500.0,
    "random_returns": [-500.0, -500.0],
    "teacher_reference": {
        "episodes": 100,
        "first_seed": 2000000,
        "epsilon": 0.0,
        "return_mean": -80.0,
        "return_std": 5.0,
        "return_se": 0.5,
        "random_mean": -500.0,
        "random_std": 0.0,
        "random_se": 0.0,
        "stored_at": "/runs/t/teacher.pt.reference.json",
    },
    "teacher_beats_random": True,
    "normalized_score": 405.0 / 420.0,
    "teacher_periodic_return": -82.0,
    "random_periodic_return": -500.0,
    "speed": {"to_90pct": {"env_steps": 4000, "train_wall_s": 3.5}, "to_100pct": None},
    "generalisation": {"heavy": {"teacher": -90.0, "student": -110.0}},
    "resources": {
        "teacher": {"params": 67586, "bytes": 270344, "flops": 135168, "latency_us": 31.0},
        "student": {"params": 2691, "bytes": 10764, "flops": 5376, "latency_us": 12.0},
    },
    "action_agreement": 0.93,
    "agreement_states": 1000,
    "eval_history": HISTORY,
    "checkpoint": "/runs/s/student.pt",
    "teacher_checkpoint": "/runs/t/teacher.pt",
    "teacher_wall_time_s": None,
    "prune": {"amount": 0.5, "at_env_step": 5000.0, "nonzero_before": 2691.0, "nonzero_after": 1400.0},
    "quantize": {"at_env_step": 9000.0, "int8_representable": True},
}  # None: teacher given as a file
STUDENT_OK = {**STUDENT_START, "setup_s": 2.0, **STUDENT_OK_FIELDS, "job_wall_time_s": 11.0, **PROVENANCE}
STUDENT_FAILED = {
    **STUDENT_START,
    "error": "RuntimeError: boom",
    "traceback": "Traceback ...",
    "job_wall_time_s": 0.5,
    **PROVENANCE,
}

TASK = {
    "env_id": "CartPole-v1",
    "obs_shape": [4],
    "n_actions": 2,
    "eval_return_mean": 400.0,
    "eval_return_std": 10.0,
    "eval_returns": [390.0, 410.0],
    "teacher_return_mean": 500.0,
    "teacher_returns": [500.0, 500.0],
    "random_return_mean": 22.0,
    "random_returns": [20.0, 24.0],
    "teacher_reference": {
        "episodes": 100,
        "first_seed": 2000000,
        "epsilon": 0.0,
        "return_mean": 500.0,
        "return_std": 0.0,
        "return_se": 0.0,
        "random_mean": 22.0,
        "random_std": 10.0,
        "random_se": 1.0,
        "stored_at": None,
    },
    "teacher_beats_random": True,
    "pct_of_teacher": pct_of_teacher(400.0, 500.0, 22.0),
    "raw_return_ratio": 0.8,
    "env_steps": 1200,
    "episodes": 40,
    "params": 5000,
    "teacher_params": 67586,
    "teacher_checkpoint": "/t/cartpole.pt",
    "teacher_wall_time_s": None,
}
TASK_ACROBOT = {
    **TASK,
    "env_id": "Acrobot-v1",
    "obs_shape": [6],
    "n_actions": 3,
    "eval_return_mean": -300.0,
    "teacher_return_mean": -100.0,
    "random_return_mean": -500.0,
    "pct_of_teacher": pct_of_teacher(-300.0, -100.0, -500.0),
    "raw_return_ratio": float("nan"),
    "teacher_wall_time_s": 12.5,
}
MULTITASK_START = {
    "kind": "multitask",
    "status": "failed",
    "mode": "distill",
    "task_names": ["cartpole", "acrobot"],
    "env_id": None,
    "seed": 1,
    "run_dir": "/runs/m",
    "resumed_from_env_steps": None,
    "loss": "kl",
    "temperature": 0.01,
    "method": "kl (tau=0.01)",
    "width": 64,
    "depth": 2,
    "adapter": "linear",
    "update": "sum",
    "config": CONFIG,
}
_MEAN, _GEO = mean_pcts([TASK["pct_of_teacher"], TASK_ACROBOT["pct_of_teacher"]])
MULTITASK_OK_FIELDS = {
    "status": "ok",
    "tasks": {"cartpole": TASK, "acrobot": TASK_ACROBOT},
    "mean_pct_of_teacher": _MEAN,
    "geomean_pct_of_teacher": _GEO,
    "normalized_score": _MEAN / 100,
    "params": 9000,
    "teacher_params": 135172,
    "param_ratio": 9000 / 135172,
    "env_steps": 2400,
    "task_env_steps": 1200,
    "grad_steps": 300,
    "optimizer_steps": 300,
    "wall_time_s": 5.0,
    "train_wall_time_s": 4.0,
    "sps": 480.0,
    "eval_history": HISTORY,
    "checkpoint": "/runs/m/student.pt",
}
MULTITASK_OK = {
    **MULTITASK_START,
    "env_id": "CartPole-v1+Acrobot-v1",
    "setup_s": 1.0,
    **MULTITASK_OK_FIELDS,
    "job_wall_time_s": 6.0,
    **PROVENANCE,
}
MULTITASK_FAILED = {
    **MULTITASK_START,
    "error": "ConfigError: x",
    "traceback": "Traceback ...",
    "job_wall_time_s": 0.2,
    **PROVENANCE,
}

BODIES = {
    "teacher_ok": (TEACHER_OK, TeacherResult),
    "teacher_failed": (TEACHER_FAILED, TeacherResult),
    "student_ok": (STUDENT_OK, StudentResult),
    "student_failed": (STUDENT_FAILED, StudentResult),
    "multitask_ok": (MULTITASK_OK, MultiTaskResult),
    "multitask_failed": (MULTITASK_FAILED, MultiTaskResult),
}

# kdrl-table's row columns before the schema existed (tables and CSVs are compared bit for bit)
LEGACY_FLAT_FIELDS = (
    "kind",
    "status",
    "env_id",
    "seed",
    "loss",
    "temperature",
    "width",
    "student_size",
    "depth",
    "control",
    "baseline",
    "params",
    "teacher_params",
    "param_ratio",
    "env_steps",
    "grad_steps",
    "wall_time_s",
    "train_wall_time_s",
    "sps",
    "eval_return_mean",
    "eval_return_std",
    "teacher_return_mean",
    "raw_return_ratio",
    "normalized_score",
    "random_return_mean",
    "action_agreement",
    "teacher_wall_time_s",
    "error",
    "run_dir",
    "job_wall_time_s",
)


def _json(body: dict) -> str:
    return json.dumps(body, indent=2, default=str, sort_keys=True)


# ---- schema: reading and writing today's files -----------------------------------------------------------
@pytest.mark.parametrize("name", sorted(BODIES))
def test_todays_bodies_round_trip_unchanged(name):
    body, cls = BODIES[name]
    res = load_result(json.loads(json.dumps(body)))
    assert type(res) is cls and res.extra == {}  # every key written today is in the schema
    assert _json(res.to_dict()) == _json(body)  # the same JSON text, key order aside
    assert _json(cls.from_dict(body).to_dict()) == _json(body)


def test_missing_keys_read_as_none_and_stay_out_of_the_file():
    res = load_result(TEACHER_FAILED)
    assert res.params is None and not res.written("params") and "params" not in res.to_dict()
    assert res.resumed_from_env_steps is None and res.written("resumed_from_env_steps")  # a null that was written
    student = load_result(STUDENT_OK)
    assert student.teacher_wall_time_s is None and student.to_dict()["teacher_wall_time_s"] is None
    assert student.lambda_ is None and "lambda" in student.to_dict() and "lambda_" not in student.to_dict()
    multi = load_result(MULTITASK_OK)
    assert isinstance(multi.tasks["acrobot"], TaskResult) and multi.tasks["acrobot"].teacher_wall_time_s == 12.5


def test_the_teacher_reference_is_a_record_in_students_and_tasks():
    student = load_result(STUDENT_OK)
    assert isinstance(student.teacher_reference, TeacherReference) and student.teacher_reference.extra == {}
    assert student.teacher_reference.return_mean == -80.0 and student.teacher_reference.episodes == 100
    task = load_result(MULTITASK_OK).tasks["cartpole"]
    assert isinstance(task.teacher_reference, TeacherReference) and task.teacher_reference.random_se == 1.0
    assert load_result(TEACHER_OK).reference["teacher"]["mean"] == 500.0
    # a file written before the reference existed: None, and still out of the file
    older = {k: v for k, v in STUDENT_OK.items() if k != "teacher_reference"}
    res = load_result(older)
    assert res.teacher_reference is None and not res.written("teacher_reference") and res.to_dict() == older
    with pytest.raises(AttributeError, match="no field 'return_men'"):
        student.teacher_reference.return_men = 1.0


def test_unknown_keys_and_kinds_are_kept():
    newer = {**TEACHER_OK, "frames_per_s": 123.0}
    res = load_result(newer)
    assert res.extra == {"frames_per_s": 123.0} and res.to_dict() == newer
    other = load_result({"kind": "ppo", "status": "ok", "seed": 3, "clip": 0.2})
    assert type(other) is RunResult and other.to_dict() == {"kind": "ppo", "status": "ok", "seed": 3, "clip": 0.2}
    older = {k: v for k, v in STUDENT_FAILED.items() if k not in ("student_size", "feature_weight", "host")}
    assert load_result(older).to_dict() == older  # a file from before these keys existed
    with pytest.raises(ValueError, match="'student' result"):
        TeacherResult.from_dict(STUDENT_OK)


def test_a_runner_filling_the_dataclasses_writes_todays_bodies():
    teacher = TeacherResult(env_id="CartPole-v1", seed=0, run_dir="/runs/t", config=CONFIG)
    assert teacher.to_dict() == TEACHER_START  # what is written if the run dies at once
    teacher.setup_s = 1.5
    teacher.resumed_from_env_steps = 25000
    for key, value in TEACHER_OK_FIELDS.items():
        setattr(teacher, key, value)
    teacher.job_wall_time_s = 23.0
    assert teacher.to_dict() == {k: v for k, v in TEACHER_OK.items() if k not in PROVENANCE}

    student = StudentResult(
        env_id="Acrobot-v1",
        seed=2,
        run_dir="/runs/s",
        loss="kl",
        temperature=0.01,
        width=48,
        student_size=None,
        depth=2,
        control="teacher",
        baseline=None,
        lambda_=None,
        feature_weight=0.0,
        config=CONFIG,
    )
    assert student.to_dict() == STUDENT_START
    student.error, student.traceback = "RuntimeError: boom", "Traceback ..."
    student.job_wall_time_s = 0.5
    assert student.to_dict() == {k: v for k, v in STUDENT_FAILED.items() if k not in PROVENANCE}

    multi = MultiTaskResult(
        mode="distill",
        task_names=["cartpole", "acrobot"],
        env_id=None,
        seed=1,
        run_dir="/runs/m",
        loss="kl",
        temperature=0.01,
        method="kl (tau=0.01)",
        width=64,
        depth=2,
        adapter="linear",
        update="sum",
        config=CONFIG,
    )
    assert multi.to_dict() == MULTITASK_START
    multi.env_id, multi.setup_s = "CartPole-v1+Acrobot-v1", 1.0
    for key, value in MULTITASK_OK_FIELDS.items():
        setattr(multi, key, value)
    multi.tasks = {"cartpole": TaskResult(**TASK), "acrobot": TaskResult(**TASK_ACROBOT)}
    multi.job_wall_time_s = 6.0
    assert _json(multi.to_dict()) == _json({k: v for k, v in MULTITASK_OK.items() if k not in PROVENANCE})


def test_a_misspelt_field_is_an_error_not_a_lost_key():
    teacher = TeacherResult(env_id="CartPole-v1", seed=0, run_dir="/r", config={})
    with pytest.raises(AttributeError, match="no field 'parms'"):
        teacher.parms = 5
    with pytest.raises(TypeError):
        TeacherResult(env_id="CartPole-v1", seed=0, config={})  # run_dir is identifying: required


def test_write_results_writes_the_writers_dict_through_the_schema(tmp_path):
    body = {k: v for k, v in STUDENT_OK.items() if k not in PROVENANCE}
    write_results(tmp_path / "dataclass", StudentResult.from_dict(body))
    from_dataclass = json.loads((tmp_path / "dataclass" / "results.json").read_text())
    assert {k: v for k, v in from_dataclass.items() if k not in PROVENANCE} == body
    assert set(PROVENANCE) <= set(from_dataclass)
    assert from_dataclass["teacher_wall_time_s"] is None and "teacher_wall_time_s" in from_dataclass
    write_results(tmp_path / "kept", load_result(STUDENT_OK))  # a file's own provenance is not overwritten
    kept = json.loads((tmp_path / "kept" / "results.json").read_text())
    assert kept["git_sha"] == PROVENANCE["git_sha"] and kept["cpu"] == PROVENANCE["cpu"]


def test_a_run_records_the_cpu_and_the_kernels_torch_used(tmp_path):
    """The same seed reruns digit for digit only on the same kind of CPU: each results.json says which."""
    import os
    import platform

    import torch

    write_results(tmp_path, StudentResult.from_dict({k: v for k, v in STUDENT_OK.items() if k not in PROVENANCE}))
    cpu = json.loads((tmp_path / "results.json").read_text())["cpu"]
    assert cpu["torch_capability"] == str(torch.backends.cpu.get_cpu_capability())
    assert cpu["model"] and cpu["model"] != platform.node()
    if os.path.exists("/proc/cpuinfo"):  # Linux: the model name the kernel reports, not the architecture
        assert f"model name\t: {cpu['model']}\n" in open("/proc/cpuinfo").read()


# ---- kdrl-table's columns come from the schema --------------------------------------------------------------
def test_flat_fields_are_the_columns_tables_had():
    assert FLAT_FIELDS == LEGACY_FLAT_FIELDS
    row = flatten(STUDENT_OK)
    assert list(row)[: len(LEGACY_FLAT_FIELDS) + 1] == [*LEGACY_FLAT_FIELDS, "method"]
    # resources' teacher "params" lands on the teacher_params column (the same count), not a new one
    assert list(row)[len(LEGACY_FLAT_FIELDS) + 1 :] == [
        "to_90pct_reached",
        "to_90pct_env_steps",
        "to_90pct_wall_s",
        "to_100pct_reached",
        "to_100pct_env_steps",
        "to_100pct_wall_s",
        "reference_episodes",
        "reference_teacher_mean",
        "reference_teacher_se",
        "reference_random_mean",
        "teacher_bytes",
        "teacher_flops",
        "teacher_latency_us",
        "student_params",
        "student_bytes",
        "student_flops",
        "student_latency_us",
        "gen_heavy_student",
        "gen_heavy_teacher",
    ]
    # a level never reached is censored at the run's budget (docs/protocol.md), flagged as not reached
    assert row["method"] == "kl (tau=0.01)" and row["to_100pct_env_steps"] == STUDENT_OK["env_steps"]
    assert row["to_90pct_reached"] and not row["to_100pct_reached"]
    assert flatten(load_result(STUDENT_OK)) == row
    failed = flatten(STUDENT_FAILED)
    assert failed["params"] is None and failed["error"] == "RuntimeError: boom"


# ---- one normalised score ----------------------------------------------------------------------------------
def test_normalized_score_edge_cases():
    assert normalized_score(-300.0, -100.0, -500.0) == pytest.approx(0.5)  # negative returns: not inverted
    assert normalized_score(22.0, 500.0, 22.0) == 0.0 and normalized_score(500.0, 500.0, 22.0) == 1.0
    assert normalized_score(-600.0, -100.0, -500.0) == pytest.approx(-0.25)  # worse than random: below 0
    assert math.isnan(normalized_score(1.0, 5.0, 5.0))  # teacher == random
    assert math.isnan(normalized_score(1.0, 4.0, 5.0))  # teacher worse than random: no scale to measure on
    assert normalized_score(1.0, 4.0, 5.0, strict=False) == pytest.approx(4.0)  # distill's rule so far
    assert math.isnan(normalized_score(1.0, 5.0, 5.0, strict=False))
    assert math.isnan(normalized_score(float("nan"), 5.0, 1.0)) and math.isnan(normalized_score(1.0, float("nan"), 1.0))


def test_normalized_score_gives_the_old_numbers_float_for_float():
    rng = np.random.default_rng(0)
    s, t, r = (rng.normal(0, 300, 2000) for _ in range(3))
    t[:50] = r[:50]  # teacher == random
    for a, b, c in zip(s.tolist(), t.tolist(), r.tolist()):
        old_pct = 100.0 * (a - c) / (b - c) if b - c > 0 else float("nan")  # multitask_eval.pct_of_teacher
        old_distill = (a - c) / (b - c) if b != c else float("nan")  # distill's normalized_return_ratio
        for new, old in (
            (pct_of_teacher(a, b, c), old_pct),
            (normalized_score(a, b, c, scale=100.0), old_pct),
            (normalized_score(a, b, c, strict=False), old_distill),
        ):
            assert new == old or (math.isnan(new) and math.isnan(old))


# ---- one geometric mean -------------------------------------------------------------------------------------
def _legacy_multitask_geomean(pcts):  # kdrl.multitask_eval.mean_pcts before kdrl.scores
    x = np.asarray(pcts, dtype=float)
    if len(x) == 0 or not np.all(np.isfinite(x)):
        return float("nan")
    return float(np.exp(np.log(np.maximum(x, 1.0)).mean()))


def _legacy_table_geomean(means):  # kdrl.cli.table.geomean_row's cell before kdrl.scores
    means = np.asarray(means, dtype=float)
    ok = means[means > 0]
    return float(np.exp(np.mean(np.log(ok)))) if len(ok) == len(means) and len(ok) else float("nan")


def test_geometric_mean_edge_cases():
    assert geometric_mean([4.0, 1.0]) == pytest.approx(2.0) and geometric_mean([7.0]) == pytest.approx(7.0)
    for bad in ([], [1.0, float("nan")], [1.0, float("inf")], [1.0, -float("inf")]):
        assert math.isnan(geometric_mean(bad)) and math.isnan(geometric_mean(bad, floor=1.0))
    assert math.isnan(geometric_mean([4.0, 0.0])) and math.isnan(geometric_mean([4.0, -1.0]))  # no floor
    assert geometric_mean([100.0, -5.0], floor=1.0) == pytest.approx(10.0)  # floored at 1
    assert geometric_mean([100.0, 0.0], floor=1.0) == pytest.approx(10.0)
    assert geometric_mean([100.0, 25.0], floor=1.0) == pytest.approx(50.0)  # floor only lifts values below it
    with pytest.raises(ValueError, match="floor"):
        geometric_mean([1.0], floor=0.0)


@pytest.mark.parametrize("seed", range(5))
def test_geometric_mean_gives_each_call_sites_old_numbers(seed):
    """multitask (floor 1%) and kdrl-table (no floor) on the kinds of input they see: per-task % that
    can be negative or nan, per-env mean fractions that can be <= 0 or nan."""
    rng = np.random.default_rng(seed)
    for _ in range(300):
        x = rng.normal(60, 60, rng.integers(0, 6))
        if len(x) and rng.random() < 0.2:
            x[rng.integers(len(x))] = rng.choice([np.nan, 0.0, np.inf, 0.5])
        pcts_old, pcts_new = _legacy_multitask_geomean(x), geometric_mean(x, floor=GEOMEAN_FLOOR_PCT)
        assert pcts_new == pcts_old or (math.isnan(pcts_new) and math.isnan(pcts_old))
        assert mean_pcts(x)[1] == pcts_old or (math.isnan(mean_pcts(x)[1]) and math.isnan(pcts_old))
        table_old, table_new = _legacy_table_geomean(x / 100), geometric_mean(x / 100)
        if np.isfinite(table_old):
            assert table_new == table_old
        else:  # the old one returned inf for an inf mean: both print as "–"
            assert math.isnan(table_new)


def test_geomean_row_prints_the_geometric_mean_or_a_dash():
    import pandas as pd

    agg = pd.DataFrame({"width": [48, 48, 64, 64], "mean": [0.5, 2.0, 0.9, -0.1]})
    assert geomean_row(agg, "width", [48, 64]) == "| geometric mean | 100.0 | – (a mean <= 0) |"


# ---- the table tools read files through the schema ----------------------------------------------------------
def test_multitask_table_reads_schema_written_files(tmp_path):
    write_results(tmp_path / "ok", MultiTaskResult.from_dict(MULTITASK_OK))
    write_results(tmp_path / "failed", MultiTaskResult.from_dict(MULTITASK_FAILED))
    write_results(tmp_path / "teacher", TeacherResult.from_dict(TEACHER_OK))  # not a multi-task run: skipped
    df = collect_multitask([tmp_path])
    assert list(df["column"].dropna()) == ["cartpole", "acrobot", "mean over tasks", "geomean over tasks"]
    text = multitask_report(df)
    assert "1 ok runs, 1 failed" in text
    assert f"| kl (tau=0.01) (n=1) | {TASK['pct_of_teacher']:.1f} ‡ (no spread) †" in text
    assert f"| {_GEO:.1f} ‡ (no spread) † |" in text  # one seed: no interval, and marked


def test_kdrl_table_geometric_mean_row_over_envs(tmp_path):
    for env, ratio in (("CartPole-v1", 0.5), ("Acrobot-v1", 2.0)):
        body = {**STUDENT_OK, "env_id": env, "normalized_score": ratio}
        write_results(tmp_path / env, StudentResult.from_dict(body))
    df = collect([tmp_path])
    summary = summary_table(df, "env_id", "width", "normalized_score")
    assert summary.markdown.splitlines()[-1] == "| geometric mean | 100.0 |"
    assert summary.caption == (
        "normalized_score (% of teacher): mean [95% CI] over n = 1 seeds; CI: Hall's transformed-t (Student's t below 5 "
        "seeds), clipped to the score's range; † n < 5; ‡ no reliable interval (most seeds tied at a bound of the score, "
        "e.g. CartPole's 500, or no spread); 2 ok runs, 0 failed; teacher reference (100 held-out episodes per "
        "teacher): Acrobot-v1 T = -80.0 ± 0.5 (± se); CartPole-v1 T = -80.0 ± 0.5 (± se)"
    )
