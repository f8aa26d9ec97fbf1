#!/usr/bin/env python
"""A 24-job CartPole student sweep (3 losses x 2 widths x 4 seeds) through launcher=joblib on this
machine, measured: total wall, per-job fixed overhead, how busy the cores were, and whether the
teacher was trained once. Then the table and plots.

Per-job fixed overhead = the job's setup (task entry -> fit: config, envs, teacher load, Trainer,
loggers) + its share of what the launcher spends outside jobs (worker start, imports, Hydra):
(n_jobs_parallel * sweep_wall - sum of job walls) / n_jobs. Core busy = 1 - idle from /proc/stat.

Usage: python scripts/bench_sweep.py [--out outputs/sweeps/bench_joblib] [--launcher joblib]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cpu_times() -> tuple[int, int]:
    with open("/proc/stat") as f:
        vals = list(map(int, f.readline().split()[1:]))
    idle = vals[3] + vals[4]  # idle + iowait
    return sum(vals), idle


class CpuSampler(threading.Thread):
    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        last = cpu_times()
        while not self.stop.wait(0.5):
            now = cpu_times()
            total, idle = now[0] - last[0], now[1] - last[1]
            if total > 0:
                self.samples.append(1.0 - idle / total)
            last = now


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="outputs/sweeps/bench_joblib")
    ap.add_argument("--launcher", default="joblib")
    ap.add_argument("--table-out", default="docs/bench_sweep")
    ap.add_argument(
        "--warm",
        action="store_true",
        help="train the shared teacher before the sweep (measures the sweep with a warm cache)",
    )
    ap.add_argument(
        "--teacher-per-seed",
        action="store_true",
        help="student seed s distils teacher seed s (4 distinct teachers, each trained by the first job that needs it; "
        "kdrl-study trains a study's teachers as a stage first)",
    )
    args = ap.parse_args()
    out = ROOT / args.out
    cache = out.with_name(out.name + "_cache")
    for d in (out, cache):
        shutil.rmtree(d, ignore_errors=True)
    cmd = [
        str(ROOT / ".venv/bin/kdrl-distill"),
        "-m",
        f"launcher={args.launcher}",
        "env=cartpole",
        "loss=mse,nll,kl",
        "student.width=64,48",
        "seed=0,1,2,3",
        *(["teacher.seed_from_student=true"] if args.teacher_per_seed else []),
        "logger=csv",
        "trainer.enable_progress_bar=false",
        f"hydra.sweep.dir={out}",
    ]
    env = {**os.environ, "KDRL_CACHE": str(cache), "PYTHONWARNINGS": "ignore"}
    if args.warm:
        seeds = [0, 1, 2, 3] if args.teacher_per_seed else [0]
        subprocess.run(
            [
                sys.executable,
                "-c",
                f"from kdrl.runs.teacher import obtain_teacher\nfor s in {seeds}: obtain_teacher('cartpole', s, [], {str(cache)!r})",
            ],
            cwd=ROOT,
            env=env,
            check=True,
        )
    sampler = CpuSampler()
    sampler.start()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    sweep_wall = time.perf_counter() - t0
    sampler.stop.set()
    sampler.join()
    log = proc.stdout + proc.stderr
    (out / "sweep.log").write_text(log)
    res = [json.loads(p.read_text()) for p in sorted(out.glob("*/results.json"))]
    ok = [r for r in res if r["status"] == "ok"]
    n_par = os.cpu_count() or 1
    job_walls = [r["job_wall_time_s"] for r in res]
    setups = [r["setup_s"] for r in ok]
    trained = log.count("training teacher") + log.count("ready (")
    reused = log.count("reusing cached teacher")
    outside = (n_par * sweep_wall - sum(job_walls)) / len(res)
    busy = statistics.mean(sampler.samples) if sampler.samples else float("nan")
    print(
        f"launcher={args.launcher}{' (teacher cached before the sweep)' if args.warm else ''}: {len(res)} jobs ({len(ok)} ok), exit code {proc.returncode}"
    )
    print("| figure | value |\n|---|---|")
    print(f"| sweep wall | {sweep_wall:.1f} s |")
    print(f"| sum of job walls | {sum(job_walls):.1f} s (median job {statistics.median(job_walls):.1f} s) |")
    print(f"| job setup (task entry -> fit), median | {statistics.median(setups):.2f} s |")
    print(f"| launcher time outside jobs, per job | {outside:.2f} s |")
    print(f"| per-job fixed overhead (setup + outside) | {statistics.median(setups) + outside:.2f} s |")
    print(f"| cores busy over the sweep (mean of 0.5 s samples) | {100 * busy:.1f}% |")
    print(f"| teacher trained / reused (log lines) | {trained} / {reused} |")
    teacher_walls = {round(r["teacher_wall_time_s"], 3) for r in ok if r.get("teacher_wall_time_s")}
    print(
        f"| teacher training wall (each distinct teacher) | {', '.join(f'{w:.1f}' for w in sorted(teacher_walls))} s |"
    )
    subprocess.run([str(ROOT / ".venv/bin/kdrl-table"), str(out), "--out", args.table_out], cwd=ROOT, check=False)


if __name__ == "__main__":
    main()
