"""hparams_search presets (issue 15; kdrl's own Optuna sweeper, kdrl.search): objective = the app's
optimized_metric, trials launched as jobs through any launcher, pruned on their periodic evaluations,
workers sharing one study through its storage, a killed search resumed."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from tests.helpers import compose_cfg
from tests.zygote import run_app

optuna = pytest.importorskip("optuna")
ROOT = Path(__file__).resolve().parents[1]
# a threshold pruner a test adds to the preset's pruners: prunes a trial whose best periodic normalised score is
# below `lower` at env step >= n_warmup_steps (a deterministic decision, unlike the median's, which depends on
# which trials happened to finish first)
THRESHOLD = "+hydra.sweeper.pruners.threshold={_target_:optuna.pruners.ThresholdPruner,lower:%s,n_warmup_steps:%d}"
# two configurations of the CartPole debug student: GOOD reaches the teacher by ~800 env steps, BAD stays far below
GOOD = {"distill.optimizer.lr": 0.0055, "loss.temperature": 0.2, "distill.batch_size": 32, "distill.gradient_steps": 4}
BAD = {"distill.optimizer.lr": 0.0001, "loss.temperature": 5.0, "distill.batch_size": 256, "distill.gradient_steps": 2}


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


def enqueue(journal: Path, study: str, trials: list[dict]) -> None:
    """Trials the workers take first (in order), in a study created before them (its settings are the
    first worker's)."""
    from kdrl.search.storage import create_or_load_study, storage_url

    s = create_or_load_study(storage_url(str(journal)), study, ["maximize"])
    for params in trials:
        s.enqueue_trial(params)


def load(journal: Path, study: str):
    from kdrl.search.summary import load_study

    return load_study(f"journal:{journal}", study)


def test_pruned_trials_stop_at_an_evaluation_and_are_recorded_as_pruned(tmp_path):
    """A trial the pruner stops ends training at that evaluation, writes results.json with status
    "pruned" and no final evaluation, and is PRUNED in the study with its last reported value; the
    others complete. The worker's slot takes the next trial at once."""
    journal = tmp_path / "sweep" / "optuna.journal"
    enqueue(journal, "kdrl_cartpole_student", [BAD, GOOD, BAD])
    cmd = student_search(
        tmp_path, "sweep", "launcher=joblib", "hydra.sweeper.n_trials=3", "hydra.sweeper.n_jobs=1",
        "distill.total_timesteps=2400", "eval.freq=400", THRESHOLD % (0.5, 800), "hydra.sweeper.pruner=threshold",
    )  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    study = load(journal, "kdrl_cartpole_student")
    states = [t.state.name for t in study.trials]
    assert states == ["PRUNED", "COMPLETE", "PRUNED"], states
    for t in study.trials:
        res = json.loads((tmp_path / "sweep" / str(t.number) / "results.json").read_text())
        steps = sorted(t.intermediate_values)
        if t.state.name == "PRUNED":
            assert res["status"] == "pruned" and "normalized_score" not in res  # no final evaluation
            assert 800 <= res["env_steps"] == steps[-1] < 2400 and t.value == t.intermediate_values[steps[-1]]
            assert len(res["eval_history"]) == len(steps) and t.user_attrs["kdrl:env_steps"] == res["env_steps"]
        else:
            assert res["status"] == "ok" and t.value == pytest.approx(res["normalized_score"])
    index = (tmp_path / "sweep" / "index.csv").read_text()
    assert index.count(",pruned,") == 2 and index.count(",ok,") == 1
    best = yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())
    assert best["best_trial"] == 1 and best["trials"]["PRUNED"] == 2
    report = run_app("search", [str(tmp_path / "sweep"), "--no-plots"], timeout=120)
    assert report.returncode == 0 and "complete 1, pruned 2" in report.stdout, report.stderr


@pytest.mark.slow
def test_a_killed_search_rerun_continues_its_study_and_resumes_the_killed_trial(tmp_path):
    """Kill a worker (its whole process group: the sweeper and its job) while a trial trains; rerun
    the same command: the same study goes on, the killed trial is failed as stale and retried with its
    parameters in its own job dir, where kdrl resumes it from its checkpoint; n_trials still holds."""
    journal = tmp_path / "sweep" / "optuna.journal"
    cmd = student_search(
        tmp_path, "sweep", "launcher=joblib", "hydra.sweeper.n_trials=3", "hydra.sweeper.n_jobs=1",
        "hydra.sweeper.pruner=none", "hydra.sweeper.heartbeat_s=1", "hydra.sweeper.stale_after_s=5",
        "distill.total_timesteps=8000", "eval.freq=500", "eval.stop_at_return=null",
    )  # fmt: skip
    log = (tmp_path / "first.log").open("w")
    first = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 400
    while time.time() < deadline and first.poll() is None:
        time.sleep(2)
        if not journal.exists():
            continue
        trials = load(journal, "kdrl_cartpole_student").trials
        if len(trials) >= 2 and len(trials[1].intermediate_values) >= 2:  # trial 1 has checkpoints
            break
    assert first.poll() is None, (
        "the first worker ended before it could be killed: " + (tmp_path / "first.log").read_text()[-2000:]
    )
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    killed = load(journal, "kdrl_cartpole_student").trials[1]
    assert killed.state.name == "RUNNING"
    time.sleep(6)  # past stale_after_s
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "failed as stale, retried" in again.stdout + again.stderr
    study = load(journal, "kdrl_cartpole_student")
    by = {t.number: t for t in study.trials}
    assert by[0].state.name == "COMPLETE" and by[1].state.name == "FAIL" and by[1].system_attrs["kdrl:stale"]
    retry = next(t for t in study.trials if t.user_attrs.get("kdrl:retry_of") == 1)
    assert retry.state.name == "COMPLETE" and retry.params == killed.params
    assert sum(t.state.name == "COMPLETE" for t in study.trials) == 3  # n_trials, not counting the stale one
    res = json.loads((tmp_path / "sweep" / "1" / "results.json").read_text())  # the retry ran in job dir 1 ...
    assert res["status"] == "ok" and res["resumed_from_env_steps"] >= 1000  # ... and resumed its checkpoint
    assert res["config"]["search"]["trial"] == retry.number and retry.value == pytest.approx(res["normalized_score"])


def test_teacher_search_on_time_to_score_stops_trials_at_the_target_and_counts_failures_at_the_budget(tmp_path):
    """The MinAtar teacher preset's objective on a debug CartPole teacher: each trial stops once a
    periodic evaluation reaches the target (the sweeper sets eval.stop_at_return), its value is the
    wall time of that evaluation, or the whole fit's when it never gets there."""
    cmd = [
        str(Path(sys.executable).parent / "kdrl-train"), "hparams_search=cartpole_teacher_optuna", "debug=fast",
        "launcher=joblib", "hydra.sweeper.n_trials=3", "hydra.sweeper.n_jobs=2", "hydra.sweeper.direction=minimize",
        "hydra.sweeper.objective.metrics=[time_to_score]", "hydra.sweeper.objective.target=30",
        "hydra.sweeper.pruner=none", "eval.freq=500", f"hydra.sweep.dir={tmp_path / 'sweep'}",
        "hydra.sweeper.enqueue=[{algo.optimizer.lr:0.0123,algo.batch_size:64}]",  # a known point, tried first
    ]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    study = load(tmp_path / "sweep" / "optuna.journal", "kdrl_cartpole_teacher")
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    first = study.trials[0].params
    assert first["algo.optimizer.lr"] == 0.0123 and first["algo.batch_size"] == 64
    assert study.trials[1].params["algo.optimizer.lr"] != 0.0123  # the others are sampled
    for t in study.trials:
        res = json.loads((tmp_path / "sweep" / str(t.number) / "results.json").read_text())
        assert res["config"]["eval"]["stop_at_return"] == 30
        hist = res["eval_history"]
        assert all(h["process_s"] > h["wall_s"] for h in hist)  # the user's wait: imports and setup too
        reached = [h for h in hist if h["return_mean"] >= 30]
        if reached:
            assert t.value == pytest.approx(reached[0]["wall_s"]) and hist[-1] is reached[0]  # stopped there
        else:
            assert t.value == pytest.approx(res["wall_time_s"]) and res["env_steps"] == 3000  # the budget


def test_multi_objective_search_reports_its_pareto_front(tmp_path):
    """Return against wall time: two directions, TPE's multi-objective mode, no pruning; the sweep's
    optimization_results.yaml and kdrl-search give the Pareto front."""
    cmd = student_search(
        tmp_path, "sweep", "launcher=joblib", "hydra.sweeper.n_trials=3", "hydra.sweeper.direction=[maximize,minimize]",
        "hydra.sweeper.objective.metrics=[normalized_score,wall_time_s]",
    )  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    study = load(tmp_path / "sweep" / "optuna.journal", "kdrl_cartpole_student")
    assert len(study.directions) == 2 and all(t.state.name == "COMPLETE" for t in study.trials)
    assert all(not t.intermediate_values for t in study.trials)  # not pruned: nothing reported
    for t in study.trials:
        res = json.loads((tmp_path / "sweep" / str(t.number) / "results.json").read_text())
        assert t.values == pytest.approx([res["normalized_score"], res["wall_time_s"]])
    best = yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())
    assert {s["number"] for s in best["solutions"]} == {t.number for t in study.best_trials}
    report = run_app("search", [str(tmp_path / "sweep")], timeout=120)
    assert report.returncode == 0 and "## Pareto front" in report.stdout
    assert (tmp_path / "sweep" / "pareto_front.png").stat().st_size > 0


@pytest.mark.slow  # its sibling on joblib, the same search: test_pruned_trials_stop_at_an_evaluation_and_are_recorded_as_pruned
def test_search_through_a_local_ray(tmp_path):
    """Trials as Ray tasks, two in flight from one worker (Ray started once, before the slots)."""
    env = {k: v for k, v in os.environ.items() if k != "KDRL_RAY_ADDRESS"}
    journal = tmp_path / "sweep" / "optuna.journal"
    enqueue(journal, "kdrl_cartpole_student", [BAD, GOOD, BAD])
    cmd = student_search(
        tmp_path, "sweep", "launcher=ray", "hydra.sweeper.n_trials=3", "hydra.sweeper.n_jobs=2",
        "distill.total_timesteps=2400", "eval.freq=400", THRESHOLD % (0.5, 800), "hydra.sweeper.pruner=threshold",
    )  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900, env=env)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    study = load(journal, "kdrl_cartpole_student")
    assert [t.state.name for t in study.trials] == ["PRUNED", "COMPLETE", "PRUNED"]
    statuses = [json.loads((tmp_path / "sweep" / str(n) / "results.json").read_text())["status"] for n in range(3)]
    assert statuses == ["pruned", "ok", "pruned"]


def test_teacher_search_preset_composes_with_its_objective():
    cfg = compose_cfg("train", ["hparams_search=cartpole_teacher_optuna"])
    assert cfg.optimized_metric == "eval_return_mean"


@pytest.mark.slow  # siblings: test_shared_study_is_created_once_under_a_lock_before_the_sweepers (two sweepers, one
# study), test_pruned_trials_stop_at_an_evaluation_and_are_recorded_as_pruned, tests/test_launchers.py's real SLURM sweep
def test_two_workers_on_slurm_share_one_study_with_pruned_trials(slurm, tmp_path):
    """The cluster recipe of the preset: two worker processes, each launching its trials as SLURM jobs,
    take their trials from, report to and are pruned against one study in a journal file; every trial
    ends COMPLETE or PRUNED with results.json saying the same."""
    journal = tmp_path / "study.journal"
    enqueue(journal, "kdrl_cartpole_student", [BAD, GOOD, BAD, GOOD])
    env = {**os.environ, "KDRL_OPTUNA_STORAGE": f"journal:{journal}", "WANDB_MODE": "disabled"}

    def worker(name: str) -> subprocess.Popen:
        cmd = student_search(
            tmp_path, name, "launcher=slurm", "hydra.launcher.timeout_min=10", "hydra.sweeper.n_trials=4",
            "hydra.sweeper.n_jobs=1", "distill.total_timesteps=2400", "eval.freq=400", THRESHOLD % (0.5, 800),
            "hydra.sweeper.pruner=threshold",
        )  # fmt: skip
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    procs = [worker("a"), worker("b")]  # at once: both create-or-load the same study
    logs = [p.communicate(timeout=900)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(log[-2000:] for log in logs)
    study = load(journal, "kdrl_cartpole_student")
    states = sorted(t.state.name for t in study.trials)
    assert states == ["COMPLETE", "COMPLETE", "PRUNED", "PRUNED"], states
    runs = {}
    for name in ("a", "b"):
        for p in (tmp_path / name).glob("*/results.json"):
            runs[int(p.parent.name)] = json.loads(p.read_text())  # job dir = trial number
        assert list((tmp_path / name / ".submitit").glob("*/*_log.out"))  # ran as SLURM jobs
    assert sorted(runs) == [0, 1, 2, 3]  # each trial once, split between the workers
    for t in study.trials:
        assert runs[t.number]["status"] == {"COMPLETE": "ok", "PRUNED": "pruned"}[t.state.name]
        assert runs[t.number]["config"]["search"]["trial"] == t.number
        if t.state.name == "COMPLETE":
            assert t.value == pytest.approx(runs[t.number]["normalized_score"])


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


def test_a_two_objective_report_names_its_front_even_when_one_trial_dominates():
    """Found in CI: three trials, one better on both objectives, gave a front of one and the
    report headed it '## Best'; a two-objective study's section is its Pareto front."""
    import optuna

    from kdrl.search.summary import build_report

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["maximize", "minimize"], study_name="front")
    for score, seconds in [(0.9, 10.0), (0.5, 20.0), (0.4, 30.0)]:
        study.add_trial(
            optuna.trial.create_trial(
                params={"x": score}, distributions={"x": optuna.distributions.FloatDistribution(0, 1)},
                values=[score, seconds],
            )
        )  # fmt: skip
    text = build_report(study).markdown()
    assert "## Pareto front" in text and "## Best" not in text
    assert "- trial 0: 0.9, 10" in text and "- trial 1:" not in text
    single = optuna.create_study(direction="maximize", study_name="one")
    single.add_trial(
        optuna.trial.create_trial(
            params={"x": 0.5}, distributions={"x": optuna.distributions.FloatDistribution(0, 1)}, value=0.5
        )
    )
    assert "## Best" in build_report(single).markdown()
