"""kill -9 mid-training, re-run the same command with the same output dir: it resumes."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def test_teacher_killed_mid_training_resumes_from_last_checkpoint(tmp_path):
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "kdrl.cli.train",
        "debug=fast",
        "seed=2",
        "algo.total_timesteps=6000",
        "eval.freq=1000",
        f"hydra.run.dir={out}",
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    killed_at, deadline = -1, time.time() + 240
    while proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
        try:
            killed_at = torch.load(out / "checkpoints" / "last_policy.pt", weights_only=True)["extra"]["env_steps"]
        except Exception:
            continue
        if killed_at >= 2000:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            break
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (out / "results.json").exists()  # a killed run leaves no results that look complete
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resuming from" in again.stdout + again.stderr
    res = json.loads((out / "results.json").read_text())
    assert res["status"] == "ok" and res["env_steps"] == 6000
    assert 1000 <= res["resumed_from_env_steps"] <= killed_at
    steps = [h["env_steps"] for h in res["eval_history"]]
    assert steps == sorted(steps) and steps[0] <= res["resumed_from_env_steps"] < steps[-1]  # history kept
    assert not list(out.rglob("*.tmp"))


def test_resume_removes_temp_files_of_writes_a_kill_interrupted(tmp_path):
    """SIGKILL during atomic_write leaves `.name.XXXX.tmp`; the resuming run deletes it (and nothing else)."""
    from omegaconf import OmegaConf

    from kdrl.runs.job import resume_checkpoint

    ckpt_dir = tmp_path / "checkpoints"
    ckpt_dir.mkdir()
    torch.save({"global_step": 1}, ckpt_dir / "last.ckpt")  # whole (a damaged one is set aside: test_corrupt_files)
    (ckpt_dir / ".last.ckpt.k2j3h4.tmp").write_bytes(b"half")
    (tmp_path / ".results.json.a1b2.tmp").write_text("{")
    (tmp_path / "keep.tmp").write_text("not ours")
    assert resume_checkpoint(OmegaConf.create({"resume": True}), tmp_path) == str(ckpt_dir / "last.ckpt")
    assert sorted(p.name for p in tmp_path.rglob("*.tmp")) == ["keep.tmp"]
