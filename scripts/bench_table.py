#!/usr/bin/env python
"""kdrl-table on a synthetic sweep of many jobs: wall time, and the sweep's index.

Makes N job dirs laid out as a Hydra multirun makes them (``<sweep>/<job>/`` with results.json,
.hydra/{config,hydra,overrides}.yaml, csv/metrics.csv, common.log), copied from one real job dir
with the loss, width, seed and returns varied per job (no checkpoints: they are only stat()ed),
writes the sweep's index.csv as the SweepIndex callback does, then times ``kdrl-table`` on it.

Usage: python scripts/bench_table.py --template <a real job dir> [--jobs 10000] [--out outputs/bench_table]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LOSSES = ("kl", "nll", "mse", "kl_t1")
WIDTHS = (16, 24, 32, 48, 64)


def make_sweep(template: Path, out: Path, jobs: int) -> None:
    base = json.loads((template / "results.json").read_text())
    files = {p.relative_to(template): p.read_bytes() for p in template.rglob("*") if p.is_file()}
    files = {k: v for k, v in files.items() if k.suffix not in (".ckpt", ".pt") and k.name != "results.json"}
    rng = np.random.default_rng(0)
    for job in range(jobs):
        loss, width = LOSSES[job % len(LOSSES)], WIDTHS[(job // len(LOSSES)) % len(WIDTHS)]
        seed = job // (len(LOSSES) * len(WIDTHS))
        d = out / str(job)
        for rel, body in files.items():
            (d / rel).parent.mkdir(parents=True, exist_ok=True)
            (d / rel).write_bytes(body)
        score = float(np.clip(rng.normal(0.9, 0.2), -0.5, 1.5))
        res = {
            **base,
            "loss": loss,
            "width": width,
            "seed": seed,
            "run_dir": str(d),
            "normalized_score": score,
            "return_ratio": score,
        }
        (d / "results.json").write_text(json.dumps(res))
        (d / ".hydra" / "overrides.yaml").write_text(f"- loss={loss}\n- student.width={width}\n- seed={seed}\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--template", required=True, type=Path, help="a finished kdrl-distill job dir")
    ap.add_argument("--jobs", type=int, default=10_000)
    ap.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench_table")
    args = ap.parse_args()
    sweep = args.out / "sweep"
    shutil.rmtree(args.out, ignore_errors=True)
    t0 = time.perf_counter()
    make_sweep(args.template, sweep, args.jobs)
    made = time.perf_counter() - t0

    from kdrl.runs.sweep import write_sweep_index

    t0 = time.perf_counter()
    index = write_sweep_index(sweep)
    index_s = time.perf_counter() - t0
    cmd = [str(ROOT / ".venv/bin/kdrl-table"), str(sweep), "--rows", "method", "--cols", "width"]
    cmd += ["--out", str(args.out / "table")]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    table_s = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"kdrl-table failed ({proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
    entries = sum(1 for _ in sweep.iterdir())
    print(f"| figure | value ({args.jobs} jobs) |\n|---|---|")
    print(f"| make the synthetic sweep | {made:.1f} s |")
    print(f"| entries in the sweep dir | {entries} (index.csv: {sum(1 for _ in open(index)) - 1} rows) |")
    print(f"| write index.csv | {index_s:.1f} s |")
    print(f"| **kdrl-table (read, tables, plots)** | **{table_s:.1f} s** |")
    print("\n" + "\n".join(proc.stdout.splitlines()[:12]))


if __name__ == "__main__":
    main()
