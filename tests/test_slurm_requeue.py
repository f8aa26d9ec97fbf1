"""A real requeue on the local single-node SLURM (scripts/slurm_up.sh, the `slurm` fixture in
conftest.py) through hydra-submitit-launcher. One sweep of two identical jobs (an array job), each
interrupted once it has checkpointed past KILL_AT:

- task 0: ``scontrol requeue`` (SLURM sends SIGTERM, Lightning stops at the next step, SLURM puts
  the job back in the queue and reruns the same submission);
- task 1: ``scancel --signal=USR2``, the signal SLURM sends ``signal_delay_s`` before a job's time
  limit: submitit calls the launcher's ``checkpoint`` (the same Hydra job again), requeues the job
  itself and exits (the path a real time limit takes; scripts/slurm_requeue_demo.py runs that one
  with a 1-minute limit, too slow and timing-dependent for the suite).

Each rerun lands in the same Hydra run dir (``<sweep dir>/<job num>``) and kdrl resumes from its
``checkpoints/last.ckpt``. Both are compared with an unbroken run of the same config and seed.

Equal, exactly: env steps, gradient steps and every periodic evaluation up to the env step the job
resumed from (restored from the checkpoint; the same config and seed give the same numbers in any
process, tests/test_faults.py). The final return may differ: kdrl's resume restores nets, target,
optimiser, counters, replay and RNGs but resets the envs (docs/results.md, "Crash and resume"), so
training after the resume takes another path, and at this budget one run's final return is one draw
from the seed-to-seed spread of the config (FINAL_TOL: the 95% band of the difference of two
runs). That check only catches a gross break; the exact ones show the resume is right.

`pytest -s` prints the job ids, restarts, the env step each job resumed from and the results next
to the unbroken run.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
CONFIG = [
    "algo.total_timesteps=20000",  # 35-60 s of training on one thread
    "eval.freq=1000",  # an evaluation and a checkpoint (last.ckpt) every 1000 env steps
    "eval.episodes=2",
    "eval.final_episodes=10",
    "eval.stop_at_return=null",  # the same env-step count for every run
    "torch_threads=1",
    "logger=csv",
    "trainer.enable_progress_bar=false",
]
KILL_AT = 6000  # interrupt a job once it has checkpointed at or past this env step
# The final held-out return of this config, unbroken, seeds 0-4 (measured once, 2026-11-30): one
# run's spread. Two runs of it differ by less than 1.96 * sqrt(2) * sd (= 258) 95% of the time.
# Seed 0 resumed from the checkpoints a job can be interrupted at here (5032, 6056, 7016, 8040 env
# steps) ends at 500.0, 500.0, 475.7, 500.0 (unbroken: 476.8); a resume from a given checkpoint
# replays the same way every time.
SEED_RETURNS = (476.8, 440.2, 500.0, 500.0, 278.4)
FINAL_TOL = 1.96 * math.sqrt(2) * statistics.stdev(SEED_RETURNS)
TIMEOUT_S = 600


def _train(args: list[str], log: Path) -> subprocess.Popen:
    with open(log, "w") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", "kdrl.cli.train", *args, *CONFIG],
            cwd=ROOT,
            stdout=fh,
            stderr=subprocess.STDOUT,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
            start_new_session=True,
        )


def _job_ids(sweep: Path) -> dict[int, str]:
    """{job num: SLURM job id} from submitit's folders (named after the ids: <array id>_<task>)."""
    ids = [p.name for p in (sweep / ".submitit").glob("*") if re.fullmatch(r"\d+_\d+", p.name)]
    return {int(i.split("_")[1]): i for i in ids}


def _checkpoint_steps(run_dir: Path) -> int:
    """Env steps of the run dir's last policy file once a last.ckpt exists (last.ckpt is written just
    after the policy: a job interrupted in between resumes from the checkpoint before)."""
    try:
        policy = torch.load(run_dir / "checkpoints" / "last_policy.pt", weights_only=True)["extra"]["env_steps"]
        return int(policy) if (run_dir / "checkpoints" / "last.ckpt").is_file() else -1
    except Exception:
        return -1


def _scontrol(job: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "-o", "show", "job", job], capture_output=True, text=True, timeout=30).stdout
    return dict(kv.split("=", 1) for kv in out.split() if "=" in kv)


def _wait(proc: subprocess.Popen, log: Path, what: str, deadline: float) -> None:
    try:
        proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pass
    assert proc.returncode == 0, f"{what} failed or timed out:\n{log.read_text()[-3000:]}"


def _check_resumed(name: str, res: dict, ref: dict, interrupted_at: int) -> None:
    assert res["status"] == "ok", f"{name}: {res.get('error')}"
    resumed = res["resumed_from_env_steps"]
    assert resumed is not None and 0 < resumed <= interrupted_at, f"{name} did not resume: {resumed}"
    assert (res["env_steps"], res["grad_steps"]) == (ref["env_steps"], ref["grad_steps"]), name

    def upto(r: dict) -> list[tuple]:
        keys = ("env_steps", "grad_steps", "return_mean", "return_std")
        return [tuple(h[k] for k in keys) for h in r["eval_history"] if h["env_steps"] <= resumed]

    assert upto(res) == upto(ref), f"{name}: evaluations before the resume differ from the unbroken run"
    assert [h["env_steps"] for h in res["eval_history"]] == [h["env_steps"] for h in ref["eval_history"]], name
    assert abs(res["eval_return_mean"] - ref["eval_return_mean"]) <= FINAL_TOL, name


@pytest.mark.slow
def test_requeued_slurm_jobs_resume_from_their_last_checkpoint_and_match_an_unbroken_run(slurm, tmp_path):
    t0 = time.monotonic()
    deadline = t0 + TIMEOUT_S
    ref_dir, sweep = tmp_path / "unbroken", tmp_path / "sweep"
    unbroken = _train(["seed=0", f"hydra.run.dir={ref_dir}"], tmp_path / "unbroken.log")
    # two identical jobs (seed 0 twice), 10-minute limit: no time-limit signal of SLURM's own
    launcher = _train(
        ["-m", "launcher=slurm", "seed=0,0", f"hydra.sweep.dir={sweep}", "hydra.launcher.timeout_min=10"],
        tmp_path / "sweep.log",
    )
    interrupt = {0: ["scontrol", "requeue"], 1: ["scancel", "--signal=USR2"]}
    interrupted: dict[int, tuple[int, float]] = {}  # job num -> (checkpoint env steps, seconds in)
    jobs: dict[int, str] = {}
    try:
        while len(interrupted) < 2 and launcher.poll() is None and time.monotonic() < deadline:
            jobs = jobs if len(jobs) == 2 else _job_ids(sweep)
            for num, job in jobs.items():
                steps = _checkpoint_steps(sweep / str(num))
                if num not in interrupted and steps >= KILL_AT:
                    done = subprocess.run([*interrupt[num], job], capture_output=True, text=True, timeout=30)
                    assert done.returncode == 0, done.stderr
                    interrupted[num] = (steps, time.monotonic() - t0)
            time.sleep(0.2)
        assert len(interrupted) == 2, (
            f"the jobs ended before both were interrupted:\n{(tmp_path / 'sweep.log').read_text()[-3000:]}"
        )
        _wait(unbroken, tmp_path / "unbroken.log", "the unbroken run", deadline)
        _wait(launcher, tmp_path / "sweep.log", "the SLURM sweep", deadline)
    finally:
        for proc in (unbroken, launcher):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for job in jobs.values():
            subprocess.run(["scancel", job], capture_output=True, timeout=30)

    ref = json.loads((ref_dir / "results.json").read_text())
    res = {num: json.loads((sweep / str(num) / "results.json").read_text()) for num in (0, 1)}
    info = {num: _scontrol(job) for num, job in jobs.items()}
    logs = {
        num: "".join(p.read_text() for p in (sweep / ".submitit" / job).glob("*_log.out")) for num, job in jobs.items()
    }

    print(f"\nall done in {time.monotonic() - t0:.0f} s")
    print(
        "| run | SLURM job (JobId) | restarts | interrupted at (checkpoint) | resumed from env step | env steps | grad steps | final return |"
    )
    print("|---|---|---|---|---|---|---|---|")
    r = ref
    print(
        f"| unbroken (local) | - | - | - | - | {r['env_steps']} | {r['grad_steps']} | {r['eval_return_mean']:.1f} ± {r['eval_return_std']:.1f} |"
    )
    for num, how in ((0, "scontrol requeue"), (1, "SIGUSR2 (time-limit signal)")):
        r, (steps, secs) = res[num], interrupted[num]
        print(
            f"| {how} | {jobs[num]} ({info[num].get('JobId')}) | {info[num].get('Restarts')} | {steps} ({secs:.0f} s in)"
            f" | {r['resumed_from_env_steps']} | {r['env_steps']} | {r['grad_steps']} | {r['eval_return_mean']:.1f} ± {r['eval_return_std']:.1f} |"
        )

    for num in (0, 1):  # each job ran twice under SLURM (submitit logs one start per run)
        assert int(info[num].get("Restarts", 0)) == 1 and logs[num].count("Starting with JobEnvironment") == 2, num
        assert "resuming from" in logs[num], num
    assert "Caught signal SIGUSR2" in logs[1] and f"Requeued job {jobs[1]}" in logs[1]
    _check_resumed("scontrol-requeued job", res[0], ref, interrupted[0][0])
    _check_resumed("SIGUSR2-requeued job", res[1], ref, interrupted[1][0])
