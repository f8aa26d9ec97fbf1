"""QDagger as published (issue 14): teacher rollouts fill the replay, the student pre-trains offline
on them, is scored at env step 0, then learns online; kickstarting is the same without the offline
phase."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdrl.collector import collect_rollouts, greedy_actions
from kdrl.replay import ReplayBuffer
from kdrl.runs.distill import distill_student
from kdrl.teachers import load_teacher_net
from kdrl.validate import ConfigError, validate_distill
from tests.helpers import compose_cfg
from tests.test_distill import _overrides


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


OFFLINE = ["distill.pretrain.teacher_steps=600", "distill.pretrain.updates=300", "student.width=16"]


def test_qdagger_pretrains_offline_then_learns_online_on_its_own_budget(tmp_path, cache):
    # no early stop: the pretrained student can already score 500 at env step 0 (2 episodes)
    cfg = compose_cfg("distill", _overrides(cache, ["experiment=qdagger", *OFFLINE, "eval.stop_at_return=null"]))
    assert cfg.loss.name == "qdagger" and cfg.control == "student"
    res = distill_student(cfg, tmp_path)
    assert res["status"] == "ok"
    pre = res["pretrain"]
    assert pre["teacher_steps"] == 600 and pre["updates"] == 300 and pre["wall_s"] > 0
    # the teacher's env steps are not the student's: its own budget is spent in full, from 0
    assert res["env_steps"] == cfg.distill.total_timesteps
    history = res["eval_history"]
    assert history[0]["env_steps"] == 0 and history[0]["grad_steps"] == 0  # the pretrained student, scored
    assert [h["env_steps"] // 100 for h in history[1:]] == [6, 12]  # at the first round at or after each 600


def test_every_update_offline_and_online_steps_the_raw_torch_optimiser(tmp_path, cache, monkeypatch):
    """(kdrl.modules.student.xǁDistillStudentǁpretrain_offline__mutmut_25: ``use_pl_optimizer=True``)
    Under a Trainer, the offline phase steps the torch optimiser as the online loop does (RLModule.sgd_step):
    Lightning's wrapper would run its hooks and closure on every update (~30% of a small update) and count
    the offline updates in the Trainer's global_step, which the online phase never advances."""
    from pytorch_lightning.core.optimizer import LightningOptimizer

    from kdrl.modules.base import RLModule
    from kdrl.modules.student import DistillStudent

    wrapped: dict[str, list[bool]] = {"offline": [], "online": []}
    sgd_step = RLModule.sgd_step

    def spy(self, opt, loss):
        if isinstance(self, DistillStudent):  # (not the on-demand teacher's DQN)
            phase = "offline" if self._offline_start is not None else "online"
            wrapped[phase].append(isinstance(opt, LightningOptimizer))
        return sgd_step(self, opt, loss)

    monkeypatch.setattr(RLModule, "sgd_step", spy)
    cfg = compose_cfg("distill", _overrides(cache, ["experiment=qdagger", *OFFLINE, "eval.stop_at_return=null"]))
    res = distill_student(cfg, tmp_path)
    assert res["status"] == "ok" and res["pretrain"]["updates"] == 300
    assert wrapped["offline"] == [False] * 300
    assert len(wrapped["online"]) == res["grad_steps"] > 0 and not any(wrapped["online"])


def test_kickstart_is_qdagger_without_the_offline_phase(tmp_path, cache):
    cfg = compose_cfg("distill", _overrides(cache, ["experiment=kickstart", "student.width=16"]))
    res = distill_student(cfg, tmp_path)
    assert res["status"] == "ok" and res["loss"] == "qdagger" and res["pretrain"] is None
    assert res["eval_history"][0]["env_steps"] > 0


def test_teacher_rollouts_are_the_teachers_actions_in_their_own_envs(tmp_path, cache):
    """With epsilon 0 every stored action is the teacher's greedy action on the stored state."""
    cfg = compose_cfg("distill", _overrides(cache, ["experiment=qdagger", *OFFLINE]))
    distill_student(cfg, tmp_path)
    from kdrl.runs.teacher import obtain_teacher
    from kdrl.teachers import env_choice, teacher_overrides

    path, _ = obtain_teacher(env_choice("CartPole-v1"), 0, teacher_overrides(cfg, {}, "cartpole"), cache)
    teacher, _ = load_teacher_net(path, "CartPole-v1", (4,), 2)
    buffer = ReplayBuffer(1000, (4,), n_step=3, num_envs=int(cfg.env.num_envs))
    greedy = lambda obs: greedy_actions(teacher, obs, torch.device("cpu"))  # noqa: E731
    env = {"id": "CartPole-v1", "num_envs": int(cfg.env.num_envs)}
    steps = collect_rollouts(env, buffer, greedy, 0.0, 400, seed=5, key=("pretrain",))
    assert steps >= 400 and len(buffer) == steps
    obs, actions = buffer.obs[: len(buffer)], buffer.actions[: len(buffer)]
    assert torch.equal(actions, torch.as_tensor(greedy(obs.numpy())))
    # the newest rows end their streams: the student's own rows will not be chained to them
    newest = (buffer.pos - 1 - np.arange(buffer.num_envs)) % buffer.capacity
    assert buffer.dones[newest].all()


def test_offline_phase_without_teacher_data_is_refused_in_one_line():
    cfg = compose_cfg("distill", ["experiment=qdagger", "distill.pretrain.teacher_steps=0"])
    with pytest.raises(ConfigError, match="teacher_steps > 0"):
        validate_distill(cfg)
    cfg = compose_cfg(
        "distill", ["baseline=scratch", "distill.pretrain.teacher_steps=10", "distill.pretrain.updates=5"]
    )
    with pytest.raises(ConfigError, match="scratch"):
        validate_distill(cfg)


@pytest.mark.parametrize("interval", [64, 16])
def test_offline_phase_syncs_the_target_on_the_configured_period(interval):
    """One target sync per ``target_update_interval * gradient_steps / train_freq`` offline updates,
    the online ratio (CartPole: 64 env steps = 32 updates), not one per 256-update sampling chunk.
    As online, a round of ``gradient_steps`` updates stands for ``train_freq`` env steps and the sync
    comes at the first update of the round that reaches the period."""
    from hydra.utils import instantiate

    from kdrl.envs import probe_spec
    from kdrl.modules.student import DistillStudent
    from kdrl.nets import MLP
    from kdrl.optim import build_optimizer
    from kdrl.runs.job import plain

    updates = 1024
    cfg = compose_cfg(
        "distill",
        [
            "experiment=qdagger",
            "distill.pretrain.teacher_steps=300",
            f"distill.pretrain.updates={updates}",
            f"distill.target_update_interval={interval}",
            "distill.batch_size=32",
        ],
    )
    distill = plain(cfg.distill)
    assert (distill["train_freq"], distill["gradient_steps"]) == (16, 8)  # the CartPole recipe: 2 env steps an update
    spec = probe_spec(plain(cfg.env))
    torch.manual_seed(0)
    module = DistillStudent(
        MLP(spec.obs_shape, spec.n_actions, width=8),
        MLP(spec.obs_shape, spec.n_actions, width=8),
        spec,
        plain(cfg.env),
        distill,
        instantiate(cfg.loss),
        "student",
        build_optimizer(**distill["optimizer"]),
    )
    module.setup("fit")
    opt = module.configure_optimizers()
    module.optimizers = lambda use_pl_optimizer=True: opt  # driven without a Trainer
    syncs_at: list[int] = []
    sync = module.target.maybe_update
    module.target.maybe_update = lambda net, progress: (
        sync(net, progress) and not syncs_at.append(module.optimizer_steps)
    )
    module.pretrain_offline()
    rounds = interval // 16  # rounds of 8 updates per target period
    assert module.pretrain_report["updates"] == updates
    syncs = module.target.updates
    assert syncs == updates // (8 * rounds)  # 32 (interval 64) / 128 (interval 16); was 4 either way
    assert syncs_at == [(r - 1) * 8 + 1 for r in range(rounds, updates // 8 + 1, rounds)]
    # the online phase then starts its own schedule at env step 0
    assert module.target.next_update == interval and module.target_progress() == module.env_steps == 0
