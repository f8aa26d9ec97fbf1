import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from kdrl.evaluation import evaluate_policy
from kdrl.io import CheckpointError, load_policy
from kdrl.runs.teacher import build_teacher, train_teacher
from tests.helpers import compose_cfg
from tests.zygote import run_app


def test_target_sync_happens_every_interval_env_steps():
    cfg = compose_cfg(
        "train",
        [
            "logger=none",
            "env.num_envs=3",
            "algo.learning_starts=64",
            "algo.batch_size=16",
            "algo.target_update_interval=100",
            "algo.total_timesteps=1000",
            "algo.train_freq=4",
        ],
    )
    module, _ = build_teacher(cfg)
    module.setup("fit")
    opt = module.configure_optimizers()
    synced_at = []
    original = module.target.maybe_update

    def spy(online, progress) -> bool:  # check the target right after each sync, inside a round of updates
        synced = original(online, progress)
        if synced:
            synced_at.append(module.env_steps)
            for p, q in zip(module.target.parameters(), module.q_net.parameters()):
                assert torch.equal(p, q)
        return synced

    module.target.maybe_update = spy
    for stacked in module.stream:
        module.run_updates(opt, stacked)
    # one sync per crossed multiple of 100, at the first gradient step at or after it (3 env steps per vector step)
    assert len(synced_at) == len(set(s // 100 for s in synced_at))
    assert [s // 100 for s in synced_at] == list(range(1, len(synced_at) + 1)) and len(synced_at) >= 9
    assert all(s % 100 < 3 + 4 for s in synced_at)
    # and between syncs the target does not move
    assert module.stream.grad_steps > 100


def test_short_cartpole_training_beats_random(tmp_path):
    random_returns = evaluate_policy(
        lambda obs: np.random.default_rng(0).integers(2, size=len(obs)),
        "CartPole-v1",
        list(range(2_000_000, 2_000_020)),
    )
    cfg = compose_cfg(
        "train",
        [
            "logger=none",
            "trainer.enable_progress_bar=false",
            "seed=3",
            "algo.total_timesteps=12000",
            "eval.freq=4000",
            "eval.episodes=5",
        ],
    )
    res = train_teacher(cfg, tmp_path)
    assert res["status"] == "ok"
    assert res["eval_return_mean"] > 5 * np.mean(random_returns)  # random policy ~22
    assert res["env_steps"] <= 12000 and res["grad_steps"] > 1000


def test_cli_writes_results_contract_and_safe_checkpoint(tmp_path):
    out = tmp_path / "run"
    proc = run_app("train", ["debug=fast", "seed=1", f"hydra.run.dir={out}"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads((out / "results.json").read_text())
    for key in (
        "kind",
        "status",
        "env_id",
        "seed",
        "params",
        "env_steps",
        "grad_steps",
        "wall_time_s",
        "sps",
        "eval_return_mean",
        "eval_return_std",
        "eval_returns",
        "checkpoint",
        "config",
        "git_sha",
        "versions",
    ):
        assert key in res, key
    assert res["kind"] == "teacher" and res["status"] == "ok" and res["seed"] == 1
    assert res["env_steps"] == 3000 and len(res["eval_returns"]) == 3
    assert res["params"] == 67_586 and res["config"]["algo"]["total_timesteps"] == 3000
    assert (out / "csv" / "metrics.csv").exists() and (out / "checkpoints" / "best_policy.pt").exists()
    # finished, so never resumed: the resume checkpoint (the whole trainer state, replay included) is gone
    assert not (out / "checkpoints" / "last.ckpt").exists() and not (out / "checkpoints" / "prev.ckpt").exists()
    state = load_policy(res["checkpoint"], "CartPole-v1", (4,), 2)
    assert set(state["state_dict"]) >= {"q_head.weight", "q_head.bias"}
    with pytest.raises(CheckpointError, match="trained on 'CartPole-v1', not 'Acrobot-v1'"):
        load_policy(res["checkpoint"], "Acrobot-v1")
    with pytest.raises(CheckpointError, match="shape"):
        load_policy(res["checkpoint"], obs_shape=(6,))


def test_rerun_in_the_same_dir_skips_a_completed_job(tmp_path):
    cfg = compose_cfg("train", ["debug=fast", "algo.total_timesteps=1000", "eval.freq=1000"])
    first = train_teacher(cfg, tmp_path)
    mtime = (tmp_path / "results.json").stat().st_mtime_ns
    again = train_teacher(cfg, tmp_path)
    assert again["eval_returns"] == first["eval_returns"]
    assert (tmp_path / "results.json").stat().st_mtime_ns == mtime  # not rewritten
    changed = compose_cfg("train", ["debug=fast", "algo.total_timesteps=1200", "eval.freq=1000"])
    assert train_teacher(changed, tmp_path)["env_steps"] == 1200  # another config reruns


def test_keeps_the_last_k_checkpoints(tmp_path):
    cfg = compose_cfg("train", ["debug=fast", "algo.total_timesteps=3000", "eval.freq=500", "checkpoint.keep_last=3"])
    train_teacher(cfg, tmp_path)
    numbered = sorted((tmp_path / "checkpoints").glob("step-*.ckpt"))
    assert len(numbered) == 2 and (tmp_path / "checkpoints" / "last.ckpt").exists()
    assert numbered[-1].name == "step-0000003000.ckpt"


def test_a_run_starts_without_lightnings_srun_hint_or_the_leafspec_warning(tmp_path):
    """issue: every run printed, above its progress bar, Lightning's "The `srun` command is available
    on your system but is not used" (on any machine with SLURM's client tools: a fake srun on PATH
    here) and torch's LeafSpec deprecation from pytorch_lightning/utilities/_pytree.py. Run without
    PYTHONWARNINGS=ignore (which `make test` sets), as a user runs it."""
    import os

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "srun").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS" and not k.startswith("SLURM_")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    proc = subprocess.run(  # a fresh interpreter, not tests/zygote.py: import-time warnings are the subject
        [sys.executable, "-m", "kdrl.cli.train", "debug=fast", "algo.total_timesteps=1000", "eval.freq=500",
         "eval.reference_episodes=3", "logger=none", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    said = proc.stdout + proc.stderr
    assert proc.returncode == 0, said[-3000:]
    assert "`srun` command is available" not in said and "LeafSpec" not in said, said[-3000:]
