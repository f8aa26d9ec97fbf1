"""Tests written against the surviving mutants of the "runs" room (kdrl/runs, kdrl/modules,
kdrl/callbacks.py; docs/mutation.md). Each pins a value a one-line change would move and no test of
the room looked at; each names the mutants it was written for (mutmut's names, as
scripts/mutation.py writes them to build/mutation/runs/survivors-runs.txt). Direct calls of the
function where that shows it; the few that need a job build one CartPole job without training it."""

from __future__ import annotations

import csv
import io
import json
import logging
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from torch import nn
from tqdm import tqdm

from kdrl.callbacks import EnvStepProgressBar, PeriodicEvaluation
from kdrl.collector import greedy_actions
from kdrl.datasets import DATASET_FILE, DatasetError, file_sha256, record_dataset, save_dataset
from kdrl.envs import EnvSpec
from kdrl.evaluation import eval_seeds, evaluate_policy, random_returns
from kdrl.io import save_policy
from kdrl.modules.base import RLModule
from kdrl.modules.components import (
    Int8Training,
    MagnitudePruning,
    Pruning,
    Quantization,
    compression_components,
)
from kdrl.nets import MLP, MultiTaskQNetwork, TaskView
from kdrl.runs import multitask as mt
from kdrl.runs.dataset import record_teacher_data
from kdrl.runs.distill import DistillJob, first_reaching, teacher_dataset
from kdrl.runs.job import (
    CONFIG_IN_CHECKPOINT,
    ResumeConflict,
    check_resumable,
    completed_results,
    plain,
    quiet_lightning,
    resume_checkpoint,
)
from kdrl.runs.sweep import write_sweep_index
from kdrl.validate import ConfigError
from tests.helpers import compose_cfg

CARTPOLE = EnvSpec("CartPole-v1", (4,), 2)
QUIET = ["debug=fast", "logger=none", "trainer.enable_progress_bar=false"]


def constant_teacher(path: Path, action: int) -> Path:
    """A kdrl CartPole checkpoint that always pushes ``action``: a teacher no better than a random
    policy (episodes of ~10 steps), so jobs built on it are quick."""
    net = MLP((4,), 2, hidden=[2])
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        [m for m in net.modules() if isinstance(m, nn.Linear)][-1].bias[action] = 1.0  # Q = the head's bias
    cfg = {"_target_": "kdrl.nets.MLP", "width": 2, "depth": 1, "dueling": False, "hidden": [2]}
    return save_policy(path, net, cfg, "CartPole-v1", (4,), 2)


def scripted_teacher(path: Path, action: int) -> Path:
    """A TorchScript CartPole teacher (obs -> Q-values) that always picks ``action``."""
    lin = nn.Linear(4, 2)
    with torch.no_grad():
        lin.weight.zero_()
        lin.bias.zero_()
        lin.bias[action] = 1.0
    torch.jit.script(lin).save(str(path))
    return path


# ---- callbacks ------------------------------------------------------------------------------------------------------
def test_an_evaluation_is_due_at_exactly_its_env_step():
    """(kdrl.callbacks.xǁPeriodicEvaluationǁdue__mutmut_2: ``>`` for ``>=``) with eval.freq=100 the
    evaluation is due at env step 100 itself, not a round later."""
    ev = PeriodicEvaluation(100, 1, 0, policies=None, checkpoint=None)
    at = lambda steps: SimpleNamespace(env_steps=steps)  # noqa: E731
    assert ev.next_eval == 100
    assert not ev.due(at(99)) and ev.due(at(100)) and ev.due(at(101))
    ev.schedule_next(at(100))
    assert ev.next_eval == 200 and not ev.due(at(199)) and ev.due(at(200))


def test_progress_bar_shows_the_mean_of_the_recent_returns_as_ret100():
    """(kdrl.callbacks.xǁEnvStepProgressBarǁ_update__mutmut_11: the key renamed) the bar's postfix
    names the mean return of the last episodes ``ret100``."""
    pb = EnvStepProgressBar()
    pb.bar = tqdm(total=1000, file=io.StringIO())
    module = SimpleNamespace(
        env_steps=40,
        sps=1234.0,
        collector=SimpleNamespace(recent_returns=[10.0, 21.0], epsilon=0.5),
        trainer=SimpleNamespace(callbacks=[]),
    )
    pb._update(module)
    assert pb.bar.n == 40
    assert pb.bar.postfix == "sps=1,234, eps=0.500, ret100=15.5"
    pb.bar.close()


# ---- modules --------------------------------------------------------------------------------------------------------
def _rl_module() -> RLModule:
    return RLModule(nn.Linear(4, 2), None, None, None, lambda ps: torch.optim.SGD(ps, lr=0.1), lambda t: 0.0)


def test_plain_backward_is_taken_at_full_precision_and_not_with_a_mixed_precision_plugin():
    """(kdrl.modules.base.xǁRLModuleǁ_plain_backward__mutmut_7: ``is not None``, the check never made)
    at 32-bit precision the update calls ``loss.backward()`` itself (no Lightning backward hooks);
    a plugin that changes the backward (bf16-mixed) goes through ``manual_backward``."""
    kw = dict(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False)
    m = _rl_module()
    m.trainer = pl.Trainer(precision="32-true", **kw)
    assert m._plain_backward() is True and m._plain_backward() is True  # computed once, then cached
    mixed = _rl_module()
    mixed.trainer = pl.Trainer(precision="bf16-mixed", **kw)
    assert mixed._plain_backward() is False


def test_compression_components_are_built_from_their_config_blocks():
    """(kdrl.modules.components.x_compression_components__mutmut_11: the pruner never built) prune.amount > 0
    builds MagnitudePruning with the block's values, and int8 training is handed that pruner."""
    pruner, int8 = compression_components({"prune": {"amount": 0.6, "at": 0.25}, "quantize": {"int8": True, "at": 0.5}})
    assert isinstance(pruner, MagnitudePruning) and pruner.config == Pruning(0.6, 0.25)
    assert isinstance(int8, Int8Training) and int8.config == Quantization(True, 0.5) and int8.pruning is pruner
    assert compression_components({"prune": {"amount": 0.0}}) == (None, None)
    pruner, int8 = compression_components({"prune": {"amount": 0.3}})
    assert isinstance(pruner, MagnitudePruning) and pruner.config.amount == 0.3 and int8 is None


def test_pruning_state_round_trips_and_a_state_without_masks_loads_nothing():
    """(kdrl.modules.components.xǁMagnitudePruningǁload_state_dict__mutmut_3: ``not in``) a resumed
    pruned student gets its masks and report back; one saved before its pruning point has none."""
    student = SimpleNamespace(q_net=MLP((4,), 2, hidden=[8]), env_steps=300, log_env_metrics=lambda m: None)
    a = MagnitudePruning(Pruning(0.5, 0.25))
    assert a.state_dict() == {}
    fresh = MagnitudePruning(Pruning(0.5, 0.25))
    fresh.load_state_dict({"teacher_acted": 3}, student)  # saved before the pruning point
    assert fresh.masks is None and fresh.report is None and not fresh.applied
    a.apply(student)
    state = a.state_dict()
    b = MagnitudePruning(Pruning(0.5, 0.25))
    b.load_state_dict(state, student)
    assert b.applied and b.report == a.report and b.report["at_env_step"] == 300.0
    assert set(b.masks) == set(a.masks) and all(torch.equal(b.masks[k], a.masks[k]) for k in a.masks)


# ---- runs.dataset ---------------------------------------------------------------------------------------------------
def test_data_job_results_name_the_dataset_file_and_its_mean_return(tmp_path):
    """(kdrl.runs.dataset.x_record_teacher_data__mutmut_116: results' dataset None; __mutmut_140: a
    mean over no episodes) results.json names the recorded file with its hash and size; the mean
    return is that of the recorded episodes, None (not nan) when no episode ended."""
    teacher = constant_teacher(tmp_path / "teacher.pt", 0)
    cfg = compose_cfg("data", [*QUIET, f"teacher.checkpoint={teacher}", "dataset.steps=200", "env.num_envs=2"])
    res = record_teacher_data(cfg, tmp_path / "data")
    path = tmp_path / "data" / DATASET_FILE
    assert res["status"] == "ok"
    assert res["dataset"] == {"path": str(path), "sha256": file_sha256(path), "bytes": path.stat().st_size}
    assert res["episodes"] >= 10 and 8 <= res["episode_return_mean"] <= 12  # always-left CartPole: ~9.4 steps
    assert json.loads((tmp_path / "data" / "results.json").read_text())["dataset"]["sha256"] == file_sha256(path)
    short = compose_cfg("data", [*QUIET, f"teacher.checkpoint={teacher}", "dataset.steps=4", "env.num_envs=2"])
    res = record_teacher_data(short, tmp_path / "short")  # 2 steps per env: no episode ends
    assert res["status"] == "ok" and res["episodes"] == 0 and res["episode_return_mean"] is None


# ---- runs.distill ---------------------------------------------------------------------------------------------------
def test_first_reaching_is_the_first_evaluation_at_the_level():
    """(kdrl.runs.distill.x_first_reaching__mutmut_9: the score's key misspelt: always censored)"""
    history = [
        {"env_steps": 100, "train_wall_s": 1.0, "normalized_score": 0.5},
        {"env_steps": 200, "train_wall_s": 2.0},  # a refused score (no key) never counts
        {"env_steps": 300, "train_wall_s": 3.5, "normalized_score": 0.9},
        {"env_steps": 400, "train_wall_s": 4.0, "normalized_score": 1.2},
    ]
    assert first_reaching(history, 0.9) == {"env_steps": 300, "train_wall_s": 3.5}
    assert first_reaching(history, 1.0) == {"env_steps": 400, "train_wall_s": 4.0}
    assert first_reaching(history, 1.5) is None


def test_a_teacher_dataset_is_checked_against_its_teacher_and_described(tmp_path):
    """(kdrl.runs.distill.x_teacher_dataset__mutmut_29: check_teacher called without the dataset) a
    dataset dir resolves to its dataset.npz; the fields results.json records; another teacher is refused."""
    env = {"id": "CartPole-v1", "num_envs": 3, "kwargs": None, "vectorization": "sync"}
    torch.manual_seed(2)
    teacher = MLP((4,), 2, width=16, depth=1).eval()
    data = record_dataset(
        env, CARTPOLE, teacher, 120, 0.05, 0, lambda o: greedy_actions(teacher, o, torch.device("cpu"))
    )
    path = save_dataset(tmp_path / DATASET_FILE, data)
    cfg = OmegaConf.create({"distill": {"dataset": str(tmp_path), "total_timesteps": 120}})
    loaded, fields = teacher_dataset(cfg, CARTPOLE, teacher)
    assert loaded.env_steps == 120
    assert fields == {
        "path": str(path),
        "sha256": file_sha256(path),
        "env_steps": 120,
        "num_envs": 3,
        "epsilon": 0.05,
        "seed": 0,
        "max_q_difference": 0.0,
    }
    torch.manual_seed(3)
    with pytest.raises(DatasetError, match="recorded with another teacher"):
        teacher_dataset(cfg, CARTPOLE, MLP((4,), 2, width=16, depth=1).eval())
    assert teacher_dataset(OmegaConf.create({"distill": {"dataset": None}}), CARTPOLE, teacher) == (None, None)


def test_a_distill_job_with_a_teacher_no_better_than_random_warns(tmp_path):
    """(kdrl.runs.distill.xǁDistillJobǁbuild__mutmut_159: the warning dropped) a kdrl teacher that
    always pushes left scores below a random policy on the periodic seeds: the job's teacher_warning
    says so, with both returns (it goes to results.json)."""
    teacher = constant_teacher(tmp_path / "teacher.pt", 0)
    cfg = compose_cfg(
        "distill",
        [*QUIET, f"teacher.checkpoint={teacher}", f"teacher.cache_dir={tmp_path / 'cache'}", "student.width=8"],
    )
    job = DistillJob(cfg, tmp_path / "run", choices={})
    job.build({})
    t, r = job.reference
    seeds = eval_seeds(cfg.eval.seed, cfg.eval.episodes)
    assert r == pytest.approx(float(np.mean(random_returns("CartPole-v1", seeds))))
    assert t < r and job.teacher_format == "kdrl"
    assert job.teacher_warning is not None
    assert (
        f"the kdrl teacher returns {t:.1f} in kdrl's env, no better than a random policy ({r:.1f})"
        in job.teacher_warning
    )


@pytest.mark.parametrize("weight", ["0.5", "1.0"])
def test_feature_distillation_from_a_torchscript_teacher_is_refused(tmp_path, weight):
    """(kdrl.runs.distill.xǁDistillJobǁbuild__mutmut_67: ``> 1`` for ``> 0``) any hint-loss weight > 0
    (loss=feature's is 1.0) needs the teacher's hidden layer, which a TorchScript teacher lacks."""
    path = scripted_teacher(tmp_path / "teacher.ts", 1)
    overrides = [*QUIET, f"teacher.checkpoint={path}", "teacher.trust_code=true", "loss=feature"]
    cfg = compose_cfg("distill", [*overrides, f"loss.feature_weight={weight}", f"teacher.cache_dir={tmp_path}"])
    with pytest.raises(ConfigError, match="feature distillation needs the teacher's hidden layer"):
        DistillJob(cfg, tmp_path / "run", choices={}).build({})


# ---- runs.job -------------------------------------------------------------------------------------------------------
def test_a_resume_conflict_names_old_and_new_values(tmp_path):
    """(kdrl.runs.job.x_check_resumable__mutmut_30: the new value shown as None)"""
    old = {"task": "teacher", "seed": 0, "net": {"width": 256}, "eval": {"episodes": 2}}
    (tmp_path / "checkpoints").mkdir()
    torch.save({CONFIG_IN_CHECKPOINT: old}, tmp_path / "checkpoints" / "last.ckpt")
    new = {**old, "net": {"width": 32}, "eval": {"episodes": 3}}
    with pytest.raises(ResumeConflict) as exc:
        check_resumable(new, tmp_path)
    assert "(eval.episodes: 2 -> 3; net.width: 256 -> 32)" in str(exc.value)


def test_completed_results_are_returned_for_the_same_config_only(tmp_path):
    """(kdrl.runs.job.x_completed_results__mutmut_25: the config key misspelt: never skipped)"""
    cfg = OmegaConf.create({"seed": 3, "skip_completed": True, "net": {"width": 8}})
    res = {"status": "ok", "config": plain(cfg), "eval_return_mean": 42.0}
    (tmp_path / "results.json").write_text(json.dumps(res))
    assert completed_results(tmp_path, cfg) == res
    assert completed_results(tmp_path, OmegaConf.create({**plain(cfg), "seed": 4})) is None
    assert completed_results(tmp_path, OmegaConf.create({**plain(cfg), "skip_completed": False})) is None


def test_quiet_lightning_silences_lightnings_srun_hint_and_only_that(monkeypatch):
    """(kdrl.runs.job.x_quiet_lightning__mutmut_81: the module pattern upper-cased: matches nothing)
    on a machine with SLURM's client tools Lightning's hint that srun is not used is not shown; the
    same words from another module are."""
    from lightning_fabric.plugins.environments import slurm

    monkeypatch.setattr(slurm.shutil, "which", lambda name: "/usr/bin/srun")
    monkeypatch.setattr(slurm, "_is_srun_used", lambda: False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        slurm.SLURMEnvironment._validate_srun_used()
        assert [str(w.message)[:63] for w in caught] == [
            "The `srun` command is available on your system but is not used."
        ]  # (the hint is there to be silenced)
        del caught[:]
        quiet_lightning()
        slurm.SLURMEnvironment._validate_srun_used()
        assert caught == []
        message = "The `srun` command is available on your system but is not used"
        warnings.warn_explicit(message, UserWarning, "elsewhere.py", 1, module="kdrl.elsewhere", registry={})
        assert [str(w.message) for w in caught] == [message]


def _whole_checkpoint(tmp_path: Path) -> Path:
    (tmp_path / "checkpoints").mkdir()
    path = tmp_path / "checkpoints" / "last.ckpt"
    torch.save({"global_step": 1}, path)
    return path


def test_a_config_without_resume_resumes_as_check_resumable_assumes(tmp_path):
    """(kdrl.runs.job.x_resume_checkpoint__mutmut_34: default False) ``resume`` may be deleted from a
    config (``~resume``; validation skips an absent key): the run then resumes, as check_resumable
    (``config.get("resume", True)``) already assumes."""
    path = _whole_checkpoint(tmp_path)
    assert resume_checkpoint(OmegaConf.create({}), tmp_path) == str(path)
    assert resume_checkpoint(OmegaConf.create({"resume": False}), tmp_path) is None


def test_resuming_says_which_checkpoint(tmp_path, caplog):
    """(kdrl.runs.job.x_resume_checkpoint__mutmut_73: the log line upper-cased, with a bad ``%S``)"""
    path = _whole_checkpoint(tmp_path)
    with caplog.at_level(logging.INFO, logger="kdrl"):
        assert resume_checkpoint(OmegaConf.create({"resume": True}), tmp_path) == str(path)
    said = [r for r in caplog.records if r.name == "kdrl" and "resum" in r.msg.lower()]
    assert [r.getMessage() for r in said] == [f"resuming from {path}"]


# ---- runs.multitask -------------------------------------------------------------------------------------------------
def _task(env: dict, teacher: nn.Module) -> mt.TaskSetup:
    return mt.TaskSetup("cartpole", env, CARTPOLE, teacher, Path("t.pt"), None, reference={})


def test_multitask_random_reference_is_played_on_each_tasks_env_and_seeds():
    """(kdrl.runs.multitask.x_reference_returns__mutmut_20: random_returns without the env id: with a
    task's ``kwargs: {}`` it played no episode at all) one random return per seed, the task's own."""
    seeds = [11, 12, 13]
    left = lambda obs: np.zeros(len(obs), dtype=np.int64)  # noqa: E731
    net = nn.Linear(4, 2)
    with torch.no_grad():
        net.weight.zero_()
        net.bias.copy_(torch.tensor([1.0, 0.0]))  # always left
    teacher, rand = mt.reference_returns([_task({"id": "CartPole-v1", "kwargs": {}}, net)], seeds, 0.0)
    assert rand == [random_returns("CartPole-v1", seeds, {})] and len(rand[0]) == 3
    assert teacher == [evaluate_policy(left, "CartPole-v1", seeds)]


def test_multitask_final_evaluation_plays_the_student_on_its_tasks_env_kwargs(monkeypatch):
    """(kdrl.runs.multitask.x_final_evaluation__mutmut_33 / _36: the task's env kwargs dropped from
    the student's episodes) with CartPole's Sutton-Barto reward (0 a step, -1 at the fall) every
    return of the student, the teacher and a random policy is 0 or -1; with the default reward it
    would be the episode's length."""
    net = MultiTaskQNetwork([(4,)], [2], width=8, depth=1)
    module = SimpleNamespace(q_net=net, views=[TaskView(net, 0)])
    monkeypatch.setattr(mt, "load_multitask_policy", lambda chosen, ids: {"state_dict": net.state_dict()})
    monkeypatch.setattr(mt, "task_result", lambda t, m, i, s, te, r: {"student": s, "teacher": te, "random": r})
    kwargs = {"sutton_barto_reward": True}
    cfg = OmegaConf.create({"eval": {"final_seed": 500, "final_episodes": 3, "epsilon": 0.0}})
    out = mt.final_evaluation(cfg, [_task({"id": "CartPole-v1", "kwargs": kwargs}, nn.Linear(4, 2))], module, Path("x"))
    got = out["cartpole"]
    assert got["student"] == evaluate_policy(mt.greedy_of(module.views[0]), "CartPole-v1", [500, 501, 502], kwargs)
    for who in ("student", "teacher", "random"):
        assert len(got[who]) == 3 and set(got[who]) <= {0.0, -1.0}, (who, got[who])


def test_a_multitask_task_loads_a_torchscript_teacher_when_trusted(tmp_path):
    """(kdrl.runs.multitask.x_load_task__mutmut_46: teacher.trust_code read under another key: never
    trusted) with teacher.trust_code=true a task's TorchScript teacher loads (and plays its actions)."""
    path = scripted_teacher(tmp_path / "cartpole.ts", 1)
    base = [*QUIET, f"teacher.checkpoints={{cartpole:{path}}}", "tasks=[cartpole]", f"teacher.cache_dir={tmp_path}"]
    cfg = compose_cfg(
        "multitask", [*base, "teacher.trust_code=true", "eval.reference_episodes=3", "eval.final_episodes=3"]
    )
    task = mt.load_task(cfg, "cartpole", {"debug": "fast"})
    assert task.spec == CARTPOLE and task.teacher_path == path
    obs = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    assert mt.greedy_of(task.teacher)(obs).tolist() == [1] * 5
    refused = compose_cfg("multitask", [*base, "teacher.trust_code=false"])
    with pytest.raises(Exception, match="(?i)trust_code"):
        mt.load_task(refused, "cartpole", {"debug": "fast"})


def test_missing_teachers_of_a_completed_run_are_trained_when_skip_completed_is_off(tmp_path):
    """(kdrl.runs.multitask.x_missing_teachers__mutmut_18: skip_completed read under another key: a
    completed run always counted as skipped) with skip_completed=false the run reruns, so its
    uncached teachers are missing; with true, none are."""
    cache = tmp_path / "cache"  # empty: no teacher cached
    for skip, expected in ((False, ["cartpole", "acrobot"]), (True, [])):
        cfg = compose_cfg("multitask", [*QUIET, f"teacher.cache_dir={cache}", f"skip_completed={str(skip).lower()}"])
        out = tmp_path / f"run-{skip}"
        out.mkdir()
        (out / "results.json").write_text(json.dumps({"status": "ok", "config": plain(cfg)}))
        assert mt.missing_teachers(mt.MultiTaskJob(cfg, out, choices={"debug": "fast"})) == expected


# ---- runs.sweep -----------------------------------------------------------------------------------------------------
def test_sweep_index_lists_each_jobs_overrides_space_separated(tmp_path):
    """(kdrl.runs.sweep.x_write_sweep_index__mutmut_33: the overrides joined by "XX XX")"""
    for job, status, overrides in (("10", "ok", ["seed=1", "loss=nll"]), ("2", None, ["seed=0"])):
        (tmp_path / job / ".hydra").mkdir(parents=True)
        (tmp_path / job / ".hydra" / "overrides.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(overrides)))
        if status:
            (tmp_path / job / "results.json").write_text(json.dumps({"status": status}))
    rows = list(csv.reader(write_sweep_index(tmp_path).read_text().splitlines()))
    assert rows == [["job", "status", "overrides"], ["2", "missing", "seed=0"], ["10", "ok", "seed=1 loss=nll"]]
