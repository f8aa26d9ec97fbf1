"""Run a fixed set of short jobs on fixed seeds and write their numbers to one JSON fingerprint.

A refactor proves itself by identical outputs: record a fingerprint before, another after, and
compare them (every return, loss value, step count and table cell must match exactly).

    python scripts/fingerprint_runs.py record before.json [--demo]
    python scripts/fingerprint_runs.py compare before.json after.json

A published table is checked the same way, run by run: ``table`` fingerprints the runs behind a
results.csv (a committed docs/<table>/results.csv, or a study's <dir>/tables/<name>/results.csv), each
run named by its axes (kind, env, loss, temperature, width, size, control, baseline, seed), and
``compare --per-run out.csv`` writes one row per run and field (before, after, |difference|, equal
exactly, equal as the tables print it):

    python scripts/fingerprint_runs.py table docs/control/results.csv committed.json
    python scripts/fingerprint_runs.py table outputs/study/control/tables/main/results.csv rerun.json
    python scripts/fingerprint_runs.py compare committed.json rerun.json --per-run control.csv

Each run goes to its own directory under --work (default outputs/fingerprint/<label>); commands are
the console scripts, so whatever the apps compose is what is measured.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

from kdrl.fingerprint import (
    SHORT_STUDENT,
    TINY_MULTITASK,
    TINY_TEACHER,
    diff,
    fingerprint,
    job_env,
    per_run_rows,
    record_jobs,
    table_fingerprint,
)


def runs(work: Path) -> list[tuple[str, list[str]]]:
    """(name, argv) of every job, in order (later jobs use earlier teachers); the run dir is last."""
    t_cp, t_ac, t_mb = work / "teacher_cartpole", work / "teacher_acrobot", work / "teacher_minatar"
    cp = f"teacher.checkpoint={t_cp}/teacher.pt"
    both = f"teacher.checkpoints={{cartpole:{t_cp}/teacher.pt,acrobot:{t_ac}/teacher.pt}}"
    student = lambda name, *args: (name, ["kdrl-distill", cp, *SHORT_STUDENT, *args, f"hydra.run.dir={work}/{name}"])  # noqa: E731
    return [
        ("teacher_cartpole", ["kdrl-train", *TINY_TEACHER, f"hydra.run.dir={t_cp}"]),
        ("teacher_acrobot", ["kdrl-train", "env=acrobot", *TINY_TEACHER, f"hydra.run.dir={t_ac}"]),
        student("student_kl", "loss=kl"),
        student("student_mse", "loss=mse", "seed=1"),
        student("student_hybrid", "loss=hybrid", "control=student"),
        student("student_qdagger", "loss=qdagger", "control=student"),
        student("student_feature", "loss=feature", "control=mixed"),
        student("scratch", "baseline=scratch"),
        (
            "teacher_minatar",
            [
                "kdrl-train",
                "env=minatar_breakout",
                "recipe=minatar",  # pinned: what env=minatar_* gave when the fingerprints began
                *TINY_TEACHER,
                "algo.total_timesteps=4000",
                "eval.freq=2000",
                f"hydra.run.dir={t_mb}",
            ],
        ),
        (
            "student_minatar",
            [
                "kdrl-distill",
                "env=minatar_breakout",
                "recipe=minatar",  # pinned: what env=minatar_* gave when the fingerprints began
                f"teacher.checkpoint={t_mb}/teacher.pt",
                *SHORT_STUDENT,
                "distill.total_timesteps=3000",
                "eval.freq=1500",
                f"hydra.run.dir={work}/student_minatar",
            ],
        ),
        ("multitask_distill", ["kdrl-multitask", both, *TINY_MULTITASK, f"hydra.run.dir={work}/multitask_distill"]),
        (
            "multitask_joint",
            ["kdrl-multitask", "mode=joint_dqn", both, *TINY_MULTITASK, f"hydra.run.dir={work}/multitask_joint"],
        ),
    ]


def record(path: Path, work: Path, demo: bool, only: list[str] | None) -> None:
    body: dict = record_jobs(runs(work), work, fingerprint, only)
    if demo:
        t0 = time.perf_counter()
        demo_dir = work / "demo"
        # `make demo`'s command (the Makefile would build its own venv in a fresh clone): the declared study
        subprocess.run(
            [sys.executable, "-m", "kdrl.cli.study", "study=demo", "launcher=joblib", f"dir={demo_dir}"],
            env=job_env(work),
            check=True,
            capture_output=True,
        )
        table = (demo_dir / "tables" / "main" / "table.md").read_text()
        body["demo_table"] = table[table.index("normalized_score") :]  # the table, without the study's header
        print(f"{'demo':20s} {time.perf_counter() - t0:6.1f} s", flush=True)
    path.write_text(json.dumps(body, indent=1, sort_keys=True))
    print(f"wrote {path}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record")
    r.add_argument("out", type=Path)
    r.add_argument("--work", type=Path, default=None)
    r.add_argument("--demo", action="store_true", help="also run `make demo` and keep its table")
    r.add_argument("--only", nargs="*", default=None)
    c = sub.add_parser("compare")
    c.add_argument("before", type=Path)
    c.add_argument("after", type=Path)
    c.add_argument("--per-run", type=Path, default=None, help="one CSV row per run and field")
    t = sub.add_parser("table", help="fingerprint the runs of a results.csv")
    t.add_argument("results_csv", type=Path)
    t.add_argument("out", type=Path)
    args = p.parse_args()
    if args.cmd == "table":
        try:
            body = table_fingerprint(args.results_csv)
        except ValueError as exc:
            sys.exit(str(exc))
        args.out.write_text(json.dumps(body, indent=1, sort_keys=True))
        print(f"{len(body)} runs -> {args.out}")
        return
    if args.cmd == "record":
        record(args.out, args.work or Path("outputs/fingerprint") / args.out.stem, args.demo, args.only)
        return
    a, b = json.loads(args.before.read_text()), json.loads(args.after.read_text())
    diffs = diff(a, b)
    n_values = len(json.dumps(a))
    print(
        f"{len(a)} runs compared; {len(diffs)} differences" + (f" (fingerprint {n_values} chars)" if not diffs else "")
    )
    for d in diffs[:40]:
        print("  " + d)
    if args.per_run:
        rows = per_run_rows(a, b)
        with open(args.per_run, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        print(f"wrote {args.per_run} ({len(rows)} rows)")
    sys.exit(1 if diffs else 0)


if __name__ == "__main__":
    main()
