"""logger=tensorboard (issue 15): Lightning's TensorBoardLogger beside the CSV, against env steps."""

from __future__ import annotations

import pytest

from kdrl.runs.distill import distill_student
from tests.helpers import compose_cfg
from tests.test_distill import FAST_STUDENT

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def test_tensorboard_logger_writes_the_curves_against_env_steps(tmp_path):
    cfg = compose_cfg("distill", [*FAST_STUDENT, "logger=tensorboard", "student.width=16", "teacher.checkpoint=null"])
    cfg.teacher.cache_dir = str(tmp_path / "cache")
    cfg.teacher.overrides = ["algo.total_timesteps=2000", "algo.learning_starts=500", "eval.freq=1000"]
    res = distill_student(cfg, tmp_path / "run")
    assert res["status"] == "ok"
    events = list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
    assert events, "no TensorBoard event file"
    acc = event_accumulator.EventAccumulator(str(events[0].parent))
    acc.Reload()
    evals = acc.Scalars("eval/return_mean")
    assert [e.step for e in evals] == [h["env_steps"] for h in res["eval_history"]]
    assert "train/distill_loss" in acc.Tags()["scalars"]
    assert (tmp_path / "run" / "csv" / "metrics.csv").is_file()  # the CSV stays
