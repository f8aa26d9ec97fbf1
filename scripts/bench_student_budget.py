#!/usr/bin/env python
"""The MinAtar student's default budget against the one it replaced, side by side (issue 26).

    python scripts/bench_student_budget.py                          # Asterix seed 1, 25% and 7%: ~7 min on 2 cores
    python scripts/bench_student_budget.py --sizes rusu_4 --env minatar_seaquest --seed 2

For each size, two kdrl-distill runs at once (one per core), same published teacher and seed, both at 95,004
updates of batch 32: the recipe's default (400k env steps, 4 updates per 16 env steps from 20k, evaluated every
``eval.freq`` of the recipe) and the old default (100k env steps, 4 per 4 from 5k, evaluated every 10k as the
converged stage ran it). Prints whole-job wall time, the ratio and the held-out normalised score (100 episodes;
one seed, so the scores say only that both runs learned). Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
OLD_BUDGET = [
    "eval.freq=10000",
    "distill.total_timesteps=100000",
    "distill.buffer_size=100000",
    "distill.learning_starts=5000",
    "distill.train_freq=4",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--env", default="minatar_asterix")
    ap.add_argument("--seed", type=int, default=1, help="student seed, and the published teacher seed it distils")
    ap.add_argument("--sizes", nargs="+", default=["rusu_25", "rusu_7"])
    args = ap.parse_args()
    teacher = ROOT / "docs/minatar/published_teachers" / f"env={args.env},seed={args.seed}" / "teacher.pt"
    if not teacher.is_file():
        sys.exit(f"no published teacher {teacher}: --env and --seed name one of docs/minatar/published_teachers")
    common = [
        f"env={args.env}",
        f"teacher.checkpoint='{teacher}'",
        "loss=kl_rusu",
        f"seed={args.seed}",
        "logger=csv",
        "trainer.enable_progress_bar=false",
        "eval.final_episodes=100",
    ]
    rows = []
    with tempfile.TemporaryDirectory(prefix="kdrl-student-budget-") as tmp:
        for size in args.sizes:
            arms = {"400k (default)": [], "100k (old)": OLD_BUDGET}
            procs = {}
            for arm, extra in arms.items():
                out = Path(tmp) / size / arm.split()[0]
                argv = [str(BIN / "kdrl-distill"), *common, f"student.size={size}", *extra, f"hydra.run.dir={out}"]
                procs[arm] = (out, subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
            res = {}
            for arm, (out, proc) in procs.items():
                _, err = proc.communicate()
                if proc.returncode != 0:
                    sys.exit(
                        f"{size} {arm}: kdrl-distill failed: {err.strip().splitlines()[-1] if err.strip() else '?'}"
                    )
                res[arm] = json.loads((out / "results.json").read_text())
            new, old = res["400k (default)"], res["100k (old)"]
            rows.append((size, new, old))
            print(f"{size}: done", file=sys.stderr, flush=True)
    print(f"\n{args.env}, seed {args.seed}: job wall (min), two runs at once, both at the same updates\n")
    print("| size | 400k env steps (default) | 100k env steps (old) | ratio | updates | score 400k / 100k |")
    print("|---|---|---|---|---|---|")
    for size, new, old in rows:
        w_new, w_old = new["job_wall_time_s"] / 60, old["job_wall_time_s"] / 60
        print(
            f"| {size} | {w_new:.2f} | {w_old:.2f} | {w_new / w_old:.2f} | {new['grad_steps']:,} / {old['grad_steps']:,} "
            f"| {new['normalized_score']:.3f} / {old['normalized_score']:.3f} |"
        )


if __name__ == "__main__":
    main()
