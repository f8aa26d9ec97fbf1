"""kill -9 mid-training, re-run the same command with the same output dir: it resumes."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from tests.helpers import kill_after_checkpoint

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
    killed_at = kill_after_checkpoint(proc, out, 2000)
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


def _killed_teacher(out: Path, *overrides: str) -> list[str]:
    """Start a CartPole teacher in ``out``, SIGKILL it once it has written a full checkpoint; the command."""
    cmd = [sys.executable, "-m", "kdrl.cli.train", "debug=fast", "algo.total_timesteps=20000", "eval.freq=500"]
    cmd += [*overrides, f"hydra.run.dir={out}"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    while proc.poll() is None and time.time() < deadline and not (out / "checkpoints" / "last.ckpt").exists():
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    return cmd


def test_resuming_another_configs_unfinished_run_is_refused_and_leaves_its_files(tmp_path):
    """issue: a CartPole teacher killed mid-run, rerun in the same run dir with net.width=32, ended in
    Lightning's "size mismatch for q_net.body.1.weight", naming neither cause nor way out, and touched
    the old run's files (.hydra/, the log, results.json)."""
    out = tmp_path / "run"
    _killed_teacher(out)
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(out.rglob("*")) if p.is_file()}
    again = subprocess.run(
        [sys.executable, "-m", "kdrl.cli.train", "debug=fast", "algo.total_timesteps=20000", "eval.freq=500",
         "net.width=32", "eval.episodes=3", "logger=none", f"hydra.run.dir={out}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    said = again.stdout + again.stderr
    assert again.returncode != 0 and "Traceback" not in said, said[-3000:]
    lines = [line for line in said.splitlines() if "unfinished run of another config" in line]
    assert len(lines) == 1, said[-3000:]
    assert "net.width: 256 -> 32" in lines[0] and "eval.episodes: 2 -> 3" in lines[0]
    assert "logger" not in lines[0]  # how a run reports is not a difference
    assert "hydra.run.dir" in lines[0] and "resume=false" in lines[0]
    after = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(out.rglob("*")) if p.is_file()}
    assert after == before  # not one file written, touched or added


def test_a_resume_free_key_does_not_block_resuming(tmp_path):
    """How a run executes or reports (logger, threads, progress bar, ...) may change on a resume."""
    from omegaconf import OmegaConf

    from kdrl.runs.job import CONFIG_IN_CHECKPOINT, check_resumable, config_differences

    old = {"task": "teacher", "seed": 0, "net": {"width": 256}, "logger": {"csv": True}, "torch_threads": 1}
    new = {**old, "logger": {"csv": False, "wandb": "disabled"}, "torch_threads": 4, "budget": "gpu"}
    assert config_differences(old, new) == []  # a teacher never reads `budget` (its algo.total_timesteps does)
    assert [k for k, _, _ in config_differences({**old, "task": "distill"}, {**new, "task": "distill"})] == ["budget"]
    (tmp_path / "checkpoints").mkdir()
    torch.save({CONFIG_IN_CHECKPOINT: old}, tmp_path / "checkpoints" / "last.ckpt")
    check_resumable(OmegaConf.create(new), tmp_path)  # no error
    check_resumable({**new, "net": {"width": 32}, "resume": False}, tmp_path)  # resume=false: starts afresh
