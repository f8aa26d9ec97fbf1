#!/usr/bin/env python
"""A SLURM job that hits its time limit and is requeued until it completes, next to an unbroken run.

On the local single-node SLURM (scripts/slurm_up.sh, started here when not running and stopped
again at the end; needs root), one kdrl-train job goes through hydra-submitit-launcher with a short
time limit. SLURM sends SIGUSR2 ``--signal-delay`` seconds before the limit; submitit calls the
launcher's ``checkpoint`` (the same Hydra job), requeues the job and exits; each rerun resumes from
``checkpoints/last.ckpt`` in the same run dir, up to ``--max-timeouts`` times. The same config and
seed run unbroken on this machine beside it.

When the signal comes: slurmctld checks time limits periodically and sends it up to ~30 s early
(`man sbatch`, --signal: "up to 60 seconds earlier"); measured here, it comes at the first check
after (limit - delay - 30 s), so between delay + 30 and delay seconds before the limit. With the
1-minute limit and a 10-s delay it lands 20-50 s into each run of the job, after submitit has
installed its handler.
A larger delay under a 1-minute limit sends it at the first check after the start, 0-30 s in,
possibly before submitit's handler exists: SIGUSR2's default action then kills the job unrequeued
(seen with a 30-s delay: 8 s in, "srun: error: vm: task 0: User defined signal 2").

Prints the job id, each run of the job (start, SIGUSR2, the env step it resumed from) and the two
results. tests/test_slurm_requeue.py covers ``scontrol requeue`` and the SIGUSR2 path
deterministically; this script is the real time limit (a few minutes).

Usage: python scripts/slurm_requeue_demo.py [--seed 0] [--steps 20000] [--timeout-min 1] [--signal-delay 10]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def config(args: argparse.Namespace) -> list[str]:
    return [
        f"algo.total_timesteps={args.steps}",
        "eval.freq=1000",
        "eval.episodes=2",
        "eval.final_episodes=10",
        "eval.stop_at_return=null",
        "torch_threads=1",
        "logger=csv",
        "trainer.enable_progress_bar=false",
    ]


def train(args: list[str], log: Path) -> subprocess.Popen:
    with open(log, "w") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", "kdrl.cli.train", *args],
            cwd=ROOT,
            stdout=fh,
            stderr=subprocess.STDOUT,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
            start_new_session=True,
        )


def scontrol(job: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "-o", "show", "job", job], capture_output=True, text=True, timeout=30).stdout
    return dict(kv.split("=", 1) for kv in out.split() if "=" in kv)


def ckpt_steps(run_dir: Path) -> int | None:
    try:
        return int(torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["kdrl_stream"]["env_steps"])
    except Exception:
        return None


def read(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "results.json").read_text())
    except (OSError, ValueError):
        return {"status": "no results.json"}


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a kill still cancels the job (finally)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=20000)
    ap.add_argument("--timeout-min", type=int, default=1, help="the job's SLURM time limit")
    ap.add_argument("--signal-delay", type=int, default=10, help="SIGUSR2 this many seconds before the limit")
    ap.add_argument("--max-timeouts", type=int, default=8)
    ap.add_argument("--give-up-s", type=int, default=1200, help="stop waiting (and cancel the job) after this")
    ap.add_argument("--out", default="outputs/slurm_requeue_demo")
    args = ap.parse_args()
    out = ROOT / args.out
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    up = subprocess.run(["bash", str(ROOT / "scripts" / "slurm_up.sh")], capture_output=True, text=True, check=True)
    started_slurm = "already running" not in up.stdout
    t0 = time.monotonic()
    cfg = [f"seed={args.seed}", *config(args)]
    unbroken = train([*cfg, f"hydra.run.dir={out / 'unbroken'}"], out / "unbroken.log")
    sweep = out / "sweep"
    launcher = train(
        [
            "-m",
            "launcher=slurm",
            *cfg,
            f"hydra.sweep.dir={sweep}",
            f"hydra.launcher.timeout_min={args.timeout_min}",
            f"hydra.launcher.signal_delay_s={args.signal_delay}",
            f"hydra.launcher.max_num_timeout={args.max_timeouts}",
        ],
        out / "sweep.log",
    )
    job, runs, seen = None, [], (-1, "")
    try:
        while launcher.poll() is None and time.monotonic() - t0 < args.give_up_s:
            if job is None:
                ids = [p.name for p in (sweep / ".submitit").glob("*") if re.fullmatch(r"\d+(_\d+)?", p.name)]
                job = ids[0] if ids else None
            if job:
                info = scontrol(job)
                now = (int(info.get("Restarts", 0)), info.get("JobState", "?"))
                if now != seen and now[1] == "RUNNING":  # a (re)start: it resumes from last.ckpt as it is now
                    runs.append({"run": now[0], "start_s": time.monotonic() - t0, "ckpt": ckpt_steps(sweep / "0")})
                seen = now
            time.sleep(0.5)
        unbroken.wait(timeout=max(1.0, args.give_up_s - (time.monotonic() - t0)))
    finally:
        for proc in (unbroken, launcher):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        final = scontrol(job) if job else {}
        if job:
            subprocess.run(["scancel", job], capture_output=True)
        if started_slurm:
            subprocess.run(["bash", str(ROOT / "scripts" / "slurm_down.sh")], capture_output=True)
    wall = time.monotonic() - t0
    log = "".join(p.read_text() for p in (sweep / ".submitit").glob("*/*_log.out"))
    usr2 = re.findall(r"submitit WARNING \((.+?)\) - Caught signal SIGUSR2.*?this job is (\S+)\.", log)
    starts = re.findall(r"submitit INFO \((.+?)\) - Starting with JobEnvironment\(job_id=(\S+),", log)
    ref, res = read(out / "unbroken"), read(sweep / "0")

    print(
        f"SLURM job {job}: time limit {args.timeout_min} min, SIGUSR2 {args.signal_delay} s before it; "
        f"state {final.get('JobState')}, restarts {final.get('Restarts')}; {wall:.0f} s in all"
    )
    print("| run of the job | started (submitit) | SIGUSR2 (submitit) | last.ckpt at start (env steps) |")
    print("|---|---|---|---|")
    for i, (start, _) in enumerate(starts):
        sig = f"{usr2[i][0]} ({usr2[i][1]})" if i < len(usr2) else "- (completed)"
        ckpt = next((r["ckpt"] for r in runs if r["run"] == i), "?")
        print(f"| {i} | {start} | {sig} | {ckpt if ckpt is not None else 'none (fresh start)'} |")
    print("\n| run | status | env steps | grad steps | resumed from env step (last run) | final return |")
    print("|---|---|---|---|---|---|")
    for name, r in (("unbroken (local)", ref), (f"SLURM job {job}, requeued", res)):
        ret = f"{r.get('eval_return_mean', float('nan')):.1f} ± {r.get('eval_return_std', float('nan')):.1f}"
        cells = [r.get(k) for k in ("status", "env_steps", "grad_steps", "resumed_from_env_steps")]
        print(f"| {name} | {' | '.join(map(str, cells))} | {ret} |")
    first = next((r["ckpt"] for r in runs if r["run"] > 0 and r["ckpt"]), None)
    if first and "eval_history" in res and "eval_history" in ref:

        def upto(r: dict) -> list[tuple]:
            keys = ("env_steps", "grad_steps", "return_mean", "return_std")
            return [tuple(h[k] for k in keys) for h in r["eval_history"] if h["env_steps"] <= first]

        same = upto(res) == upto(ref)
        print(
            f"\nperiodic evaluations up to the first resume ({first} env steps) identical to the unbroken run: {same}"
        )


if __name__ == "__main__":
    main()
