"""The shared on-demand teacher under faults: its trainer killed while others wait for it, and cache
entries with corrupt files. The next job trains it cleanly and nobody hangs or reads a broken file."""

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from kdrl.io import load_policy
from kdrl.runs.teacher import obtain_teacher

ROOT = Path(__file__).resolve().parents[1]
TINY = ["debug=fast", "algo.learning_starts=200", "eval.episodes=2", "eval.final_episodes=2"]


def test_killed_teacher_trainer_is_taken_over_by_the_job_waiting_for_it(tmp_path):
    overrides = [*TINY, "algo.total_timesteps=1200", "eval.freq=300"]
    code = textwrap.dedent(f"""
        import logging, sys
        logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(name)s %(message)s")
        from kdrl.runs.teacher import obtain_teacher
        path, res = obtain_teacher("cartpole", 7, {overrides!r}, {str(tmp_path)!r})
        print("TEACHER", path, res["status"], res["env_steps"], res["resumed_from_env_steps"])
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    procs = [  # two jobs of a sweep ask for the same teacher at once: one trains it, one waits
        subprocess.Popen(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        for _ in range(2)
    ]
    try:
        deadline, holder, killed_at = time.time() + 120, None, -1
        while time.time() < deadline and all(p.poll() is None for p in procs):
            time.sleep(0.05)
            try:
                (lock,) = (tmp_path / "teachers").glob("*.lock")
                pid = json.loads(lock.read_text())["pid"]
                entry = lock.with_suffix("")
                killed_at = torch.load(entry / "checkpoints" / "last_policy.pt", weights_only=True)["extra"]
                killed_at = killed_at["env_steps"]
            except (OSError, ValueError, KeyError, RuntimeError):
                continue
            if (
                killed_at >= 500 and (entry / "checkpoints" / "last.ckpt").is_file()
            ):  # mid-training, a checkpoint behind
                holder = next(p for p in procs if p.pid == pid)
                os.killpg(holder.pid, signal.SIGKILL)
                holder.wait()
                break
        assert holder is not None, "the teacher finished (or never started) before it could be killed"
        (waiter,) = (p for p in procs if p is not holder)
        out = waiter.communicate(timeout=120)[0]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    assert waiter.returncode == 0 and "Traceback" not in out, out
    lines = out.splitlines()
    order = [next(i for i, s in enumerate(lines) if key in s) for key in ("waiting for lock", "broke stale lock")]
    assert order == sorted(order) and f"process (pid {holder.pid} on this host) is gone" in out
    assert "resuming from" in out  # from the dead trainer's last complete checkpoint, not its half-written files
    (line,) = [s for s in lines if s.startswith("TEACHER")]
    _, path, status, steps, resumed = line.split()
    assert status == "ok" and int(steps) == 1200 and 300 <= int(resumed) <= killed_at
    res = json.loads((entry / "results.json").read_text())
    assert res["status"] == "ok" and Path(path) == entry / "teacher.pt"
    load_policy(path, "CartPole-v1")
    assert not list(tmp_path.rglob("*.tmp")) and not list(tmp_path.rglob("*.lock"))


@pytest.fixture(scope="module")
def cached(tmp_path_factory):
    """A cache holding one finished tiny teacher, copied by each test that then breaks a file of it."""
    cache = tmp_path_factory.mktemp("cache")
    # keep_last=2 (not part of the cache key) keeps last.ckpt, which a finished run drops, for the test that
    # damages it; its numbered copy goes, so last.ckpt is the only full checkpoint, as in a run killed after it
    keep = ["checkpoint.keep_last=2"]
    path, res = obtain_teacher("cartpole", 3, [*TINY, "algo.total_timesteps=1000", "eval.freq=500", *keep], cache)
    assert res["status"] == "ok" and (path.parent / "checkpoints" / "last.ckpt").is_file()
    for numbered in (path.parent / "checkpoints").glob("step-*.ckpt"):
        numbered.unlink()
    return cache, path.parent.relative_to(cache)


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize(
    "broken,damage,expect,aside",
    [
        ("results.json", truncate, "results.json is corrupt (", "results.json.corrupt"),
        ("results.json", lambda p: p.write_text("[1, 2]"), "is corrupt (it holds a JSON list", "results.json.corrupt"),
        ("teacher.pt", truncate, "teacher.pt: it is truncated or corrupt", "teacher.pt.corrupt"),
        ("checkpoints/best_policy.pt", truncate, "best_policy.pt: it is truncated", "checkpoints.corrupt-*"),
        ("checkpoints/last.ckpt", truncate, "last.ckpt: it is truncated", "checkpoints/last.ckpt.corrupt"),  # job.py's
    ],
)
def test_corrupt_cache_entry_is_trained_again_with_one_log_line(
    tmp_path, cached, caplog, broken, damage, expect, aside
):
    template, rel = cached
    cache = tmp_path / "cache"
    shutil.copytree(template, cache)
    entry = cache / rel
    damage(entry / broken)
    if broken.startswith("checkpoints"):  # an unfinished run, resumed from its checkpoints
        (entry / "results.json").write_text(json.dumps({"status": "failed"}))
        (entry / "teacher.pt").unlink()
    caplog.set_level(logging.INFO)
    path, res = obtain_teacher("cartpole", 3, [*TINY, "algo.total_timesteps=1000", "eval.freq=500"], cache)
    assert res["status"] == "ok" and res["env_steps"] == 1000 and path == entry / "teacher.pt"
    load_policy(path, "CartPole-v1")
    warnings = [r.getMessage() for r in caplog.records if r.name.startswith("kdrl") and r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and expect in warnings[0] and "\n" not in warnings[0], warnings
    assert str(entry / broken) in warnings[0]
    assert list(entry.glob(aside))  # kept aside for a look, never read again
    assert "training teacher" in caplog.text and not list(cache.rglob("*.lock"))
