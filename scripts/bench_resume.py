#!/usr/bin/env python
"""Crash and resume: for each seed, an unbroken run against a run killed with SIGKILL mid-training
(after its first checkpoint at or past --kill-at env steps) and re-run with the same command and
output dir, which resumes from checkpoints/last.ckpt. Prints both final held-out returns, and
whether the resumed run is the unbroken one to the last digit: every periodic evaluation, the
held-out returns and the final policy's weights.

Usage: python scripts/bench_resume.py --app train --seeds 0 1 2 --kill-at 6000
       python scripts/bench_resume.py --app distill --seeds 0 1 2 --kill-at 3000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
EXTRA = {
    "train": ["env=cartpole", "eval.stop_at_return=null", "algo.total_timesteps=30000"],
    "distill": [
        "env=cartpole",
        "loss=kl",
        "student.width=64",
        "eval.stop_at_return=null",
        "distill.total_timesteps=8000",
    ],
}


def command(app: str, seed: int, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        f"kdrl.cli.{app}",
        f"seed={seed}",
        "logger=csv",
        "trainer.enable_progress_bar=false",
        *EXTRA[app],
        f"hydra.run.dir={out}",
    ]


def checkpoint_steps(out: Path) -> int:
    try:
        return int(torch.load(out / "checkpoints" / "last_policy.pt", weights_only=True)["extra"]["env_steps"])
    except Exception:
        return -1


def killed_and_resumed(app: str, seed: int, out: Path, kill_at: int) -> tuple[dict, int]:
    proc = subprocess.Popen(
        command(app, seed, out), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    killed_at = -1
    while proc.poll() is None:
        time.sleep(0.2)
        steps = checkpoint_steps(out)
        if steps >= kill_at:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            killed_at = steps
            break
    if killed_at < 0:
        raise RuntimeError(f"the run ended before a checkpoint at {kill_at} env steps")
    assert not (out / "results.json").exists() or json.loads((out / "results.json").read_text())["status"] != "ok"
    subprocess.run(command(app, seed, out), cwd=ROOT, check=True, capture_output=True)
    return json.loads((out / "results.json").read_text()), killed_at


POLICY = {"train": "teacher.pt", "distill": "student.pt"}


def identical(app: str, unbroken: Path, resumed: Path) -> bool:
    """Same periodic evaluations, same held-out returns, same final weights."""
    u, r = (json.loads((d / "results.json").read_text()) for d in (unbroken, resumed))
    if [h["return_mean"] for h in u["eval_history"]] != [h["return_mean"] for h in r["eval_history"]]:
        return False
    if u["eval_returns"] != r["eval_returns"]:
        return False
    wu, wr = (torch.load(d / POLICY[app], weights_only=True)["state_dict"] for d in (unbroken, resumed))
    return wu.keys() == wr.keys() and all(torch.equal(wu[k], wr[k]) for k in wu)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--app", choices=list(EXTRA), default="train")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--kill-at", type=int, default=6000)
    ap.add_argument("--out", default="outputs/bench_resume")
    args = ap.parse_args()
    base = ROOT / args.out / args.app
    shutil.rmtree(base, ignore_errors=True)
    rows = []
    for seed in args.seeds:
        subprocess.run(command(args.app, seed, base / f"unbroken_s{seed}"), cwd=ROOT, check=True, capture_output=True)
        unbroken = json.loads((base / f"unbroken_s{seed}" / "results.json").read_text())
        resumed, killed_at = killed_and_resumed(args.app, seed, base / f"resumed_s{seed}", args.kill_at)
        same = identical(args.app, base / f"unbroken_s{seed}", base / f"resumed_s{seed}")
        rows.append((seed, unbroken, resumed, killed_at, same))
        print(
            f"seed {seed}: unbroken {unbroken['eval_return_mean']:.1f}, killed at {killed_at} and resumed "
            f"{resumed['eval_return_mean']:.1f} (identical: {same})",
            flush=True,
        )
    print(f"\n{args.app}: unbroken vs SIGKILL + resume (final greedy return, held-out episodes)")
    print(
        "| seed | unbroken | killed at env step | resumed | resumed env steps | identical |\n|---|---|---|---|---|---|"
    )
    for seed, u, r, k, same in rows:
        print(
            f"| {seed} | {u['eval_return_mean']:.1f} ± {u['eval_return_std']:.1f} | {k} | "
            f"{r['eval_return_mean']:.1f} ± {r['eval_return_std']:.1f} | {r['env_steps']} (from {r['resumed_from_env_steps']}) "
            f"| {'yes' if same else 'no'} |"
        )


if __name__ == "__main__":
    main()
