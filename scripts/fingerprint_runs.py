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
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent
# Results fields that are outcomes of learning (not timings, paths or the composed config).
OUTCOMES = (
    "eval_returns",
    "teacher_returns",
    "eval_return_mean",
    "teacher_return_mean",
    "random_return_mean",
    "env_steps",
    "grad_steps",
    "episodes",
    "params",
    "teacher_params",
    "action_agreement",
    "teacher_periodic_return",
    "return_ratio",
    "normalized_return_ratio",
    "mean_pct_of_teacher",
    "geomean_pct_of_teacher",
    "optimizer_steps",
    "task_env_steps",
    "best_periodic_eval",
)


# Every budget is spelled out (no debug group), so the commands mean the same whatever the
# debug presets become.
QUIET = ["logger=csv", "trainer.enable_progress_bar=false"]
TINY_TEACHER = [
    "algo.total_timesteps=3000",
    "algo.learning_starts=500",
    "algo.buffer_size=5000",
    "eval.freq=1500",
    "eval.episodes=2",
    "eval.final_episodes=3",
    *QUIET,
]
SHORT_STUDENT = [
    "distill.total_timesteps=4000",
    "distill.learning_starts=500",
    "eval.freq=1000",
    "eval.episodes=2",
    "eval.final_episodes=3",
    "eval.generalisation_episodes=3",
    "eval.agreement_states=1000",
    *QUIET,
]
TINY_MULTITASK = [
    "multitask.steps_per_task=1200",
    "multitask.learning_starts=300",
    "multitask.buffer_size=2000",
    "multitask.batch_size=32",
    "eval.freq=600",
    "eval.episodes=2",
    "eval.final_episodes=3",
    *QUIET,
]


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


def metrics_csv(run_dir: Path) -> dict[str, list[float]]:
    path = run_dir / "csv" / "metrics.csv"
    if not path.is_file():
        return {}
    cols: dict[str, list[float]] = {}
    with open(path) as fh:
        for row in csv.DictReader(fh):
            for k, v in row.items():
                if v in ("", None) or k.endswith("sps") or "wall" in k:
                    continue
                cols.setdefault(k, []).append(float(v))
    return cols


def fingerprint(run_dir: Path) -> dict:
    res = json.loads((run_dir / "results.json").read_text())
    out = {k: res[k] for k in OUTCOMES if k in res}
    out["status"] = res.get("status")
    out["eval_history"] = [{k: v for k, v in h.items() if "wall" not in k} for h in res.get("eval_history") or []]
    if "tasks" in res:
        out["tasks"] = {n: {k: t[k] for k in OUTCOMES if k in t} for n, t in res["tasks"].items()}
    out["metrics"] = metrics_csv(run_dir)
    return out


def record(path: Path, work: Path, demo: bool, only: list[str] | None) -> None:
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    env = {**os.environ, "WANDB_MODE": "disabled", "KDRL_NO_PROGRESS": "1", "KDRL_CACHE": str(work / "cache")}
    body: dict = {}
    for name, argv in runs(work):
        if only and name not in only:
            continue
        t0 = time.perf_counter()
        proc = subprocess.run([str(BIN / argv[0]), *argv[1:]], env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"{name} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        body[name] = fingerprint(Path(argv[-1].split("=", 1)[1]))
        print(f"{name:20s} {time.perf_counter() - t0:6.1f} s  return {body[name].get('eval_return_mean')}", flush=True)
    if demo:
        t0 = time.perf_counter()
        demo_dir = work / "demo"
        # `make demo`'s command (the Makefile would build its own venv in a fresh clone): the declared study
        subprocess.run(
            [sys.executable, "-m", "kdrl.cli.study", "study=demo", "launcher=joblib", f"dir={demo_dir}"],
            env=env,
            check=True,
            capture_output=True,
        )
        table = (demo_dir / "tables" / "main" / "table.md").read_text()
        body["demo_table"] = table[table.index("normalized_score") :]  # the table, without the study's header
        print(f"{'demo':20s} {time.perf_counter() - t0:6.1f} s", flush=True)
    path.write_text(json.dumps(body, indent=1, sort_keys=True))
    print(f"wrote {path}")


# A table run's identity (the axes a study sweeps) and its outcome columns (not timings or paths).
TABLE_KEYS = ("kind", "env_id", "loss", "temperature", "width", "student_size", "control", "baseline", "seed")
TABLE_OUTCOMES = (
    "status",
    "params",
    "teacher_params",
    "env_steps",
    "grad_steps",
    "eval_return_mean",
    "eval_return_std",
    "teacher_return_mean",
    "random_return_mean",
    "raw_return_ratio",
    "normalized_score",
    "action_agreement",
)
# How the tables print a field: normalized_score and raw ratios as % with one decimal, returns with one.
PRINTED = {"normalized_score": (100, 1), "raw_return_ratio": (100, 1), "action_agreement": (100, 1)}


def table_value(v: str):
    if v in ("", None):
        return None
    try:
        f = float(v)
    except ValueError:
        return v
    return int(f) if f.is_integer() and "e" not in v.lower() else f


def table_fingerprint(results_csv: Path) -> dict:
    """{run name: its outcomes} for every run of a results.csv (one row per run, kdrl-table's columns)."""
    body: dict = {}
    with open(results_csv) as fh:
        for row in csv.DictReader(fh):
            # 256 and 256.0 name the same run (pandas writes an int column holding a NaN as floats)
            name = ",".join(f"{k}={table_value(row[k])}" for k in TABLE_KEYS if row.get(k) not in ("", None))
            if name in body:
                sys.exit(f"{results_csv}: two runs named {name}")
            body[name] = {k: table_value(row[k]) for k in TABLE_OUTCOMES if k in row}
    return body


def printed(field: str, v):
    if not isinstance(v, (int, float)) or (isinstance(v, float) and math.isnan(v)):
        return v
    scale, digits = PRINTED.get(field, (1, 1))
    return f"{v * scale:.{digits}f}"


def per_run_rows(a: dict, b: dict) -> list[dict]:
    rows = []
    for run in sorted(set(a) | set(b)):
        ra, rb = a.get(run) or {}, b.get(run) or {}
        for field in sorted(set(ra) | set(rb)):
            x, y = ra.get(field), rb.get(field)
            num = all(isinstance(v, (int, float)) for v in (x, y))
            rows.append(
                {
                    "run": run,
                    "field": field,
                    "before": x,
                    "after": y,
                    "abs_diff": abs(x - y) if num else "",
                    "identical": not diff(x, y),
                    "identical_printed": printed(field, x) == printed(field, y),
                }
            )
    return rows


def diff(a, b, where: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                out.append(f"{where}/{k}: only in {'after' if k not in a else 'before'}")
            else:
                out += diff(a[k], b[k], f"{where}/{k}")
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{where}: length {len(a)} vs {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in diff(x, y, f"{where}[{i}]")]
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return []
    return [] if a == b else [f"{where}: {a!r} vs {b!r}"]


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
        body = table_fingerprint(args.results_csv)
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
