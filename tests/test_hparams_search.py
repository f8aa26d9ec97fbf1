"""hparams_search presets (issue 15): hydra-optuna-sweeper over kdrl's apps, objective = the app's
optimized_metric, trials launched two at a time through the joblib launcher."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from tests.helpers import compose_cfg

pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
ROOT = Path(__file__).resolve().parents[1]


def student_search(tmp_path: Path, sweep: str, *overrides: str) -> list[str]:
    """The student preset at debug size, its sweep in tmp_path/sweep, teachers cached in tmp_path."""
    return [
        str(Path(sys.executable).parent / "kdrl-distill"),
        "hparams_search=cartpole_student_optuna",
        "debug=fast",
        *overrides,
        f"hydra.sweep.dir={tmp_path / sweep}",
        f"teacher.cache_dir={tmp_path / 'cache'}",
    ]


def test_student_search_runs_trials_in_parallel_and_reports_the_best(tmp_path):
    cmd = student_search(tmp_path, "sweep", "launcher=joblib", "hydra.sweeper.n_trials=4")
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


def test_two_sweepers_on_slurm_share_one_study_through_the_storage(slurm, tmp_path):
    """The cluster recipe of the preset: several sweeper processes, each launching its trials as SLURM
    jobs, sample from and report to one Optuna study in a shared SQL storage."""
    optuna = pytest.importorskip("optuna")
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    env = {**os.environ, "KDRL_OPTUNA_STORAGE": storage, "WANDB_MODE": "disabled"}

    def sweeper(name: str) -> subprocess.Popen:
        slurm_jobs = ["launcher=slurm", "hydra.launcher.timeout_min=10"]
        cmd = student_search(tmp_path, name, *slurm_jobs, "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=1")
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    procs = [sweeper("a"), sweeper("b")]  # at once: both create-or-load the same study
    logs = [p.communicate(timeout=900)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(log[-2000:] for log in logs)
    study = optuna.load_study(study_name="kdrl_cartpole_student", storage=storage)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 4  # 2 from each sweeper, in one study
    for name in ("a", "b"):
        results = [json.loads(p.read_text()) for p in (tmp_path / name).glob("*/results.json")]
        assert len(results) == 2 and all(r["status"] == "ok" for r in results)
        assert list((tmp_path / name / ".submitit").glob("*/*_log.out"))  # ran as SLURM jobs
    scores = sorted(t.value for t in done)
    ran = sorted(
        json.loads(p.read_text())["normalized_score"] for n in ("a", "b") for p in (tmp_path / n).glob("*/results.json")
    )
    assert scores == pytest.approx(ran)  # the study holds exactly the trials' objectives


def _start_sweeper(args: tuple) -> str:
    """One sweeper's start, as a separate process: SharedStudy's callback, then the sweeper's own
    create-or-load of the study."""
    storage, barrier = args
    import optuna

    from kdrl.runs.sweep import SharedStudy

    cfg = OmegaConf.create({"hydra": {"sweeper": {"storage": storage, "study_name": "s", "direction": "maximize"}}})
    barrier.wait()  # all at once
    SharedStudy().on_multirun_start(cfg)
    return optuna.create_study(study_name="s", storage=storage, direction="maximize", load_if_exists=True).study_name


def test_shared_study_is_created_once_under_a_lock_before_the_sweepers(tmp_path, monkeypatch):
    optuna = pytest.importorskip("optuna")
    from kdrl.runs.sweep import SharedStudy

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    cfg = OmegaConf.create({"hydra": {"sweeper": {"storage": storage, "study_name": "s", "direction": "maximize"}}})
    locked, real = [], optuna.create_study

    def spy(**kwargs):
        locked.append((tmp_path / "study.db.lock").exists())
        return real(**kwargs)

    monkeypatch.setattr(optuna, "create_study", spy)
    SharedStudy().on_multirun_start(cfg)
    SharedStudy().on_multirun_start(cfg)  # a later sweeper loads the same study
    assert locked == [True, True] and not (tmp_path / "study.db.lock").exists()
    study = optuna.load_study(study_name="s", storage=storage)
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    SharedStudy().on_multirun_start(OmegaConf.create({"hydra": {"sweeper": {"storage": None}}}))  # in memory: no-op
    monkeypatch.undo()
    # four sweepers starting at the same instant on a fresh storage all get the one study
    context = multiprocessing.get_context("spawn")
    fresh = f"sqlite:///{tmp_path / 'fresh.db'}"
    with context.Manager() as manager:
        barrier = manager.Barrier(4)
        with context.Pool(4) as pool:
            assert pool.map(_start_sweeper, [(fresh, barrier)] * 4) == ["s"] * 4
    assert len(optuna.get_all_study_summaries(storage=fresh)) == 1
