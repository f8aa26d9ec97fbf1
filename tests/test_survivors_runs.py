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
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict
from torch import nn
from tqdm import tqdm

from kdrl.callbacks import EnvStepProgressBar, PeriodicEvaluation
from kdrl.collector import greedy_actions
from kdrl.datasets import DATASET_FILE, DatasetError, file_sha256, record_dataset, save_dataset
from kdrl.envs import EnvSpec, make_vector_env
from kdrl.evaluation import eval_seeds, evaluate_policy, random_returns
from kdrl.io import CheckpointError, save_multitask_policy, save_policy
from kdrl.modules.base import RLModule
from kdrl.modules.components import (
    Int8Training,
    MagnitudePruning,
    Pruning,
    Quantization,
    compression_components,
)
from kdrl.nets import MLP, MultiTaskQNetwork, TaskView
from kdrl.replay import Transitions
from kdrl.runs import multitask as mt
from kdrl.runs.dataset import progress_bar, record_teacher_data
from kdrl.runs.distill import DistillJob, first_reaching, student_sizes, teacher_dataset
from kdrl.runs.distill import student_net_cfg as distill_student_net_cfg
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
from kdrl.stopping import StopAtReturn
from kdrl.validate import ConfigError
from tests.helpers import compose_cfg

CARTPOLE = EnvSpec("CartPole-v1", (4,), 2)
QUIET = ["debug=fast", "logger=none", "trainer.enable_progress_bar=false"]


def _reference(teacher: float | list[float], random: float, epsilon: float = 0.0) -> dict:
    """A teacher reference in kdrl.reference's shape over 20 held-out episodes: the teacher's returns (a constant,
    or the list given) and a random policy returning ``random`` in every episode."""

    def stats(x: list[float]) -> dict:
        return {"mean": float(np.mean(x)), "std": float(np.std(x)), "se": 0.0, "returns": x}

    teacher_returns = [float(teacher)] * 20 if np.isscalar(teacher) else list(teacher)
    return {"episodes": 20, "first_seed": 0, "epsilon": epsilon, "teacher": stats(teacher_returns),
            "random": stats([float(random)] * 20)}  # fmt: skip


def _cartpole_balancer() -> nn.Module:
    """A linear CartPole policy that balances: pushes right (1) when 3 * angle + angular velocity > 0."""
    net = nn.Linear(4, 2)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[0.0, 0.0, -3.0, -1.0], [0.0, 0.0, 3.0, 1.0]]))
        net.bias.zero_()
    return net


def constant_teacher(path: Path, action: int, env_id: str = "CartPole-v1") -> Path:
    """A kdrl CartPole checkpoint (of ``env_id``) that always pushes ``action``: a teacher no better than a
    random policy (episodes of ~10 steps), so jobs built on it are quick."""
    net = MLP((4,), 2, hidden=[2])
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        [m for m in net.modules() if isinstance(m, nn.Linear)][-1].bias[action] = 1.0  # Q = the head's bias
    cfg = {"_target_": "kdrl.nets.MLP", "width": 2, "depth": 1, "dueling": False, "hidden": [2]}
    return save_policy(path, net, cfg, env_id, (4,), 2)


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
    """(kdrl.modules.base.xǁRLModuleǁ_plain_backward__mutmut_7: ``is not None``, the check never made; 3-5: the cache
    never read)
    at 32-bit precision the update calls ``loss.backward()`` itself (no Lightning backward hooks);
    a plugin that changes the backward (bf16-mixed) goes through ``manual_backward``."""
    kw = dict(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False)
    m = _rl_module()
    m.trainer = pl.Trainer(precision="32-true", **kw)
    assert m._plain_backward() is True and m._plain_backward() is True  # computed once, then cached
    m.trainer = pl.Trainer(precision="bf16-mixed", **kw)  # (_plain_backward__mutmut_3-5: looked up at every update)
    assert m._plain_backward() is True  # the module's first answer stands: it is asked at every update
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
def test_data_job_results_name_the_dataset_file_and_its_mean_return(tmp_path, caplog):
    """(kdrl.runs.dataset.x_record_teacher_data__mutmut_116: results' dataset None; __mutmut_140: a
    mean over no episodes) results.json names the recorded file with its hash and size; the mean
    return is that of the recorded episodes, None (not nan) when no episode ended."""
    teacher = constant_teacher(tmp_path / "teacher.pt", 0)
    cfg = compose_cfg("data", [*QUIET, f"teacher.checkpoint={teacher}", "dataset.steps=200", "env.num_envs=2"])
    with caplog.at_level(logging.INFO, logger="kdrl"):
        res = record_teacher_data(cfg, tmp_path / "data")
    path = tmp_path / "data" / DATASET_FILE
    # (the seed-7 sample's __mutmut_151: the logged mean always "n/a") the log line says the mean
    said = [r.getMessage() for r in caplog.records if "teacher dataset" in r.getMessage()]
    assert len(said) == 1 and f"mean return {res['episode_return_mean']:.1f} at epsilon" in said[0]
    assert res["status"] == "ok"
    assert res["dataset"] == {"path": str(path), "sha256": file_sha256(path), "bytes": path.stat().st_size}
    assert res["episodes"] >= 10 and 8 <= res["episode_return_mean"] <= 12  # always-left CartPole: ~9.4 steps
    assert json.loads((tmp_path / "data" / "results.json").read_text())["dataset"]["sha256"] == file_sha256(path)
    short = compose_cfg("data", [*QUIET, f"teacher.checkpoint={teacher}", "dataset.steps=4", "env.num_envs=2"])
    res = record_teacher_data(short, tmp_path / "short")  # 2 steps per env: no episode ends
    assert res["status"] == "ok" and res["episodes"] == 0 and res["episode_return_mean"] is None


def test_a_data_jobs_results_and_log_line_state_what_was_recorded(tmp_path, caplog):
    """(kdrl.runs.dataset.x_record_teacher_data, whole) results.json names the teacher, epsilon, envs,
    steps and episodes of the file actually written, and the one log line says exactly that: the
    recording's settings can be read back from either without opening the file."""
    from kdrl.datasets import load_dataset

    teacher = constant_teacher(tmp_path / "teacher.pt", 0)
    overrides = [*QUIET, f"teacher.checkpoint={teacher}", "dataset.steps=200", "dataset.epsilon=0.5"]
    cfg = compose_cfg("data", [*overrides, "env.num_envs=2", "seed=3"])
    with caplog.at_level(logging.INFO, logger="kdrl"):
        res = record_teacher_data(cfg, tmp_path / "data")
    path = tmp_path / "data" / DATASET_FILE
    data = load_dataset(path)
    assert res["status"] == "ok" and res["teacher_checkpoint"] == str(teacher)
    assert res["epsilon"] == 0.5 == data.meta["epsilon"] and data.meta["seed"] == 3
    assert res["num_envs"] == 2 == data.num_envs and res["env_steps"] == 200 == data.env_steps
    assert res["episodes"] == data.meta["episodes"] == len(data.meta["episode_returns"]) > 0
    assert res["episode_return_mean"] == pytest.approx(np.mean(data.meta["episode_returns"]))
    # the teacher always pushes 0; at epsilon 0.5 a uniform action replaces it half the time: ~25% are 1
    assert 0.15 <= float(np.mean(data.actions == 1)) <= 0.35
    assert np.all(data.q[..., 0] == 1.0) and np.all(data.q[..., 1] == 0.0)  # the teacher's own Q-values
    said = [r.getMessage() for r in caplog.records if "teacher dataset" in r.getMessage()]
    assert said == [
        f"teacher dataset CartPole-v1 seed 3: 200 env steps ({res['episodes']} episodes, mean return "
        f"{res['episode_return_mean']:.1f} at epsilon 0.50) in {res['wall_time_s']:.1f} s -> {path}"
    ]
    assert [r.name for r in caplog.records if "teacher dataset" in r.getMessage()] == ["kdrl.data"]


def test_a_data_job_refuses_a_teacher_trained_on_another_env(tmp_path):
    """(kdrl.runs.dataset.x_record_teacher_data__mutmut_34: the env id not passed to the teacher's loader) a
    teacher of another env with the same shapes (CartPole-v0 for CartPole-v1) is refused in one line, before
    anything is recorded."""
    other = constant_teacher(tmp_path / "v0.pt", 0, env_id="CartPole-v0")
    cfg = compose_cfg("data", [*QUIET, f"teacher.checkpoint={other}", "dataset.steps=20", "env.num_envs=2"])
    with pytest.raises(CheckpointError, match=r"was trained on 'CartPole-v0', not 'CartPole-v1'"):
        record_teacher_data(cfg, tmp_path / "data")
    assert not (tmp_path / "data" / DATASET_FILE).exists()


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
    """(kdrl.runs.distill.x_teacher_dataset__mutmut_29: check_teacher called without the dataset; _28: its path
    dropped from the refusal) a dataset dir resolves to its dataset.npz; the fields results.json records; another
    teacher is refused, naming the dataset."""
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
    with pytest.raises(DatasetError) as refused:
        teacher_dataset(cfg, CARTPOLE, MLP((4,), 2, width=16, depth=1).eval())
    # (x_teacher_dataset__mutmut_28: the path dropped from the message, "distill.dataset None ...")
    assert str(refused.value).startswith(f"distill.dataset {path} was recorded with another teacher")
    assert teacher_dataset(OmegaConf.create({"distill": {"dataset": None}}), CARTPOLE, teacher) == (None, None)
    # (_11: a file path taken for a dir) the file itself is as good as its dir
    by_file = OmegaConf.create({"distill": {"dataset": str(path), "total_timesteps": 120}})
    assert teacher_dataset(by_file, CARTPOLE, teacher)[1] == fields
    # (_18: the path dropped from check_dataset's refusals) a dataset too short for the budget names itself
    too_short = OmegaConf.create({"distill": {"dataset": str(tmp_path), "total_timesteps": 121}})
    with pytest.raises(DatasetError, match=rf"^distill.dataset {path} holds 120 env steps, fewer than"):
        teacher_dataset(too_short, CARTPOLE, teacher)


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
    with pytest.raises(ConfigError) as exc:
        DistillJob(cfg, tmp_path / "run", choices={}).build({})
    assert str(exc.value) == "feature distillation needs the teacher's hidden layer: a TorchScript teacher has none"


@pytest.mark.parametrize("weight", ["0.0", "null", "absent"])
def test_a_torchscript_teacher_distils_without_the_hint_loss(tmp_path, weight):
    """(kdrl.runs.distill.xǁDistillJobǁbuild__mutmut_64-66: ``1.0`` when the key is absent, ``or 1.0``, ``>= 0``:
    TorchScript teachers refused) a hint-loss weight of 0, null or not given is off: a TorchScript teacher (no
    hidden layer) distils into the job's own net at the student's sizes."""
    path = scripted_teacher(tmp_path / "teacher.ts", 1)
    overrides = [*QUIET, f"teacher.checkpoint={path}", "teacher.trust_code=true", "student.width=8"]
    given = [] if weight == "absent" else [f"loss.feature_weight={weight}"]
    cfg = compose_cfg("distill", [*overrides, *given, f"teacher.cache_dir={tmp_path}"])
    if weight == "absent":  # a loss config written without the key (StudentLoss's default is off)
        with open_dict(cfg):
            del cfg.loss.feature_weight
    job = DistillJob(cfg, tmp_path / "run", choices={})
    fields: dict = {}
    module, _ = job.build(fields)
    assert job.teacher_format == "torchscript" and (fields["width"], fields["depth"]) == (8, 2)
    assert job.net_cfg["_target_"] == cfg.net._target_ and module.teacher is job.teacher


def test_a_config_without_trust_code_does_not_run_a_torchscript_teachers_code(tmp_path):
    """(kdrl.runs.distill.xǁDistillJobǁbuild__mutmut_45: ``trust_code`` True when the key is missing) a
    teacher block that does not say trust_code (a config written before the key, or by hand) does not
    trust: the TorchScript file is refused, its code never run."""
    path = scripted_teacher(tmp_path / "teacher.ts", 1)
    cfg = compose_cfg("distill", [*QUIET, f"teacher.checkpoint={path}", f"teacher.cache_dir={tmp_path}"])
    with open_dict(cfg):
        del cfg.teacher.trust_code
    with pytest.raises(CheckpointError, match="trust_code"):
        DistillJob(cfg, tmp_path / "run", choices={}).build({})


# ---- runs.job -------------------------------------------------------------------------------------------------------
def test_a_resume_conflict_names_old_and_new_values(tmp_path):
    """(kdrl.runs.job.x_check_resumable__mutmut_30: the new value shown as None; 41: the message's last words
    changed) the refusal names each key's old and new value and the two ways out."""
    old = {"task": "teacher", "seed": 0, "net": {"width": 256}, "eval": {"episodes": 2}}
    (tmp_path / "checkpoints").mkdir()
    torch.save({CONFIG_IN_CHECKPOINT: old}, tmp_path / "checkpoints" / "last.ckpt")
    new = {**old, "net": {"width": 32}, "eval": {"episodes": 3}}
    with pytest.raises(ResumeConflict) as exc:
        check_resumable(new, tmp_path)
    assert "(eval.episodes: 2 -> 3; net.width: 256 -> 32)" in str(exc.value)
    # (41: the ways out reworded) the whole line, both ways out and what the second does
    assert str(exc.value) == (
        f"{tmp_path} holds an unfinished run of another config (eval.episodes: 2 -> 3; net.width: 256 -> 32); "
        "resuming it with this one would load its checkpoint into another run, so nothing there was changed: give "
        "another hydra.run.dir, or resume=false to start this config afresh in that dir (its checkpoints are then "
        "overwritten)"
    )


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
        # (x_quiet_lightning__mutmut_73: the message dropped: every warning of Lightning's SLURM module silenced)
        other = "SLURM_NTASKS is set but the job looks interactive"
        where = "lightning_fabric.plugins.environments.slurm"
        warnings.warn_explicit(other, UserWarning, "slurm.py", 1, module=where, registry={})
        assert [str(w.message) for w in caught] == [message, other]


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
    # (mutmut_15, 17: no default) a config without the key skips a completed run, as run_job does
    cfg = compose_cfg("multitask", [*QUIET, f"teacher.cache_dir={cache}"])
    with open_dict(cfg):
        del cfg["skip_completed"]
    out = tmp_path / "run-default"
    out.mkdir()
    (out / "results.json").write_text(json.dumps({"status": "ok", "config": plain(cfg)}))
    assert mt.missing_teachers(mt.MultiTaskJob(cfg, out, choices={"debug": "fast"})) == []


def test_a_completed_student_runs_teacher_is_not_trained_again_unless_skip_completed_is_off(tmp_path, caplog):
    """(kdrl.runs.distill.x_missing_teacher__mutmut_7, 9, 11, 13, 14, 15, 20-29: the run dir's results.json not
    read, read under another name, or read aloud; skip_completed or status read under another key, with another
    default, or negated) a student job already complete in its run dir needs no teacher; with skip_completed=false
    or after a failed attempt it reruns, so its uncached teacher is missing; a damaged results.json is the job's to
    report in its own run, and planning its teacher says nothing of it. (30-37, 39: status "ok" or the config
    compared under another name, negated, or against None; the cache not consulted) a run dir holding another
    config's results runs, and needs its teacher unless that teacher is cached."""
    import kdrl.runs.distill as distill
    from kdrl.teachers import cache_entry, teacher_config

    cache = tmp_path / "cache"  # empty: no teacher cached
    for skip in (None, True, False):
        extra = ["~skip_completed"] if skip is None else [f"skip_completed={str(skip).lower()}"]
        cfg = compose_cfg("distill", [*QUIET, f"teacher.cache_dir={cache}", "teacher.seed=3", *extra])
        out = tmp_path / f"run-{skip}"
        out.mkdir()
        (out / "results.json").write_text(json.dumps({"status": "ok", "config": plain(cfg)}))
        request = distill.missing_teacher(DistillJob(cfg, out, choices={}))
        if skip is False:
            assert (request.env, request.seed, request.cache_dir) == ("cartpole", 3, str(cache))
        else:  # true, and so when the key is deleted
            assert request is None
    cfg = compose_cfg("distill", [*QUIET, f"teacher.cache_dir={cache}", "teacher.seed=3"])
    out = tmp_path / "failed"  # a failed attempt reruns
    out.mkdir()
    (out / "results.json").write_text(json.dumps({"status": "failed", "config": plain(cfg)}))
    assert distill.missing_teacher(DistillJob(cfg, out, choices={})).seed == 3
    out = tmp_path / "damaged"
    out.mkdir()
    (out / "results.json").write_text('{"status": "ok", "conf')  # truncated
    with caplog.at_level(logging.WARNING, logger="kdrl"):
        request = distill.missing_teacher(DistillJob(cfg, out, choices={}))
    assert (request.env, request.seed) == ("cartpole", 3) and [r.getMessage() for r in caplog.records] == []
    out = tmp_path / "other-config"  # completed, but another config: this one runs
    out.mkdir()
    (out / "results.json").write_text(json.dumps({"status": "ok", "config": {**plain(cfg), "seed": 99}}))
    request = distill.missing_teacher(DistillJob(cfg, out, choices={}))
    assert request.seed == 3
    entry = cache_entry(teacher_config(request.env, request.seed, list(request.overrides)), cache)
    entry.mkdir(parents=True)  # the same teacher, cached: nothing is missing
    (entry / "results.json").write_text(json.dumps({"status": "ok"}))
    (entry / "teacher.pt").write_bytes(b"")
    assert distill.missing_teacher(DistillJob(cfg, out, choices={})) is None


def test_a_students_teacher_request_names_the_composed_env_and_carries_the_jobs_shared_settings(tmp_path):
    """(kdrl.runs.distill.x_teacher_request__mutmut_3-5: the composed env choice ignored: an env config of the
    user's own, with an id no conf/env file has, was refused; 11, 14: no env given to teacher_overrides: a student
    run with algo.gamma=0.95 asked for the default teacher) the request names the env the job was composed with,
    and its overrides carry the job's changes to the sections it shares with its teacher."""
    import kdrl.runs.distill as distill

    cfg = compose_cfg("distill", [*QUIET, f"teacher.cache_dir={tmp_path}", "algo.gamma=0.95"])
    request = distill.teacher_request(cfg, {})
    assert request.env == "cartpole" and "algo.gamma=0.95" in request.overrides
    with open_dict(cfg):
        cfg.env.id = "MyCartPole-v0"  # registered by the user's own env config, not one of conf/env
    assert distill.teacher_request(cfg, {"env": "cartpole"}).env == "cartpole"
    with pytest.raises(ValueError, match="no conf/env/\\*.yaml has id 'MyCartPole-v0'"):
        distill.teacher_request(cfg, {})


def test_a_students_net_takes_the_teachers_sizes_it_leaves_unset_but_never_its_hidden_layers():
    """(kdrl.runs.distill.x_student_net_cfg__mutmut_6, 7: every unset size overwrote the teacher's, or an unset
    ``hidden`` kept the teacher's layers) sizes the student leaves None come from the teacher, except ``hidden``:
    None there means the student's width and depth, not the teacher's explicit layers."""
    teacher = {"_target_": "kdrl.nets.MLP", "width": 256, "depth": 2, "dueling": True, "hidden": [256, 128]}
    cfg = distill_student_net_cfg(teacher, {"width": 32, "depth": None, "hidden": None})
    assert cfg == {"_target_": "kdrl.nets.MLP", "width": 32, "depth": 2, "dueling": True, "hidden": None}


# ---- runs.sweep -----------------------------------------------------------------------------------------------------
def test_sweep_index_lists_each_jobs_overrides_space_separated(tmp_path):
    """(kdrl.runs.sweep.x_write_sweep_index__mutmut_33: the overrides joined by "XX XX")"""
    for job, status, overrides in (("10", "ok", ["seed=1", "loss=nll"]), ("2", None, ["seed=0"])):
        (tmp_path / job / ".hydra").mkdir(parents=True)
        (tmp_path / job / ".hydra" / "overrides.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(overrides)))
        if status:
            (tmp_path / job / "results.json").write_text(json.dumps({"status": status}))
    index = write_sweep_index(tmp_path)
    assert index == tmp_path / "index.csv"  # (x_write_sweep_index__mutmut_58: the file named INDEX.CSV)
    rows = list(csv.reader(index.read_text().splitlines()))
    assert rows == [["job", "status", "overrides"], ["2", "missing", "seed=0"], ["10", "ok", "seed=1 loss=nll"]]


# ---- the seed-1 sample's survivors (scripts/mutation.py runs --sample 60 --sample-seed 1) ---------------------------
class _Evaluated(nn.Module):
    """What an evaluation callback reads of a module: counters and the train/eval switch."""

    def __init__(self, env_steps: int, grad_steps: int, task_env_steps: int | None = None) -> None:
        super().__init__()
        self.env_steps, self.task_env_steps = env_steps, task_env_steps
        self.stream = SimpleNamespace(grad_steps=grad_steps)
        self.greedy = self.greedy_fn = None
        self.told: list[tuple[float, float, float]] = []

    def on_greedy_evaluation(self, student: float, teacher: float, random: float) -> None:
        self.told.append((student, teacher, random))


def test_a_student_evaluation_logs_its_normalised_score(monkeypatch):
    """(kdrl.callbacks.xǁGreedyEvaluationǁmeasure__mutmut_72: the metric's key upper-cased) the score
    goes to the loggers as eval/normalized_score, the key the W&B plots and the search read."""
    import kdrl.callbacks as cb

    monkeypatch.setattr(cb, "evaluate_policy", lambda *a, **k: [30.0, 50.0])
    ev = cb.GreedyEvaluation("CartPole-v1", None, 100, 2, 0, None, None, reference=([90.0] * 20, [10.0] * 20))
    result = ev.measure(_Evaluated(200, 7))
    assert result.record["normalized_score"] == pytest.approx(0.375)  # (40 - 10) / (90 - 10)
    assert result.metrics == {
        "eval/return_mean": 40.0,
        "eval/return_std": 10.0,
        "eval/return_min": 30.0,
        "eval/normalized_score": pytest.approx(0.375),
    }


def test_a_multitask_evaluation_records_per_task_steps_and_its_wall_time(monkeypatch):
    """(kdrl.callbacks.xǁMultiTaskEvaluationǁmeasure__mutmut_30 / _35: task_env_steps and wall_s
    recorded under other keys) the record keeps the per-task env steps (results' history) and the
    wall time a resumed run restarts its clock from (PeriodicEvaluation.on_train_start)."""
    from kdrl.callbacks import EvalTask, MultiTaskEvaluation

    tasks = [EvalTask("cartpole", "CartPole-v1", {}), EvalTask("acrobot", "Acrobot-v1", {})]
    ev = MultiTaskEvaluation(tasks, 100, 2, 0, None, None, [100.0, -100.0], [20.0, -500.0])
    monkeypatch.setattr(ev, "task_returns", lambda greedy: [60.0, -300.0])
    module = _Evaluated(600, 9, task_env_steps=300)
    module.greedy_fn = lambda i: None
    record = ev.measure(module).record
    assert set(record) == {
        "env_steps", "task_env_steps", "grad_steps", "wall_s", "train_wall_s", "return_mean",
        "pct_of_teacher", "mean_pct_of_teacher", "geomean_pct_of_teacher",
    }  # fmt: skip
    assert (record["env_steps"], record["task_env_steps"], record["grad_steps"]) == (600, 300, 9)
    assert record["wall_s"] >= record["train_wall_s"] >= 0
    assert record["pct_of_teacher"] == {"cartpole": pytest.approx(50.0), "acrobot": pytest.approx(50.0)}
    ev.history.append(record)
    ev.on_train_start(None, module)  # a resumed run's clock goes on from the recorded wall time
    assert ev.t_start <= time.perf_counter() - record["wall_s"]


def test_a_multitask_evaluation_plays_each_head_on_its_own_task_with_the_evaluation_seeds_and_epsilon(monkeypatch):
    """(kdrl.callbacks.xǁMultiTaskEvaluationǁtask_returns__mutmut_6, 8-12: a task's env kwargs, the head, the env, the
    seeds or epsilon dropped from the call) head i plays task i's env with its kwargs, on the evaluation's seeds,
    at eval.epsilon (as the teachers' references are played); the return is the mean over the episodes."""
    import kdrl.callbacks as callbacks
    from kdrl.callbacks import EvalTask, MultiTaskEvaluation

    calls: list[tuple] = []
    results = {"CartPole-v1": [10.0, 30.0], "Acrobot-v1": [-100.0, -50.0]}

    def played(greedy, env_id, seeds, kwargs=None, epsilon=0.0, **rest):
        calls.append((greedy, env_id, list(seeds), kwargs, epsilon))
        return results[env_id]

    monkeypatch.setattr(callbacks, "evaluate_policy", played)
    tasks = [EvalTask("cartpole", "CartPole-v1", {"max_episode_steps": 200}), EvalTask("acrobot", "Acrobot-v1", {})]
    ev = MultiTaskEvaluation(tasks, 100, 2, 7, None, None, [100.0, -100.0], [20.0, -500.0], epsilon=0.05)
    heads = [lambda obs: 0, lambda obs: 1]
    assert ev.task_returns(heads) == [20.0, -75.0]
    seeds = list(eval_seeds(7, 2))
    assert calls == [
        (heads[0], "CartPole-v1", seeds, {"max_episode_steps": 200}, 0.05),
        (heads[1], "Acrobot-v1", seeds, {}, 0.05),
    ]


def test_the_progress_bar_shows_the_latest_evaluation():
    """(kdrl.callbacks.xǁEnvStepProgressBarǁ_update__mutmut_19: the key upper-cased)"""
    from kdrl.callbacks import GreedyEvaluation

    ev = GreedyEvaluation("CartPole-v1", None, 100, 1, 0, None, None)
    ev.history.append({"return_mean": 123.45})
    pb = EnvStepProgressBar()
    pb.bar = tqdm(total=1000, file=io.StringIO())
    module = SimpleNamespace(
        env_steps=40,
        sps=10.0,
        collector=SimpleNamespace(recent_returns=[], epsilon=0.05),
        trainer=SimpleNamespace(callbacks=[ev]),
    )
    pb._update(module)
    assert pb.bar.postfix == "sps=10, eps=0.050, eval=123.5"
    pb.bar.close()


def test_metrics_are_summed_over_the_updates_of_a_log_interval():
    """(kdrl.modules.base.xǁRLModuleǁaccumulate__mutmut_3: each update replaced the sum) the logged
    mean is over every update since the last flush, not the last one's value."""
    m = _rl_module()
    m.log_interval = 3
    flushed: list[dict[str, float]] = []
    m.flush_metrics = lambda: flushed.append({k: (v / m._count).item() for k, v in m._sums.items()})
    for loss in (1.0, 2.0, 6.0):
        m.accumulate(loss=torch.tensor(loss))
    assert flushed == [{"loss": 3.0}]


def test_dqn_takes_gradient_clipping_and_double_dqn_from_its_config():
    """(kdrl.modules.dqn.xǁDQNǁ__init____mutmut_20: max_grad_norm not passed; x_td_term__mutmut_21:
    double_dqn's default False) algo.max_grad_norm reaches the update; a config without double_dqn
    gets Double DQN, as conf/algo/dqn.yaml documents."""
    from kdrl.modules.dqn import DQN, td_term

    algo = plain(compose_cfg("train", QUIET).algo)
    assert algo["max_grad_norm"] == 10.0
    module = DQN(MLP((4,), 2, width=8), CARTPOLE, {"id": "CartPole-v1"}, algo, lambda ps: torch.optim.SGD(ps, lr=0.1))
    assert module.max_grad_norm == 10.0
    module = DQN(
        MLP((4,), 2, width=8), CARTPOLE, {"id": "CartPole-v1"}, {**algo, "max_grad_norm": None}, torch.optim.SGD
    )
    assert module.max_grad_norm is None
    assert (
        td_term({"gamma": 0.9}).double_dqn is True and td_term({"gamma": 0.9, "double_dqn": False}).double_dqn is False
    )


def _student_job(tmp_path: Path, overrides: list[str] = ()) -> tuple[DistillJob, RLModule, dict]:
    teacher = constant_teacher(tmp_path / "teacher.pt", 0)
    cfg = compose_cfg(
        "distill",
        [
            *QUIET,
            f"teacher.checkpoint={teacher}",
            f"teacher.cache_dir={tmp_path / 'cache'}",
            "student.width=8",
            *overrides,
        ],
    )
    job = DistillJob(cfg, tmp_path / "run", choices={})
    fields: dict = {}
    module, _ = job.build(fields)
    return job, module, fields


@pytest.mark.parametrize("control", ["student", "teacher"])
def test_who_acted_is_logged_unless_the_student_alone_acts(tmp_path, monkeypatch, control):
    """(kdrl.modules.student.xǁDistillStudentǁflush_metrics__mutmut_3: ``"STUDENT"``: the teacher's
    share logged, as 0, for a student acting alone) control=teacher logs the share of env steps the
    teacher acted in and beta 1; control=student logs neither."""
    monkeypatch.setattr(RLModule, "flush_metrics", lambda self: None)
    _, module, _ = _student_job(tmp_path, [f"control={control}"])
    logged: list[dict] = []
    module.log_env_metrics = logged.append
    module.collector = SimpleNamespace(env_steps=200)
    module.teacher_acted = 150
    module.flush_metrics()
    expected = [] if control == "student" else [{"train/teacher_action_fraction": 0.75, "train/beta": 1.0}]
    assert logged == expected


def test_a_mixed_control_student_logs_its_beta_and_a_one_step_share(tmp_path, monkeypatch):
    """(kdrl.modules.student.xǁDistillStudentǁflush_metrics__mutmut_16: the share over max(env_steps, 2): half the
    teacher's share after one env step; __mutmut_19: beta always logged as 1) control=mixed logs the beta its
    schedule gives at the current env step, and the teacher's share of the env steps so far, from the first."""
    monkeypatch.setattr(RLModule, "flush_metrics", lambda self: None)
    _, module, _ = _student_job(tmp_path, ["control=mixed"])
    logged: list[dict] = []
    module.log_env_metrics = logged.append
    module.collector = SimpleNamespace(env_steps=1)
    module.teacher_acted = 1
    module.flush_metrics()
    module.collector.env_steps, module.teacher_acted = 6_000, 1_500
    module.flush_metrics()
    betas = [module.beta(1), module.beta(6_000)]
    assert betas[0] != betas[1]  # the schedule has moved: a constant 1 would not pass
    assert logged == [
        {"train/teacher_action_fraction": 1.0, "train/beta": betas[0]},
        {"train/teacher_action_fraction": 0.25, "train/beta": betas[1]},
    ]


def test_a_multitask_runs_teacher_references_are_played_at_eval_epsilon_on_each_tasks_env(monkeypatch):
    """(kdrl.runs.multitask.x_reference_returns__mutmut_11: epsilon dropped: the teachers' references played
    greedily while the student is scored at eval.epsilon, the bias issue 29 names) each teacher plays its task's
    env with its kwargs on the given seeds at the given epsilon; a random policy plays the same env and seeds."""
    played: list[tuple] = []
    monkeypatch.setattr(mt, "greedy_of", lambda teacher: f"greedy {teacher}")
    monkeypatch.setattr(
        mt,
        "evaluate_policy",
        lambda greedy, env_id, seeds, kwargs=None, epsilon=0.0: (
            played.append((greedy, env_id, seeds, kwargs, epsilon)) or [1.0]
        ),
    )
    monkeypatch.setattr(
        mt,
        "random_returns",
        lambda env_id, seeds, kwargs=None: played.append(("random", env_id, seeds, kwargs)) or [0.0],
    )
    tasks = [
        SimpleNamespace(teacher="T1", spec=SimpleNamespace(env_id="CartPole-v1"), env={"kwargs": {"a": 1}}),
        SimpleNamespace(teacher="T2", spec=SimpleNamespace(env_id="Acrobot-v1"), env={}),
    ]
    assert mt.reference_returns(tasks, [5, 6], 0.05) == ([[1.0], [1.0]], [[0.0], [0.0]])
    assert played == [
        ("greedy T1", "CartPole-v1", [5, 6], {"a": 1}, 0.05),
        ("greedy T2", "Acrobot-v1", [5, 6], None, 0.05),
        ("random", "CartPole-v1", [5, 6], {"a": 1}),
        ("random", "Acrobot-v1", [5, 6], None),
    ]


def test_a_resumed_student_gets_its_offline_phase_report_back(tmp_path):
    """(kdrl.modules.student.xǁDistillStudentǁload_extra_state__mutmut_29: read under another key)
    results.json's ``pretrain`` block of a QDagger student resumed after its offline phase is the
    phase's report, read back from the checkpoint."""
    _, module, fields = _student_job(tmp_path)
    assert fields["width"] == 8 and fields["depth"] == 2  # (xǁDistillJobǁbuild__mutmut_86: depth under "DEPTH")
    state = module.extra_state()
    assert "pretrain_report" not in state
    report = {"teacher_steps": 600, "updates": 300, "wall_s": 1.5, "mean_distill_loss": 0.25}
    module.load_extra_state({**state, "pretrain_report": report})
    assert module.pretrain_report == report and module.extra_state()["pretrain_report"] == report


def test_the_offline_phase_reports_the_mean_loss_and_agreement(tmp_path):
    """(kdrl.modules.student.xǁDistillStudentǁpretrain_offline__mutmut_79: the distillation loss
    left out of the report) QDagger's offline phase reports its mean distillation loss, TD loss and
    agreement with the teacher over its updates."""
    offline = ["experiment=qdagger", "distill.pretrain.teacher_steps=200", "distill.pretrain.updates=64"]
    _, module, _ = _student_job(tmp_path, offline)
    module.setup("fit")
    opt = module.configure_optimizers()
    module.optimizers = lambda use_pl_optimizer=True: opt  # driven without a Trainer
    module.pretrain_offline()
    report = module.pretrain_report
    assert (report["teacher_steps"], report["updates"]) == (200, 64)
    assert {"mean_distill_loss", "mean_td_loss", "mean_agreement"} <= set(report)
    assert report["mean_distill_loss"] > 0 and report["mean_td_loss"] > 0 and 0 <= report["mean_agreement"] <= 1


@pytest.mark.parametrize("updates", [1, 3])
def test_the_offline_phases_report_is_the_mean_over_exactly_its_updates(tmp_path, updates):
    """(kdrl.modules.student.xǁDistillStudentǁpretrain_offline__mutmut_58: ``max(count, 2)``: a one-update
    phase reported half its loss) each mean in the report is the sum of the phase's per-update values over
    its number of updates, however few."""
    offline = ["experiment=qdagger", "distill.pretrain.teacher_steps=200", f"distill.pretrain.updates={updates}"]
    _, module, _ = _student_job(tmp_path, offline)
    module.setup("fit")
    opt = module.configure_optimizers()
    module.optimizers = lambda use_pl_optimizer=True: opt  # driven without a Trainer
    seen: list[dict] = []
    accumulate = module.accumulate
    module.accumulate = lambda **m: (seen.append({k: float(v.detach()) for k, v in m.items()}), accumulate(**m))[1]
    module.pretrain_offline()
    report = module.pretrain_report
    assert len(seen) == updates == report["updates"]
    for key in ("distill_loss", "td_loss", "agreement"):
        assert report[f"mean_{key}"] == pytest.approx(sum(m[key] for m in seen) / updates, rel=1e-6)
    assert report["mean_distill_loss"] > 0


@pytest.mark.parametrize(
    "bar_override, shown", [("trainer.enable_progress_bar=false", False), ("~trainer.enable_progress_bar", True)]
)
def test_a_data_job_records_its_wall_time_and_fills_its_progress_bar(tmp_path, monkeypatch, bar_override, shown):
    """(kdrl.runs.dataset.x_record_teacher_data__mutmut_119: wall_time_s left out; __mutmut_60: the
    bar advanced by None) results.json has the recording's wall time, and sps = env steps / it; the
    bar ends at the number of steps recorded."""
    import kdrl.runs.dataset as ds

    bars: list[tqdm] = []
    asked: list[bool] = []
    monkeypatch.setattr(
        ds,
        "progress_bar",
        lambda total, on: asked.append(on) or bars.append(tqdm(total=total, file=io.StringIO())) or bars[-1],
    )
    teacher = constant_teacher(tmp_path / "teacher.pt", 0)
    overrides = [*QUIET[:2], bar_override, f"teacher.checkpoint={teacher}", "dataset.steps=200", "env.num_envs=2"]
    cfg = compose_cfg("data", overrides)
    res = record_teacher_data(cfg, tmp_path / "data")
    # shown unless trainer.enable_progress_bar=false (x_record_teacher_data__mutmut_51 / _55: never shown when
    # the key is absent); the results name their config, so a rerun skips them (_7: config None)
    assert asked == [shown] and res["config"]["dataset"]["steps"] == 200
    again = record_teacher_data(cfg, tmp_path / "data")  # skipped: the finished results, nothing recorded again
    assert again["wall_time_s"] == res["wall_time_s"] and again["config"] == res["config"] and len(asked) == 1
    assert res["status"] == "ok" and res["wall_time_s"] > 0
    assert res["sps"] == pytest.approx(res["env_steps"] / res["wall_time_s"])
    assert len(bars) == 1 and bars[0].n == 200 == res["env_steps"] == bars[0].total  # (_47: a bar of no total)


def test_a_scratch_baselines_schedule_needs_no_exploration_delay():
    """(kdrl.runs.distill.x_fitted_to_budget__mutmut_26: ``delay_steps``'s default dropped) an
    exploration block without delay_steps (every algo config but MinAtar's) starts decaying at once."""
    from kdrl.runs.distill import fitted_to_budget

    algo = {
        "total_timesteps": 1000,
        "learning_starts": 500,
        "exploration": {"start": 1.0, "end": 0.05, "decay_steps": 600},
    }
    fitted = fitted_to_budget(algo, 500)
    assert fitted["total_timesteps"] == 500 and fitted["learning_starts"] == 50
    assert fitted["exploration"] == {"start": 1.0, "end": 0.05, "delay_steps": 0, "decay_steps": 250}


def test_a_student_whose_on_demand_teacher_failed_says_why(tmp_path):
    """(kdrl.runs.distill.xǁDistillJobǁbuild__mutmut_14: the message dropped) the student's error
    names the failure of its teacher's job, in one line."""
    from kdrl.runs.distill import TeacherNotTrained

    cfg = compose_cfg("distill", [*QUIET, "teacher.checkpoint=null", f"teacher.cache_dir={tmp_path}"])
    job = DistillJob(cfg, tmp_path / "run", choices={"env": "cartpole"})
    job.teacher_error = RuntimeError("out of memory\nwhile training")
    with pytest.raises(TeacherNotTrained) as exc:
        job.build({})
    assert str(exc.value) == "its on-demand teacher's job failed: RuntimeError: out of memory while training"


def test_the_raw_return_ratio_of_a_teacher_returning_zero_is_nan(tmp_path):
    """(kdrl.runs.distill.x_final_evaluation__mutmut_238: the zero check dropped: ZeroDivisionError)
    a teacher whose reference return is 0 (Sutton-Barto CartPole: 0 a step) gives no raw ratio, and
    the student's results are still written."""
    from kdrl.runs.distill import final_evaluation

    cfg = compose_cfg("distill", [*QUIET, "eval.final_episodes=2", "eval.agreement_states=50", "env.perturbations=[]"])
    net = MLP((4,), 2, width=8)
    reference = _reference(0.0, -1.0)
    out = final_evaluation(cfg, net, net, CARTPOLE, [], reference)
    assert np.isnan(out["raw_return_ratio"]) and out["normalized_score"] == pytest.approx(
        (out["eval_return_mean"] + 1.0) / 1.0
    )
    reference["teacher"]["mean"] = 50.0
    assert final_evaluation(cfg, net, net, CARTPOLE, [], reference)["raw_return_ratio"] == pytest.approx(
        out["eval_return_mean"] / 50.0
    )


def test_a_job_stopped_by_the_searchs_pruner_is_pruned_and_says_when(tmp_path, monkeypatch, caplog):
    """(kdrl.runs.job.x__run_job__mutmut_96: the log line's time argument dropped) a pruned trial's
    results.json says pruned, with its counters, and no final evaluation; the log line gives env
    step and seconds."""
    import kdrl.search.trial as trial
    from kdrl.runs.teacher import train_teacher

    monkeypatch.setattr(trial, "trial_pruned", lambda callbacks: True)
    given: list = []
    monkeypatch.setattr(trial, "trial_callbacks", lambda evaluation: given.append(evaluation) or [])
    cfg = compose_cfg("train", [*QUIET, "algo.total_timesteps=600", "eval.freq=300", "eval.episodes=1"])
    with caplog.at_level(logging.INFO, logger="kdrl"):
        res = train_teacher(cfg, tmp_path)
    assert res["status"] == "pruned" and res["env_steps"] == 600 and "eval_return_mean" not in res
    assert res["config"]["algo"]["total_timesteps"] == 600  # (x__run_job__mutmut_4: the config under another key)
    # the search's reporter follows the job's own evaluation (x__run_job__mutmut_24: given None)
    assert len(given) == 1 and type(given[0]).__name__ == "GreedyEvaluation" and given[0].history
    said = [r.getMessage() for r in caplog.records if "pruned" in r.msg]
    assert len(said) == 1 and said[0].startswith("teacher pruned at env step 600 (") and said[0].endswith(" s)")


def test_a_run_logs_to_csv_unless_told_not_to(tmp_path):
    """(kdrl.runs.job.x_build_loggers__mutmut_8: csv's default False) a logger config that does not
    mention csv still writes metrics.csv: the curves of every run."""
    from kdrl.runs.job import build_loggers

    loggers = build_loggers(OmegaConf.create({"logger": {"wandb": "disabled"}}), tmp_path, "teacher")
    assert [type(x) for x in loggers] == [pl.loggers.CSVLogger] and Path(loggers[0].log_dir) == tmp_path / "csv"
    assert build_loggers(OmegaConf.create({"logger": {"csv": False, "wandb": "disabled"}}), tmp_path, "teacher") == []


def test_a_logger_config_that_does_not_mention_wandb_logs_without_it(tmp_path, monkeypatch):
    """(kdrl.runs.job.x_build_loggers__mutmut_41, 43: W&B's default mode None, refused as not one of
    offline, online, disabled) a logger config without a wandb key, an older run's say, starts no W&B
    run and is not refused."""
    from kdrl.runs.job import build_loggers

    monkeypatch.delenv("WANDB_MODE", raising=False)
    loggers = build_loggers(OmegaConf.create({"logger": {}}), tmp_path, "teacher")
    assert [type(x) for x in loggers] == [pl.loggers.CSVLogger]


@pytest.mark.parametrize("mode", ["offline", "online"])
def test_an_offline_wandb_run_is_finished_with_its_sync_command(tmp_path, monkeypatch, caplog, mode):
    """(kdrl.runs.job.x_finish_wandb__mutmut_11: the run's settings never read: never offline)"""
    import sys

    from kdrl.runs.job import finish_wandb

    finished: list[bool] = []
    fake = SimpleNamespace(
        run=SimpleNamespace(settings=SimpleNamespace(mode=mode)), finish=lambda: finished.append(True)
    )
    monkeypatch.setitem(sys.modules, "wandb", fake)
    with caplog.at_level(logging.INFO, logger="kdrl"):
        finish_wandb(tmp_path)
    said = [r.getMessage() for r in caplog.records if "wandb sync" in r.getMessage()]
    assert finished == [True]
    expected = [f"W&B offline run saved; upload with: wandb sync {tmp_path}/wandb/offline-run-*"]
    assert said == (expected if mode == "offline" else [])


def test_under_slurm_lightning_does_not_requeue_the_job_itself(tmp_path, monkeypatch):
    """(kdrl.runs.job.x_make_trainer__mutmut_20: no SLURMEnvironment given: Lightning's own, which
    requeues on SIGUSR2 beside submitit) in a SLURM job the trainer's cluster environment is SLURM's
    with auto-requeue off."""
    from pytorch_lightning.plugins.environments import SLURMEnvironment

    from kdrl.runs.job import make_trainer

    for k, v in {"SLURM_JOB_ID": "77", "SLURM_NTASKS": "1", "SLURM_JOB_NAME": "kdrl", "SLURM_PROCID": "0"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("SLURM_LOCALID", "0")
    monkeypatch.setenv("SLURM_NODEID", "0")
    cfg = OmegaConf.create({"trainer": {"accelerator": "cpu", "enable_progress_bar": False}})
    trainer = make_trainer(cfg, [], [], tmp_path)
    env = trainer._accelerator_connector.cluster_environment
    assert isinstance(env, SLURMEnvironment) and env.auto_requeue is False


def test_quiet_lightning_quiets_lightnings_loggers_and_not_the_root(monkeypatch):
    """(kdrl.runs.job.x_quiet_lightning__mutmut_8: the root logger set to WARNING instead)"""
    names = ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", None)
    before = {n: logging.getLogger(n).level for n in names}
    try:
        logging.getLogger().setLevel(logging.INFO)
        for n in names[:3]:
            logging.getLogger(n).setLevel(logging.INFO)
        with warnings.catch_warnings():
            quiet_lightning()
        assert [logging.getLogger(n).level for n in names] == [logging.WARNING] * 3 + [logging.INFO]
    finally:
        for n, level in before.items():
            logging.getLogger(n).setLevel(level)


@pytest.mark.parametrize(
    "message",
    [
        "The 'train_dataloader' does not have many workers which may be a bottleneck.",
        "Your `IterableDataset` has `__len__` defined.",
        "GPU available but not used. You can set it by doing `Trainer(accelerator='gpu')`.",
        "Checkpoint directory /x/checkpoints exists and is not empty.",
        "Found `dataloader_iter` argument in the `training_step`.",
        "You are using the `dataloader_iter` step flavor.",
        "Found 1 module(s) in eval mode at the start of training.",
    ],
)
def test_quiet_lightning_silences_each_of_its_warnings(message):
    """(kdrl.runs.job.x_quiet_lightning__mutmut_41: a pattern wrapped in XX: matches nothing)"""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.warn(message, UserWarning, stacklevel=1)
        assert len(caught) == 1  # shown before
        del caught[:]
        quiet_lightning()
        warnings.warn(message, UserWarning, stacklevel=1)
        assert caught == []


def test_an_unfinished_runs_config_is_read_and_a_finished_ones_is_not(tmp_path):
    """(kdrl.runs.job.x_unfinished_run_config__mutmut_15: ``!=``: only finished runs read) a failed
    attempt's checkpoint gives the config it started with; once results.json says ok, nothing."""
    from kdrl.runs.job import unfinished_run_config

    (tmp_path / "checkpoints").mkdir()
    torch.save({CONFIG_IN_CHECKPOINT: {"seed": 3}}, tmp_path / "checkpoints" / "last.ckpt")
    assert unfinished_run_config(tmp_path) == {"seed": 3}
    (tmp_path / "results.json").write_text(json.dumps({"status": "failed", "config": {"seed": 4}}))
    assert unfinished_run_config(tmp_path) == {"seed": 3}
    (tmp_path / "results.json").write_text(json.dumps({"status": "ok", "config": {"seed": 3}}))
    assert unfinished_run_config(tmp_path) is None
    # (40: a checkpoint that is not a dict read as one: AttributeError) a checkpoint of another kind says
    # nothing, the failed attempt's results.json does; (51: a config that is not a mapping returned) unless
    # it holds no mapping either
    torch.save([1, 2], tmp_path / "checkpoints" / "last.ckpt")
    (tmp_path / "results.json").write_text(json.dumps({"status": "failed", "config": {"seed": 4}}))
    assert unfinished_run_config(tmp_path) == {"seed": 4}
    (tmp_path / "results.json").write_text(json.dumps({"status": "failed", "config": "seed=4"}))
    assert unfinished_run_config(tmp_path) is None


def test_an_unusable_checkpoint_is_named_with_what_happens_instead(tmp_path, caplog):
    """(kdrl.runs.job.x_resume_checkpoint__mutmut_55: the warning's format None)"""
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="kdrl"):
        assert resume_checkpoint(OmegaConf.create({"resume": True}), tmp_path) is None
    said = [r.getMessage() for r in caplog.records if r.name == "kdrl"]
    assert len(said) == 1 and said[0].startswith(f"unusable checkpoint {tmp_path / 'checkpoints' / 'last.ckpt'}: ")
    assert said[0].endswith("; set aside as last.ckpt.corrupt; no whole checkpoint left: starting afresh")


def test_a_checkpoint_that_cannot_be_set_aside_is_said_with_the_reason(tmp_path, caplog, monkeypatch):
    """(kdrl.runs.job.x_resume_checkpoint__mutmut_53, 54: where it went shown as None, or the whole OSError
    in place of its reason) a damaged checkpoint the run dir will not let be renamed is named, with why."""
    import kdrl.io

    def refuse(path):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(kdrl.io, "set_aside", refuse)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="kdrl"):
        assert resume_checkpoint(OmegaConf.create({"resume": True}), tmp_path) is None
    said = [r.getMessage() for r in caplog.records if r.name == "kdrl"]
    assert len(said) == 1 and said[0].endswith(
        "; could not be set aside (Permission denied); no whole checkpoint left: starting afresh"
    ), said


def test_a_failed_on_demand_teacher_of_a_multitask_job_is_logged_by_task(tmp_path, monkeypatch, caplog):
    """(kdrl.runs.multitask.x_multitask_job__mutmut_25: the log line's format dropped) the job
    stops obtaining teachers at the first failure, says which task's, and runs (to fail in one line)."""
    from kdrl.teachers import teacher_overrides

    cfg = compose_cfg("multitask", [*QUIET, f"teacher.cache_dir={tmp_path}", "teacher.seed=3"])
    asked: list[tuple] = []

    def fail(*args):
        asked.append(args)
        raise RuntimeError("diverged\nat step 9")

    monkeypatch.setattr(mt, "missing_teachers", lambda job: ["cartpole", "acrobot"])
    monkeypatch.setattr(mt, "obtain_teacher", fail)
    monkeypatch.setattr(mt, "run_job", lambda job: {"error": job.teacher_error})
    with caplog.at_level(logging.ERROR, logger="kdrl"):
        res = mt.multitask_job(cfg, tmp_path / "run", choices={"debug": "fast"})
    assert str(res["error"]) == "diverged\nat step 9"
    # (mutmut_4, 7: the job's choices dropped; 10-16: the teacher's seed, overrides or cache not passed) the
    # teacher is the one the job will load: its seed, the job's debug preset and budget, its cache
    overrides = teacher_overrides(cfg, {"debug": "fast"})
    assert "debug=fast" in overrides and asked == [("cartpole", 3, overrides, str(tmp_path))]
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert said == ["the on-demand teacher of task cartpole failed: RuntimeError: diverged at step 9"]


def test_a_multitask_jobs_fields_name_its_adapter_and_update(tmp_path):
    """(kdrl.runs.multitask.xǁMultiTaskJobǁfields__mutmut_40: the adapter recorded as "None")"""
    for adapter, update in (("linear", "interleave"), ("pad", "sum")):
        cfg = compose_cfg("multitask", [*QUIET, f"student.adapter={adapter}", f"multitask.update={update}"])
        fields = mt.MultiTaskJob(cfg, tmp_path, choices={}).fields()
        assert (fields["adapter"], fields["update"], fields["width"], fields["depth"]) == (
            adapter, update, cfg.student.width, cfg.student.depth,
        )  # fmt: skip


# ---- the seed-2 sample's survivors (scripts/mutation.py runs --sample 60 --sample-seed 2) ---------------------------
def test_teardown_closes_the_modules_collector():
    """(kdrl.modules.base.xǁRLModuleǁteardown__mutmut_11: the method looked up under another name:
    an actor process outlives its fit)"""
    m = _rl_module()
    closed: list[bool] = []
    m.collector = SimpleNamespace(close=lambda: closed.append(True))
    m.teardown("fit")
    assert closed == [True]
    _rl_module().teardown("fit")  # no collector yet (a fit that failed in setup): nothing to close


@pytest.mark.parametrize("update, steps", [("sum", 1), ("interleave", 2)])
def test_a_multitask_round_steps_once_on_the_summed_losses_or_once_per_task(update, steps):
    """(kdrl.modules.multitask.xǁMultiTaskModuleǁrun_round__mutmut_26: the summed loss read under
    another key) update=sum takes one optimiser step on the sum of the tasks' losses; interleave one
    per task. The sum step equals a hand-made step on the summed loss."""
    from kdrl.data import TaskEnv
    from kdrl.modules.multitask import JointMultiTaskDQN
    from kdrl.nets import build_multitask_net

    cfg = compose_cfg("multitask", [*QUIET, "mode=joint_dqn"])
    specs = [CARTPOLE, EnvSpec("Acrobot-v1", (6,), 3)]
    tasks = [TaskEnv(n, s, {"id": s.env_id, "num_envs": 1}) for n, s in zip(("cartpole", "acrobot"), specs)]
    torch.manual_seed(0)
    net = build_multitask_net({"width": 8, "depth": 1}, specs)
    dqn = {**plain(cfg.dqn), "max_grad_norm": None}
    module = JointMultiTaskDQN(
        net, tasks, plain(cfg.multitask), dqn, lambda ps: torch.optim.SGD(ps, lr=0.1), update=update
    )
    module.setup("fit")
    for c in module.collectors:
        while c.buffer.size < 64:
            c.step()
    due = [(i, c.buffer.sample_stack(1, 16).at(0)) for i, c in enumerate(module.collectors)]
    expected = None
    if update == "sum":
        twin = build_multitask_net({"width": 8, "depth": 1}, specs)
        twin.load_state_dict(net.state_dict())
        sgd = torch.optim.SGD(twin.parameters(), lr=0.1)
        saved = module.q_net
        module.q_net = twin  # the same losses, on the twin (the target net is the module's own)
        torch.stack([module.task_loss(i, b)["loss"] for i, b in due]).sum().backward()
        module.q_net = saved
        sgd.step()
        expected = twin.state_dict()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    module.run_round(opt, due)
    assert module.optimizer_steps == steps
    # logged per task, and the mean loss (xǁJointMultiTaskDQNǁtask_loss__mutmut_31, xǁMultiTaskModuleǁrun_round__mutmut_33)
    assert set(module._sums) == {"loss", *(f"{t}/{k}" for t in ("cartpole", "acrobot") for k in ("td_loss", "q_mean"))}
    if expected is not None:
        assert all(torch.allclose(net.state_dict()[k], v) for k, v in expected.items())


def test_a_student_takes_gradient_clipping_and_the_mixed_schedule_from_its_config(tmp_path):
    """(kdrl.modules.student.xǁDistillStudentǁ__init____mutmut_38: max_grad_norm not read; _94:
    beta_end read under another key) distill.max_grad_norm reaches the update; under control=mixed the
    teacher's share decays from beta_start to distill.mixed.beta_end."""
    overrides = [
        "distill.max_grad_norm=2.5",
        "control=mixed",
        "distill.mixed.beta_end=0.2",
        "distill.mixed.decay_steps=100",
    ]
    _, module, _ = _student_job(tmp_path, overrides)
    assert module.max_grad_norm == 2.5
    assert module.beta(0) == 1.0 and module.beta(50) == pytest.approx(0.6) and module.beta(10_000) == pytest.approx(0.2)


def test_a_data_job_records_a_trusted_torchscript_teacher(tmp_path):
    """(kdrl.runs.dataset.x_record_teacher_data__mutmut_42: teacher.trust_code not passed: always
    refused) with teacher.trust_code=true a TorchScript teacher records its dataset."""
    path = scripted_teacher(tmp_path / "teacher.ts", 1)
    base = [*QUIET, f"teacher.checkpoint={path}", "dataset.steps=40", "env.num_envs=2"]
    res = record_teacher_data(compose_cfg("data", [*base, "teacher.trust_code=true"]), tmp_path / "data")
    assert res["status"] == "ok" and res["env_steps"] == 40
    with pytest.raises(Exception, match="(?i)trust_code"):
        record_teacher_data(compose_cfg("data", [*base, "teacher.trust_code=false"]), tmp_path / "refused")


class _FakeWandb(SimpleNamespace):
    """wandb as kdrl calls it: init (recorded, or raising), Settings (its keywords kept)."""

    def __init__(self, fail: Exception | None = None) -> None:
        super().__init__(inits=[], fail=fail, Settings=lambda **kw: SimpleNamespace(**kw))

    def init(self, **kw):
        if self.fail is not None:
            raise self.fail
        self.inits.append(kw)
        return "run"


def test_an_online_wandb_run_is_started_online_with_its_init_timeout(tmp_path, monkeypatch):
    """(kdrl.runs.job.x__online_wandb_run__mutmut_12 / _19: the timeout's settings dropped, the mode
    upper-cased; "no tests": no test started an online run)"""
    import sys

    from kdrl.runs.job import _online_wandb_run

    fake = _FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.setenv("WANDB_INIT_TIMEOUT", "7")
    assert _online_wandb_run(tmp_path, {"project": "p", "group": "g"}) == "run"
    [kw] = fake.inits
    assert kw["dir"] == str(tmp_path) and kw["mode"] == "online" and kw["settings"].init_timeout == 7.0
    assert (kw["project"], kw["group"]) == ("p", "g")
    monkeypatch.delenv("WANDB_INIT_TIMEOUT")
    _online_wandb_run(tmp_path, {})
    assert fake.inits[-1]["settings"].init_timeout == 30.0  # (x__online_wandb_run__mutmut_9: 31 by default)


def test_an_unreachable_online_wandb_falls_back_to_offline_and_says_so(tmp_path, monkeypatch, caplog):
    """(kdrl.runs.job.x__online_wandb_run__mutmut_35 / _36: the warning's words changed, its %s broken)"""
    import os
    import sys

    from kdrl.runs.job import _online_wandb_run

    monkeypatch.setitem(sys.modules, "wandb", _FakeWandb(fail=RuntimeError("no\napi key")))
    monkeypatch.setenv("WANDB_MODE", "online")
    with caplog.at_level(logging.WARNING, logger="kdrl"):
        assert _online_wandb_run(tmp_path, {}) is None
    assert [r.getMessage() for r in caplog.records if r.name == "kdrl"] == [
        f"W&B online unreachable (no api key); continuing with W&B offline in {tmp_path}/wandb "
        "(upload later with `wandb sync`)"
    ]
    assert os.environ["WANDB_MODE"] == "offline"


@pytest.mark.parametrize(("error", "reason"), [(TimeoutError(), "TimeoutError"), (OSError("x" * 300), "x" * 200)])
def test_an_unreachable_wandbs_reason_is_its_first_200_characters_or_its_type(
    tmp_path, monkeypatch, caplog, error, reason
):
    """(kdrl.runs.job.x__online_wandb_run__mutmut_26: cut at 201; 27: an error with no words named
    NoneType) the warning gives the error's first 200 characters, or its type when it has no words."""
    import sys

    from kdrl.runs.job import _online_wandb_run

    monkeypatch.setitem(sys.modules, "wandb", _FakeWandb(fail=error))
    monkeypatch.setenv("WANDB_MODE", "online")
    with caplog.at_level(logging.WARNING, logger="kdrl"):
        assert _online_wandb_run(tmp_path, {}) is None
    [said] = [r.getMessage() for r in caplog.records if r.name == "kdrl"]
    assert said.startswith(f"W&B online unreachable ({reason}); continuing"), said


def test_an_offline_wandb_logger_joins_the_configured_group(tmp_path, monkeypatch):
    """(kdrl.runs.job.x_build_loggers__mutmut_80: the group left out: a study's jobs in no group)"""
    import pytorch_lightning.loggers as pl_loggers

    from kdrl.runs.job import build_loggers

    made: list[dict] = []
    monkeypatch.setattr(pl_loggers, "WandbLogger", lambda **kw: made.append(kw) or "wandb-logger")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    cfg = OmegaConf.create({
        "logger": {"csv": False, "wandb": "offline"}, "wandb": {"project": "kdrl", "group": "study-a", "tags": ["t"]},
        "env": {"id": "CartPole-v1"}, "seed": 4,
    })  # fmt: skip
    assert build_loggers(cfg, tmp_path, "teacher") == ["wandb-logger"]
    [kw] = made
    assert (kw["group"], kw["project"], kw["job_type"], kw["name"], kw["tags"]) == (
        "study-a", "kdrl", "teacher", "teacher-CartPole-v1-s4", ["t"],
    )  # fmt: skip
    assert kw["offline"] is True and kw["config"]["seed"] == 4


def test_a_resume_conflict_with_seven_differences_says_one_more(tmp_path):
    """(kdrl.runs.job.x_check_resumable__mutmut_38: ``> 7``: the seventh difference never mentioned)"""
    old = {"resume": True, **{f"k{i}": 0 for i in range(8)}}
    (tmp_path / "checkpoints").mkdir()
    torch.save({CONFIG_IN_CHECKPOINT: old}, tmp_path / "checkpoints" / "last.ckpt")
    for changed, tail in ((6, "k5: 0 -> 1)"), (7, "k5: 0 -> 1; and 1 more)")):
        new = {**old, **{f"k{i}": 1 for i in range(changed)}}
        with pytest.raises(ResumeConflict) as exc:
            check_resumable(new, tmp_path)
        assert tail in str(exc.value)


def test_the_fit_is_one_epoch_over_the_stream(tmp_path):
    """(kdrl.runs.job.x_make_trainer__mutmut_32: max_epochs None: Lightning's 1,000 epochs, the stream
    iterated again after its budget)"""
    from kdrl.runs.job import make_trainer

    cfg = OmegaConf.create({"trainer": {"accelerator": "cpu", "enable_progress_bar": False}})
    assert make_trainer(cfg, [], [], tmp_path).max_epochs == 1


def test_a_failed_attempt_is_resumed_and_a_finished_run_is_not(tmp_path):
    """(kdrl.runs.job.x_resume_checkpoint__mutmut_20: ``!=``: every failed attempt restarted afresh)"""
    path = _whole_checkpoint(tmp_path)
    (tmp_path / "results.json").write_text(json.dumps({"status": "failed", "error": "killed"}))
    assert resume_checkpoint(OmegaConf.create({"resume": True}), tmp_path) == str(path)
    (tmp_path / "results.json").write_text(json.dumps({"status": "ok"}))
    assert resume_checkpoint(OmegaConf.create({"resume": True}), tmp_path) is None


def test_a_multitask_task_without_trust_code_refuses_a_torchscript_teacher(tmp_path):
    """(kdrl.runs.multitask.x_load_task__mutmut_47: trust_code's default True) a config without the
    key trusts nothing, as conf/multitask.yaml's default (false) says."""
    path = scripted_teacher(tmp_path / "cartpole.ts", 1)
    base = [*QUIET, f"teacher.checkpoints={{cartpole:{path}}}", "tasks=[cartpole]", f"teacher.cache_dir={tmp_path}"]
    cfg = compose_cfg("multitask", [*base, "~teacher.trust_code"])
    assert "trust_code" not in cfg.teacher
    with pytest.raises(Exception, match="(?i)trust_code"):
        mt.load_task(cfg, "cartpole", {"debug": "fast"})


def test_a_multitask_task_refuses_a_teacher_trained_on_another_env(tmp_path):
    """(kdrl.runs.multitask.x_load_task__mutmut_31: the env id not passed to the teacher's loader) a task's
    teacher of another env with the same shapes (CartPole-v0 for the cartpole task's CartPole-v1) is refused in
    one line, as the single-game jobs refuse it."""
    other = constant_teacher(tmp_path / "v0.pt", 0, env_id="CartPole-v0")
    base = [*QUIET, f"teacher.checkpoints={{cartpole:{other}}}", "tasks=[cartpole]", f"teacher.cache_dir={tmp_path}"]
    with pytest.raises(CheckpointError, match=r"was trained on 'CartPole-v0', not 'CartPole-v1'"):
        mt.load_task(compose_cfg("multitask", base), "cartpole", {"debug": "fast"})


@pytest.mark.parametrize("mode", ["distill", "joint_dqn"])
def test_a_multitask_module_is_built_for_its_mode_with_the_configs_update_seed_and_log_interval(tmp_path, mode):
    """(kdrl.runs.multitask.x_build_module__mutmut_29: joint_dqn never recognised, a distilling student built
    instead; _20, _21, _22: the update rule, the seed or the log interval not passed, the module's defaults used)
    the module is of its mode's class and carries the config's values, none of them the defaults."""
    from kdrl.modules.multitask import JointMultiTaskDQN, MultiTaskDistill

    teacher = constant_teacher(tmp_path / "teacher.pt", 0)
    base = [*QUIET, f"teacher.checkpoints={{cartpole:{teacher}}}", "tasks=[cartpole]", f"teacher.cache_dir={tmp_path}"]
    cfg = compose_cfg(
        "multitask",
        [*base, f"mode={mode}", "multitask.update=sum", "seed=7", "log_interval=3", "multitask.max_grad_norm=2.5"],
    )
    task = mt.load_task(cfg, "cartpole", {"debug": "fast"})
    student = MultiTaskQNetwork([task.spec.obs_shape], [task.spec.n_actions], width=4, depth=1)
    module = mt.build_module(cfg, [task], student)
    assert type(module) is {"distill": MultiTaskDistill, "joint_dqn": JointMultiTaskDQN}[mode]
    assert (module.update, module.seed, module.log_interval) == ("sum", 7, 3)
    # (kdrl.modules.multitask.xǁMultiTaskModuleǁ__init____mutmut_17, 26, 33-35: multitask.max_grad_norm not read)
    assert module.max_grad_norm == 2.5


def one_task_result(
    s_ret: list[float], r_ret: list[float], teacher_mean: float | list[float] = 100.0, random_mean: float = 20.0
) -> dict:
    """mt.task_result for one CartPole task of a width-8 multi-task student: the teacher reference's
    returns all ``teacher_mean``, the random policy's all ``random_mean`` (20 episodes each)."""
    net = MultiTaskQNetwork([(4,)], [2], width=8, depth=1)
    module = SimpleNamespace(q_net=net, collectors=[SimpleNamespace(env_steps=300, episodes=7)])
    reference = _reference(teacher_mean, random_mean)
    task = mt.TaskSetup("cartpole", {"id": "CartPole-v1"}, CARTPOLE, nn.Linear(4, 2), Path("t.pt"), None, reference)
    return mt.task_result(task, module, 0, s_ret, [100.0, 100.0], r_ret)


def test_a_multitask_task_result_has_the_students_spread(tmp_path):
    """(kdrl.runs.multitask.x_task_result__mutmut_31: eval_return_std under another key)"""
    out = one_task_result([40.0, 80.0], [20.0, 20.0])
    assert out["eval_return_mean"] == 60.0 and out["eval_return_std"] == 20.0 and out["eval_returns"] == [40.0, 80.0]
    assert out["pct_of_teacher"] == pytest.approx(50.0) and (out["env_steps"], out["episodes"]) == (300, 7)


def test_a_multitask_job_whose_on_demand_teacher_failed_says_why(tmp_path):
    """(kdrl.runs.multitask.xǁMultiTaskJobǁbuild__mutmut_4: the failure dropped from the message)"""
    from kdrl.runs.distill import TeacherNotTrained

    job = mt.MultiTaskJob(compose_cfg("multitask", [*QUIET, f"teacher.cache_dir={tmp_path}"]), tmp_path, choices={})
    job.teacher_error = RuntimeError("diverged\nat step 9")
    with pytest.raises(TeacherNotTrained) as exc:
        job.build({})
    assert str(exc.value) == "an on-demand teacher's job failed: RuntimeError: diverged at step 9"


# ---- the seed-3 sample's survivors (scripts/mutation.py runs --sample 60 --sample-seed 3) ---------------------------
class _NoState:
    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def test_an_evaluation_resumed_before_its_first_evaluation_has_no_earlier_wall_time():
    """(kdrl.callbacks.xǁPeriodicEvaluationǁload_state_dict__mutmut_15: the empty-history check
    dropped: IndexError on a checkpoint written before the first evaluation; "no tests")"""
    ev = PeriodicEvaluation(100, 1, 0, policies=_NoState(), checkpoint=_NoState())
    fresh = PeriodicEvaluation(100, 1, 0, policies=_NoState(), checkpoint=_NoState())
    fresh.load_state_dict(ev.state_dict())
    assert fresh.resumed_wall_s == 0.0 and fresh.history == [] and fresh.next_eval == 100
    ev.history.append({"wall_s": 12.5})
    fresh.load_state_dict(ev.state_dict())
    assert fresh.resumed_wall_s == 12.5


class _KeyedState(_NoState):
    def __init__(self, state: dict) -> None:
        self.state = state

    def state_dict(self) -> dict:
        return dict(self.state)


def test_a_listener_whose_state_reuses_a_key_is_refused_and_others_are_merged():
    """(kdrl.callbacks.xǁPeriodicEvaluationǁstate_dict__mutmut_9: the clash never found: a listener's state
    silently overwrote the schedule or history in the checkpoint) a listener's keys join the callback's state;
    one that reuses a key of the callback or of another part is refused, naming the key."""
    ev = PeriodicEvaluation(100, 1, 0, policies=_NoState(), checkpoint=_NoState(), listeners=[_KeyedState({"lam": 1})])
    assert ev.state_dict() == {"next_eval": 100, "history": [], "eval_time_s": 0.0, "lam": 1}
    ev.add_listener(_KeyedState({"history": [{"wall_s": 1.0}]}))
    with pytest.raises(KeyError, match="_KeyedState's state reuses the keys \\['history'\\]"):
        ev.state_dict()


def test_the_wall_clock_starts_at_train_start_or_where_the_resumed_run_left_it():
    """(kdrl.callbacks.xǁPeriodicEvaluationǁon_train_start__mutmut_9: a fresh run's clock started 1 s early:
    every wall_s and time to score a second too long) a fresh run's evaluation clock starts at on_train_start;
    a resumed one continues from its last evaluation's wall_s."""
    module = SimpleNamespace(evaluate_at_start=False)
    ev = PeriodicEvaluation(100, 1, 0, policies=_NoState(), checkpoint=_NoState())
    before = time.perf_counter()
    ev.on_train_start(None, module)
    assert before <= ev.t_start <= time.perf_counter()
    ev.history.append({"wall_s": 12.5})
    before = time.perf_counter()
    ev.on_train_start(None, module)
    assert before - 12.5 <= ev.t_start <= time.perf_counter() - 12.5


def test_a_resumed_student_continues_its_update_count_and_its_who_acts_stream(tmp_path):
    """(kdrl.modules.base.xǁRLModuleǁon_load_checkpoint__mutmut_19-25: the update count read under another key
    or with another default: a resumed run counted its grad_steps from 0; kdrl.modules.student.xǁDistillStudentǁ
    extra_state__mutmut_4, 5: the who-acts stream saved under another name: a resumed control=mixed run drew
    new coin flips; load_extra_state__mutmut_4, 6, 9-12: teacher_acted's default lost, the stream read under
    another name or only when absent) a checkpoint restores optimizer_steps, teacher_acted and the control
    stream's position; a checkpoint without the counts loads them as 0."""
    for run in "abc":
        (tmp_path / run).mkdir()
    _, a, _ = _student_job(tmp_path / "a", ["control=mixed"])
    a.setup("fit")
    a.optimizer_steps, a.teacher_acted = 17, 4
    a._rng.random(5)  # the stream has moved on from its seed
    ckpt: dict = {}
    a.on_save_checkpoint(ckpt)
    _, b, _ = _student_job(tmp_path / "b", ["control=mixed"])
    b.on_load_checkpoint(ckpt)
    assert (b.optimizer_steps, b.teacher_acted) == (17, 4)
    assert b._rng.random(3).tolist() == a._rng.random(3).tolist()
    del ckpt["kdrl"]["optimizer_steps"], ckpt["kdrl"]["teacher_acted"]
    _, c, _ = _student_job(tmp_path / "c", ["control=mixed"])
    c.optimizer_steps = c.teacher_acted = 5
    c.on_load_checkpoint(ckpt)
    assert (c.optimizer_steps, c.teacher_acted) == (0, 0)


def test_a_hybrid_student_loads_a_checkpoint_without_its_lambda_state(tmp_path):
    """(kdrl.modules.student.xǁDistillStudentǁload_extra_state__mutmut_16: ``hybrid or``: KeyError) a hybrid
    student given a state without distill_weight keeps its own lambda schedule; with one, takes it."""
    _, module, _ = _student_job(tmp_path, ["loss=hybrid"])
    weight = module.objective.distill_weight
    before = weight.state_dict()
    module.load_extra_state({})
    assert module.objective.distill_weight.state_dict() == before
    module.load_extra_state({"distill_weight": {**before, "score": 0.25}})
    assert module.objective.distill_weight.state_dict() == {**before, "score": 0.25}


def test_a_module_without_its_data_settings_refuses_to_build_a_stream():
    """(kdrl.modules.base.xǁRLModuleǁbuild_stream__mutmut_1: ``or``: a module with an env spec but no
    data settings went on to build a stream from None)"""
    m = RLModule(nn.Linear(4, 2), CARTPOLE, {"id": "CartPole-v1"}, None, torch.optim.SGD, lambda t: 0.0)
    with pytest.raises(AssertionError):
        m.build_stream()


def test_a_pruned_students_results_count_the_nonzero_weights_of_its_policy(tmp_path):
    """(kdrl.runs.distill.xǁDistillJobǁprune_fields__mutmut_9: counted on None) the pruning report
    plus the non-zero parameters of the chosen policy; None for a student that is not pruned."""
    from kdrl.prune import nonzero_params

    _, module, _ = _student_job(tmp_path, ["distill.prune.amount=0.5"])
    module.collector = SimpleNamespace(env_steps=100)
    module.pruning.apply(module)
    fields = DistillJob.prune_fields(module, module.q_net)
    assert fields["nonzero_params"] == float(nonzero_params(module.q_net)) < module.params
    assert {k: v for k, v in fields.items() if k != "nonzero_params"} == module.pruning.report
    _, plain_student, _ = _student_job(tmp_path / "plain")
    assert DistillJob.prune_fields(plain_student, plain_student.q_net) is None


def test_a_teachers_final_evaluation_is_on_its_final_seeds_and_names_its_best_periodic_return(tmp_path):
    """(kdrl.runs.teacher.xǁTeacherJobǁfinish__mutmut_26: the seeds left out of the final evaluation;
    _82: best_periodic_eval under another key; kdrl.runs.job.x__run_job__mutmut_42: setup_s under
    another key, outside the results schema)"""
    from kdrl.io import load_policy
    from kdrl.runs.teacher import train_teacher

    cfg = compose_cfg("train", [*QUIET, "algo.total_timesteps=600", "eval.freq=300", "eval.episodes=2",
                                "eval.final_episodes=3", "net.width=8"])  # fmt: skip
    res = train_teacher(cfg, tmp_path)
    assert res["status"] == "ok"
    net = MLP((4,), 2, width=8, depth=int(cfg.net.depth))
    net.load_state_dict(load_policy(tmp_path / "teacher.pt")["state_dict"])
    greedy = lambda obs: greedy_actions(net.eval(), obs, torch.device("cpu"))  # noqa: E731
    seeds = eval_seeds(cfg.eval.final_seed, cfg.eval.final_episodes)
    assert res["eval_returns"] == evaluate_policy(greedy, "CartPole-v1", seeds) and len(seeds) == 3
    assert res["best_periodic_eval"] == max(h["return_mean"] for h in res["eval_history"])
    assert 0 < res["setup_s"] < res["job_wall_time_s"] and "SETUP_S" not in res
    assert json.loads((tmp_path / "results.json").read_text())["setup_s"] == res["setup_s"]


@pytest.mark.parametrize("tensorboard", [False, True])
def test_tensorboard_is_written_to_the_run_dir_when_asked(tmp_path, tensorboard):
    """(kdrl.runs.job.x_build_loggers__mutmut_24: the key misspelt: never; _37: a version subdirectory)"""
    from kdrl.runs.job import build_loggers

    cfg = OmegaConf.create({"logger": {"csv": False, "tensorboard": tensorboard, "wandb": "disabled"}})
    loggers = build_loggers(cfg, tmp_path, "teacher")
    assert [type(x) for x in loggers] == ([pl.loggers.TensorBoardLogger] if tensorboard else [])
    if tensorboard:
        assert Path(loggers[0].log_dir) == tmp_path / "tensorboard"


def test_a_size_preset_a_run_uses_still_refuses_a_resume_when_changed():
    """(kdrl.runs.job.x_config_differences__mutmut_14: the student's size read under another key:
    every preset counted as unused)"""
    from kdrl.runs.job import config_differences

    old = {
        "task": "distill",
        "student": {"size": "rusu_7"},
        "student_sizes": {"rusu_7": {"width": 8}, "rusu_4": {"width": 4}},
    }
    new = {**old, "student_sizes": {"rusu_7": {"width": 9}, "rusu_4": {"width": 5}}}
    assert config_differences(old, new) == [("student_sizes.rusu_7.width", 8, 9)]


# ---- the seed-4 sample's survivors (scripts/mutation.py runs --sample 60 --sample-seed 4) ---------------------------
class _Trainer(SimpleNamespace):
    is_global_zero = True


def test_the_env_step_bar_starts_at_the_modules_env_steps_and_follows_the_terminals_width(monkeypatch):
    """(kdrl.callbacks.xǁEnvStepProgressBarǁon_train_start__mutmut_19: ``dynamic_ncols=False``: the bar
    kept the width it started with; "no tests": no test started the bar) a resumed run's bar starts at
    its env steps, over the stream's budget, and re-reads the terminal's width; KDRL_NO_PROGRESS=1
    disables it, and a disabled callback or another rank makes none."""
    monkeypatch.delenv("KDRL_NO_PROGRESS", raising=False)
    module = SimpleNamespace(stream=SimpleNamespace(total_timesteps=5000), env_steps=1200)
    pb = EnvStepProgressBar()
    pb.on_train_start(_Trainer(), module)
    bar = pb.bar
    assert (bar.total, bar.n, bar.unit, bar.disable) == (5000, 1200, "step", False)
    assert bar.dynamic_ncols  # tqdm keeps the screen-width reader it calls at every refresh (False when off)
    bar.close()
    monkeypatch.setenv("KDRL_NO_PROGRESS", "1")
    pb.on_train_start(_Trainer(), module)
    assert pb.bar.disable is True
    pb.bar.close()
    off = EnvStepProgressBar()
    off.disable()
    off.on_train_start(_Trainer(), module)
    other_rank = EnvStepProgressBar()
    other_rank.on_train_start(_Trainer(is_global_zero=False), module)
    assert off.bar is None and other_rank.bar is None


def test_training_ends_with_an_evaluation_unless_one_was_just_made():
    """(kdrl.callbacks.xǁPeriodicEvaluationǁon_train_end__mutmut_7: ``==``: the final env step never
    evaluated, the last one evaluated twice) a run whose budget ends between evaluations is evaluated
    at its last env step; one that ends on an evaluation is not evaluated again."""
    ev = PeriodicEvaluation(100, 1, 0, policies=None, checkpoint=None)
    made: list[int] = []
    ev.evaluate = lambda trainer, m: made.append(m.env_steps) or ev.history.append({"env_steps": m.env_steps})
    ev.on_train_end(None, SimpleNamespace(env_steps=40))  # no evaluation yet
    ev.history.append({"env_steps": 100})
    ev.on_train_end(None, SimpleNamespace(env_steps=100))  # ended on an evaluation
    ev.on_train_end(None, SimpleNamespace(env_steps=150))  # ended between two
    assert made == [40, 150]


def test_episode_metrics_are_the_mean_return_and_length_of_the_finished_episodes():
    """(kdrl.modules.base.xǁRLModuleǁepisode_metrics__mutmut_2: the check inverted: no episode metrics
    when episodes finished, nan ones when none did)"""
    m = _rl_module()
    finished = [[(0, 10.0, 20), (1, 30.0, 60)], []]
    m.collector = SimpleNamespace(drain_finished=lambda: finished.pop(0))
    assert m.episode_metrics() == {"train/episodic_return": 20.0, "train/episodic_length": 40.0}
    assert m.episode_metrics() == {}


def test_the_stream_is_served_pinned_only_to_a_cuda_module(monkeypatch):
    """(kdrl.modules.base.xǁRLModuleǁtrain_dataloader__mutmut_12: ``"CUDA"``: never pinned) with CUDA
    present, the DataLoader pins its batches for a module on a CUDA device, and not for a CPU one
    (the device is only named: nothing is moved)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    m = _rl_module()
    m.stream = []
    loader = m.train_dataloader()
    assert (loader.pin_memory, loader.batch_size, loader.num_workers) == (False, None, 0)
    m._device = torch.device("cuda", 0)
    assert m.train_dataloader().pin_memory is True


def test_the_data_jobs_progress_bar_is_made_only_when_enabled():
    """(kdrl.runs.dataset.x_progress_bar__mutmut_1: the check inverted: a bar when disabled, none when
    enabled; the data job's test replaces progress_bar)"""
    assert progress_bar(300, False) is None
    bar = progress_bar(300, True)
    assert (bar.total, bar.desc, bar.unit) == (300, "recording", "step")
    bar.close()


def test_a_student_without_a_size_key_is_its_student_block():
    """(kdrl.runs.distill.x_student_sizes__mutmut_6: ``pop("size")`` without a default: KeyError for a
    student block without the key, a config written before named sizes)"""
    cfg = OmegaConf.create({"student": {"width": 8, "depth": 2}, "student_sizes": {"s": {"width": 4}}})
    assert student_sizes(cfg) == {"width": 8, "depth": 2}
    cfg.student.size = "s"
    assert student_sizes(cfg) == {"width": 4}


def test_a_hybrid_students_fields_record_its_lambda_schedule(tmp_path):
    """(kdrl.runs.distill.xǁDistillJobǁfields__mutmut_31: ``and False``: lambda always None) a loss
    with a TD term records its lambda schedule without its _target_; a pure distillation loss None."""
    cfg = compose_cfg("distill", [*QUIET, "loss=hybrid"])
    fields = DistillJob(cfg, tmp_path, choices={}).fields()
    assert fields["lambda"] == {"kind": "linear", "value": 1.0, "end": 0.0, "decay_steps": 20000}
    assert (fields["loss"], fields["temperature"], fields["feature_weight"]) == ("hybrid", 1.0, 0.0)
    assert DistillJob(compose_cfg("distill", [*QUIET, "loss=kl"]), tmp_path, choices={}).fields()["lambda"] is None


def test_a_resume_conflict_names_the_run_dir_key_by_default(tmp_path):
    """(kdrl.runs.job.x_check_resumable__mutmut_1: the default dir_key mangled) called without dir_key
    (kdrl-data, a single run), the way out names hydra.run.dir."""
    old = {"resume": True, "seed": 0}
    (tmp_path / "checkpoints").mkdir()
    torch.save({CONFIG_IN_CHECKPOINT: old}, tmp_path / "checkpoints" / "last.ckpt")
    with pytest.raises(ResumeConflict) as exc:
        check_resumable({**old, "seed": 1}, tmp_path)
    assert "(seed: 0 -> 1); " in str(exc.value) and ": give another hydra.run.dir, or resume=false " in str(exc.value)


def test_numbered_checkpoints_are_resume_candidates_newest_first(tmp_path):
    """(kdrl.runs.job.x_checkpoint_candidates__mutmut_12: the glob mangled: checkpoint.keep_last's
    numbered checkpoints never found) last.ckpt, prev.ckpt, then step-*.ckpt from the newest."""
    from kdrl.runs.job import checkpoint_candidates

    d = tmp_path / "checkpoints"
    assert checkpoint_candidates(d) == []  # no dir yet
    d.mkdir()
    for name in ("step-0000000100.ckpt", "step-0000000300.ckpt", "step-0000000200.ckpt", "prev.ckpt", "x.pt"):
        (d / name).write_bytes(b"x")
    expected = [d / n for n in ("prev.ckpt", "step-0000000300.ckpt", "step-0000000200.ckpt", "step-0000000100.ckpt")]
    assert checkpoint_candidates(d) == expected
    (d / "last.ckpt").write_bytes(b"x")
    assert checkpoint_candidates(d) == [d / "last.ckpt", *expected]


def test_a_multitask_task_result_has_rusus_raw_return_ratio():
    """(kdrl.runs.multitask.x_task_result__mutmut_68: raw_return_ratio under another key) the student's
    mean over the teacher reference's, nan for a teacher whose reference mean is not positive."""

    def result(teacher_mean: float) -> dict:
        return one_task_result([40.0, 80.0], [20.0, 20.0], teacher_mean=teacher_mean, random_mean=-200.0)

    assert result(200.0)["raw_return_ratio"] == pytest.approx(0.3)  # 60 / 200
    assert np.isnan(result(-100.0)["raw_return_ratio"])


def test_a_multitask_jobs_results_give_its_size_as_a_share_of_its_teachers(tmp_path, monkeypatch):
    """(kdrl.runs.multitask.xǁMultiTaskJobǁfinish__mutmut_46: ``params * t_params``) param_ratio is the
    student's parameters over the teachers' summed; the chosen policy is copied to student.pt."""
    per_task = {"cartpole": {"pct_of_teacher": 80.0}, "acrobot": {"pct_of_teacher": 20.0}}
    monkeypatch.setattr(mt, "final_evaluation", lambda cfg, tasks, module, chosen: per_task)
    job = mt.MultiTaskJob(OmegaConf.create({}), tmp_path, choices={})
    job.tasks = [SimpleNamespace(teacher=nn.Linear(4, 2)), SimpleNamespace(teacher=nn.Linear(6, 3))]  # 10 + 21
    chosen = tmp_path / "best.pt"
    chosen.write_bytes(b"policy")
    module = SimpleNamespace(q_net=nn.Linear(3, 2), task_env_steps=500, optimizer_steps=40)  # 8 params
    res = job.finish(module, None, chosen)
    assert (res["params"], res["teacher_params"], res["param_ratio"]) == (8, 31, pytest.approx(8 / 31))
    assert (res["mean_pct_of_teacher"], res["normalized_score"]) == (50.0, 0.5)
    assert (res["task_env_steps"], res["optimizer_steps"]) == (500, 40)
    assert res["checkpoint"] == str(tmp_path / "student.pt") and (tmp_path / "student.pt").read_bytes() == b"policy"


# ---- the seed-5 sample's survivors (scripts/mutation.py runs --sample 60 --sample-seed 5) ---------------------------
def _module_view(env_steps: int = 40) -> SimpleNamespace:
    return SimpleNamespace(
        env_steps=env_steps,
        sps=10.0,
        collector=SimpleNamespace(recent_returns=[], epsilon=0.05),
        trainer=SimpleNamespace(callbacks=[]),
    )


def test_the_env_step_bar_is_redrawn_by_its_own_update_and_not_again_for_its_postfix():
    """(kdrl.callbacks.xǁEnvStepProgressBarǁ_update__mutmut_28: ``set_postfix`` without
    ``refresh=False``: a second redraw at every update) the postfix is set without drawing; the bar
    is drawn by its own ``update``, at most every tqdm ``mininterval``."""
    out = io.StringIO()
    pb = EnvStepProgressBar()
    pb.bar = tqdm(total=1000, file=out, mininterval=1e9)  # drawn once when made, never again by update
    drawn = out.getvalue()
    pb._update(_module_view(40))
    assert pb.bar.n == 40 and pb.bar.postfix == "sps=10, eps=0.050"
    assert out.getvalue() == drawn  # nothing drawn: the postfix waits for the next update's redraw
    pb.bar.close()


def test_the_env_step_bar_is_refreshed_once_its_interval_has_passed(monkeypatch):
    """(kdrl.callbacks.xǁEnvStepProgressBarǁon_train_batch_end__mutmut_4: ``<=``: a refresh exactly
    refresh_s after the last one skipped; "no tests": no test ended a batch with a bar; __init____mutmut_1: the
    default 1.25 s) with the default refresh_s, 0.25 s (the docstring's ~4x/s), the bar follows the module once
    0.25 s have passed since its last refresh, not sooner; without a bar nothing happens."""
    import kdrl.callbacks as callbacks

    clock = [0.0]
    monkeypatch.setattr(callbacks, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    pb = EnvStepProgressBar()
    pb.on_train_batch_end(None, _module_view(5), None, None, 0)  # no bar yet: nothing
    pb.bar = tqdm(total=1000, file=io.StringIO())
    seen = []
    for t, steps in ((0.125, 10), (0.25, 20), (0.375, 30), (0.5, 40), (0.75, 50)):
        clock[0] = t
        pb.on_train_batch_end(None, _module_view(steps), None, None, 0)
        seen.append(pb.bar.n)
    assert seen == [0, 20, 20, 40, 50]  # refreshed at 0.25, 0.5 and 0.75: each 0.25 after the last
    pb.bar.close()


def test_the_actor_processs_wait_is_logged_with_the_training_metrics():
    """(kdrl.modules.base.xǁRLModuleǁflush_metrics__mutmut_43: the collector's ``WAIT_S`` looked for:
    train/actor_wait_s never logged) a collector that has wait_s (the actor process) has it logged;
    the in-process collector has none."""
    logged: list[dict] = []
    for collector in (
        SimpleNamespace(epsilon=0.1, episodes=3, env_steps=90, wait_s=2.5, drain_finished=lambda: []),
        SimpleNamespace(epsilon=0.1, episodes=3, env_steps=90, drain_finished=lambda: []),
    ):
        m = _rl_module()
        m.collector, m.stream = collector, SimpleNamespace(grad_steps=7)
        m.log_env_metrics = logged.append
        m.flush_metrics()
    assert [x.get("train/actor_wait_s") for x in logged] == [2.5, None]
    assert all((x["train/epsilon"], x["train/episodes"], x["train/grad_steps"]) == (0.1, 3, 7) for x in logged)


def test_the_training_metrics_are_the_means_since_the_last_flush_and_the_speed_over_its_interval(monkeypatch):
    """(kdrl.modules.base.xǁRLModuleǁflush_metrics, shard G4: the interval, the speed, the means and their reset
    each mutated) a flush logs each accumulated metric's mean over its updates, the episodes finished since the
    last flush, and sps = env steps since the last flush / seconds since it; then it starts a new interval. A
    second flush in the same instant keeps the speed it had."""
    import kdrl.modules.base as base
    from kdrl.modules.base import NonFiniteLossError

    clock = [12.0]
    monkeypatch.setattr(base.time, "perf_counter", lambda: clock[0])
    logged: list[dict] = []
    m = _rl_module()
    finished = [[(0, 10.0, 5), (1, 20.0, 7)], []]
    m.collector = SimpleNamespace(
        epsilon=0.25, episodes=9, env_steps=90, drain_finished=lambda: finished.pop(0) if finished else []
    )
    m.stream = SimpleNamespace(grad_steps=7)
    m.log_env_metrics = logged.append
    m._t_last, m._env_steps_last = 11.5, 40
    m._sums, m._count = {"td_loss": torch.tensor(6.0), "q_mean": torch.tensor(1.5)}, 3
    m.flush_metrics()
    assert logged[0] == {
        "train/td_loss": 2.0,
        "train/q_mean": 0.5,
        "train/episodic_return": 15.0,
        "train/episodic_length": 6.0,
        "train/epsilon": 0.25,
        "train/sps": 100.0,  # (90 - 40) env steps in 0.5 s
        "train/episodes": 9,
        "train/grad_steps": 7,
    }
    assert (m._sums, m._count, m._t_last, m._env_steps_last) == ({}, 0, 12.0, 90)
    m.collector.env_steps = 130
    m.flush_metrics()  # no time has passed: the speed stays, the interval moves on
    assert logged[1]["train/sps"] == 100.0 and "train/td_loss" not in logged[1] and m._env_steps_last == 130
    assert "train/episodic_return" not in logged[1]
    m._sums, m._count = {"td_loss": torch.tensor(4.0)}, 1  # one update's metrics are that update's
    m.flush_metrics()
    assert logged[2]["train/td_loss"] == 4.0
    m._sums, m._count = {"td_loss": torch.tensor(float("nan")), "q_mean": torch.tensor(float("inf"))}, 2
    with pytest.raises(NonFiniteLossError, match="^non-finite td_loss, q_mean at env step 130, gradient step 7;"):
        m.flush_metrics()


def test_metrics_go_to_every_logger_at_the_env_step_with_the_env_step_as_a_column(tmp_path):
    """(kdrl.modules.base.xǁRLModuleǁlog_env_metrics__mutmut_4-6, 9: the env_steps column dropped, renamed or None,
    or the step not given) each logger gets the metrics as floats with an env_steps column, at step = env steps
    (the x-axis RL papers use); a CSV logger has the row on disk at once."""
    from pytorch_lightning.loggers import CSVLogger

    class Recorder:
        def __init__(self) -> None:
            self.calls: list[tuple[dict, int]] = []

        def log_metrics(self, metrics: dict, step: int) -> None:
            self.calls.append((dict(metrics), step))

    m = _rl_module()
    m.collector = SimpleNamespace(env_steps=250)
    recorder, csv_logger = Recorder(), CSVLogger(tmp_path, name="run", version=0)
    m._trainer = SimpleNamespace(loggers=[recorder, csv_logger])
    m.log_env_metrics({"train/td_loss": torch.tensor(2.0), "train/episodes": 3})
    assert recorder.calls == [({"train/td_loss": 2.0, "train/episodes": 3.0, "env_steps": 250.0}, 250)]
    [row] = list(csv.DictReader(open(tmp_path / "run" / "version_0" / "metrics.csv")))
    assert (row["step"], row["env_steps"], row["train/td_loss"]) == ("250", "250.0", "2.0")


def test_joint_dqn_without_an_n_step_key_takes_one_step_returns():
    """(kdrl.modules.multitask.xǁJointMultiTaskDQNǁ__init____mutmut_12: ``n_step``'s default 1 dropped:
    TypeError for a dqn block without the key, e.g. a config written before n-step returns) the
    tasks' replays get n_step 1 and the dqn block's gamma; a given n_step is passed on."""
    from kdrl.data import TaskEnv
    from kdrl.modules.multitask import JointMultiTaskDQN
    from kdrl.nets import build_multitask_net

    cfg = compose_cfg("multitask", [*QUIET, "mode=joint_dqn"])
    tasks = [TaskEnv("cartpole", CARTPOLE, {"id": "CartPole-v1", "num_envs": 1})]
    dqn = {k: v for k, v in plain(cfg.dqn).items() if k != "n_step"}
    for extra, n_step in (({}, 1), ({"n_step": 3}, 3)):
        net = build_multitask_net({"width": 8, "depth": 1}, [CARTPOLE])
        module = JointMultiTaskDQN(net, tasks, plain(cfg.multitask), {**dqn, **extra, "gamma": 0.9}, torch.optim.SGD)
        assert (module.data.n_step, module.data.gamma) == (n_step, 0.9)


def _joint_dqn(names: tuple[str, ...] = ("cartpole",), **dqn: object):
    """A joint multi-task DQN over CartPole tasks named ``names``, the multitask config's dqn block with ``dqn``."""
    from kdrl.data import TaskEnv
    from kdrl.modules.multitask import JointMultiTaskDQN
    from kdrl.nets import build_multitask_net

    cfg = compose_cfg("multitask", [*QUIET, "mode=joint_dqn"])
    tasks = [TaskEnv(n, CARTPOLE, {"id": "CartPole-v1", "num_envs": 1}) for n in names]
    net = build_multitask_net({"width": 8, "depth": 1}, [CARTPOLE] * len(names))
    return JointMultiTaskDQN(net, tasks, plain(cfg.multitask), {**plain(cfg.dqn), **dqn}, torch.optim.SGD)


def test_a_joint_dqns_target_net_follows_the_dqn_blocks_period_and_tau():
    """(kdrl.modules.multitask.xǁJointMultiTaskDQNǁ__init____mutmut_47: tau taken as the period: the target
    copied at every per-task env step; __mutmut_48: tau dropped: always a hard copy) the joint DQN's target net
    syncs every dqn.target_update_interval per-task env steps with dqn.tau."""
    module = _joint_dqn(target_update_interval=500, tau=0.5)
    assert (module.target.interval, module.target.tau, module.target.next_update) == (500, 0.5, 500)


def test_a_joint_dqn_bootstraps_each_task_with_double_dqn_on_that_tasks_heads():
    """(kdrl.modules.multitask.xǁJointMultiTaskDQNǁtask_loss__mutmut_16: the online head replaced by None: a joint
    DQN with double_dqn failed, or, with other nets, picked its bootstrap action with another head) with
    double_dqn the next action is the argmax of the task's online head, valued by the task's target head."""
    from kdrl.td import td_error_loss

    torch.manual_seed(0)
    module = _joint_dqn(("left", "right"), gamma=0.9, double_dqn=True, td_loss="mse")
    with torch.no_grad():  # the online net moves away from its target copy
        for p in module.q_net.parameters():
            p.add_(torch.randn_like(p))
    batch = Transitions(
        torch.randn(16, 4), torch.randint(0, 2, (16,)), torch.randn(16), torch.randn(16, 4), torch.zeros(16)
    )
    for task in (0, 1):
        q = module.q_net(batch.obs, task).gather(1, batch.actions.unsqueeze(1)).squeeze(1)
        with torch.no_grad():
            online_next, target_next = module.q_net(batch.next_obs, task), module.target.net(batch.next_obs, task)
        double = batch.rewards + 0.9 * target_next.gather(1, online_next.argmax(1, keepdim=True)).squeeze(1)
        greedy = batch.rewards + 0.9 * target_next.max(1).values
        out = module.task_loss(task, batch)
        loss = out["td_loss"].item()
        assert loss == pytest.approx(td_error_loss(q, double, "mse").item(), rel=1e-6)
        assert loss != pytest.approx(td_error_loss(q, greedy, "mse").item(), rel=1e-3)


def test_a_multitask_modules_episode_metrics_are_each_tasks_finished_returns_and_env_steps():
    """(kdrl.modules.multitask.xǁMultiTaskModuleǁepisode_metrics__mutmut_6 and its shard: the finished episodes not
    drained) each task logs the mean return of its episodes finished since the last flush (none: no return
    logged), its env steps, and the module its optimizer steps."""
    module = _joint_dqn(("left", "right"))
    finished = {"left": [[(0, 10.0, 5), (1, 30.0, 7)], []], "right": [[], [(0, 8.0, 9)]]}
    collectors = [
        SimpleNamespace(drain_finished=lambda: finished["left"].pop(0), env_steps=100),
        SimpleNamespace(drain_finished=lambda: finished["right"].pop(0), env_steps=50),
    ]
    module.stream = SimpleNamespace(collector=SimpleNamespace(collectors=collectors))
    module.optimizer_steps = 12
    assert module.episode_metrics() == {
        "train/left/episodic_return": 20.0,
        "train/left/env_steps": 100,
        "train/right/env_steps": 50,
        "train/optimizer_steps": 12,
    }
    assert module.episode_metrics() == {
        "train/left/env_steps": 100,
        "train/right/episodic_return": 8.0,
        "train/right/env_steps": 50,
        "train/optimizer_steps": 12,
    }


def test_a_hybrid_students_loss_reports_its_terms_lambda_and_total(tmp_path):
    """(kdrl.modules.student.xǁDistillStudentǁloss__mutmut_50: lambda under another key; __mutmut_66:
    the summed loss under another key) a hybrid student's loss returns, for logging, its distillation
    and TD terms, the lambda weighting them (0.5 halfway through its linear decay from 1 to 0 over
    20,000 env steps), the agreement and the total it returns: td_loss + lambda * distill_loss."""
    _, module, _ = _student_job(tmp_path, ["loss=hybrid"])
    module.collector = SimpleNamespace(env_steps=10_000)
    torch.manual_seed(0)
    batch = Transitions(torch.randn(8, 4), torch.randint(0, 2, (8,)), torch.ones(8), torch.randn(8, 4), torch.zeros(8))
    total, out = module.loss(batch)
    assert set(out) == {"distill_loss", "td_loss", "lambda", "agreement", "loss"}
    assert out["loss"] is total and float(out["lambda"]) == 0.5
    assert float(total) == pytest.approx(float(out["td_loss"] + 0.5 * out["distill_loss"]))
    _, plain_kl, _ = _student_job(tmp_path / "kl", ["loss=kl"])
    plain_kl.collector = SimpleNamespace(env_steps=10_000)
    total, out = plain_kl.loss(batch)
    assert set(out) == {"distill_loss", "agreement", "loss"} and out["loss"] is total is out["distill_loss"]


def test_the_offline_phase_makes_exactly_its_updates_and_reports_its_wall_time(tmp_path):
    """(kdrl.modules.student.xǁDistillStudentǁpretrain_offline__mutmut_40: ``updates + done``: a phase
    of 260 updates made 512, two whole chunks of 256; __mutmut_75: the report's wall_s under another
    key) the phase takes exactly distill.pretrain.updates optimiser steps, and its report and log
    give them with the phase's wall time."""
    offline = ["experiment=qdagger", "distill.pretrain.teacher_steps=200", "distill.pretrain.updates=260"]
    _, module, _ = _student_job(tmp_path, [*offline, "distill.batch_size=4"])
    module.setup("fit")
    opt = module.configure_optimizers()
    module.optimizers = lambda use_pl_optimizer=True: opt  # driven without a Trainer
    logged: list[dict] = []
    module.log_env_metrics = logged.append
    t0 = time.perf_counter()
    module.pretrain_offline()
    wall = time.perf_counter() - t0
    report = module.pretrain_report
    assert (report["teacher_steps"], report["updates"], module.optimizer_steps) == (200, 260, 260)
    assert 0 < report["wall_s"] <= wall
    [metrics] = logged
    assert metrics["pretrain/updates"] == 260 and metrics["pretrain/wall_s"] == report["wall_s"]


def test_the_data_jobs_progress_bar_follows_the_terminals_width():
    """(kdrl.runs.dataset.x_progress_bar__mutmut_5: ``dynamic_ncols=None``: the width the bar started with)"""
    bar = progress_bar(300, True)
    assert callable(bar.dynamic_ncols)  # tqdm keeps the screen-width reader it calls at every refresh (None when off)
    bar.close()


def test_a_students_final_returns_are_played_with_eval_epsilon_like_its_teachers(tmp_path, monkeypatch):
    """(kdrl.runs.distill.x_final_evaluation__mutmut_22: the student's final held-out returns played
    greedily, the teacher's with eval.epsilon: the two not on the same terms, the wiring bug of issue 29;
    __mutmut_158: the teacher's actions taken as one argmax over the whole batch) the student and the
    teacher play the same final seeds with eval.epsilon (and the perturbed envs too); a student that is
    its teacher agrees with it on every held-out state."""
    import kdrl.runs.distill as distill

    played: list[tuple[list[int], float]] = []

    def spy(greedy, env_id, seeds, kwargs=None, wrappers=(), epsilon=0.0):
        played.append((list(seeds), epsilon))
        return evaluate_policy(greedy, env_id, seeds, kwargs, wrappers, epsilon=epsilon)

    monkeypatch.setattr(distill, "evaluate_policy", spy)
    cfg = compose_cfg(
        "distill",
        [*QUIET, "eval.final_episodes=2", "eval.generalisation_episodes=1", "eval.agreement_states=200",
         "eval.epsilon=0.2"],
    )  # fmt: skip
    teacher = _cartpole_balancer()
    reference = _reference(200.0, 20.0, epsilon=0.2)
    out = distill.final_evaluation(cfg, teacher, teacher, CARTPOLE, [], reference)
    final = list(eval_seeds(cfg.eval.final_seed, 2))
    n_pert = len(cfg.env.perturbations)
    assert n_pert == 3  # long_pole, heavy_pole, obs_noise: each played by both
    assert played[:2] == [(final, 0.2), (final, 0.2)]  # the student's, then the teacher's
    assert len(played) == 2 + 2 * n_pert and all(eps == 0.2 for _, eps in played)
    assert out["eval_returns"] == out["teacher_returns"]  # the same policy, seeds and epsilon
    assert out["agreement_states"] == 200 and out["action_agreement"] == 1.0


def test_an_unknown_student_size_is_refused_with_the_recipes_sizes():
    """(kdrl.runs.distill.x_student_sizes__mutmut_18: ``and False``: the refusal never lists the
    recipe's sizes) the refusal names the sizes the recipe defines, or says it defines none."""
    cfg = OmegaConf.create({"student": {"size": "huge"}, "student_sizes": {"s": {"width": 4}, "m": {"width": 8}}})
    with pytest.raises(ConfigError) as exc:
        student_sizes(cfg)
    assert str(exc.value) == "student.size 'huge' is not in the recipe's student_sizes (s, m)"
    with pytest.raises(ConfigError) as exc:
        student_sizes(OmegaConf.create({"student": {"size": "huge"}}))
    assert str(exc.value) == "student.size 'huge' is not in the recipe's student_sizes (none defined by this recipe)"


def test_a_resume_conflict_shortens_a_long_value(tmp_path):
    """(kdrl.runs.job.x__short__mutmut_7: ``-`` for ``+``: TypeError instead of the refusal for a value
    longer than 40 characters) a value's repr over 40 characters is cut to its first 37 and "..."."""
    old = {"resume": True, "note": "a" * 50}
    (tmp_path / "checkpoints").mkdir()
    torch.save({CONFIG_IN_CHECKPOINT: old}, tmp_path / "checkpoints" / "last.ckpt")
    with pytest.raises(ResumeConflict) as exc:
        check_resumable({**old, "note": "b" * 38}, tmp_path)  # repr: 40 characters, shown whole
    assert f"(note: '{'a' * 36}... -> '{'b' * 38}')" in str(exc.value)


def test_an_offline_wandb_logger_writes_into_the_run_dir(tmp_path, monkeypatch):
    """(kdrl.runs.job.x_build_loggers__mutmut_114: the offline logger without ``save_dir``: W&B's files
    in the working directory, where finish_wandb's sync hint does not look)"""
    import pytorch_lightning.loggers as pl_loggers

    from kdrl.runs.job import build_loggers

    made: list[dict] = []
    monkeypatch.setattr(pl_loggers, "WandbLogger", lambda **kw: made.append(kw) or "wandb-logger")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    cfg = OmegaConf.create({
        "logger": {"csv": False, "wandb": "offline"}, "wandb": {"project": "kdrl"}, "env": {"id": "CartPole-v1"},
        "seed": 0,
    })  # fmt: skip
    build_loggers(cfg, tmp_path, "teacher")
    [kw] = made
    assert kw["save_dir"] == str(tmp_path) and kw["offline"] is True and kw["settings"].mode == "offline"


def test_resume_free_keys_are_free_alongside_unused_size_presets():
    """(kdrl.runs.job.x_config_differences__mutmut_19: ``free =`` for ``free +=``: the resume-free keys
    dropped once a config has student sizes) a changed logger, log interval or unused preset is no
    difference; the preset the run uses is."""
    from kdrl.runs.job import config_differences

    old = {
        "task": "distill",
        "log_interval": 100,
        "logger": {"csv": True},
        "student": {"size": "s"},
        "student_sizes": {"s": {"width": 4}, "m": {"width": 8}},
        "seed": 0,
    }
    new = {
        **old,
        "log_interval": 500,
        "logger": {"csv": False},
        "student_sizes": {"s": {"width": 4}, "m": {"width": 9}},
    }
    assert config_differences(old, new) == []
    assert config_differences(old, {**new, "seed": 1}) == [("seed", 0, 1)]
    assert config_differences({**old, "student": {}}, {**new, "student": {}}) == []  # no size: every preset free


def test_a_multitask_jobs_fields_name_its_loss_and_method():
    """(kdrl.runs.multitask.xǁMultiTaskJobǁfields__mutmut_24: ``loss`` under another key) a distill-mode
    job records its loss and temperature, a joint DQN one the loss joint_dqn and no temperature."""
    from kdrl.tables import method_name

    for overrides, loss in ((["loss=kl"], "kl"), (["loss=mse"], "mse"), (["mode=joint_dqn"], "joint_dqn")):
        cfg = compose_cfg("multitask", [*QUIET, *overrides])
        fields = mt.MultiTaskJob(cfg, Path("."), choices={}).fields()
        temp = None if loss == "joint_dqn" else cfg.loss.temperature
        assert (fields["loss"], fields["temperature"]) == (loss, temp)
        assert fields["method"] == method_name({"loss": loss, "temperature": temp})
        # (fields__mutmut_20, 21: the tasks under another key) the games a multi-task table's row names
        assert fields["task_names"] == list(cfg.tasks) and len(fields["task_names"]) >= 2


# ---- the seed-6 sample (build/mutation/runs-s60g) ---------------------------------------------------------------------
def _stepping_module(n_items: int, step_seconds: float, watchers: list) -> tuple[RLModule, list[int]]:
    """An RLModule whose stream is ``n_items`` numbered items and whose ``learn`` records them, on a
    stand-in trainer holding ``watchers`` as its callbacks."""
    m = _rl_module()
    m.stream = list(range(1, n_items + 1))
    learned: list[int] = []
    m.optimizers = lambda use_pl_optimizer=False: None
    m.learn = lambda opt, batch: learned.append(batch)
    m.step_seconds = step_seconds
    m.trainer = SimpleNamespace(callbacks=watchers, should_stop=False)
    return m, learned


def _ticking_clock(monkeypatch, step_s: float) -> None:
    """kdrl.modules.base's clock: each reading ``step_s`` later than the one before, from 0."""
    import kdrl.modules.base as base

    readings = iter(i * step_s for i in range(10**6))
    monkeypatch.setattr(base, "time", SimpleNamespace(perf_counter=lambda: next(readings)))


def test_a_training_step_ends_at_the_round_a_callback_is_due():
    """(kdrl.modules.base.xǁRLModuleǁtraining_step__mutmut_11: the callbacks looked for by ``XXdueXX``:
    no watcher ever found, so a step ran its whole ``step_seconds`` past every evaluation) with an hour
    to spend, a step ends right after the item at which a callback with ``due`` is due; a callback
    without ``due`` is not asked; the next step resumes the same stream; a spent stream stops the trainer."""
    due_at = {3, 5}
    asked: list[int] = []

    class Watcher:
        def due(self, module):
            asked.append(len(learned))
            return len(learned) in due_at

    m, learned = _stepping_module(6, 3600.0, [object(), Watcher()])
    m.training_step(None)
    assert learned == [1, 2, 3] and asked == [1, 2, 3] and m.trainer.should_stop is False
    m.training_step(None)
    assert learned == [1, 2, 3, 4, 5]
    m.training_step(None)
    assert learned == [1, 2, 3, 4, 5, 6] and m.trainer.should_stop is True


def test_a_training_step_ends_once_exactly_its_step_seconds_have_passed(monkeypatch):
    """(kdrl.modules.base.xǁRLModuleǁtraining_step__mutmut_49: ``>`` for ``>=``: a step that reached its
    deadline exactly went on for another item) on a clock that moves 0.5 s a reading, a step of
    1 s learns two items (deadline 1.0 read at 0.5 and 1.0), not three."""
    _ticking_clock(monkeypatch, 0.5)
    m, learned = _stepping_module(10, 1.0, [])
    m.training_step(None)  # deadline 0.0 + 1.0; after item 1 the clock reads 0.5, after item 2 1.0
    assert learned == [1, 2]
    m.training_step(None)  # deadline 1.5 + 1.0: items read at 2.0 and 2.5
    assert learned == [1, 2, 3, 4]


def test_a_students_failed_on_demand_teacher_is_logged_with_its_env_and_seed(tmp_path, monkeypatch, caplog):
    """(kdrl.runs.distill.x_distill_student__mutmut_11: the log line's format None: a logging error
    instead of the message) the failure of the teacher job is logged in one line naming its env and
    seed, and the student's job runs with the error."""
    from kdrl.runs import distill

    def fail():
        raise RuntimeError("diverged\nat step 9")

    monkeypatch.setattr(distill, "missing_teacher", lambda job: SimpleNamespace(env="cartpole", seed=3, obtain=fail))
    monkeypatch.setattr(distill, "run_job", lambda job: {"error": job.teacher_error})
    cfg = compose_cfg("distill", [*QUIET, "teacher.checkpoint=null", f"teacher.cache_dir={tmp_path}"])
    with caplog.at_level(logging.ERROR, logger="kdrl"):
        res = distill.distill_student(cfg, tmp_path / "run", choices={"env": "cartpole"})
    assert str(res["error"]) == "diverged\nat step 9"
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert said == ["the on-demand teacher (env=cartpole seed=3) failed: RuntimeError: diverged at step 9"]


def test_a_student_of_a_teacher_no_better_than_random_has_a_nan_normalised_score(tmp_path):
    """(kdrl.runs.distill.x_final_evaluation__mutmut_232: ``float(None)``: TypeError) a teacher whose
    reference returns do not beat random's gets no normalised score (nan), and the rest is still written."""
    from kdrl.runs.distill import final_evaluation

    cfg = compose_cfg("distill", [*QUIET, "eval.final_episodes=2", "eval.agreement_states=50", "env.perturbations=[]"])
    net = MLP((4,), 2, width=8)
    reference = _reference(10.0, 20.0)
    out = final_evaluation(cfg, net, net, CARTPOLE, [], reference)
    assert out["teacher_beats_random"] is False and np.isnan(out["normalized_score"])
    assert out["raw_return_ratio"] == pytest.approx(out["eval_return_mean"] / 10.0)


def test_a_run_whose_results_were_never_written_resumes_from_its_last_checkpoint(tmp_path):
    """(kdrl.runs.job.x__run_job__mutmut_48: ``ckpt_path`` dropped: every rerun trained afresh) a run
    dir holding a whole checkpoint and no results (a run killed before it finished) is resumed: the
    rerun starts at the checkpoint's env step and records it."""
    from kdrl.runs.teacher import train_teacher

    # keep_last=2: a finished run keeps its last.ckpt only when numbered checkpoints were asked for
    keep = ["checkpoint.keep_last=2"]
    cfg = compose_cfg("train", [*QUIET, "algo.total_timesteps=600", "eval.freq=300", "eval.episodes=1", *keep])
    first = train_teacher(cfg, tmp_path)
    assert first["status"] == "ok" and first["resumed_from_env_steps"] is None
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    (tmp_path / "results.json").unlink()  # as if killed after its last checkpoint, before its results
    again = train_teacher(cfg, tmp_path)
    assert again["status"] == "ok" and again["resumed_from_env_steps"] == 600 and again["env_steps"] == 600


def test_a_trainer_without_the_progress_bar_has_none_at_all(tmp_path):
    """(kdrl.runs.job.x_make_trainer__mutmut_40: ``enable_progress_bar=None``, Lightning's default:
    its own progress bar added when kdrl's was switched off) trainer.enable_progress_bar=false leaves the
    trainer with no progress bar; true gives kdrl's env-step bar and only it."""
    from kdrl.runs.job import make_trainer

    off = make_trainer(
        OmegaConf.create({"trainer": {"accelerator": "cpu", "enable_progress_bar": False}}), [], [], tmp_path
    )
    assert off.progress_bar_callback is None
    assert not [cb for cb in off.callbacks if isinstance(cb, pl.callbacks.ProgressBar)]
    on = make_trainer(
        OmegaConf.create({"trainer": {"accelerator": "cpu", "enable_progress_bar": True}}), [], [], tmp_path
    )
    bars = [cb for cb in on.callbacks if isinstance(cb, pl.callbacks.ProgressBar)]
    assert len(bars) == 1 and isinstance(bars[0], EnvStepProgressBar) and on.progress_bar_callback is bars[0]


def test_a_multitask_tasks_cached_teacher_is_looked_up_with_its_overrides(tmp_path, monkeypatch):
    """(kdrl.runs.multitask.x_load_task__mutmut_22: ``cached_teacher`` called without the teacher
    overrides) a task without a given checkpoint takes the cache entry of its name, the teacher seed,
    the task's teacher overrides and the cache dir, and records the cached job's wall time."""
    from kdrl.teachers import teacher_overrides

    path = constant_teacher(tmp_path / "teacher.pt", 1)
    asked: list[tuple] = []

    def cached(*args):
        asked.append(args)
        return path, {"wall_time_s": 12.5}

    monkeypatch.setattr(mt, "cached_teacher", cached)
    monkeypatch.setattr(mt, "teacher_reference", lambda *a: {"mean": 1.0})
    cfg = compose_cfg("multitask", [*QUIET, f"teacher.cache_dir={tmp_path}", "teacher.seed=4"])
    cfg.teacher.checkpoints = {}
    choices = {"debug": "fast"}
    task = mt.load_task(cfg, "cartpole", choices)
    overrides = teacher_overrides(cfg, choices)
    assert asked == [("cartpole", 4, overrides, str(tmp_path))]
    assert overrides[0].startswith("budget=") and "debug=fast" in overrides
    assert task.teacher_path == path and task.teacher_wall_time_s == 12.5


def test_a_teachers_periodic_evaluation_plays_its_env_kwargs(tmp_path):
    """(kdrl.runs.teacher.x_greedy_evaluation__mutmut_7 and _26: the env's kwargs given as None /
    ``plain(None)``: the periodic evaluation played the env without them) the evaluation callback
    holds the config's env id, kwargs, frequency, episodes, seed and epsilon, a stop listener exactly when
    eval.stop_at_return is set, and the teacher reference it is given."""
    from kdrl.runs.teacher import greedy_evaluation

    cfg = compose_cfg("train", [*QUIET, "eval.freq=300", "eval.epsilon=0.05"])
    with open_dict(cfg):
        cfg.env.kwargs = {"sutton_barto_reward": True}
    ev = greedy_evaluation(cfg, tmp_path, {"width": 8})
    assert ev.env_id == "CartPole-v1" and ev.env_kwargs == {"sutton_barto_reward": True}
    assert ev.epsilon == 0.05
    cfg.eval.stop_at_return = None
    assert not any(isinstance(x, StopAtReturn) for x in greedy_evaluation(cfg, tmp_path, {"width": 8}).listeners)
    # (x_greedy_evaluation__mutmut_5: ``stop = None``: eval.stop_at_return never stopped a run)
    cfg.eval.stop_at_return = 475
    stops = [x for x in greedy_evaluation(cfg, tmp_path, {"width": 8}).listeners if isinstance(x, StopAtReturn)]
    assert [x.threshold for x in stops] == [475.0]
    # (__mutmut_14 and _24: a student's teacher reference dropped: its periodic scores never normalised)
    assert greedy_evaluation(cfg, tmp_path, {"width": 8}).reference is None
    ev = greedy_evaluation(cfg, tmp_path, {"width": 8}, reference=([100.0, 90.0, 110.0], [10.0, 12.0, 8.0]))
    assert ev.reference == (100.0, 10.0) and ev.reference_beats_random


# ---- the seed-7 sample's survivors (scripts/mutation.py runs --sample 60 --sample-seed 7) ---------------------------
def test_a_non_finite_loss_stops_the_run_with_its_step_and_the_hint():
    """(kdrl.modules.base.xǁRLModuleǁflush_metrics__mutmut_28: the hint upper-cased) the error names
    the loss, the env and gradient steps, and says what to try."""
    from kdrl.modules.base import NonFiniteLossError

    m = _rl_module()
    m.collector = SimpleNamespace(epsilon=0.1, episodes=3, env_steps=90, drain_finished=lambda: [])
    m.stream = SimpleNamespace(grad_steps=7)
    m._sums, m._count = {"td_loss": torch.tensor(float("nan"))}, 1  # env_steps: the collector's 90
    with pytest.raises(NonFiniteLossError) as exc:
        m.flush_metrics()
    assert str(exc.value) == (
        "non-finite td_loss at env step 90, gradient step 7; stopped, the last good checkpoint is kept "
        "(try a lower learning rate or gradient clipping)"
    )


def test_a_multitask_module_refuses_a_net_with_another_number_of_heads():
    """(kdrl.modules.multitask.xǁMultiTaskModuleǁ__init____mutmut_10: the message dropped)"""
    from kdrl.modules.multitask import MultiTaskModule

    with pytest.raises(ValueError) as exc:
        MultiTaskModule(SimpleNamespace(n_tasks=2), [None], {}, None, None)
    assert str(exc.value) == "the net has 2 heads but 1 tasks were given"


def test_resume_false_skips_the_resume_conflict_check(tmp_path):
    """(kdrl.runs.job.x_check_resumable__mutmut_14: ``RESUME`` read: resume=false still refused) a
    run told not to resume starts afresh beside an unfinished run of another config."""
    old = {"task": "teacher", "seed": 0, "net": {"width": 256}}
    (tmp_path / "checkpoints").mkdir()
    torch.save({CONFIG_IN_CHECKPOINT: old}, tmp_path / "checkpoints" / "last.ckpt")
    new = {**old, "net": {"width": 32}}
    with pytest.raises(ResumeConflict):
        check_resumable(new, tmp_path)
    assert check_resumable({**new, "resume": False}, tmp_path) is None
    with pytest.raises(ResumeConflict):
        check_resumable({**new, "resume": True}, tmp_path)


def test_a_failing_wandb_finish_is_logged_with_its_error_and_does_not_fail_the_run(tmp_path, monkeypatch, caplog):
    """(kdrl.runs.job.x_finish_wandb__mutmut_26: the error logged as None)"""
    import sys

    from kdrl.runs.job import finish_wandb

    def boom():
        raise RuntimeError("service unreachable")

    fake = SimpleNamespace(run=SimpleNamespace(settings=SimpleNamespace(mode="online")), finish=boom)
    monkeypatch.setitem(sys.modules, "wandb", fake)
    with caplog.at_level(logging.WARNING, logger="kdrl"):
        finish_wandb(tmp_path)
    said = [r.getMessage() for r in caplog.records if "W&B finish failed" in r.getMessage()]
    assert said == ["W&B finish failed: service unreachable"]


def test_a_trainer_config_without_enable_progress_bar_shows_kdrls_bar(tmp_path):
    """(kdrl.runs.job.x_make_trainer__mutmut_9: the key's default dropped: KeyError without it) the bar
    is on unless the config says otherwise, and it is kdrl's env-step bar."""
    from kdrl.runs.job import make_trainer

    with_bar = make_trainer(OmegaConf.create({"trainer": {"accelerator": "cpu"}}), [], [], tmp_path)
    assert isinstance(with_bar.progress_bar_callback, EnvStepProgressBar)
    off = OmegaConf.create({"trainer": {"accelerator": "cpu", "enable_progress_bar": False}})
    assert make_trainer(off, [], [], tmp_path).progress_bar_callback is None


def test_a_multitask_runs_logger_names_every_task():
    """(kdrl.runs.multitask.x_logger_cfg__mutmut_8: the ids joined by "XX+XX") W&B names the run by
    env id: "CartPole-v1+Acrobot-v1", the same id the results' env_id has; the rest of cfg is kept."""
    cfg = OmegaConf.create({"seed": 3, "env": {"id": "ignored", "num_envs": 4}})
    out = mt.logger_cfg(cfg, ["CartPole-v1", "Acrobot-v1"])
    assert plain(out) == {"seed": 3, "env": {"id": "CartPole-v1+Acrobot-v1"}}
    assert cfg.env.id == "ignored"  # a copy


def test_a_multitask_job_keeps_its_policies_beside_its_resume_checkpoint(tmp_path):
    """(kdrl.runs.multitask.xǁMultiTaskJobǁbuild__mutmut_80: the policies in "XXcheckpointsXX") the
    best and last policies go to <out>/checkpoints/, where the resume checkpoint is and where the
    study's publishing and kdrl-show look for them."""
    path = constant_teacher(tmp_path / "cartpole.pt", 0)
    cfg = compose_cfg(
        "multitask",
        [*QUIET, f"teacher.checkpoints={{cartpole:{path}}}", "tasks=[cartpole]", f"teacher.cache_dir={tmp_path}",
         "eval.reference_episodes=3", "eval.final_episodes=3", "eval.episodes=2"],
    )  # fmt: skip
    out = tmp_path / "run"
    _, evaluation = mt.MultiTaskJob(cfg, out, choices={"debug": "fast"}).build({})
    assert evaluation.policies.best_path == out / "checkpoints" / "best_policy.pt"
    assert evaluation.checkpoint.ckpt_dir == out / "checkpoints"


# ---- the runs room's sample of seed 8 (docs/mutation.md) -------------------------------------------------------------
def test_a_fresh_modules_steps_per_second_is_a_number_the_progress_bar_can_show():
    """(kdrl.modules.base.xǁRLModuleǁ__init____mutmut_26: sps None until the first metrics flush) the
    progress bar may refresh before the first flush; it formats ``sps`` as a number."""
    module = _rl_module()
    assert f"{module.sps:,.0f}" == "0"


def test_multitask_distillation_agreement_is_per_state_argmax_against_the_teachers():
    """(kdrl.modules.multitask.xǁMultiTaskDistillǁtask_loss__mutmut_17: the teacher's argmax over the flat
    batch) the logged agreement is the share of states where the student's greedy action is the teacher's."""
    from kdrl.modules.multitask import MultiTaskDistill

    q_t = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.0, 1.0]])  # flat argmax: 0
    q_s = torch.tensor([[2.0, 0.0], [0.0, 2.0], [0.0, 2.0], [2.0, 0.0]])  # agrees on the first three states
    fake = SimpleNamespace(
        q_net=lambda obs, task: q_s, teachers=[lambda obs: q_t], distill_loss=lambda s, t: (s - t).pow(2).mean()
    )
    out = MultiTaskDistill.task_loss(fake, 0, SimpleNamespace(obs=torch.zeros(4, 1)))
    assert out["agreement"].item() == pytest.approx(0.75) and out["loss"] is out["distill_loss"]


def test_a_data_job_without_a_finished_episode_logs_its_mean_return_as_n_a(tmp_path, caplog):
    """(kdrl.runs.dataset.x_record_teacher_data__mutmut_178: the placeholder mangled) a recording in which
    no episode ended says so in its log line."""
    teacher = constant_teacher(tmp_path / "teacher.pt", 0)
    short = compose_cfg("data", [*QUIET, f"teacher.checkpoint={teacher}", "dataset.steps=4", "env.num_envs=2"])
    with caplog.at_level(logging.INFO, logger="kdrl"):
        res = record_teacher_data(short, tmp_path / "short")
    said = [r.getMessage() for r in caplog.records if "teacher dataset" in r.getMessage()]
    assert res["episodes"] == 0 and len(said) == 1 and "(0 episodes, mean return n/a at epsilon" in said[0]


def test_a_scratch_baselines_epsilon_decay_is_scaled_down_to_its_budget():
    """(kdrl.runs.distill.x_fitted_to_budget__mutmut_38: decay divided by the scale) a baseline of a tenth
    of the teacher's budget decays epsilon over a tenth of the teacher's decay, and starts learning at a
    tenth of its learning_starts (both within their caps here)."""
    from kdrl.runs.distill import fitted_to_budget

    algo = {
        "total_timesteps": 1_000_000,
        "learning_starts": 20_000,
        "exploration": {"eps_start": 1.0, "eps_end": 0.05, "decay_steps": 100_000, "delay_steps": 10_000},
    }
    fitted = fitted_to_budget(algo, 100_000)
    assert fitted["total_timesteps"] == 100_000 and fitted["learning_starts"] == 2_000
    assert fitted["exploration"] == {"eps_start": 1.0, "eps_end": 0.05, "decay_steps": 10_000, "delay_steps": 1_000}
    assert fitted_to_budget(algo, 2_000_000)["exploration"]["decay_steps"] == 100_000  # never scaled up


def test_a_scratch_baselines_schedules_are_capped_in_whole_env_steps():
    """(kdrl.runs.distill.x_fitted_to_budget__mutmut_30, _31, _42, _43, _55: the caps as true divisions, at 1/11
    instead of 1/10, or the decay's cap lengthened by the delay; _29: a delay of 1 step when none is given)
    schedules longer than a short budget allows are cut to learning in its first 10% and epsilon at its end
    value by half of it, in whole env steps; no delay_steps means no delay, at any scale."""
    from kdrl.runs.distill import fitted_to_budget

    algo = {
        "total_timesteps": 1_000_000,
        "learning_starts": 500_000,
        "exploration": {"eps_start": 1.0, "eps_end": 0.05, "decay_steps": 900_000, "delay_steps": 500_000},
    }
    fitted = fitted_to_budget(algo, 1001)  # scaled: 500, 900 and 500 steps, over the caps 100, 400 and 100
    assert fitted["learning_starts"] == 100 and fitted["exploration"]["delay_steps"] == 100
    assert fitted["exploration"]["decay_steps"] == 400  # epsilon at its end by env step 100 + 400 = 500 = 1001 // 2
    steps = (fitted["learning_starts"], fitted["exploration"]["delay_steps"], fitted["exploration"]["decay_steps"])
    assert all(type(v) is int for v in steps)
    undelayed = {**algo, "exploration": {"eps_start": 1.0, "eps_end": 0.05, "decay_steps": 100}}
    assert fitted_to_budget(undelayed, 1_000_000)["exploration"]["delay_steps"] == 0  # scale 1: nothing to scale
    # (_71: at least one step of decay) a constant epsilon (decay_steps 0) stays constant
    constant = {**algo, "exploration": {"eps_start": 0.1, "eps_end": 0.1, "decay_steps": 0}}
    assert fitted_to_budget(constant, 1001)["exploration"] == {
        "eps_start": 0.1,
        "eps_end": 0.1,
        "decay_steps": 0,
        "delay_steps": 0,
    }


def test_a_job_with_wandb_disabled_in_its_config_builds_no_wandb_logger(tmp_path, monkeypatch):
    """(kdrl.runs.job.x_build_loggers__mutmut_58: the config's ``disabled`` never matched) with no
    WANDB_MODE in the environment, logger.wandb=disabled gives the CSV logger alone; offline adds W&B."""
    from pytorch_lightning.loggers import CSVLogger, WandbLogger

    from kdrl.runs.job import build_loggers

    monkeypatch.delenv("WANDB_MODE", raising=False)
    cfg = compose_cfg("distill", ["logger.wandb=disabled", "logger.csv=true"])
    assert [type(lg) for lg in build_loggers(cfg, tmp_path, "student")] == [CSVLogger]
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    cfg = compose_cfg("distill", ["logger.wandb=offline", "logger.csv=true"])
    assert [type(lg) for lg in build_loggers(cfg, tmp_path, "student")] == [CSVLogger, WandbLogger]


def test_a_resume_conflict_checked_on_an_omegaconf_config_compares_its_resolved_values(tmp_path):
    """(kdrl.runs.job.x_check_resumable__mutmut_6: a DictConfig never resolved) check_resumable takes the
    job's DictConfig as well as a plain dict: the same config resumes, another is refused."""
    old = {"resume": True, "seed": 0, "net": {"width": 8}, "eval": {"episodes": "${net.width}"}}
    (tmp_path / "checkpoints").mkdir()
    torch.save({CONFIG_IN_CHECKPOINT: {**old, "eval": {"episodes": 8}}}, tmp_path / "checkpoints" / "last.ckpt")
    check_resumable(OmegaConf.create(old), tmp_path)  # the same once resolved: no conflict
    with pytest.raises(ResumeConflict, match=r"\(eval\.episodes: 8 -> 4; net\.width: 8 -> 4\)"):
        check_resumable(OmegaConf.create({**old, "net": {"width": 4}}), tmp_path)


def test_a_resume_conflict_in_a_sweep_names_the_sweep_dir(tmp_path, monkeypatch):
    """(kdrl.runs.job.x_run_job__mutmut_15: run_job's dir key dropped) a job of a multirun whose run dir
    holds another config's unfinished run is refused with hydra.sweep.dir as the way out."""
    import kdrl.runs.job as job_mod
    from kdrl.runs.job import run_job
    from kdrl.validate import resolved

    job = DistillJob(compose_cfg("distill", [*QUIET, "loss=kl"]), tmp_path / "run", choices={})
    (job.out / "checkpoints").mkdir(parents=True)
    torch.save({CONFIG_IN_CHECKPOINT: {**resolved(job.cfg), "seed": 99}}, job.out / "checkpoints" / "last.ckpt")
    monkeypatch.setattr(job_mod, "sweep_name", lambda: "a-sweep")
    with pytest.raises(ResumeConflict, match=r"\(seed: 99 -> 0\); .*: give another hydra\.sweep\.dir, or resume=false"):
        run_job(job)
    assert not (job.out / "results.json").exists()


def test_a_multitask_task_result_has_the_random_policys_mean():
    """(kdrl.runs.multitask.x_task_result__mutmut_41: random_return_mean under another key) each task's
    results carry the random policy's mean return over the final evaluation's episodes."""
    out = one_task_result([40.0, 80.0], [10.0, 30.0])
    assert out["random_return_mean"] == 20.0 and out["random_returns"] == [10.0, 30.0]


# ---- the runs room's sample of seed 9 (docs/mutation.md) -------------------------------------------------------------
def test_a_multitask_students_teachers_are_frozen():
    """(kdrl.modules.multitask.xǁMultiTaskDistillǁ__init____mutmut_27: the teachers left trainable) no
    teacher parameter asks for a gradient, and each teacher is in eval mode."""
    from hydra.utils import instantiate

    from kdrl.data import TaskEnv
    from kdrl.modules.multitask import MultiTaskDistill
    from kdrl.nets import build_multitask_net

    cfg = compose_cfg("multitask", QUIET)
    specs = [CARTPOLE, EnvSpec("Acrobot-v1", (6,), 3)]
    tasks = [TaskEnv(n, s, {"id": s.env_id, "num_envs": 1}) for n, s in zip(("cartpole", "acrobot"), specs)]
    teachers = [nn.Linear(4, 2).train(), nn.Linear(6, 3).train()]
    module = MultiTaskDistill(
        build_multitask_net({"width": 8, "depth": 1}, specs), teachers, tasks, plain(cfg.multitask),
        instantiate(cfg.loss), plain(cfg.distill.exploration), lambda ps: torch.optim.SGD(ps, lr=0.1),
    )  # fmt: skip
    assert [t is u for t, u in zip(module.teachers, teachers)] == [True, True]
    assert not any(p.requires_grad for t in module.teachers for p in t.parameters())
    assert not any(t.training for t in module.teachers)
    assert all(p.requires_grad for p in module.q_net.parameters())


def test_a_student_may_stop_early_only_when_every_component_allows_it():
    """(kdrl.modules.student.xǁDistillStudentǁmay_stop_early__mutmut_1, no test reached it) the early stop
    waits while any compression component (pruning, int8) has its point still to come."""
    from kdrl.modules.student import DistillStudent

    def student(*allows: bool) -> SimpleNamespace:
        return SimpleNamespace(components=[SimpleNamespace(may_stop_early=lambda a=a: a) for a in allows])

    assert DistillStudent.may_stop_early(student()) is True  # no component: nothing to wait for
    assert DistillStudent.may_stop_early(student(True, True)) is True
    assert DistillStudent.may_stop_early(student(True, False)) is False


def test_a_config_key_set_where_the_old_run_had_null_is_a_resume_conflict(tmp_path):
    """(kdrl.runs.job.x_config_differences__mutmut_41: null -> a value not counted as a difference) a key a
    newer kdrl added as null matches an old run without it, but null -> a value is another run."""
    from kdrl.runs.job import config_differences

    old = {"resume": True, "seed": 0, "distill": {"max_grad_norm": None}}
    assert config_differences(old, {**old, "distill": {"max_grad_norm": 2.5}}) == [("distill.max_grad_norm", None, 2.5)]
    assert config_differences({"resume": True, "seed": 0}, old) == []  # absent -> null: the same setting
    (tmp_path / "checkpoints").mkdir()
    torch.save({CONFIG_IN_CHECKPOINT: old}, tmp_path / "checkpoints" / "last.ckpt")
    with pytest.raises(ResumeConflict, match=r"\(distill\.max_grad_norm: None -> 2\.5\)"):
        check_resumable({**old, "distill": {"max_grad_norm": 2.5}}, tmp_path)


def test_an_unstamped_checkpoint_without_results_says_nothing_of_its_config(tmp_path):
    """(kdrl.runs.job.x_unfinished_run_config__mutmut_45: results.json read when there is none) a checkpoint
    of a kdrl before the config stamp, and no results.json: the config is unknown (None), not an error."""
    from kdrl.runs.job import unfinished_run_config

    (tmp_path / "checkpoints").mkdir()
    torch.save({"state_dict": {}}, tmp_path / "checkpoints" / "last.ckpt")
    assert unfinished_run_config(tmp_path) is None
    (tmp_path / "results.json").write_text(json.dumps({"status": "failed", "config": {"seed": 4}}))
    assert unfinished_run_config(tmp_path) == {"seed": 4}  # a failed attempt's results.json says it


def test_planning_a_multitask_jobs_teachers_reads_a_damaged_results_file_quietly(tmp_path, caplog):
    """(kdrl.runs.multitask.x_missing_teachers__mutmut_6: not quiet) a damaged results.json in the run dir is
    the job's to report, once, in its own run; planning its teachers says nothing of it."""
    cfg = compose_cfg("multitask", [*QUIET, f"teacher.cache_dir={tmp_path / 'cache'}"])
    out = tmp_path / "run"
    out.mkdir()
    (out / "results.json").write_text('{"status": "ok", "conf')  # truncated
    with caplog.at_level(logging.WARNING, logger="kdrl"):
        missing = mt.missing_teachers(mt.MultiTaskJob(cfg, out, choices={"debug": "fast"}))
    assert missing == ["cartpole", "acrobot"] and [r.getMessage() for r in caplog.records] == []


def test_a_reused_cached_teacher_is_logged_with_its_cache_entry(tmp_path, caplog, monkeypatch):
    """(kdrl.runs.teacher.x_obtain_teacher__mutmut_28: the entry dropped from the log call) the log names
    the cache entry reused, and no teacher is trained."""
    import kdrl.runs.teacher as teacher_mod
    from kdrl.teachers import cache_entry, teacher_config

    entry = cache_entry(teacher_config("cartpole", 3, ["debug=fast"]), tmp_path)
    entry.mkdir(parents=True)
    (entry / "results.json").write_text(json.dumps({"status": "ok", "eval_return_mean": 9.0}))
    monkeypatch.setattr(teacher_mod, "cached_teacher_ok", lambda e: e == entry)
    monkeypatch.setattr(teacher_mod, "train_teacher", lambda *a: pytest.fail("a cached teacher was trained"))
    with caplog.at_level(logging.INFO, logger="kdrl"):
        ckpt, res = teacher_mod.obtain_teacher("cartpole", 3, ["debug=fast"], tmp_path)
    assert ckpt == entry / "teacher.pt" and res["eval_return_mean"] == 9.0
    assert [r.getMessage() for r in caplog.records] == [f"reusing cached teacher {entry}"]


def test_a_teacher_trained_on_demand_is_logged_with_its_cache_entry(tmp_path, caplog, monkeypatch):
    """(kdrl.runs.teacher.x_obtain_teacher__mutmut_32, 34, 35: the entry dropped from the log call, or the
    message mangled) the log says which cache entry is being trained, and the teacher is trained there."""
    import kdrl.runs.teacher as teacher_mod
    from kdrl.teachers import cache_entry, teacher_config

    entry = cache_entry(teacher_config("cartpole", 3, ["debug=fast"]), tmp_path)
    trained: list = []

    def train(tcfg, where):
        trained.append((tcfg.seed, where))
        where.mkdir(parents=True, exist_ok=True)
        (where / "results.json").write_text(json.dumps({"status": "ok", "eval_return_mean": 7.0}))

    monkeypatch.setattr(teacher_mod, "train_teacher", train)
    with caplog.at_level(logging.INFO, logger="kdrl"):
        ckpt, res = teacher_mod.obtain_teacher("cartpole", 3, ["debug=fast"], tmp_path)
    assert trained == [(3, entry)] and ckpt == entry / "teacher.pt" and res["eval_return_mean"] == 7.0
    assert [r.getMessage() for r in caplog.records] == [f"training teacher {entry} (not cached yet)"]


def test_a_student_learning_from_a_teacher_dataset_logs_every_step_as_the_teachers(tmp_path, monkeypatch):
    """(kdrl.modules.student.xǁDistillStudentǁflush_metrics__mutmut_5: the dataset case dropped) a recorded
    dataset is the teacher's play: the teacher's share of the env steps is 1, whatever teacher_acted says."""
    monkeypatch.setattr(RLModule, "flush_metrics", lambda self: None)
    _, module, _ = _student_job(tmp_path, ["control=teacher"])
    logged: list[dict] = []
    module.log_env_metrics = logged.append
    module.collector = SimpleNamespace(env_steps=200)
    module.teacher_acted = 0  # the dataset's steps never pass through the collector's acting
    module.dataset = object()
    module.flush_metrics()
    assert logged == [{"train/teacher_action_fraction": 1.0, "train/beta": 1.0}]


def test_a_teacher_jobs_results_count_its_training_episodes(tmp_path):
    """(kdrl.runs.teacher.xǁTeacherJobǁfinish__mutmut_66: episodes under another key) a teacher's results
    give the episodes its collector finished: CartPole's last 8 to 500 steps, a few cut off at the end."""
    from kdrl.runs.teacher import train_teacher

    cfg = compose_cfg("train", [*QUIET, "seed=2"])
    res = train_teacher(cfg, tmp_path)
    assert res["status"] == "ok" and isinstance(res["episodes"], int)
    assert res["env_steps"] / 500 - cfg.env.num_envs <= res["episodes"] <= res["env_steps"] / 8


def test_a_student_checks_its_dataset_against_its_own_teacher(tmp_path):
    """(kdrl.runs.distill.xǁDistillJobǁbuild__mutmut_96: the dataset checked against no teacher) the
    recording's stored Q-values are this teacher's (difference 0), and another teacher's are refused."""
    teacher = constant_teacher(tmp_path / "teacher.pt", 0)
    data = compose_cfg("data", [*QUIET, f"teacher.checkpoint={teacher}", "dataset.steps=200", "env.num_envs=2"])
    record_teacher_data(data, tmp_path / "data")
    for path, ok in ((teacher, True), (constant_teacher(tmp_path / "other.pt", 1), False)):
        cfg = compose_cfg(
            "distill",
            [
                *QUIET,
                f"teacher.checkpoint={path}",
                f"distill.dataset={tmp_path / 'data'}",
                "distill.total_timesteps=200",
            ],
        )
        job = DistillJob(cfg, tmp_path / f"run-{ok}", choices={})
        if ok:  # (xǁDistillJobǁbuild__mutmut_105, 110: the checked dataset never given to the student)
            module, _ = job.build({})
            assert job.dataset_fields["max_q_difference"] == 0.0 and module.dataset is not None
            assert module.dataset.env_steps == 200 and module.dataset.num_envs == 2  # the recording above
        else:
            with pytest.raises(DatasetError, match="Q-values"):
                job.build({})


# ---- the runs room's sample of seed 10 (docs/mutation.md) ------------------------------------------------------------
def test_the_final_evaluation_takes_the_policy_eval_final_policy_names(tmp_path, monkeypatch):
    """(kdrl.runs.job.x__run_job__mutmut_102: best and last swapped: the headline score from the other
    checkpoint) eval.final_policy=best evaluates the best periodic policy, =last the last one; and the final
    evaluation plays the env with its configured kwargs (TeacherJob.finish 22: kwargs dropped)."""
    import kdrl.runs.teacher as teacher_mod

    seen, played = [], []
    finish = teacher_mod.TeacherJob.finish

    def spy(self, module, evaluation, chosen):
        seen.append((chosen, evaluation.best_policy_path, evaluation.last_policy_path))
        return finish(self, module, evaluation, chosen)

    def evaluate(policy, env_id, seeds, kwargs=None, **kw):
        played.append(kwargs)
        return evaluate_policy(policy, env_id, seeds, kwargs, **kw)

    monkeypatch.setattr(teacher_mod.TeacherJob, "finish", spy)
    monkeypatch.setattr(teacher_mod, "evaluate_policy", evaluate)
    for which in ("best", "last"):
        cfg = compose_cfg(
            "train", [*QUIET, "seed=2", f"eval.final_policy={which}", "++env.kwargs.max_episode_steps=50"]
        )
        assert teacher_mod.train_teacher(cfg, tmp_path / which)["status"] == "ok"
    (best_chosen, best, last_a), (last_chosen, _, last_b) = seen
    assert best != last_a and best_chosen == best and last_chosen == last_b
    assert played and all(k == {"max_episode_steps": 50} for k in played)


def test_a_jobs_global_rngs_are_seeded_from_its_global_stream():
    """(kdrl.runs.job.x_seed_job__mutmut_19: the stream's purpose renamed: every job's global draws change)
    seed_job seeds torch, numpy and random from ``seed_ints(seed, "global")``, the stream published runs used."""
    import random

    from kdrl.runs.job import seed_job
    from kdrl.seeding import seed_ints

    threads = torch.get_num_threads()
    try:
        seed_job(5, 1)
        drawn = (torch.rand(3), np.random.rand(3), random.random())
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    pl.seed_everything(seed_ints(5, "global")[0], workers=False, verbose=False)
    assert torch.equal(drawn[0], torch.rand(3)) and np.array_equal(drawn[1], np.random.rand(3))
    assert drawn[2] == random.random()


def test_an_online_wandb_logger_starts_its_run_with_the_jobs_names(tmp_path, monkeypatch):
    """(kdrl.runs.job.x_build_loggers__mutmut_102: the run started without its project, group, name and config)
    logger.wandb=online starts the W&B run with the job's project, group, job type, tags, name and config,
    and logs to it."""
    from pytorch_lightning.loggers import WandbLogger

    import kdrl.runs.job as job_mod

    started = []

    def online(out, kwargs):
        started.append((out, kwargs))
        return SimpleNamespace(name="fake-run")

    monkeypatch.setattr(job_mod, "_online_wandb_run", online)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    cfg = OmegaConf.create(
        {
            "logger": {"csv": False, "wandb": "online"},
            "wandb": {"project": "kdrl-test", "group": "g1", "tags": ["a"]},
            "env": {"id": "CartPole-v1"},
            "seed": 3,
        }
    )
    [logger] = job_mod.build_loggers(cfg, tmp_path, "teacher")
    [(out, kwargs)] = started
    assert out == tmp_path and isinstance(logger, WandbLogger) and logger.experiment.name == "fake-run"
    assert kwargs == {
        "project": "kdrl-test",
        "group": "g1",
        "job_type": "teacher",
        "tags": ["a"],
        "name": "teacher-CartPole-v1-s3",
        "config": plain(cfg),
    }


def test_quiet_lightning_silences_the_leafspec_deprecation_inside_lightning_only():
    """(kdrl.runs.job.x_quiet_lightning__mutmut_92: the pattern wrapped in XX: matches nothing) torch's
    LeafSpec FutureWarning raised in Lightning's pytree helper is silenced; from kdrl's own code it is not."""
    message = (
        "`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(treespec, TreeSpec) and treespec.is_leaf()`"
    )
    here = "pytorch_lightning.utilities._pytree"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.warn_explicit(message, FutureWarning, "_pytree.py", 1, module=here, registry={})
        assert len(caught) == 1  # shown before
        del caught[:]
        quiet_lightning()
        warnings.warn_explicit(message, FutureWarning, "_pytree.py", 1, module=here, registry={})
        assert caught == []
        warnings.warn_explicit(message, FutureWarning, "x.py", 1, module="kdrl.nets", registry={})
        assert [str(w.message) for w in caught] == [message]
        # (x_quiet_lightning__mutmut_87, 88: the message or the category dropped: every FutureWarning of that
        # helper, or that message as any warning, silenced) only that deprecation, as a FutureWarning, is
        other = "`tree_flatten` will change its return type"
        warnings.warn_explicit(other, FutureWarning, "_pytree.py", 1, module=here, registry={})
        warnings.warn_explicit(message, UserWarning, "_pytree.py", 1, module=here, registry={})
        assert [(str(w.message), w.category) for w in caught[1:]] == [(other, FutureWarning), (message, UserWarning)]


def test_an_unfinished_runs_config_is_read_past_a_damaged_newest_checkpoint(tmp_path):
    """(kdrl.runs.job.x_unfinished_run_config__mutmut_37: ``break`` for ``continue``: a damaged last.ckpt hid
    the older checkpoint's config, so a resume under another config went unrefused) the newest checkpoint that
    loads gives the config."""
    from kdrl.io import LAST_CHECKPOINT, PREVIOUS_CHECKPOINT
    from kdrl.runs.job import unfinished_run_config

    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / LAST_CHECKPOINT).write_bytes(b"not a checkpoint")
    torch.save({CONFIG_IN_CHECKPOINT: {"seed": 7}}, tmp_path / "checkpoints" / PREVIOUS_CHECKPOINT)
    assert unfinished_run_config(tmp_path) == {"seed": 7}


def test_a_multitask_tasks_teacher_reference_is_played_with_the_tasks_env_kwargs(tmp_path, monkeypatch):
    """(kdrl.runs.multitask.x_load_task__mutmut_56: the reference computed without the env's kwargs, e.g.
    MinAtar's max_episode_steps: each task's % of teacher divided by another game's teacher score) the
    reference settings carry the task env's kwargs."""
    path = constant_teacher(tmp_path / "cartpole.pt", 1)
    settings = []

    def reference(teacher_path, policy, s, cache_dir):
        settings.append(s)
        return SimpleNamespace(teacher=10.0, random=1.0)

    monkeypatch.setattr(mt, "teacher_reference", reference)
    cfg = compose_cfg(
        "multitask",
        [
            *QUIET,
            f"teacher.checkpoints={{cartpole:{path}}}",
            "tasks=[cartpole]",
            f"teacher.cache_dir={tmp_path}",
            "teacher.overrides=['++env.kwargs.max_episode_steps=50']",
        ],
    )
    task = mt.load_task(cfg, "cartpole", {"debug": "fast"})
    [s] = settings
    assert task.env["kwargs"] == {"max_episode_steps": 50} and s.env_kwargs == {"max_episode_steps": 50}
    assert (s.env_id, s.episodes, s.first_seed) == ("CartPole-v1", cfg.eval.reference_episodes, cfg.eval.final_seed)


def test_training_and_loading_a_cached_teacher_lock_the_same_file(tmp_path, monkeypatch):
    """(kdrl.runs.teacher.x_obtain_teacher__mutmut_23: the lock's suffix changed: a student loading the cached
    teacher, kdrl.teachers.cached_teacher, would not wait while the runner trains it) the runner's
    obtain_teacher and the library's cached_teacher hold the same lock file of the cache entry."""
    import kdrl.runs.teacher as runner
    import kdrl.teachers as library

    locked = {}

    def spy(where):
        def lock(path, *a, **kw):
            locked.setdefault(where, []).append(Path(path))
            return real(path, *a, **kw)

        return lock

    real = library.exclusive_lock
    monkeypatch.setattr(runner, "exclusive_lock", spy("runner"))
    monkeypatch.setattr(library, "exclusive_lock", spy("library"))
    cache = tmp_path / "cache"
    ckpt, res = runner.obtain_teacher(
        "cartpole", 0, ["debug=fast", "logger=none", "trainer.enable_progress_bar=false"], cache
    )
    assert res["status"] == "ok"
    assert (
        library.cached_teacher(
            "cartpole", 0, ["debug=fast", "logger=none", "trainer.enable_progress_bar=false"], cache
        )[0]
        == ckpt
    )
    [trained], [loaded] = locked["runner"], locked["library"]
    assert trained == loaded == ckpt.parent.with_suffix(".lock")


# ---- kdrl/modules/dqn.py, the whole file (docs/mutation.md) ----------------------------------------------------------
def test_a_teachers_dqn_module_is_built_with_its_configured_schedules_and_loss():
    """(kdrl.modules.dqn: exploration_schedule 5-8, 19, 23-24, td_term 11/15/16, DQN.__init__ 35/36: an argument
    of the epsilon schedule dropped or read under another key, the TD loss and the target period or tau not
    read: a teacher that explores, syncs and learns other than its config says, with every run still fine)
    the module kdrl-train builds follows algo.exploration (start, end, decay, delay), algo.td_loss,
    algo.target_update_interval and algo.tau."""
    from kdrl.runs.teacher import build_teacher

    cfg = compose_cfg(
        "train",
        [
            *QUIET,
            "algo.exploration.eps_start=0.9",
            "algo.exploration.eps_end=0.1",
            "algo.exploration.decay_steps=400",
            "algo.exploration.delay_steps=100",
            "algo.td_loss=mse",
            "algo.target_update_interval=37",
            "algo.tau=0.5",
        ],
    )
    module, _ = build_teacher(cfg)
    eps = [module.exploration(t) for t in (0, 100, 300, 500, 10_000)]
    assert eps == pytest.approx([0.9, 0.9, 0.5, 0.1, 0.1])
    assert (module.td.gamma, module.td.td_loss, module.td.double_dqn) == (cfg.algo.gamma, "mse", cfg.algo.double_dqn)
    assert (module.target.interval, module.target.tau) == (37, 0.5)


def test_an_exploration_block_without_delay_steps_decays_from_the_first_env_step():
    """(kdrl.modules.dqn.x_exploration_schedule__mutmut_25: delay_steps defaulting to 1) no delay_steps: no delay."""
    from kdrl.modules.dqn import exploration_schedule

    schedule = exploration_schedule({"eps_start": 1.0, "eps_end": 0.0, "decay_steps": 10})
    assert [schedule(t) for t in (0, 1, 5, 10)] == pytest.approx([1.0, 0.9, 0.5, 0.0])


def test_a_dqn_update_logs_its_td_loss_and_the_mean_q_of_the_actions_taken():
    """(kdrl.modules.dqn.xǁDQNǁloss 11-14: the metrics renamed: train/td_loss and train/q_mean, the curves a
    researcher plots, gone from metrics.csv) DQN.loss returns the TD loss and Q(s, a)'s mean under those names."""
    from kdrl.runs.teacher import build_teacher

    module, _ = build_teacher(compose_cfg("train", QUIET))
    torch.manual_seed(0)
    obs, next_obs = torch.randn(8, 4), torch.randn(8, 4)
    actions = torch.randint(0, 2, (8,))
    batch = Transitions(obs, actions, torch.ones(8), next_obs, torch.zeros(8))
    loss, metrics = module.loss(batch)
    assert set(metrics) == {"td_loss", "q_mean"} and metrics["td_loss"] is loss
    q_taken = module.q_net(obs).gather(1, actions.unsqueeze(1)).squeeze(1)
    assert metrics["q_mean"].item() == pytest.approx(q_taken.mean().item())


# ---- kdrl/modules/student.py: who acts, the student's stream, its loss and offline target schedule ------------------
@pytest.mark.parametrize("control", ["teacher", "student", "mixed"])
def test_who_acts_picks_the_controllers_actions_and_counts_the_teachers(tmp_path, control):
    """(kdrl.modules.student.xǁDistillStudentǁbehaviour 1-5, 7-9, 15, 16: the control names compared wrongly, the
    teacher's count set or subtracted instead of added: the who-acts table's arms swapped and its teacher share
    wrong) control=teacher plays the teacher's greedy actions, control=student the student's, control=mixed the
    teacher's where a draw falls below beta; teacher_acted adds up the steps the teacher played."""
    _, module, _ = _student_job(tmp_path, [f"control={control}"])  # the teacher always pushes left (0)
    module.greedy = lambda obs: np.ones(len(obs), dtype=np.int64)  # the student always pushes right
    obs = np.zeros((5, 4), dtype=np.float32)
    if control != "mixed":
        # at the start and late in the run, where the mixed schedule's beta has decayed (a teacher- or
        # student-controlled run taken for a mixed one acts like it at one end or the other)
        assert module.beta(0) == 1.0 and module.beta(10**9) < 0.5
        want = [0] * 5 if control == "teacher" else [1] * 5
        for t in (0, 10**9):
            module.collector = SimpleNamespace(env_steps=t)
            assert module.behaviour(obs).tolist() == want and module.behaviour(obs).tolist() == want
        assert module.teacher_acted == (20 if control == "teacher" else 0)
        return
    module.collector = SimpleNamespace(env_steps=0)
    module.beta = lambda t: 1.0
    assert module.behaviour(obs).tolist() == [0] * 5 and module.behaviour(obs).tolist() == [0] * 5
    assert module.teacher_acted == 10
    module.beta = lambda t: 0.0
    assert module.behaviour(obs).tolist() == [1] * 5 and module.teacher_acted == 10
    module.beta = lambda t: 0.5
    draws = np.random.Generator(type(module._rng.bit_generator)())  # the next draws of the control stream
    draws.bit_generator.state = module._rng.bit_generator.state
    teacher_plays = draws.random(5) < 0.5
    assert module.behaviour(obs).tolist() == np.where(teacher_plays, 0, 1).tolist()
    assert module.teacher_acted == 10 + int(teacher_plays.sum())


@pytest.mark.parametrize("loss", ["kl", "hybrid"])
def test_a_students_replay_returns_are_n_step_only_under_a_td_term(tmp_path, loss):
    """(kdrl.modules.student.x_student_stream 3, 4, 8, 9: n-step kept, or n = 2, for a pure distillation student)
    distill.n_step shapes a hybrid student's TD targets; a student without a TD term samples 1-step transitions."""
    _, module, _ = _student_job(tmp_path, [f"loss={loss}", "distill.n_step=3"])
    assert module.data.n_step == (3 if loss == "hybrid" else 1)


def test_a_feature_students_loss_adds_the_weighted_hint_and_logs_its_agreement(tmp_path):
    """(kdrl.modules.student.xǁDistillStudentǁloss 31, 32: the hint subtracted or divided; 60, 62, 63: agreement
    over the flattened batch or counting disagreements: the table's action_agreement column) total = distill +
    feature_weight * hint; agreement = the share of states where student and teacher pick the same action."""
    _, module, _ = _student_job(tmp_path, ["loss=feature", "loss.feature_weight=0.5"])
    torch.manual_seed(0)
    obs = torch.randn(16, 4)
    batch = Transitions(obs, torch.zeros(16, dtype=torch.long), torch.zeros(16), obs, torch.zeros(16))
    with torch.no_grad():
        for p in module.teacher.parameters():  # a teacher whose choice depends on the state
            p.copy_(torch.randn_like(p))
    total, out = module.loss(batch)
    assert out["hint_loss"].item() > 0
    assert total.item() == pytest.approx(out["distill_loss"].item() + 0.5 * out["hint_loss"].item(), rel=1e-6)
    same = (module.q_net(obs).argmax(1) == module.teacher(obs).argmax(1)).float().mean().item()
    assert 0 < same < 1 and out["agreement"].item() == pytest.approx(same)


def test_the_offline_phase_counts_its_updates_as_the_env_steps_they_stand_for(tmp_path):
    """(kdrl.modules.student.xǁDistillStudentǁtarget_progress 4-8: the offline updates counted from the wrong origin,
    rounded the wrong way or scaled by 1 / train_freq: QDagger's target net synced on another schedule offline)
    k offline updates stand for ceil(k / gradient_steps) * train_freq env steps; online, the env steps."""
    _, module, _ = _student_job(tmp_path, ["distill.train_freq=4", "distill.gradient_steps=2"])
    module.collector = SimpleNamespace(env_steps=123)
    assert module.target_progress() == 123
    module.optimizer_steps, module._offline_start = 10, 10
    got = []
    for _ in range(5):
        module.optimizer_steps += 1
        got.append(module.target_progress())
    assert got == [4, 4, 8, 8, 12]


# ---- kdrl/modules/base.py: the update loop ---------------------------------------------------------------------------
def test_an_update_leaves_the_parameters_its_loss_does_not_reach_where_they_are():
    """(kdrl.modules.base.xǁRLModuleǁsgd_step 1, 2: gradients zeroed instead of set to None: Adam then moves
    parameters no gradient reached, on their old momentum; a multi-task student's interleaved update of one task
    would move the other tasks' heads) after an update through every parameter, an update whose loss reaches only
    the last layer leaves the rest unchanged."""
    from kdrl.runs.teacher import build_teacher

    module, _ = build_teacher(compose_cfg("train", QUIET))
    module.collector = SimpleNamespace(env_steps=0)  # the target schedule's counter
    opt = torch.optim.Adam(module.trainable, lr=0.1)
    obs = torch.randn(8, 4)
    module.sgd_step(opt, module.q_net(obs).pow(2).mean())
    last = [m for m in module.q_net.modules() if isinstance(m, nn.Linear)][-1]
    others = {
        n: p.detach().clone() for n, p in module.q_net.named_parameters() if p is not last.weight and p is not last.bias
    }
    module.sgd_step(opt, last(torch.randn(8, last.in_features)).pow(2).mean())
    assert others and all(torch.equal(p, others[n]) for n, p in module.q_net.named_parameters() if n in others)


def test_a_module_driven_without_a_trainer_learns_from_its_stream():
    """(kdrl.modules.base.xǁRLModuleǁtraining_step 6: the callbacks read from a Trainer that is not there) a module
    stepped by hand (the speed benchmarks' bare loop) pulls its stream's items and updates."""
    from kdrl.runs.teacher import build_teacher

    module, _ = build_teacher(compose_cfg("train", [*QUIET, "algo.learning_starts=32", "algo.batch_size=8"]))
    module.setup("fit")
    opt = module.configure_optimizers()
    module.optimizers = lambda use_pl_optimizer=True: opt
    module.step_seconds = 0.0  # return after the first item
    try:
        while module.optimizer_steps == 0:
            module.training_step(None)
    finally:
        module.teardown("fit")
    assert module.optimizer_steps >= 1 and module.env_steps >= 32


# ---- kdrl/callbacks.py: the periodic evaluation's measure and schedule -----------------------------------------------
def test_a_periodic_evaluation_plays_as_configured_and_records_what_the_tables_read(monkeypatch):
    """(kdrl.callbacks.xǁGreedyEvaluationǁmeasure 10, 15, 16: played without the env's kwargs or epsilon; 23, 33:
    wall times added instead of subtracted; 34, 35, 38, 39, 51-54: process_s, return_std, teacher_return and
    random_return recorded under other keys or as None; 58, 65, 66: a score where the teacher does not beat random;
    PeriodicEvaluation.timed_greedy 4: eval time not accumulated; schedule_next 4: ``/`` for ``//``) the record of
    each evaluation, the next evaluation's env step, and the refusal of a score against a teacher no better than random."""
    import kdrl.callbacks as cb

    played = []

    def evaluate(policy, env_id, seeds, kwargs=None, epsilon=0.0):
        played.append((env_id, list(seeds), kwargs, epsilon))
        time.sleep(0.02)
        return [30.0, 50.0]

    monkeypatch.setattr(cb, "evaluate_policy", evaluate)
    kwargs = {"max_episode_steps": 50}
    ev = cb.GreedyEvaluation(
        "CartPole-v1", kwargs, 100, 2, 7, None, None, reference=([90.0] * 20, [10.0] * 20), epsilon=0.05
    )
    ev.t_start = time.perf_counter()
    module = _Evaluated(250, 7)
    first = ev.measure(module).record
    second = ev.measure(module).record
    assert played == [("CartPole-v1", ev.seeds, kwargs, 0.05)] * 2
    assert ev.eval_time_s >= 0.04  # both evaluations' time
    assert second["wall_s"] >= second["train_wall_s"] + 0.04 - 1e-9 and 0 <= second["train_wall_s"] < second["wall_s"]
    assert second["wall_s"] < 60 and first["wall_s"] <= second["wall_s"]
    assert first["return_std"] == 10.0 and (first["teacher_return"], first["random_return"]) == (90.0, 10.0)
    assert 0 < first["process_s"] < 10**6
    ev.schedule_next(module)
    assert ev.next_eval == 300
    weak_teacher = [10.9] * 10 + [9.5] * 10  # 10.2 on average against 10.0: not clearly better than random
    weak = cb.GreedyEvaluation("CartPole-v1", None, 100, 2, 7, None, None, reference=(weak_teacher, [10.0] * 20))
    weak.t_start = time.perf_counter()
    record = weak.measure(_Evaluated(100, 1)).record
    assert np.isnan(record["normalized_score"]) and module.told == [(40.0, 90.0, 10.0)] * 2


def test_a_students_final_evaluation_plays_each_part_on_its_envs_kwargs_and_its_own_held_out_seeds(monkeypatch):
    """(kdrl.runs.distill.x_final_evaluation: the env's kwargs dropped from the student's, the teacher's, the
    random policy's, a perturbation's or the agreement rollouts' envs (MinAtar's max_episode_steps: the
    headline score on other episodes than the teacher reference's); the random baseline given no seeds; a
    perturbation's own kwargs or wrappers dropped; the generalisation and agreement seeds moved; the
    generalisation keys renamed; the "teacher no better than random" warning inverted or reworded) each
    part of the final evaluation plays the env's kwargs on its declared held-out seeds (docs/protocol.md):
    final_seed + i for performance, + 50,000 + i for generalisation, + 90,000 + i (100 episodes) for
    agreement."""
    import kdrl.runs.distill as distill

    played, rolled = [], []

    def spy_policy(greedy, env_id, seeds, kwargs=None, wrappers=(), epsilon=0.0):
        played.append(("policy", list(seeds), kwargs, len(wrappers)))
        return evaluate_policy(greedy, env_id, seeds, kwargs, wrappers, epsilon=epsilon)

    def spy_random(env_id, seeds, kwargs=None):
        played.append(("random", list(seeds), kwargs, 0))
        return random_returns(env_id, seeds, kwargs)

    def spy_rollout(greedy, env_id, seeds, max_states, kwargs=None):
        rolled.append((list(seeds), max_states, kwargs))
        return distill_rollout(greedy, env_id, seeds, max_states, kwargs)

    distill_rollout = distill.rollout_states
    monkeypatch.setattr(distill, "evaluate_policy", spy_policy)
    monkeypatch.setattr(distill, "random_returns", spy_random)
    monkeypatch.setattr(distill, "rollout_states", spy_rollout)
    cfg = compose_cfg(
        "distill",
        [*QUIET, "eval.final_episodes=2", "eval.generalisation_episodes=2", "eval.agreement_states=40",
         "+env.kwargs={max_episode_steps: 30}",
         "env.perturbations=[{name: short, kwargs: {max_episode_steps: 15}}, {name: long_pole, physics: {length: 0.75}}]"],
    )  # fmt: skip
    teacher = _cartpole_balancer()  # plays every capped episode to its cap
    reference = _reference(30.0, 20.0)
    base = cfg.eval.final_seed
    final, gen = eval_seeds(base, 2), eval_seeds(base + 50_000, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = distill.final_evaluation(cfg, teacher, teacher, CARTPOLE, [], reference)
    capped, short = {"max_episode_steps": 30}, {"max_episode_steps": 15}
    assert played == [
        ("policy", final, capped, 0),  # the student
        ("policy", final, capped, 0),  # the teacher
        ("random", final, capped, 0),
        ("policy", gen, short, 0),  # short: its own kwargs over the env's
        ("policy", gen, short, 0),
        ("policy", gen, capped, 1),  # long_pole: the env's kwargs and its physics wrapper
        ("policy", gen, capped, 1),
    ]
    assert out["eval_returns"] == out["teacher_returns"] == [30.0, 30.0]
    assert out["teacher_return_mean"] == 30.0 and out["eval_return_std"] == 0.0
    assert out["params"] == out["teacher_params"] == 10 and out["param_ratio"] == 1.0  # nn.Linear(4, 2)
    assert out["random_returns"] == random_returns("CartPole-v1", final, capped)
    assert out["random_return_mean"] == pytest.approx(np.mean(out["random_returns"]))
    assert out["generalisation"] == {
        "short": {"teacher": 15.0, "student": 15.0},
        "long_pole": {"teacher": 30.0, "student": 30.0},
    }
    assert rolled == [(eval_seeds(base + 90_000, 100), 40, capped)]
    assert out["agreement_states"] == 40 and out["action_agreement"] == 1.0


def test_a_final_evaluation_warns_only_when_the_teacher_does_not_clearly_beat_random(caplog):
    """(kdrl.runs.distill.x_final_evaluation: the warning inverted, or its words changed) the refusal of
    the normalised score is said in one line naming both means and the reference's episodes, and only then."""
    from kdrl.runs.distill import final_evaluation

    cfg = compose_cfg("distill", [*QUIET, "eval.final_episodes=1", "eval.agreement_states=10", "env.perturbations=[]"])
    net = MLP((4,), 2, width=8)
    # (__mutmut_221: ``if beats_random or True``: a teacher above random but not clearly, its score computed)
    for returns, refused in (([200.0] * 20, False), ([10.0] * 20, True), ([10.0, 32.0] * 10, True)):
        teacher_mean = float(np.mean(returns))
        reference = _reference(returns, 20.0)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="kdrl.distill"):
            out = final_evaluation(cfg, net, net, CARTPOLE, [], reference)
        said = [r.getMessage() for r in caplog.records if r.name == "kdrl.distill"]
        assert out["teacher_beats_random"] is not refused
        assert bool(np.isnan(out["normalized_score"])) is refused
        if refused:
            assert said == [
                f"the teacher ({teacher_mean:.1f}) does not clearly beat a random policy (20.0) on the 20 held-out "
                "episodes of its reference: normalised score refused"
            ]
        else:
            assert said == []


def test_a_teachers_final_returns_and_reference_play_its_env_kwargs_with_eval_epsilon(tmp_path, monkeypatch):
    """(kdrl.runs.teacher.xǁTeacherJobǁfinish 28: the held-out returns played greedily instead of with
    eval.epsilon; 46, 50: the teacher reference, the T and R of every student's normalised score, played
    without the env's kwargs (MinAtar's max_episode_steps); 58, 62: the reference's computed_by changed) a
    finished teacher job plays its final episodes and its reference (teacher and random policy) on the env's
    kwargs, the teacher with eval.epsilon, on the final seeds, and records who computed the reference."""
    import kdrl.reference as reference
    import kdrl.runs.teacher as teacher

    played = []

    def spy(real, who):
        def policy(greedy, env_id, seeds, kwargs=None, wrappers=(), epsilon=0.0):
            played.append((who, list(seeds), kwargs, epsilon))
            return real(greedy, env_id, seeds, kwargs, wrappers, epsilon=epsilon)

        return policy

    def spy_random(env_id, seeds, kwargs=None):
        played.append(("random", list(seeds), kwargs, 1.0))
        return random_returns(env_id, seeds, kwargs)

    monkeypatch.setattr(teacher, "evaluate_policy", spy(teacher.evaluate_policy, "final"))
    monkeypatch.setattr(reference, "evaluate_policy", spy(reference.evaluate_policy, "reference"))
    monkeypatch.setattr(reference, "random_returns", spy_random)
    cfg = compose_cfg(
        "train",
        [*QUIET, "eval.final_episodes=2", "eval.reference_episodes=3", "eval.epsilon=0.2",
         "+env.kwargs={max_episode_steps: 30}"],
    )  # fmt: skip
    module, net_cfg = teacher.build_teacher(cfg)
    module.collector = SimpleNamespace(episodes=7)
    chosen = save_policy(tmp_path / "best.pt", module.q_net, net_cfg, "CartPole-v1", (4,), 2)
    out = teacher.TeacherJob(cfg, tmp_path).finish(
        module, SimpleNamespace(policies=SimpleNamespace(best_mean=9.0)), chosen
    )
    capped, base = {"max_episode_steps": 30}, cfg.eval.final_seed
    assert played == [
        ("final", eval_seeds(base, 2), capped, 0.2),
        ("reference", eval_seeds(base, 3), capped, 0.2),
        ("random", eval_seeds(base, 3), capped, 1.0),
    ]
    assert out["reference"]["env_kwargs"] == capped and out["reference"]["computed_by"] == "teacher job"
    assert max(out["eval_returns"]) <= 30 and out["episodes"] == 7 and out["best_periodic_eval"] == 9.0
    # (64, 65 and their neighbours: results keys renamed) the fields the teachers' table reads
    assert out["params"] == module.params == sum(p.numel() for p in module.q_net.parameters())
    assert out["eval_return_mean"] == pytest.approx(np.mean(out["eval_returns"]))
    assert out["eval_return_std"] == pytest.approx(np.std(out["eval_returns"]))
    assert out["eval_policy"] == str(cfg.eval.final_policy)
    assert out["checkpoint"] == str(tmp_path / "teacher.pt")
    assert (tmp_path / "teacher.pt").read_bytes() == chosen.read_bytes()


def test_a_finished_student_job_records_its_periodic_reference_policy_and_teacher(tmp_path):
    """(kdrl.runs.distill.xǁDistillJobǁfinish: the periodic evaluation's teacher and random returns swapped
    or renamed, the student's and teacher's checkpoint paths and the teacher fields renamed or dropped)
    a finished student job copies its chosen policy to student.pt and records, beside the final evaluation,
    the periodic reference it was scored against and where its teacher came from."""
    job, module, _ = _student_job(
        tmp_path, ["eval.final_episodes=1", "eval.agreement_states=10", "env.perturbations=[]"]
    )
    chosen = save_policy(tmp_path / "best.pt", module.q_net, {"width": 8}, "CartPole-v1", (4,), 2)
    out = job.finish(module, SimpleNamespace(history=[]), chosen)
    teacher_return, random_return = job.reference
    assert teacher_return != random_return  # the constant teacher (always left) against a random policy
    assert (out["teacher_periodic_return"], out["random_periodic_return"]) == (teacher_return, random_return)
    assert out["checkpoint"] == str(tmp_path / "run" / "student.pt")
    assert (tmp_path / "run" / "student.pt").read_bytes() == chosen.read_bytes()
    assert out["teacher_checkpoint"] == str(tmp_path / "teacher.pt") and out["teacher_seed"] is None
    assert out["teacher_wall_time_s"] is None and out["dataset"] is None
    assert out["pretrain"] == module.pretrain_report and out["prune"] is None and out["quantize"] is None
    assert (out["teacher_format"], out["teacher_reported_return"], out["teacher_warning"]) == (
        job.teacher_format,
        job.teacher_reported,
        job.teacher_warning,
    )
    assert out["eval_returns"] and out["agreement_states"] == 10  # the final evaluation's fields beside them
    # (51, 52: the teacher seed recorded for a given teacher file, or never) a teacher named by seed records it
    with open_dict(job.cfg):
        job.cfg.teacher.checkpoint, job.cfg.teacher.seed, job.cfg.teacher.seed_from_student = None, 3, False
    assert job.finish(module, SimpleNamespace(history=[]), chosen)["teacher_seed"] == 3
    # (60, 64, 65, 70, 71: the offline phase's, pruning's or int8's report dropped, or taken of no module or net)
    module.pretrain_report = {"updates": 5}
    module.pruning, module.int8 = SimpleNamespace(report={"amount": 0.5}), SimpleNamespace(report={"at": 0.5})
    out = job.finish(module, SimpleNamespace(history=[]), chosen)
    n_params = float(sum(p.numel() for p in module.q_net.parameters()))
    assert out["pretrain"] == {"updates": 5} and out["prune"] == {"amount": 0.5, "nonzero_params": n_params}
    assert out["quantize"] == {"at": 0.5, "int8_representable": False}  # float weights, never rounded to int8


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (
            ["loss=feature", "loss.temperature=0.5", "loss.feature_weight=0.25", "student.width=12", "student.depth=1"]
            + ["control=mixed", "seed=7"],
            {"loss": "feature", "temperature": 0.5, "width": 12, "student_size": None, "depth": 1}
            | {"control": "mixed", "baseline": None, "lambda": None, "feature_weight": 0.25},
        ),
        (  # a feature weight given as null is off, as StudentLoss reads it
            ["loss=feature", "loss.feature_weight=null", "student.width=16", "control=student"],
            {"loss": "feature", "temperature": 0.01, "width": 16, "student_size": None, "depth": 2}
            | {"control": "student", "baseline": None, "lambda": None, "feature_weight": 0.0},
        ),
        (  # the scratch baseline is named "scratch" whatever loss its config carries
            ["baseline=scratch", "loss=nll", "student.width=8", "+student.size=rusu_7"],
            {"loss": "scratch", "width": 8, "student_size": "rusu_7", "depth": 2}
            | {"control": "teacher", "baseline": "scratch", "lambda": None, "feature_weight": 0.0},
        ),
    ],
)
def test_a_student_jobs_fields_name_its_loss_student_control_and_baseline(tmp_path, overrides, expected):
    """(kdrl.runs.distill.xǁDistillJobǁfields: a key renamed or dropped, the scratch baseline named by its
    config's loss, the feature weight's null not read as off) a student job's results.json starts with
    the loss, temperature, student sizes, who acts, the baseline and the feature weight it was given,
    beside the fields every job has."""
    cfg = compose_cfg("distill", [*QUIET, *overrides])
    fields = DistillJob(cfg, tmp_path, choices={}).fields()
    assert {k: fields[k] for k in expected} == expected
    assert type(fields["feature_weight"]) is float and type(fields["control"]) is str
    assert fields["kind"] == "student" and fields["env_id"] == "CartPole-v1" and fields["seed"] == cfg.seed
    assert set(fields) == set(expected) | {"temperature", "kind", "status", "env_id", "seed", "run_dir"} | {
        "resumed_from_env_steps"
    }


def test_a_student_jobs_summary_line_names_its_cell_score_and_teacher():
    """(kdrl.runs.distill.xǁDistillJobǁsummary: a field or its format changed) the one line a student
    job logs at its end: env, loss, named size or width, seed, return against the teacher's reference
    and its episodes, normalised score, parameter share and agreement."""
    f = {"env_id": "MinAtar/Breakout-v1", "loss": "kl", "student_size": None, "width": 24, "seed": 3}
    f |= {"eval_return_mean": 12.345, "teacher_reference": {"return_mean": 50.06, "episodes": 100}}
    f |= {"normalized_score": 0.12345, "param_ratio": 0.0705, "action_agreement": 0.9}
    line = DistillJob.summary(None, f)
    assert line == (
        "student MinAtar/Breakout-v1 kl w24 seed 3: 12.3 vs teacher 50.1 over 100 episodes "
        "(normalised score 0.123), 7.0% params, agreement 0.900"
    )
    assert DistillJob.summary(None, f | {"student_size": "rusu_7"}).startswith("student MinAtar/Breakout-v1 kl rusu_7 ")


def test_a_student_keeps_its_on_demand_teachers_wall_time_and_a_foreign_teachers_reported_return(
    tmp_path, monkeypatch, caplog
):
    """(kdrl.runs.distill.xǁDistillJobǁbuild__mutmut_17-22: the on-demand teacher's wall time never read, or read
    under another key; 49-51: the return a foreign teacher's files report never read) a student whose teacher
    was trained (or reused) on demand keeps that teacher's wall time for its results and the study's
    core-hours; one whose teacher files report a return keeps it, and is warned when its teacher plays far
    below it in kdrl's env."""
    import kdrl.runs.distill as distill

    path = constant_teacher(tmp_path / "teacher.pt", 0)
    trained = {"status": "ok", "wall_time_s": 123.5}
    monkeypatch.setattr(distill, "teacher_request", lambda cfg, choices: SimpleNamespace(load=lambda: (path, trained)))
    real_load = distill.load_teacher_net
    monkeypatch.setattr(
        distill,
        "load_teacher_net",
        lambda *a, **k: (lambda n, s: (n, {**s, "reported_return": 500.0}))(*real_load(*a, **k)),
    )
    cfg = compose_cfg("distill", [*QUIET, "teacher.checkpoint=null", f"teacher.cache_dir={tmp_path}"])
    job = DistillJob(cfg, tmp_path / "run", choices={"env": "cartpole"})
    with caplog.at_level(logging.WARNING, logger="kdrl"):
        job.build({})
    assert job.teacher_path == path and job.teacher_wall_time_s == 123.5
    assert job.teacher_reported == 500.0 and "far below the 500.0 its files report" in job.teacher_warning
    assert job.teacher_warning in caplog.messages
    trained.pop("wall_time_s")  # a teacher results.json without it (an older kdrl): unknown, not an error
    older = DistillJob(cfg, tmp_path / "run2", choices={"env": "cartpole"})
    older.build({})
    assert older.teacher_wall_time_s is None


def test_a_students_periodic_reference_and_teacher_reference_play_its_env_kwargs(tmp_path, monkeypatch):
    """(kdrl.runs.distill.xǁDistillJobǁbuild__mutmut_116: the env's kwargs dropped: on MinAtar, the teacher and
    random references of every normalised score played on other episodes than the student's) the periodic
    reference (teacher with eval.epsilon, random policy) plays the job's periodic seeds with its env kwargs,
    and the stored teacher reference is asked for with the same kwargs and the final seeds."""
    import kdrl.runs.distill as distill

    calls: dict[str, list] = {"teacher": [], "random": [], "reference": []}
    real_eval, real_random, real_reference = distill.evaluate_policy, distill.random_returns, distill.teacher_reference
    monkeypatch.setattr(
        distill,
        "evaluate_policy",
        lambda policy, env_id, seeds, kwargs, **k: (
            calls["teacher"].append((list(seeds), kwargs, k)) or real_eval(policy, env_id, seeds, kwargs, **k)
        ),
    )
    monkeypatch.setattr(
        distill,
        "random_returns",
        lambda env_id, seeds, kwargs: (
            calls["random"].append((list(seeds), kwargs)) or real_random(env_id, seeds, kwargs)
        ),
    )
    monkeypatch.setattr(
        distill,
        "teacher_reference",
        lambda path, policy, settings, cache: (
            calls["reference"].append(settings) or real_reference(path, policy, settings, cache)
        ),
    )
    job, _, _ = _student_job(
        tmp_path, ["++env.kwargs.max_episode_steps=37", "eval.seed=500", "eval.episodes=3", "eval.epsilon=0.02"]
    )
    seeds = eval_seeds(500, 3)
    assert calls["teacher"] == [(seeds, {"max_episode_steps": 37}, {"epsilon": 0.02})]
    assert calls["random"] == [(seeds, {"max_episode_steps": 37})]
    (settings,) = calls["reference"]
    assert settings.env_kwargs == {"max_episode_steps": 37} and settings.first_seed == job.cfg.eval.final_seed
    assert settings.epsilon == 0.02 and settings.episodes == job.cfg.eval.reference_episodes


@pytest.mark.parametrize("teacher", ["always_left", "balancer"])
def test_a_students_periodic_evaluation_scores_against_the_jobs_reference_and_warns_only_below_random(
    tmp_path, caplog, teacher
):
    """(kdrl.runs.distill.xǁDistillJobǁbuild__mutmut_170, 174: the periodic evaluation given no reference: no
    periodic normalised score, no speed thresholds, QDagger's lambda never decays; 175: the "does not clearly
    beat a random policy" warning inverted; 181-184: reworded) the student's periodic evaluation holds the teacher's and the
    random policy's returns the job measured, and the warning is logged for a teacher that always pushes left,
    not for one that balances."""
    if teacher == "balancer":
        path = tmp_path / "teacher.ts"
        torch.jit.script(_cartpole_balancer()).save(str(path))
    else:
        path = constant_teacher(tmp_path / "teacher.pt", 0)
    overrides = [f"teacher.checkpoint={path}", "teacher.trust_code=true", f"teacher.cache_dir={tmp_path / 'cache'}"]
    cfg = compose_cfg("distill", [*QUIET, *overrides, "student.width=8"])
    job = DistillJob(cfg, tmp_path / "run", choices={})
    with caplog.at_level(logging.WARNING, logger="kdrl"):
        _, evaluation = job.build({})
    assert evaluation.reference == job.reference
    beats = teacher == "balancer"
    assert (job.reference[0] > job.reference[1] + 100) is beats and evaluation.reference_beats_random is beats
    warned = [m for m in caplog.messages if "does not clearly beat a random policy" in m]
    t, r = job.reference
    expected = (  # (181-184: the line reworded)
        f"the teacher ({t:.1f}) does not clearly beat a random policy ({r:.1f}) on the {cfg.eval.episodes} periodic "
        "episodes: periodic normalised score refused (speed not reached; QDagger's lambda stays at its start)"
    )
    assert warned == ([] if beats else [expected])


def test_a_multitask_final_evaluation_refuses_a_policy_file_of_other_tasks(tmp_path):
    """(kdrl.runs.multitask.x_final_evaluation__mutmut_3: the chosen file loaded without its tasks' env ids: a
    policy trained on other envs scored as this job's) the chosen checkpoint must name the job's envs, in order."""
    net = MultiTaskQNetwork([(4,)], [2], width=8, depth=1)
    module = SimpleNamespace(q_net=net, views=[TaskView(net, 0)])
    path = save_multitask_policy(
        tmp_path / "best.pt", net, {"width": 8}, ["cartpole"], [EnvSpec("CartPole-v0", (4,), 2)]
    )
    cfg = OmegaConf.create({"eval": {"final_seed": 500, "final_episodes": 1, "epsilon": 0.0}})
    with pytest.raises(CheckpointError) as exc:
        mt.final_evaluation(cfg, [_task({"id": "CartPole-v1", "kwargs": {}}, nn.Linear(4, 2))], module, path)
    assert str(exc.value) == f"{path} was trained on ['CartPole-v0'], not ['CartPole-v1']"


def test_a_multitask_students_final_episodes_and_references_are_played_with_eval_epsilon(monkeypatch):
    """(kdrl.runs.multitask.x_final_evaluation__mutmut_34: the student's final episodes played greedily while
    its teachers' reference plays with eval.epsilon) the student, its teachers and the random policy play the
    final seeds, the student with the task's kwargs, all with the same eval.epsilon."""
    net = MultiTaskQNetwork([(4,)], [2], width=8, depth=1)
    module = SimpleNamespace(q_net=net, views=[TaskView(net, 0)])
    monkeypatch.setattr(mt, "load_multitask_policy", lambda chosen, ids: {"state_dict": net.state_dict()})
    monkeypatch.setattr(mt, "task_result", lambda t, m, i, s, te, r: {"student": s, "teacher": te, "random": r})
    played, referenced = [], []
    monkeypatch.setattr(
        mt,
        "evaluate_policy",
        lambda policy, env_id, seeds, kwargs=None, **k: played.append((env_id, list(seeds), kwargs, k)) or [7.0],
    )
    monkeypatch.setattr(
        mt, "reference_returns", lambda tasks, seeds, eps: referenced.append((list(seeds), eps)) or ([[9.0]], [[1.0]])
    )
    kwargs = {"sutton_barto_reward": True}
    cfg = OmegaConf.create({"eval": {"final_seed": 500, "final_episodes": 3, "epsilon": 0.05}})
    out = mt.final_evaluation(cfg, [_task({"id": "CartPole-v1", "kwargs": kwargs}, nn.Linear(4, 2))], module, Path("x"))
    assert played == [("CartPole-v1", [500, 501, 502], kwargs, {"epsilon": 0.05})]
    assert referenced == [([500, 501, 502], 0.05)]
    assert out == {"cartpole": {"student": [7.0], "teacher": [9.0], "random": [1.0]}}


def test_a_multitask_task_result_names_every_field_of_its_task():
    """(kdrl.runs.multitask.x_task_result: a key renamed or a value taken from the wrong source: the env's
    shapes, the teacher's and the random policy's final returns, the raw ratio, the task's counters) one task's
    block of a multi-task results.json, field by field."""
    out = one_task_result([40.0, 80.0], [10.0, 30.0])
    assert set(out) == {
        *("env_id", "obs_shape", "n_actions", "eval_return_mean", "eval_return_std", "eval_returns"),
        *("teacher_return_mean", "teacher_returns", "random_return_mean", "random_returns", "teacher_reference"),
        *("teacher_beats_random", "pct_of_teacher", "raw_return_ratio", "env_steps", "episodes", "params"),
        *("teacher_params", "teacher_checkpoint", "teacher_wall_time_s"),
    }
    assert (out["env_id"], out["obs_shape"], out["n_actions"]) == ("CartPole-v1", [4], 2)
    assert (out["teacher_return_mean"], out["teacher_returns"]) == (100.0, [100.0, 100.0])
    assert (out["random_return_mean"], out["random_returns"]) == (20.0, [10.0, 30.0])
    assert out["teacher_reference"] == mt.reference_fields(_reference(100.0, 20.0))
    assert out["teacher_beats_random"] is True and out["raw_return_ratio"] == pytest.approx(0.6)
    net = MultiTaskQNetwork([(4,)], [2], width=8, depth=1)
    assert out["params"] == mt.task_params(net, 0) and out["teacher_params"] == 10  # nn.Linear(4, 2)
    assert (out["teacher_checkpoint"], out["teacher_wall_time_s"]) == ("t.pt", None)
    # (53: ``beats or True``) a teacher reference above the random policy's on average, but not clearly (22.5 +-
    # 22.5 against 20 over 20 episodes), gives no % of teacher
    noisy = one_task_result([40.0, 80.0], [10.0, 30.0], teacher_mean=[0.0, 45.0] * 10, random_mean=20.0)
    assert noisy["teacher_beats_random"] is False and np.isnan(noisy["pct_of_teacher"])
    # (76, 77: ``>= 0``, ``> 1``) Rusu's raw ratio for any positive teacher return, none (not an error) at 0
    assert one_task_result([0.25], [-1.0], teacher_mean=0.5, random_mean=-1.0)["raw_return_ratio"] == 0.5
    assert np.isnan(one_task_result([0.25], [-1.0], teacher_mean=0.0, random_mean=-1.0)["raw_return_ratio"])


def test_a_jobs_results_take_its_updates_and_times_from_the_run_and_its_trainer_the_run_dir(
    tmp_path, monkeypatch, caplog
):
    """(kdrl.runs.job.x__run_job__mutmut_71, 72, 75, 76: grad_steps or train_wall_time_s under another key;
    77: the evaluations' time added to the train wall instead of taken off; 80: sps env steps times seconds;
    56: a resumed run's earlier time subtracted; 46, 49, 54: the resume checkpoint loaded without
    weights_only=True; 23: full checkpoints stamped with no config, so a resume cannot tell its config; 29:
    Lightning's root dir outside the run dir; 36: the loggers made for no job type; 117: the summary line not
    logged) one teacher job, its module, evaluation and trainer watched as it runs."""
    import kdrl.runs.job as job_mod
    import kdrl.runs.teacher as teacher_mod

    out = tmp_path / "run"
    built, fits, job_types = [], [], []
    build, fit, loggers = teacher_mod.TeacherJob.build, pl.Trainer.fit, job_mod.build_loggers

    def spy_build(self, fields):
        module, evaluation = build(self, fields)
        evaluation.resumed_wall_s = 100.0  # as if 100 s had run before a kill
        built.append((module, evaluation))
        return module, evaluation

    def spy_fit(self, *args, **kwargs):
        fits.append((self.default_root_dir, kwargs.get("weights_only", "not given")))
        return fit(self, *args, **kwargs)

    def spy_loggers(cfg, run_dir, job_type):
        job_types.append(job_type)
        return loggers(cfg, run_dir, job_type)

    monkeypatch.setattr(teacher_mod.TeacherJob, "build", spy_build)
    monkeypatch.setattr(pl.Trainer, "fit", spy_fit)
    monkeypatch.setattr(job_mod, "build_loggers", spy_loggers)
    caplog.set_level(logging.INFO, logger="kdrl")
    # keep_last=2: the full checkpoints stay after the run for the stamp check below (at 1 last.ckpt goes)
    cfg = compose_cfg("train", [*QUIET, "seed=4", "++env.kwargs.max_episode_steps=50", "checkpoint.keep_last=2"])
    t0 = time.perf_counter()
    res = teacher_mod.train_teacher(cfg, out)
    elapsed = time.perf_counter() - t0
    ((module, evaluation),) = built
    assert res["status"] == "ok" and fits == [(str(out), True)] and job_types == ["teacher"]
    assert res["grad_steps"] == module.stream.grad_steps > 0
    assert 100.0 < res["wall_time_s"] < 100.0 + elapsed
    assert evaluation.eval_time_s > 0
    assert res["train_wall_time_s"] == pytest.approx(res["wall_time_s"] - evaluation.eval_time_s)
    assert res["sps"] == pytest.approx(res["env_steps"] / res["wall_time_s"])
    assert teacher_mod.TeacherJob(cfg, out).summary(res) in [r.getMessage() for r in caplog.records]
    # every full checkpoint carries the run's resolved config (what check_resumable compares)
    ckpts = sorted((out / "checkpoints").glob("*.ckpt"))
    assert ckpts, "no full checkpoint written"
    for ckpt in ckpts:
        assert torch.load(ckpt, map_location="cpu", weights_only=True)[CONFIG_IN_CHECKPOINT] == res["config"]


def test_a_finished_run_is_returned_as_it_is_and_a_conflicting_one_names_the_run_dir_key(tmp_path, monkeypatch):
    """(kdrl.runs.job.x_run_job__mutmut_4: a finished run trained again; 17: outside a sweep the refusal names
    hydra.sweep.dir, a key the user did not set) run_job returns a finished run's results without building it
    again; an unfinished run of another config refuses a single run naming hydra.run.dir."""
    import kdrl.runs.teacher as teacher_mod

    out = tmp_path / "run"
    # keep_last=2: the finished run keeps its last.ckpt (dropped at 1), so making it unfinished below leaves one
    cfg = compose_cfg("train", [*QUIET, "seed=4", "++env.kwargs.max_episode_steps=50", "checkpoint.keep_last=2"])
    first = teacher_mod.train_teacher(cfg, out)
    written = (out / "results.json").read_bytes()
    builds = []
    build = teacher_mod.TeacherJob.build
    monkeypatch.setattr(teacher_mod.TeacherJob, "build", lambda self, f: builds.append(1) or build(self, f))
    assert teacher_mod.train_teacher(cfg, out) == json.loads(written) and not builds
    assert (out / "results.json").read_bytes() == written and first["status"] == "ok"
    # (completed_results 6: skip_completed read under another key) skip_completed=false runs it again
    again = compose_cfg("train", [*QUIET, "seed=4", "++env.kwargs.max_episode_steps=50", "skip_completed=false"])
    assert teacher_mod.train_teacher(again, tmp_path / "again")["status"] == "ok"
    builds.clear()
    assert teacher_mod.train_teacher(again, tmp_path / "again")["status"] == "ok" and builds == [1]
    builds.clear()
    # the run made unfinished (its results say failed, its checkpoints stay), then asked for with another gamma
    res = json.loads(written)
    (out / "results.json").write_text(json.dumps({**res, "status": "failed"}))
    other = compose_cfg("train", [*QUIET, "seed=4", "++env.kwargs.max_episode_steps=50", "algo.gamma=0.9"])
    with pytest.raises(ResumeConflict, match=r"give another hydra\.run\.dir, or resume=false"):
        teacher_mod.train_teacher(other, out)
    assert not builds


def test_an_unreadable_results_file_is_said_in_one_warning_unless_quiet(tmp_path, caplog):
    """(kdrl.runs.job.x_read_results_file__mutmut_1: quiet by default, so a truncated results.json silently counts
    as an unfinished run) read_results_file warns once, naming the file and why, unless asked to be quiet."""
    from kdrl.runs.job import read_results_file

    caplog.set_level(logging.WARNING, logger="kdrl")
    truncated, listed = tmp_path / "a" / "results.json", tmp_path / "b" / "results.json"
    for path, text in ((truncated, '{"status": "ok", "kind"'), (listed, "[1, 2]")):
        path.parent.mkdir()
        path.write_text(text)
        assert read_results_file(path, quiet=True) is None
    assert caplog.records == []
    assert read_results_file(truncated) is None and read_results_file(listed) is None
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 2 and all(s.endswith("; the run counts as unfinished") for s in said)
    assert said[0] == (
        f"ignoring unreadable {truncated}: not valid JSON, truncated? (Expecting ':' delimiter: line 1 column 24 "
        "(char 23)); the run counts as unfinished"
    )
    assert said[1] == f"ignoring unreadable {listed}: a JSON list, not an object; the run counts as unfinished"
    # (9, 10: an OSError's reason lost or replaced by its repr) a results.json that cannot be read at all
    unreadable = tmp_path / "c" / "results.json"
    unreadable.mkdir(parents=True)
    assert read_results_file(unreadable) is None
    assert caplog.records[-1].getMessage() == (
        f"ignoring unreadable {unreadable}: Is a directory; the run counts as unfinished"
    )


def test_a_job_leaves_only_kdrls_own_checkpoints_in_its_run_dir(tmp_path):
    """(kdrl.runs.job.x_make_trainer__mutmut_36: Lightning's own checkpointing switched on: it writes an
    epoch=...ckpt of its own beside kdrl's, which a resume could pick up) after a teacher job the run dir's
    checkpoints are kdrl's own files only."""
    import kdrl.runs.teacher as teacher_mod

    out = tmp_path / "run"
    # keep_last=2: kdrl's full checkpoints stay after the run (at 1 a finished run drops its last.ckpt)
    cfg = compose_cfg("train", [*QUIET, "seed=4", "++env.kwargs.max_episode_steps=50", "checkpoint.keep_last=2"])
    assert teacher_mod.train_teacher(cfg, out)["status"] == "ok"
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.ckpt"))
    assert written and all(not p.split("/")[-1].startswith("epoch=") for p in written), written
    assert all(p.startswith("checkpoints/") for p in written), written
    # (53: with no logger configured, Lightning's default logger writes lightning_logs/ into the run dir)
    assert not (out / "lightning_logs").exists()


def test_a_trainer_has_no_checkpoint_callback_or_logger_of_lightnings_own(tmp_path):
    """(kdrl.runs.job.x_make_trainer__mutmut_36, 45: ``enable_checkpointing`` left to Lightning's default,
    which adds its own ModelCheckpoint: it saves ``epoch=...ckpt`` whenever an epoch ends, beside kdrl's
    checkpoints/, and a resume could be handed either) the trainer kdrl builds holds only the callbacks it
    was given, none of them a checkpoint callback, and only the loggers it was given."""
    from pytorch_lightning.callbacks import Checkpoint

    from kdrl.runs.job import make_trainer

    cfg = OmegaConf.create({"trainer": {"accelerator": "cpu", "enable_progress_bar": False}})
    trainer = make_trainer(cfg, [], [], tmp_path)
    assert trainer.checkpoint_callbacks == []
    assert not any(isinstance(c, Checkpoint) for c in trainer.callbacks), trainer.callbacks
    # (53: ``logger=True`` when none is configured, logger.csv=false with W&B disabled: Lightning's default
    # logger, which writes lightning_logs/ into the run dir)
    assert trainer.loggers == [] and trainer.logger is None


def test_every_trainer_writes_its_checkpoints_through_kdrls_file_checkpoint_io(tmp_path):
    """(kdrl.runs.job.x_with_checkpoint_io__mutmut_8: FileCheckpointIO added only beside a checkpoint IO
    already given, so a run saves through Lightning's fsspec temp file in /tmp and a full disk is reported
    for that file, not the run dir's; 6: a single plugin given, not in a list, dropped) the trainer's
    checkpoint IO is kdrl's; a checkpoint IO given is kept alone; other plugins are kept beside kdrl's."""
    from pytorch_lightning.plugins.environments import SLURMEnvironment
    from pytorch_lightning.plugins.io import TorchCheckpointIO

    from kdrl.checkpoints import FileCheckpointIO
    from kdrl.runs.job import make_trainer, with_checkpoint_io

    cfg = OmegaConf.create({"trainer": {"accelerator": "cpu", "enable_progress_bar": False}})
    assert type(make_trainer(cfg, [], [], tmp_path).strategy.checkpoint_io) is FileCheckpointIO
    assert [type(p) for p in with_checkpoint_io(None)] == [FileCheckpointIO]
    given = TorchCheckpointIO()
    assert with_checkpoint_io([given]) == [given]
    env = SLURMEnvironment(auto_requeue=False)
    for plugins in (env, [env], (env,)):
        kept = with_checkpoint_io(plugins)
        assert kept[0] is env and [type(p) for p in kept[1:]] == [FileCheckpointIO], (plugins, kept)


def test_a_completed_run_is_skipped_by_default_and_said_in_one_line(tmp_path, caplog):
    """(kdrl.runs.job.x_completed_results__mutmut_3, 5, 8: skip_completed off when the config lacks it, so a
    config built without conf/common.yaml retrains finished runs; 28-31: the skipping line without its run dir
    or its words) a finished run of the same config is returned, by default, with one line naming its dir;
    skip_completed=false returns nothing."""
    from kdrl.runs.job import completed_results, plain

    caplog.set_level(logging.INFO, logger="kdrl")
    cfg = OmegaConf.create({"seed": 3, "algo": {"gamma": 0.99}})
    res = {"status": "ok", "config": plain(cfg), "eval_return_mean": 1.5}
    (tmp_path / "results.json").write_text(json.dumps(res))
    assert completed_results(tmp_path, cfg) == res
    assert [r.getMessage() for r in caplog.records] == [
        f"skipping: {tmp_path} already holds complete results for this config"
    ]
    caplog.clear()
    off = OmegaConf.create({"seed": 3, "algo": {"gamma": 0.99}, "skip_completed": False})
    (tmp_path / "results.json").write_text(json.dumps({**res, "config": plain(off)}))
    assert completed_results(tmp_path, off) is None and not caplog.records


def test_an_unreadable_results_file_is_warned_about_once_per_job(tmp_path, caplog):
    """(kdrl.runs.job.x_resume_checkpoint__mutmut_7, 9 and unfinished_run_config's like them: a read without
    quiet=True) a job reads results.json three times before it trains (completed_results, check_resumable,
    resume_checkpoint); an unreadable one is said once, by the first."""
    from kdrl.runs.job import check_resumable, completed_results, resume_checkpoint

    caplog.set_level(logging.WARNING, logger="kdrl")
    (tmp_path / "results.json").write_text('{"status": "ok", "kind"')
    cfg = OmegaConf.create({"seed": 0, "resume": True})
    assert completed_results(tmp_path, cfg) is None
    check_resumable(cfg, tmp_path)
    assert resume_checkpoint(cfg, tmp_path) is None
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and messages[0].startswith(f"ignoring unreadable {tmp_path / 'results.json'}: "), messages


def test_an_unfinished_runs_config_is_read_without_loading_its_tensors(tmp_path, monkeypatch):
    """(kdrl.runs.job.x_unfinished_run_config__mutmut_28, 32: the checkpoint read whole, not memory-mapped:
    every resume and every refusal would first read a replay of up to GBs into memory; 30: no map_location, a
    GPU run's checkpoint loaded onto a GPU) the stamped config is read from a memory-mapped, weights-only load
    on the CPU."""
    from kdrl.runs.job import unfinished_run_config

    (tmp_path / "checkpoints").mkdir()
    stamped = {"task": "teacher", "seed": 2}
    torch.save({CONFIG_IN_CHECKPOINT: stamped, "replay": torch.zeros(8)}, tmp_path / "checkpoints" / "last.ckpt")
    calls, load = [], torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(k) or load(*a, **k))
    assert unfinished_run_config(tmp_path) == stamped
    assert calls == [{"map_location": "cpu", "weights_only": True, "mmap": True}]


def test_a_teacher_dataset_with_another_controller_is_refused_saying_why():
    """(kdrl.modules.student.xǁDistillStudentǁ__init____mutmut_12: the refusal without its message) a
    recorded teacher dataset is the teacher's play: a student that would act itself is refused, named."""
    from kdrl.modules.student import DistillStudent

    with pytest.raises(ValueError) as refused:
        DistillStudent(None, None, None, {}, {}, None, "mixed", None, dataset=object())  # type: ignore[arg-type]
    assert str(refused.value) == "a teacher dataset is the teacher's play: control must be teacher, got 'mixed'"


def test_a_students_teacher_is_frozen_and_its_soft_target_copy_defaults_to_a_hard_copy():
    """(kdrl.modules.student.xǁDistillStudentǁ__init____mutmut_43: the teacher left trainable; _67, _69: a
    hybrid student's target copy without a tau in its distill settings refused, not a hard copy) the
    teacher's parameters never require gradients, whatever the optimiser is given, and a distill block
    without tau copies the target whole (tau 1.0), as TargetNetwork's own default."""
    from hydra.utils import instantiate

    from kdrl.envs import probe_spec
    from kdrl.modules.student import DistillStudent
    from kdrl.nets import MLP
    from kdrl.optim import build_optimizer
    from kdrl.runs.job import plain
    from tests.helpers import compose_cfg

    cfg = compose_cfg("distill", ["env=cartpole", "loss=hybrid", "debug=fast"])
    distill = {k: v for k, v in plain(cfg.distill).items() if k != "tau"}
    spec = probe_spec(plain(cfg.env))
    teacher = MLP(spec.obs_shape, spec.n_actions, width=8)
    module = DistillStudent(
        MLP(spec.obs_shape, spec.n_actions, width=8), teacher, spec, plain(cfg.env), distill,
        instantiate(cfg.loss), "teacher", build_optimizer(**distill["optimizer"]),
    )  # fmt: skip
    assert module.teacher is teacher and not teacher.training
    assert not any(p.requires_grad for p in teacher.parameters())
    assert module.target.tau == 1.0 and module.target.interval == int(distill["target_update_interval"])


def test_wandb_mode_disabled_in_the_environment_starts_no_wandb_run(tmp_path, monkeypatch):
    """(kdrl.runs.job.x_build_loggers__mutmut_61, 62: WANDB_MODE read under another name) WANDB_MODE=disabled,
    W&B's own switch, turns a configured offline W&B logger off (the tests' and CI's way to run offline
    configs without W&B files)."""
    from kdrl.runs.job import build_loggers

    monkeypatch.setenv("WANDB_MODE", "disabled")
    loggers = build_loggers(OmegaConf.create({"logger": {"wandb": "offline"}}), tmp_path, "teacher")
    assert [type(x) for x in loggers] == [pl.loggers.CSVLogger]


def test_an_unknown_wandb_mode_is_refused_naming_it(tmp_path):
    """(kdrl.runs.job.x_build_loggers__mutmut_55: the refusal without its message)"""
    from kdrl.runs.job import build_loggers

    with pytest.raises(ValueError) as refused:
        build_loggers(OmegaConf.create({"logger": {"wandb": "loud"}}), tmp_path, "teacher")
    assert str(refused.value) == "logger.wandb must be offline, online or disabled, got 'loud'"


def test_an_online_wandb_run_is_logged_with_the_run_dir_as_its_save_dir(tmp_path, monkeypatch):
    """(kdrl.runs.job.x_build_loggers__mutmut_106, 108: the online run's logger without the run dir: W&B's
    logger would then save under Lightning's default dir, not the job's) the run an online W&B start
    returned is handed to Lightning's WandbLogger with the job's run dir, and nothing else is started."""
    import pytorch_lightning.loggers as pl_loggers

    import kdrl.runs.job as job

    made: list[dict] = []
    run = object()
    monkeypatch.setattr(pl_loggers, "WandbLogger", lambda **kw: made.append(kw) or "wandb-logger")
    monkeypatch.setattr(job, "_online_wandb_run", lambda out, kwargs: run)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    cfg = OmegaConf.create({
        "logger": {"csv": False, "wandb": "online"}, "wandb": {"project": "kdrl", "group": "g"},
        "env": {"id": "CartPole-v1"}, "seed": 0,
    })  # fmt: skip
    assert job.build_loggers(cfg, tmp_path, "teacher") == ["wandb-logger"]
    assert made == [{"experiment": run, "save_dir": str(tmp_path)}]


def test_a_mixed_controls_beta_schedule_is_the_one_configured_and_its_defaults_otherwise():
    """(kdrl.modules.student.xǁDistillStudentǁ__init____mutmut_86-97: distill.mixed's keys read under other
    names or other defaults) under control=mixed the teacher acts with probability beta: from
    distill.mixed's beta_start to beta_end over decay_steps env steps; a mixed block that leaves a key out
    gets 1.0 (the teacher first), 0.0 and 0 (at once)."""
    from hydra.utils import instantiate

    from kdrl.envs import probe_spec
    from kdrl.modules.student import DistillStudent
    from kdrl.nets import MLP
    from kdrl.optim import build_optimizer
    from kdrl.runs.job import plain
    from tests.helpers import compose_cfg

    cfg = compose_cfg("distill", ["env=cartpole", "loss=kl", "debug=fast"])
    spec = probe_spec(plain(cfg.env))

    def beta(mixed: dict | None) -> list[float]:
        distill = {**plain(cfg.distill), "mixed": mixed}
        module = DistillStudent(
            MLP(spec.obs_shape, spec.n_actions, width=8), MLP(spec.obs_shape, spec.n_actions, width=8), spec,
            plain(cfg.env), distill, instantiate(cfg.loss), "mixed", build_optimizer(**distill["optimizer"]),
        )  # fmt: skip
        return [module.beta(t) for t in (0, 1, 50, 100)]

    assert beta({"beta_start": 0.75, "beta_end": 0.25, "decay_steps": 100}) == [0.75, 0.745, 0.5, 0.25]
    assert beta({"beta_end": 0.25, "decay_steps": 100}) == [1.0, 0.9925, 0.625, 0.25]
    assert beta({"beta_start": 0.75, "decay_steps": 100}) == [0.75, 0.7425, 0.375, 0.0]
    assert beta({"beta_start": 0.75, "beta_end": 0.25}) == [0.75, 0.25, 0.25, 0.25]
    assert beta(None) == [1.0, 0.0, 0.0, 0.0]


def test_qdaggers_offline_rollouts_clip_rewards_as_configured_on_their_own_stream(monkeypatch):
    """(kdrl.modules.student.xǁDistillStudentǁpretrain_offline__mutmut_12, 20: the offline phase's teacher
    rollouts without the run's reward clipping; _21, 22: drawn under another purpose name; _60, 61, 68: the
    online phase's metrics and target left as the offline phase had them) QDagger's offline
    rollouts go into the replay its TD term learns from: they clip rewards as the online collector does,
    and draw from the stream named ("pretrain",) (kdrl.seeding)."""
    from hydra.utils import instantiate

    import kdrl.modules.student as student_module
    from kdrl.envs import probe_spec
    from kdrl.nets import MLP
    from kdrl.optim import build_optimizer
    from kdrl.runs.job import plain
    from tests.helpers import compose_cfg

    calls: list[tuple] = []
    real = student_module.collect_rollouts
    monkeypatch.setattr(student_module, "collect_rollouts", lambda *a, **kw: calls.append(a) or real(*a, **kw))
    for clip in (True, False):
        cfg = compose_cfg("distill", [
            "experiment=qdagger", "distill.pretrain.teacher_steps=64", "distill.pretrain.updates=8",
            f"algo.reward_clip={str(clip).lower()}", "distill.batch_size=16",
            "distill.target_update_interval=100000",  # no sync in the phase: the hand-over's is the only one
        ])  # fmt: skip
        distill = plain(cfg.distill)
        spec = probe_spec(plain(cfg.env))
        module = student_module.DistillStudent(
            MLP(spec.obs_shape, spec.n_actions, width=8), MLP(spec.obs_shape, spec.n_actions, width=8), spec,
            plain(cfg.env), distill, instantiate(cfg.loss), "student", build_optimizer(**distill["optimizer"]),
            seed=5,
        )  # fmt: skip
        module.setup("fit")
        opt = module.configure_optimizers()
        module.optimizers = lambda use_pl_optimizer=True, opt=opt: opt  # driven without a Trainer
        module.pretrain_offline()
        *_, seed, key, reward_clip = calls[-1]
        assert (seed, key, reward_clip) == (5, ("pretrain",), clip)
        assert module.pretrain_report["teacher_steps"] >= 64 and module.pretrain_report["updates"] == 8
        # (_60, 61, 68) the online phase starts with clean metric sums and a target that is a hard copy of the
        # pretrained net, its schedule from the start
        assert module._count == 0 and module._sums == {}
        pairs = zip(module.target.net.parameters(), module.q_net.parameters(), strict=True)
        assert all(torch.equal(t, q) for t, q in pairs)
        assert module.target.next_update == module.target.interval


def test_a_multitask_students_periodic_evaluation_plays_with_eval_epsilon_as_its_teachers_reference(
    tmp_path, monkeypatch
):
    """(kdrl.runs.multitask.xǁMultiTaskJobǁbuild__mutmut_64: the periodic evaluation built without
    eval.epsilon: the student played greedily against teachers' references played with it, the wiring bug
    of issue 29) each task's periodic % of its teacher compares the two on the same terms."""
    import kdrl.runs.multitask as mt
    from tests.test_multitask import linear_teacher

    cp = linear_teacher(tmp_path / "cartpole.pt", "CartPole-v1", 4, 2, [0, 0, 1, 0.3], pos=1, neg=0)
    ac = linear_teacher(tmp_path / "acrobot.pt", "Acrobot-v1", 6, 3, [0, 0, 0, 0, 0, 1], pos=2, neg=0)
    cfg = compose_cfg("multitask", [
        "debug=fast", "student.width=8", "eval.episodes=2", "eval.epsilon=0.2",
        f"teacher.checkpoints={{cartpole:{cp},acrobot:{ac}}}",
    ])  # fmt: skip
    job = mt.MultiTaskJob(cfg, tmp_path / "run", choices={"debug": "fast"})
    _, evaluation = job.build({})
    assert evaluation.epsilon == 0.2
    # (_67, 71, 72: the tasks' envs without their kwargs) each task is played on its own env, as its teacher
    # was: no kwargs is {}, and a task env's kwargs (a TimeLimit here) are passed on
    assert [(e.name, e.env_id, e.kwargs) for e in evaluation.tasks] == [
        ("cartpole", "CartPole-v1", {}), ("acrobot", "Acrobot-v1", {}),
    ]  # fmt: skip
    real = mt.task_env
    monkeypatch.setattr(mt, "task_env", lambda *a: {**real(*a), "kwargs": {"max_episode_steps": 77}})
    _, evaluation = mt.MultiTaskJob(cfg, tmp_path / "run2", choices={"debug": "fast"}).build({})
    assert [e.kwargs for e in evaluation.tasks] == [{"max_episode_steps": 77}] * 2


# ---- shards H1-H7 (2026-12-06, evening): the room's last 1,199 mutants, function by function ------------------------
def test_pruning_reports_and_logs_its_amount_step_and_the_nonzero_weights_before_and_after():
    """(kdrl.modules.components.xǁMagnitudePruningǁapply__mutmut_13, 14, 18, 19, 21, 22: a report key renamed; 25: the
    report not logged) what results.json's ``prune`` block and the ``prune/*`` curves say: the amount, the env step
    it was applied at and the non-zero parameters of the net before and after."""
    from kdrl.prune import nonzero_params

    logged: list[dict] = []
    torch.manual_seed(0)
    net = MLP((4,), 2, hidden=[8])
    dense = nonzero_params(net)
    student = SimpleNamespace(q_net=net, env_steps=300, log_env_metrics=logged.append)
    pruning = MagnitudePruning(Pruning(0.5, 0.25))
    pruning.apply(student)
    after = nonzero_params(net)
    assert after < dense
    assert pruning.report == {
        "amount": 0.5,
        "at_env_step": 300.0,
        "nonzero_before": float(dense),
        "nonzero_after": float(after),
    }
    assert logged == [
        {"prune/amount": 0.5, "prune/at_env_step": 300.0, "prune/nonzero_before": dense, "prune/nonzero_after": after}
    ]


def test_int8_training_starts_at_its_point_and_reports_and_logs_the_env_step():
    """(kdrl.modules.components.xǁInt8Trainingǁbefore_updates__mutmut_1: ``or``, quantised at the first item;
    apply__mutmut_4, 5: the report's key renamed; 7, 8, 9: the ``quantize/at_env_step`` curve not logged or renamed)"""
    from kdrl.quantize import is_int8_representable

    logged: list[dict] = []
    torch.manual_seed(0)
    student = SimpleNamespace(
        q_net=MLP((4,), 2, hidden=[8]), env_steps=499, data=SimpleNamespace(total_timesteps=1000),
        log_env_metrics=logged.append,
    )  # fmt: skip
    int8 = Int8Training(Quantization(True, 0.5))
    int8.before_updates(student)  # one step before its point: still float
    assert not int8.applied and int8.report is None and logged == []
    assert not is_int8_representable(student.q_net)
    student.env_steps = 500
    int8.before_updates(student)
    assert int8.applied and is_int8_representable(student.q_net)
    assert int8.report == {"at_env_step": 500.0}
    assert logged == [{"quantize/at_env_step": 500.0}]


def test_int8_masters_of_weights_pruned_after_quantisation_are_zeroed_with_them():
    """(kdrl.modules.components.xǁInt8Trainingǁafter_optimizer_step__mutmut_3, 5, 6: the pruner's masks not passed)
    with ``distill.quantize.at`` before ``distill.prune.at``, the float masters were taken from the dense net:
    after the pruning point the masters of the pruned weights are zero too, as the student's hooks leave them
    (pruning's, then int8's, after every optimiser step), so no rounding can bring a pruned weight back."""
    torch.manual_seed(0)
    student = SimpleNamespace(
        q_net=MLP((4,), 2, hidden=[8]), env_steps=0, data=SimpleNamespace(total_timesteps=1000),
        log_env_metrics=lambda m: None, device=torch.device("cpu"),
    )  # fmt: skip
    pruning = MagnitudePruning(Pruning(0.5, 0.5))
    int8 = Int8Training(Quantization(True, 0.25), pruning)
    for env_steps in (250, 500):  # int8 first, then the pruning point
        student.env_steps = env_steps
        for component in (pruning, int8):
            component.before_updates(student)
    assert int8.applied and pruning.applied
    with torch.no_grad():  # an optimiser step moves every weight, pruned ones too
        for p in student.q_net.parameters():
            p.add_(0.01 * torch.randn_like(p))
    for component in (pruning, int8):
        component.after_optimizer_step(student)
    params = dict(student.q_net.named_parameters())
    for name, mask in pruning.masks.items():
        assert torch.count_nonzero(int8.qat.master[name][~mask]) == 0
        assert torch.count_nonzero(params[name][~mask]) == 0


def test_a_multitask_jobs_summary_line_gives_each_task_and_the_means():
    """(kdrl.runs.multitask.xǁMultiTaskJobǁsummary__mutmut_1, 3: the per-task part dropped or joined otherwise; 26, 27:
    the size as a share of the teachers miscomputed) the line a multi-task job logs when it ends."""
    job = mt.MultiTaskJob(compose_cfg("multitask", QUIET), Path("."), choices={})

    def task(ret: float, teacher: float, pct: float) -> dict:
        return {"eval_return_mean": ret, "teacher_reference": {"return_mean": teacher}, "pct_of_teacher": pct}

    fields = {
        "mode": "distill", "method": "kl (tau=0.01)", "seed": 3,
        "tasks": {"cartpole": task(400.0, 500.0, 80.0), "acrobot": task(-90.0, -80.0, 95.5)},
        "mean_pct_of_teacher": 87.75, "geomean_pct_of_teacher": 87.4, "params": 1234, "param_ratio": 0.25,
    }  # fmt: skip
    assert job.summary(fields) == (
        "multitask distill kl (tau=0.01) seed 3: cartpole 400.0 vs 500.0 (80.0%), acrobot -90.0 vs -80.0 (95.5%); "
        "mean 87.8%, geomean 87.4% of teacher (1234 params = 25.0% of teachers)"
    )


def test_a_multitask_job_keeps_the_debug_choice_it_was_given():
    """(kdrl.runs.multitask.xǁMultiTaskJobǁ__init____mutmut_7: the given choices ignored for Hydra's, {} outside an
    app) the teachers a multi-task job trains on demand are composed with its debug preset."""
    cfg = compose_cfg("multitask", QUIET)
    assert mt.MultiTaskJob(cfg, Path("."), choices={"debug": "fast", "env": "x"}).choices == {"debug": "fast"}
    assert mt.MultiTaskJob(cfg, Path("."), choices={}).choices == {"debug": None}


def test_a_compression_point_is_due_only_with_a_budget_and_at_its_env_step():
    """(kdrl.modules.components.x__due__mutmut_1: ``or``, a module without data settings crashes; 3: ``>``, one step
    late; 4: ``at / total``, due at once) and (xǁQuantizationǁ__post_init____mutmut_3: ``at = 0`` refused) int8
    from the first step is a valid config, as pruning at 0 is."""
    from kdrl.modules.components import _due

    budget = SimpleNamespace(total_timesteps=1000)
    assert not _due(SimpleNamespace(data=None, env_steps=10**6), 0.5)
    assert [_due(SimpleNamespace(data=budget, env_steps=n), 0.25) for n in (0, 249, 250, 251)] == [0, 0, 1, 1]
    assert _due(SimpleNamespace(data=budget, env_steps=0), 0.0)
    assert Quantization(True, 0.0).at == 0.0 and Pruning(0.5, 0.0).at == 0.0
    for at in (-0.01, 1.0):
        with pytest.raises(ValueError, match="distill.quantize.at must be in"):
            Quantization(True, at)


def test_a_scratch_baseline_is_a_dqn_on_the_students_net_with_the_teachers_settings_fitted_to_its_budget(tmp_path):
    """(kdrl.runs.distill.x_build_student_module__mutmut_3: ``"SCRATCH"``, the baseline distilled instead) the
    scratch baseline learns from its own TD loss, with no teacher in its module, on the budget of the students."""
    from kdrl.modules.dqn import DQN
    from kdrl.modules.student import DistillStudent
    from kdrl.runs.distill import fitted_to_budget

    job, module, _ = _student_job(tmp_path, ["baseline=scratch", "student.width=16"])
    assert type(module) is DQN and not isinstance(module, DistillStudent)
    fitted = fitted_to_budget(plain(job.cfg.algo), int(job.cfg.distill.total_timesteps))
    assert module.data.total_timesteps == job.cfg.distill.total_timesteps == fitted["total_timesteps"]
    assert module.data.learning_starts == fitted["learning_starts"]
    assert module.td.gamma == job.cfg.algo.gamma and module.params == 386
    _, student, _ = _student_job(tmp_path / "kd", ["student.width=16"])
    assert isinstance(student, DistillStudent)


def test_a_multitask_task_given_its_teacher_needs_no_cached_one(tmp_path):
    """(kdrl.runs.multitask.x_missing_teachers__mutmut_41: ``or``, 43: the given checkpoints looked up under None)
    only the tasks without a ``teacher.checkpoints`` entry and without a cached teacher are trained on demand."""
    cache = tmp_path / "cache"  # empty
    cfg = compose_cfg(
        "multitask", [*QUIET, f"teacher.cache_dir={cache}", f"+teacher.checkpoints.cartpole={tmp_path / 't.pt'}"]
    )
    job = mt.MultiTaskJob(cfg, tmp_path / "run", choices={"debug": "fast"})
    assert list(cfg.tasks) == ["cartpole", "acrobot"] and mt.missing_teachers(job) == ["acrobot"]


def test_a_multitask_task_whose_teacher_is_cached_at_the_teacher_seed_is_not_missing(tmp_path):
    """(kdrl.runs.multitask.x_missing_teachers__mutmut_51: the cache looked up without the teacher's seed) a
    teacher cached at ``teacher.seed`` is found; one cached at another seed is not the one the job needs."""
    from kdrl.teachers import cache_entry, teacher_config, teacher_overrides

    cache = tmp_path / "cache"
    cfg = compose_cfg("multitask", [*QUIET, f"teacher.cache_dir={cache}", "teacher.seed=3"])
    job = mt.MultiTaskJob(cfg, tmp_path / "run", choices={"debug": "fast"})
    for seed in (3, 4):
        entry = cache_entry(
            teacher_config(("cartpole", "acrobot")[seed - 3], seed, teacher_overrides(cfg, job.choices)), cache
        )
        entry.mkdir(parents=True)
        (entry / "results.json").write_text(json.dumps({"status": "ok"}))
        (entry / "teacher.pt").write_bytes(b"")
    assert mt.missing_teachers(job) == ["acrobot"]


def test_a_student_module_takes_the_jobs_seed_and_log_interval(tmp_path):
    """(kdrl.runs.distill.x_build_student_module__mutmut_44, 45: ``seed`` or ``log_interval`` not passed, the defaults
    0 and 250 used) the student's streams are seeded from the job's seed and it logs at the job's interval."""
    job, module, _ = _student_job(tmp_path, ["seed=5", "log_interval=7"])
    assert (module.seed, module.log_interval) == (5, 7) == (job.cfg.seed, job.cfg.log_interval)


def test_a_distill_job_plans_its_teacher_with_the_choices_it_was_given(tmp_path, monkeypatch):
    """(kdrl.runs.distill.x_distill_student__mutmut_4: the given choices replaced by Hydra's, {} outside an app) the
    on-demand teacher a student job plans is composed with the job's recipe and debug preset."""
    from kdrl.runs import distill

    seen: list = []
    monkeypatch.setattr(distill, "missing_teacher", lambda job: seen.append(job.choices))
    monkeypatch.setattr(distill, "run_job", lambda job: {"choices": job.choices})
    choices = {"debug": "fast", "recipe": "minatar_fast"}
    assert distill.distill_student(compose_cfg("distill", QUIET), tmp_path, choices) == {"choices": choices}
    assert seen == [choices]


def test_an_unknown_multitask_update_rule_is_refused_with_the_known_ones():
    """(kdrl.modules.multitask.xǁMultiTaskModuleǁ__init____mutmut_8: the known rules joined otherwise)"""
    from kdrl.modules.multitask import MultiTaskModule

    net = MultiTaskQNetwork([(4,)], [2], width=4, depth=1)
    with pytest.raises(ValueError) as exc:
        MultiTaskModule(net, [], {}, lambda ps: torch.optim.SGD(ps, lr=0.1), lambda t: 0.0, update="mean")
    assert str(exc.value) == "unknown update 'mean' (expected one of interleave, sum)"


def test_the_offline_phase_runs_at_fit_start_once_and_only_for_a_student_that_has_one(tmp_path, monkeypatch):
    """(kdrl.modules.student.xǁDistillStudentǁon_fit_start__mutmut_1: ``or``, a student without an offline phase
    runs one; 2: ``is not None``, a fresh QDagger student skips its phase and a resumed one repeats it)"""
    offline = ["experiment=qdagger", "distill.pretrain.teacher_steps=200", "distill.pretrain.updates=64"]
    runs: list[str] = []
    for name, overrides in (("qdagger", offline), ("plain", [])):
        _, module, _ = _student_job(tmp_path / name, overrides)
        monkeypatch.setattr(module, "pretrain_offline", lambda name=name: runs.append(name))
        module.on_fit_start()
        assert runs == ["qdagger"]  # a fresh QDagger student runs its phase; a plain one has none
        if name == "qdagger":
            module.pretrain_report = {"updates": 64}  # resumed after its phase
            module.on_fit_start()
            assert runs == ["qdagger"]  # not again


def test_a_multitask_update_round_takes_each_tasks_minibatches_while_it_has_them():
    """(kdrl.modules.multitask.xǁMultiTaskModuleǁlearn__mutmut_9: ``<=``; 10: the minibatch size for their number)
    tasks whose stream items hold different numbers of minibatches: round k updates the tasks that have a k-th."""
    from kdrl.modules.multitask import MultiTaskModule

    def stack(k: int, tag: float) -> Transitions:
        t = torch.full((k, 3, 1), tag)
        return Transitions(t, t.long().squeeze(-1), t.squeeze(-1), t, t.squeeze(-1))

    rounds: list[list[tuple[int, float]]] = []
    module = SimpleNamespace(run_round=lambda opt, due: rounds.append([(i, float(b.obs[0, 0])) for i, b in due]))
    MultiTaskModule.learn(module, None, [stack(2, 1.0), stack(1, 2.0), stack(3, 3.0)])
    assert rounds == [[(0, 1.0), (1, 2.0), (2, 3.0)], [(0, 1.0), (2, 3.0)], [(2, 3.0)]]


def test_a_student_on_a_teacher_dataset_streams_that_dataset_with_its_own_seed(tmp_path):
    """(kdrl.modules.student.xǁDistillStudentǁbuild_stream__mutmut_3-6, 9-11: the dataset, spec or data settings
    dropped; 8, 12: the student's seed not passed) a student given ``distill.dataset`` learns from the recorded
    transitions, sampled from its replay with its own seed: the batches a stream built by hand with that seed gives."""
    from kdrl.datasets import DatasetCollector, dataset_stream
    from kdrl.runs.distill import build_student_module

    job, module, _ = _student_job(tmp_path, ["seed=5"])
    env = {"id": "CartPole-v1", "num_envs": int(job.cfg.env.num_envs), "kwargs": None, "vectorization": "sync"}
    teacher = module.teacher
    data = record_dataset(
        env, CARTPOLE, teacher, 1200, 0.05, 3, lambda o: greedy_actions(teacher, o, torch.device("cpu"))
    )
    student = build_student_module(job.cfg, CARTPOLE, teacher, job.net_cfg, dataset=data)
    stream = student.build_stream()
    assert isinstance(stream.collector, DatasetCollector) and stream.collector.data is data
    first = next(iter(stream))
    assert stream.collector.env_steps >= student.data.learning_starts
    for seed, same in ((5, True), (6, False)):
        other = next(iter(dataset_stream(data, CARTPOLE, student.data, seed)))
        assert torch.equal(first.obs, other.obs) is same


def test_each_task_of_a_multitask_module_streams_on_its_own_seeds():
    """(kdrl.modules.multitask.xǁMultiTaskModuleǁbuild_stream__mutmut_16: no task key, every task on the run's one
    stream; 18, 19: the key renamed, other seeds than the ("task", i) streams kdrl.seeding documents) task i's envs
    are reset and its exploration drawn on the streams ("task", i, ...) of the run's seed."""
    from kdrl.seeding import generator, seed_ints

    module = _joint_dqn(("a", "b"))
    collectors = module.build_stream().collector.collectors
    for i, c in enumerate(collectors):
        assert c.rng.bit_generator.state == generator(module.seed, "task", i, "collector").bit_generator.state
        first, _ = make_vector_env("CartPole-v1", 1, module.seed).reset(seed=seed_ints(module.seed, "task", i, "envs"))
        np.testing.assert_array_equal(c.obs, first)
    assert not np.array_equal(collectors[0].obs, collectors[1].obs)


def test_a_dqn_module_takes_the_jobs_seed_and_log_interval():
    """(kdrl.runs.teacher.x_build_dqn__mutmut_21: ``log_interval`` not passed, 250 used) a teacher logs its training
    metrics at the job's interval."""
    from kdrl.runs.teacher import build_teacher

    module, _ = build_teacher(compose_cfg("train", [*QUIET, "seed=5", "log_interval=7"]))
    assert (module.seed, module.log_interval) == (5, 7)


def test_a_multitask_student_given_a_teacher_per_task_too_few_or_many_is_refused_in_one_line():
    """(kdrl.modules.multitask.xǁMultiTaskDistillǁ__init____mutmut_23: the message dropped)"""
    from kdrl.data import TaskEnv
    from kdrl.modules.multitask import MultiTaskDistill
    from kdrl.nets import build_multitask_net

    cfg = compose_cfg("multitask", QUIET)
    tasks = [TaskEnv("cartpole", CARTPOLE, {"id": "CartPole-v1", "num_envs": 1})]
    net = build_multitask_net({"width": 8, "depth": 1}, [CARTPOLE])
    teachers = [_cartpole_balancer(), _cartpole_balancer()]
    with pytest.raises(ValueError) as exc:
        MultiTaskDistill(
            net, teachers, tasks, plain(cfg.multitask), instantiate(cfg.loss), plain(cfg.distill.exploration),
            torch.optim.SGD,
        )  # fmt: skip
    assert str(exc.value) == "need one teacher per task, got 2 for 1 tasks"


def test_a_sweeps_index_is_written_in_its_sweep_dir_when_the_multirun_ends(tmp_path):
    """(kdrl.runs.sweep.xǁSweepIndexǁon_multirun_end__mutmut_1-4: the sweep dir lost, read as "None" or not passed on;
    "no tests": only the multirun subprocess tests call it) Hydra's end-of-multirun hook writes index.csv in the
    sweep dir; a sweep dir that was never made is left alone."""
    from kdrl.runs.sweep import SweepIndex

    (tmp_path / "0" / ".hydra").mkdir(parents=True)
    (tmp_path / "0" / ".hydra" / "overrides.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(["seed=3"])))
    (tmp_path / "0" / "results.json").write_text(json.dumps({"status": "ok"}))
    SweepIndex().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}}))
    rows = list(csv.reader((tmp_path / "index.csv").read_text().splitlines()))
    assert rows == [["job", "status", "overrides"], ["0", "ok", "seed=3"]]
    SweepIndex().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / "never")}}}))
    assert not (tmp_path / "never").exists()


def test_the_env_step_bar_is_made_again_once_enabled_and_ends_on_the_last_step(monkeypatch):
    """(kdrl.callbacks.xǁEnvStepProgressBarǁenable__mutmut_1, 2: enable() leaves the bar off; on_train_end__mutmut_1:
    ``is None``, 2: the module not read, 3: the bar kept as ""; "no tests": the jobs' trainers run with the bar off)
    Lightning's enable() after a disable() brings the bar back; at the end of training it shows the last env step,
    is closed and dropped."""
    monkeypatch.setenv("KDRL_NO_PROGRESS", "0")  # a live bar (the suite turns them off)
    module = _module_view(700)
    module.stream = SimpleNamespace(total_timesteps=1000)
    trainer = SimpleNamespace(is_global_zero=True)
    pb = EnvStepProgressBar()
    pb.disable()
    pb.on_train_start(trainer, module)
    assert pb.bar is None
    pb.enable()
    pb.on_train_start(trainer, module)
    assert (pb.bar.total, pb.bar.n) == (1000, 700)
    assert pb.bar.smoothing == 0.1  # (on_train_start__mutmut_8, 15, 20) the SPS shown follows the recent speed
    bar = pb.bar
    module.env_steps = 1000
    pb.on_train_end(trainer, module)
    assert (bar.n, bar.postfix) == (1000, "sps=10, eps=0.050")
    assert pb.bar is None and bar.disable  # closed (tqdm's close disables the bar)


def test_a_multitask_evaluation_is_greedy_by_default_tells_its_listeners_and_times_the_run_from_its_start(
    monkeypatch,
):
    """(kdrl.callbacks.xǁMultiTaskEvaluationǁ__init____mutmut_1: ε = 1 by default; 13: the listeners not passed on;
    measure__mutmut_26: ``perf_counter() + t_start``, 66-69) without ``epsilon`` each head plays greedily; the listeners it
    is given are told of each evaluation; ``wall_s`` is the time since the run started (a controlled clock) and
    ``train_wall_s`` that less the evaluations' time."""
    import kdrl.callbacks as callbacks
    from kdrl.callbacks import EvalTask, MultiTaskEvaluation

    clock = [10.0]
    monkeypatch.setattr(callbacks, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    played: list[float] = []

    def evaluate(greedy, env_id, seeds, kwargs=None, epsilon=0.0, **rest):
        played.append(epsilon)
        clock[0] += 1.0  # each task's episodes take a second
        return [50.0]

    monkeypatch.setattr(callbacks, "evaluate_policy", evaluate)
    listener = object()
    tasks = [EvalTask("a", "CartPole-v1", {}), EvalTask("b", "CartPole-v1", {})]
    ev = MultiTaskEvaluation(tasks, 100, 1, 0, None, None, [100.0, 100.0], [0.0, 0.0], listeners=[listener])
    assert ev.listeners == [listener]
    clock[0] = 15.0
    module = _Evaluated(600, 9, task_env_steps=300)
    module.greedy_fn = lambda i: None
    result = ev.measure(module)
    assert played == [0.0, 0.0]
    assert (result.record["wall_s"], result.record["train_wall_s"]) == (7.0, 5.0)  # started at 10, measured 15-17
    assert result.metrics == {  # (measure__mutmut_66-69: the mean and geometric mean curves renamed)
        "eval/a/return_mean": 50.0, "eval/b/return_mean": 50.0,
        "eval/a/pct_of_teacher": 50.0, "eval/b/pct_of_teacher": 50.0,
        "eval/mean_pct_of_teacher": 50.0, "eval/geomean_pct_of_teacher": pytest.approx(50.0),
    }  # fmt: skip


def test_a_multirun_jobs_sweep_name_is_its_sweep_dirs_name_and_a_single_runs_is_none(monkeypatch):
    """(kdrl.runs.job.x_sweep_name__mutmut_1: Hydra's config not read, every job ungrouped) in a multirun the W&B
    group of a job is its sweep directory's name; a single run, or code outside a Hydra app, has none."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from kdrl.runs.job import sweep_name

    assert sweep_name() is None  # no Hydra app
    for mode, expected in ((RunMode.MULTIRUN, "2026-12-06_study"), (RunMode.RUN, None)):
        hydra = SimpleNamespace(sweep=SimpleNamespace(dir="multirun/2026-12-06_study"), mode=mode)
        monkeypatch.setattr(HydraConfig, "get", staticmethod(lambda hydra=hydra: hydra))
        assert sweep_name() == expected


def test_a_fresh_evaluation_adds_no_time_before_a_resume_and_a_resumed_one_the_recorded_wall_time():
    """(kdrl.callbacks.xǁPeriodicEvaluationǁ__init____mutmut_23: 1 s before a fresh run) the job adds
    ``resumed_wall_s`` to the fit time it reports (kdrl.runs.job): 0 for a fresh run, the last record's wall time
    for a resumed one."""
    from kdrl.callbacks import GreedyEvaluation

    ev = GreedyEvaluation("CartPole-v1", None, 100, 1, 0, None, None)
    assert ev.resumed_wall_s == 0.0
    state = {"next_eval": 200, "history": [{"env_steps": 100, "wall_s": 42.5}], "eval_time_s": 3.0}
    files = SimpleNamespace(load_state_dict=lambda state: None)  # policy files and checkpoint: nothing of their own
    resumed = GreedyEvaluation("CartPole-v1", None, 100, 1, 0, files, files)
    resumed.load_state_dict(state)
    assert resumed.resumed_wall_s == 42.5


def test_non_finite_weights_stop_the_run_saying_where_and_that_the_last_good_checkpoint_is_kept():
    """(kdrl.callbacks.xǁPeriodicEvaluationǁcheck_finite__mutmut_4, 5: the message dropped or changed) the metrics
    are flushed first (a non-finite loss is named there); weights that are not finite stop the run in one line."""
    from kdrl.callbacks import GreedyEvaluation
    from kdrl.modules.base import NonFiniteLossError

    net = nn.Linear(2, 2)
    flushed: list[int] = []
    module = SimpleNamespace(q_net=net, env_steps=1234, flush_metrics=lambda: flushed.append(1))
    ev = GreedyEvaluation("CartPole-v1", None, 100, 1, 0, None, None)
    ev.check_finite(module)  # finite: nothing
    with torch.no_grad():
        net.weight[0, 1] = float("nan")
    with pytest.raises(NonFiniteLossError) as exc:
        ev.check_finite(module)
    assert str(exc.value) == (
        "non-finite network parameters at env step 1234; stopped, the last good checkpoint is kept"
    )
    assert flushed == [1, 1]


def test_a_greedy_evaluation_without_epsilon_plays_greedily(monkeypatch):
    """(kdrl.callbacks.xǁGreedyEvaluationǁ__init____mutmut_1: ε = 1 by default) the docstring's "greedy returns":
    constructed without ``epsilon`` it plays at ε = 0; the jobs pass ``eval.epsilon``."""
    import kdrl.callbacks as callbacks
    from kdrl.callbacks import GreedyEvaluation

    played: list[float] = []
    monkeypatch.setattr(
        callbacks, "evaluate_policy", lambda g, env_id, seeds, kwargs, epsilon=0.0: played.append(epsilon) or [1.0]
    )
    module = _Evaluated(100, 1)
    GreedyEvaluation("CartPole-v1", None, 100, 1, 0, None, None).measure(module)
    GreedyEvaluation("CartPole-v1", None, 100, 1, 0, None, None, epsilon=0.05).measure(module)
    assert played == [0.0, 0.05]


def test_a_jobs_hydra_choices_are_the_running_apps_and_none_outside_an_app(monkeypatch):
    """(kdrl.runs.job.x_hydra_choices__mutmut_1: the choices not read, {} in every app) the config-group choices a job
    plans its on-demand teachers with are those of the running Hydra app; outside an app there are none."""
    from hydra.core.hydra_config import HydraConfig

    from kdrl.runs.job import hydra_choices

    assert hydra_choices() == {}
    choices = {"env": "cartpole", "debug": "fast", "recipe": None}
    monkeypatch.setattr(
        HydraConfig, "get", staticmethod(lambda: SimpleNamespace(runtime=SimpleNamespace(choices=choices)))
    )
    assert hydra_choices() == choices


def test_every_results_file_starts_by_naming_the_jobs_run_dir(tmp_path):
    """(kdrl.runs.job.xǁJobǁfields__mutmut_19: run_dir written as "None") what results.json says before anything ran:
    the job's kind, status 'failed' until it ends ok, env, seed, the run dir it writes in (kdrl-table and the launchers
    find a run's files from it) and no resume yet."""
    from kdrl.runs.teacher import TeacherJob

    cfg = compose_cfg("train", [*QUIET, "seed=4"])
    fields = TeacherJob(cfg, tmp_path / "seed=4").fields()
    assert fields == {
        "kind": "teacher",
        "status": "failed",
        "env_id": "CartPole-v1",
        "seed": 4,
        "run_dir": str(tmp_path / "seed=4"),
        "resumed_from_env_steps": None,
    }


def test_a_fresh_modules_first_speed_counts_every_env_step_since_it_was_made(monkeypatch):
    """(kdrl.modules.base.xǁRLModuleǁ__init____mutmut_25: ``_env_steps_last = 1``, the first train/sps one env step
    short) a fresh module's first flush measures its speed from env step 0 and from the moment it was made."""
    import kdrl.modules.base as base

    clock = [20.0]
    monkeypatch.setattr(base.time, "perf_counter", lambda: clock[0])
    logged: list[dict] = []
    m = _rl_module()
    m.collector = SimpleNamespace(epsilon=0.1, episodes=0, env_steps=64, drain_finished=lambda: [])
    m.stream = SimpleNamespace(grad_steps=0)
    m.log_env_metrics = logged.append
    clock[0] = 22.0
    m.flush_metrics()
    assert logged[0]["train/sps"] == 32.0  # 64 env steps in 2 s


def test_a_refused_config_is_reported_as_refused_even_when_its_fields_cannot_be_read():
    """(kdrl.runs.job.x_validate_job__mutmut_1: ``suppress(None)``, a TypeError in place of the refusal) a config that
    validation refuses is reported with the refusal, and with as much of results.json's fields as can be read; when
    even those cannot be read, still with the refusal."""
    from kdrl.runs.job import Job, validate_job

    class Refused(Job):
        kind = "teacher"

        def __init__(self, readable: bool) -> None:
            self.readable = readable

        def validate(self) -> None:
            raise ConfigError("algo.gamma must be in [0, 1], got 2")

        def fields(self) -> dict:
            if not self.readable:
                raise KeyError("env")
            return {"kind": "teacher", "seed": 3}

    for readable, expected in (
        (True, {"status": "failed", "kind": "teacher", "seed": 3}),
        (False, {"status": "failed"}),
    ):
        fields = {"status": "failed"}
        with pytest.raises(ConfigError, match=r"^algo\.gamma must be in \[0, 1\], got 2$"):
            validate_job(Refused(readable), fields)
        assert fields == expected


def test_a_lightning_step_of_a_fresh_module_lasts_at_most_a_tenth_of_a_second(monkeypatch):
    """(kdrl.modules.base.xǁRLModuleǁ__init____mutmut_31: ``step_seconds = 1.1``) Lightning's step is where a stop, a signal
    (SLURM's requeue) and the progress bar are handled: a module's step ends within 0.1 s of starting, so they are
    handled a few times a second (on a clock that moves 0.05 s a reading: two items, then the step ends)."""
    _ticking_clock(monkeypatch, 0.05)
    m, learned = _stepping_module(100, 0.0, [])
    m.step_seconds = _rl_module().step_seconds  # a fresh module's
    m.training_step(None)  # deadline 0.0 + 0.1: items read at 0.05 and 0.1
    assert learned == [1, 2]


def test_a_sweep_index_lists_every_job_whatever_the_sweep_dir_holds_first_and_a_status_less_result_as_unknown(
    tmp_path, monkeypatch
):
    """(kdrl.runs.sweep.x_write_sweep_index__mutmut_10: ``break`` at the first entry that is not a job, dropping
    every job listed after it; 13, 15, 22, 23: a results.json without a status written as empty or misspelt; 40: jobs
    of one name length in status order) Hydra's multirun.yaml, or
    a launcher's own dir, may come first in the sweep dir's listing."""
    import kdrl.runs.sweep as sweep

    (tmp_path / "multirun.yaml").write_text("hydra: {}\n")
    (tmp_path / ".submitit").mkdir()
    for job in ("0", "1"):
        (tmp_path / job / ".hydra").mkdir(parents=True)
        (tmp_path / job / ".hydra" / "overrides.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create([f"seed={job}"])))
    (tmp_path / "0" / "results.json").write_text(json.dumps({"kind": "teacher"}))
    listed = sorted(tmp_path.iterdir(), key=lambda p: p.name[0].isdigit())  # the entries that are not jobs first
    iterdir = Path.iterdir
    monkeypatch.setattr(sweep.Path, "iterdir", lambda self: iter(listed) if self == tmp_path else iterdir(self))
    rows = list(csv.reader(write_sweep_index(tmp_path).read_text().splitlines()))
    # in job order, not status order (x_write_sweep_index__mutmut_40)
    assert rows == [["job", "status", "overrides"], ["0", "unknown", "seed=0"], ["1", "missing", "seed=1"]]


def test_a_shared_study_without_a_direction_is_created_to_minimise(tmp_path):
    """(kdrl.runs.sweep.xǁSharedStudyǁon_multirun_start__mutmut_28, 30, 33, 34: the default direction lost or
    misspelt, so a sweeper config without ``direction`` failed to create its study) Optuna's sweeper minimises by
    default, and so does the study kdrl creates for it."""
    import optuna

    from kdrl.runs.sweep import SharedStudy

    storage = f"sqlite:///{tmp_path / 'search.db'}"
    SharedStudy().on_multirun_start(OmegaConf.create({"hydra": {"sweeper": {"storage": storage, "study_name": "s"}}}))
    assert optuna.load_study(study_name="s", storage=storage).direction == optuna.study.StudyDirection.MINIMIZE


def test_a_modules_stream_and_envs_are_built_once_however_often_setup_is_called():
    """(kdrl.modules.base.xǁRLModuleǁsetup__mutmut_5: the stream built again at every call) a resumed run calls
    ``setup`` from ``on_load_checkpoint`` and Lightning calls it again: the stream (and its envs) is built once, so no
    second set of envs is opened and the restored stream is the one trained on."""
    built: list[SimpleNamespace] = []
    m = _rl_module()

    def build_stream() -> SimpleNamespace:
        built.append(SimpleNamespace(collector=object()))
        return built[-1]

    m.build_stream = build_stream
    m.setup("fit")
    m.setup("fit")
    assert len(built) == 1 and m.stream is built[0] and m.collector is built[0].collector


def test_a_resume_conflicts_values_are_shown_whole_up_to_40_characters_and_cut_to_40_past_that():
    """(kdrl.runs.job.x__short__mutmut_6: ``<= 41``) each differing value of a resume conflict's message is its repr
    up to 40 characters; a longer one is cut to 37 and "...", so no line of the message runs past its width."""
    from kdrl.runs.job import _short

    assert _short("x" * 38) == "'" + "x" * 38 + "'"  # 40 characters
    assert _short("x" * 39) == "'" + "x" * 36 + "..."  # 41 would be too many
    assert len(_short(list(range(100)))) == 40


def test_plain_backward_only_when_the_precision_plugin_neither_scales_nor_changes_the_backward():
    """(kdrl.modules.base.xǁRLModuleǁ_plain_backward__mutmut_7-22: the scaler, the backward or the pre-backward check
    dropped, negated or joined by ``or``) a plugin with a loss scaler (fp16 on a GPU), or one that overrides
    ``backward`` or ``pre_backward``, sends the update through ``manual_backward``; Lightning's plain precision does
    not. (This CPU's 16-mixed has no scaler: the plugins here are made by hand.)"""
    from pytorch_lightning.plugins.precision import Precision

    class OwnBackward(Precision):
        def backward(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            return super().backward(*args, **kwargs)

    class OwnPreBackward(Precision):
        def pre_backward(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            return super().pre_backward(*args, **kwargs)

    scaled = Precision()
    scaled.scaler = object()
    for plugin, plain_backward in (
        (Precision(), True), (scaled, False), (OwnBackward(), False), (OwnPreBackward(), False),
    ):  # fmt: skip
        m = _rl_module()
        m._trainer = SimpleNamespace(precision_plugin=plugin)
        assert m._plain_backward() is plain_backward, type(plugin).__name__
