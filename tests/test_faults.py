"""Numerical faults and env crashes: clear errors, failed results, last good checkpoint kept."""

import json

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.envs.classic_control.cartpole import CartPoleEnv

from kdrl.collector import EnvStepError
from kdrl.io import load_policy
from kdrl.modules.base import NonFiniteLossError
from kdrl.runs.teacher import train_teacher
from tests.helpers import compose_cfg


class NanRewardAfter(CartPoleEnv):
    """CartPole whose rewards turn NaN after ``after`` steps in total (a numerical fault)."""

    calls = 0

    def __init__(self, after: int = 1500, **kw):
        super().__init__(**kw)
        self.after = after

    def step(self, action):
        obs, r, term, trunc, info = super().step(action)
        NanRewardAfter.calls += 1
        return obs, (float("nan") if NanRewardAfter.calls > self.after else r), term, trunc, info


class RaisesAfter(CartPoleEnv):
    def __init__(self, after: int = 50, **kw):
        super().__init__(**kw)
        self.after, self.t = after, 0

    def step(self, action):
        self.t += 1
        if self.t > self.after:
            raise RuntimeError("simulator lost connection")
        return super().step(action)


gym.register("NanRewardCartPole-v0", entry_point=NanRewardAfter, max_episode_steps=500)
gym.register("RaisingCartPole-v0", entry_point=RaisesAfter, max_episode_steps=500)


def test_non_finite_loss_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(tmp_path):
    NanRewardAfter.calls = 0
    cfg = compose_cfg(
        "train",
        [
            "debug=fast",
            "env.id=NanRewardCartPole-v0",
            "env.num_envs=1",
            "log_interval=10",
            "eval.freq=1000",
            "algo.total_timesteps=3000",
            "algo.learning_starts=200",
        ],
    )
    with pytest.raises(NonFiniteLossError, match="non-finite td_loss.* at env step"):
        train_teacher(cfg, tmp_path)
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["status"] == "failed" and "NonFiniteLossError" in res["error"]
    good = load_policy(tmp_path / "checkpoints" / "last_policy.pt")
    assert 1000 <= good["extra"]["env_steps"] < 1500  # the evaluation before the fault
    assert all(torch.isfinite(v).all() for v in good["state_dict"].values())
    assert (tmp_path / "checkpoints" / "last.ckpt").exists()


def test_env_that_raises_mid_episode_is_reported_with_id_and_step(tmp_path):
    cfg = compose_cfg("train", ["debug=fast", "env.id=RaisingCartPole-v0", "env.num_envs=1"])
    with pytest.raises(
        EnvStepError, match=r"env 'RaisingCartPole-v0' raised at env step \d+: .*simulator lost connection"
    ):
        train_teacher(cfg, tmp_path)
    assert json.loads((tmp_path / "results.json").read_text())["status"] == "failed"


def test_online_wandb_unreachable_goes_on_offline_and_says_so_once(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("WANDB_INIT_TIMEOUT", "10")
    cfg = compose_cfg("train", ["debug=fast", "logger.wandb=online", "algo.total_timesteps=1000", "eval.freq=1000"])
    with caplog.at_level("WARNING", logger="kdrl"):
        res = train_teacher(cfg, tmp_path)
    assert res["status"] == "ok"
    warnings = [r for r in caplog.records if "W&B online" in r.getMessage()]
    assert len(warnings) == 1 and "offline" in warnings[0].getMessage()
    assert list((tmp_path / "wandb").glob("offline-run-*"))


def test_same_config_and_seed_is_deterministic_across_processes(tmp_path):
    import subprocess
    import sys

    runs = []
    for i in range(2):
        out = tmp_path / f"r{i}"
        proc = subprocess.run(
            [sys.executable, "-m", "kdrl.cli.train", "debug=fast", "env.num_envs=3", "seed=7", f"hydra.run.dir={out}"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        res = json.loads((out / "results.json").read_text())
        metrics = (out / "csv" / "metrics.csv").read_text().splitlines()
        header = metrics[0].split(",")
        cols = [header.index(c) for c in ("train/td_loss", "train/q_mean", "eval/return_mean")]
        runs.append((res["eval_returns"], [tuple(line.split(",")[c] for c in cols) for line in metrics[1:]]))
    assert runs[0] == runs[1]
    assert any(row[0] for row in runs[0][1])  # the losses were logged (and equal)
    assert np.isfinite(runs[0][0]).all()
