"""Teachers from other tools (issue 15): real SB3 zips made by SB3, CleanRL-format state dicts saved
as CleanRL saves them, TorchScript modules; each rebuilt teacher must compute the same Q-values as
the original, and distil."""

from __future__ import annotations

import json
import shutil

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

from kdrl.foreign import detect_format
from kdrl.io import CheckpointError
from kdrl.runs.distill import distill_student
from kdrl.teachers import load_teacher_net, mismatch_warning
from tests.helpers import compose_cfg
from tests.test_distill import FAST_STUDENT
from tests.zygote import run_app

sb3 = pytest.importorskip("stable_baselines3")


@pytest.fixture(scope="module")
def sb3_cartpole(tmp_path_factory):
    """A real SB3 DQN (MlpPolicy, RL-Zoo-like net) trained briefly and saved by SB3."""
    path = tmp_path_factory.mktemp("sb3") / "dqn_cartpole.zip"
    model = sb3.DQN(
        "MlpPolicy", "CartPole-v1", learning_starts=200, buffer_size=5000, seed=0, policy_kwargs={"net_arch": [64, 64]}
    )
    model.learn(1500)
    model.save(path)
    return path, model


def test_sb3_mlp_teacher_is_rebuilt_with_identical_q_values(sb3_cartpole):
    path, model = sb3_cartpole
    assert detect_format(path) == "sb3"
    net, state = load_teacher_net(path, "CartPole-v1", (4,), 2)
    assert state["format"] == "sb3" and state["net"]["hidden"] == [64, 64]
    obs = torch.as_tensor(np.random.default_rng(0).normal(size=(64, 4)), dtype=torch.float32)
    with torch.no_grad():
        assert torch.allclose(net(obs), model.q_net(obs), atol=1e-6)


def test_sb3_cnn_teacher_on_the_real_atari_pipeline(tmp_path):
    """SB3's Atari stack (AtariWrapper, VecFrameStack(4), VecTransposeImage) and CnnPolicy: kdrl's
    Nature ConvNet with /255 inside gives SB3's Q-values on SB3's own observations."""
    import ale_py
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.vec_env import VecFrameStack, VecTransposeImage

    gym.register_envs(ale_py)
    env = VecTransposeImage(VecFrameStack(make_atari_env("ALE/Pong-v5", n_envs=1, seed=0), n_stack=4))
    model = sb3.DQN("CnnPolicy", env, buffer_size=200, learning_starts=10_000, seed=0)
    model.learn(64)
    model.save(tmp_path / "pong.zip")
    obs = env.reset()
    for _ in range(30):
        obs, *_ = env.step(np.array([env.action_space.sample()]))
    env.close()
    net, state = load_teacher_net(tmp_path / "pong.zip", "ALE/Pong-v5", (4, 84, 84), 6)
    assert state["net"]["_target_"] == "kdrl.nets.ConvNet" and state["net"]["obs_scale"] == pytest.approx(1 / 255)
    with torch.no_grad():
        ours = net(torch.as_tensor(obs))
        theirs = model.q_net(model.policy.obs_to_tensor(obs)[0])
    assert torch.allclose(ours, theirs, atol=1e-5)


class CleanRLQNetwork(nn.Module):
    """CleanRL dqn.py's QNetwork, as it writes it."""

    def __init__(self, obs_dim: int, n_actions: int) -> None:
        super().__init__()
        self.network = nn.Sequential(
            nn.Linear(obs_dim, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, n_actions)
        )

    def forward(self, x):
        return self.network(x)


class CleanRLAtariQNetwork(nn.Module):
    """CleanRL dqn_atari.py's QNetwork, as it writes it."""

    def __init__(self, n_actions: int) -> None:
        super().__init__()
        self.network = nn.Sequential(
            nn.Conv2d(4, 32, 8, stride=4),
            nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2),
            nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(3136, 512),
            nn.ReLU(),
            nn.Linear(512, n_actions),
        )

    def forward(self, x):
        return self.network(x / 255.0)


@pytest.mark.parametrize("atari", [False, True])
def test_cleanrl_teacher_is_rebuilt_with_identical_q_values(tmp_path, atari):
    torch.manual_seed(0)
    q = CleanRLAtariQNetwork(6) if atari else CleanRLQNetwork(4, 2)
    path = tmp_path / "dqn.cleanrl_model"
    torch.save(q.state_dict(), path)  # CleanRL: torch.save(q_network.state_dict(), model_path)
    assert detect_format(path) == "cleanrl"
    env_id, shape, n = ("ALE/Pong-v5", (4, 84, 84), 6) if atari else ("CartPole-v1", (4,), 2)
    net, state = load_teacher_net(path, env_id, shape, n)
    obs = torch.randint(0, 256, (8, *shape), dtype=torch.uint8) if atari else torch.randn(8, 4)
    with torch.no_grad():
        assert torch.allclose(net(obs), q(obs.float()), atol=1e-5)
    assert state["net"]["hidden"] == ([512] if atari else [120, 84])


def test_torchscript_teacher_distils_and_a_cartpole_mismatch_is_one_line(tmp_path, sb3_cartpole):
    _, model = sb3_cartpole
    scripted = torch.jit.script(model.q_net.q_net)  # obs -> Q-values
    path = tmp_path / "teacher.ts"
    scripted.save(str(path))
    assert detect_format(path) == "torchscript"
    net, state = load_teacher_net(path, "CartPole-v1", (4,), 2, trust_code=True)
    assert state["format"] == "torchscript" and state["net"] is None
    trusted = [*FAST_STUDENT, f"teacher.checkpoint={path}", "student.width=16", "teacher.trust_code=true"]
    res = distill_student(compose_cfg("distill", trusted), tmp_path / "run")
    assert res["status"] == "ok" and res["teacher_format"] == "torchscript" and res["width"] == 16
    with pytest.raises(CheckpointError, match="cannot take observations of shape"):
        load_teacher_net(path, "Acrobot-v1", (6,), 3, trust_code=True)
    with pytest.raises(CheckpointError, match="takes observations of shape"):
        load_teacher_net(sb3_cartpole[0], "Acrobot-v1", (6,), 3)


def test_hub_folder_loads_and_a_teacher_far_below_its_report_is_flagged(tmp_path, sb3_cartpole):
    """An RL Zoo / Hugging Face hub-style folder: the model zip, results.json (mean_reward), config."""
    path, _ = sb3_cartpole
    folder = tmp_path / "dqn-CartPole-v1"
    folder.mkdir()
    shutil.copy(path, folder / "dqn-CartPole-v1.zip")
    (folder / "results.json").write_text(json.dumps({"mean_reward": 500.0, "std_reward": 0.0}))
    (folder / "config.yml").write_text("!!python/object/apply:collections.OrderedDict\n- - - policy\n    - MlpPolicy\n")
    net, state = load_teacher_net(folder, "CartPole-v1", (4,), 2)
    assert state["format"] == "sb3" and state["reported_return"] == 500.0
    cfg = compose_cfg("distill", [*FAST_STUDENT, f"teacher.checkpoint={folder}", "student.width=16"])
    res = distill_student(cfg, tmp_path / "run")
    teacher = res["teacher_periodic_return"]
    assert teacher < 250  # 1,500 SB3 steps: far from the 500 the folder claims
    assert res["teacher_warning"] and "far below the 500.0" in res["teacher_warning"]


def test_mismatch_warning_rules():
    assert mismatch_warning("sb3", 480.0, 20.0, 500.0) is None
    assert "far below" in mismatch_warning("sb3", 100.0, 20.0, 500.0)
    assert "no better than a random" in mismatch_warning("cleanrl", -21.0, -20.5, None)
    assert mismatch_warning("cleanrl", 15.0, -20.5, None) is None
    # negative returns: measured as gain over random, never as a ratio
    assert mismatch_warning("sb3", -90.0, -500.0, -80.0) is None and "far below" in mismatch_warning(
        "sb3", -400.0, -500.0, -80.0
    )


def test_unknown_files_are_named_in_one_line(tmp_path):
    bad = tmp_path / "model.zip"
    bad.write_bytes(b"not a zip at all")
    with pytest.raises(CheckpointError, match="cannot load checkpoint .* as a kdrl, SB3, CleanRL or TorchScript"):
        detect_format(bad)
    empty = tmp_path / "run"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="exactly one SB3 model"):
        detect_format(empty)


def test_a_torchscript_teacher_runs_its_code_only_with_the_opt_in(tmp_path):
    """issue: a TorchScript file is a program, and loading a teacher must not run code from the file
    by default. Without teacher.trust_code=true it is refused in one line saying why and how; with it,
    it loads."""
    import os

    from kdrl.foreign import UntrustedCodeError

    class Marks(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.q = torch.nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.q(x)

    scripted = torch.jit.script(Marks())
    path = tmp_path / "teacher.ts"
    scripted.save(str(path))
    with pytest.raises(UntrustedCodeError) as err:
        load_teacher_net(path, "CartPole-v1", (4,), 2)
    msg = str(err.value)
    assert "runs code from the file" in msg and "teacher.trust_code=true" in msg, msg
    net, state = load_teacher_net(path, "CartPole-v1", (4,), 2, trust_code=True)
    assert state["format"] == "torchscript"
    # the CLI, as a user runs it: one line, exit 2, nothing trained, the teacher cache key unchanged
    env = {k: v for k, v in os.environ.items() if k != "KDRL_DEBUG"}
    proc = run_app(
        "distill", ["debug=fast", f"teacher.checkpoint={path}", f"hydra.run.dir={tmp_path / 'run'}"], env=env
    )
    said = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "Traceback" not in said, said[-3000:]
    lines = [line for line in said.splitlines() if "kdrl-distill: error:" in line]
    assert len(lines) == 1 and "TorchScript teacher" in lines[0] and "teacher.trust_code=true" in lines[0], said
    assert json.loads((tmp_path / "run" / "results.json").read_text())["status"] == "failed"


def test_trust_code_leaves_the_teacher_cache_key_alone():
    """teacher.trust_code is a permission: the on-demand teacher a job asks for is the same entry."""
    from kdrl.runs.distill import teacher_request
    from kdrl.teachers import cache_entry, teacher_config

    def entry(*extra: str):
        request = teacher_request(compose_cfg("distill", ["debug=fast", *extra]), {"env": "cartpole"})
        return cache_entry(teacher_config(request.env, request.seed, list(request.overrides)), "c")

    assert entry("teacher.trust_code=true") == entry() == entry("teacher.trust_code=false")
