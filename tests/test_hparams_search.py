"""hparams_search presets (issue 15): hydra-optuna-sweeper over kdrl's apps, objective = the app's
optimized_metric, trials launched two at a time through the joblib launcher."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import compose_cfg

pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
ROOT = Path(__file__).resolve().parents[1]


def test_student_search_runs_trials_in_parallel_and_reports_the_best(tmp_path):
    cmd = [
        str(Path(sys.executable).parent / "kdrl-distill"),
        "hparams_search=cartpole_student_optuna",
        "debug=fast",
        "launcher=joblib",
        "hydra.sweeper.n_trials=4",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        f"teacher.cache_dir={tmp_path / 'cache'}",
    ]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    best = yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())
    trials = [json.loads(p.read_text()) for p in sorted((tmp_path / "sweep").glob("*/results.json"))]
    assert len(trials) == 4 and all(t["status"] == "ok" for t in trials)
    scores = [t["normalized_score"] for t in trials]
    assert best["best_value"] == pytest.approx(max(scores))
    winner = trials[scores.index(max(scores))]["config"]
    assert winner["distill"]["optimizer"]["lr"] == pytest.approx(best["best_params"]["distill.optimizer.lr"])
    assert {t["config"]["student"]["size"] for t in trials} == {"rusu_4"}
    assert len({t["config"]["loss"]["temperature"] for t in trials}) == 4  # each trial sampled its own


def test_teacher_search_preset_composes_with_its_objective():
    cfg = compose_cfg("train", ["hparams_search=cartpole_teacher_optuna"])
    assert cfg.optimized_metric == "eval_return_mean"
