"""Scale of kdrl-study's bookkeeping (issue 28): a study dir with a 10,000-job index and a results.json
per job, then the wall time (subprocess, median of 3) of

    kdrl-study --status <dir>                  (target: <= 5 s)
    kdrl-study study=<it> dir=<dir> --tables   (target: <= 30 s; every finished job's results.json read)

The results.json files are real ones (docs/minatar/runs/*: MinAtar students, their eval history
included), copied with the seed and run dir changed; 1% of the jobs are left unfinished and 0.5% failed.

    python scripts/bench_study_index.py [--jobs 10000] [--out docs/study_scale.md]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "docs" / "minatar" / "runs").glob("*/*/results.json"))


def synthesise(sdir: Path, n_jobs: int) -> dict:
    """A study dir as kdrl-study leaves it: index.json, study.json and a run dir per job."""
    bodies = [json.loads(p.read_text()) for p in SOURCES]
    rows = []
    n_teachers = max(1, n_jobs // 100)
    for i in range(n_jobs):
        teacher = i < n_teachers
        stage = "teachers" if teacher else "students"
        body = dict(bodies[i % len(bodies)])
        seed = i
        name = (
            f"env=cartpole,seed={seed}"
            if teacher
            else f"loss={body.get('loss')},size={body.get('student_size')},seed={seed}"
        )
        run_dir = sdir / stage / name
        status = "ok"
        if i % 100 == 7:
            status = "pending"  # not run yet: no results.json
        elif i % 200 == 11:
            status = "failed"
        if status != "pending":
            run_dir.mkdir(parents=True)
            if teacher:
                body = {**body, "kind": "teacher"}
            body.update(seed=seed, run_dir=str(run_dir), status=status)
            if status == "failed":
                body["error"] = "RuntimeError: synthetic failure"
            (run_dir / "results.json").write_text(json.dumps(body))
        rows.append(
            {"id": f"{stage}/{name}", "stage": stage, "app": "train" if teacher else "distill", "name": name,
             "hash": f"{i:012x}", "run_dir": f"{stage}/{name}", "overrides": [f"seed={seed}", "debug=fast"],
             "needs": [] if teacher else [f"teachers/env=cartpole,seed={i % n_teachers}"],
             "status": status, "since": 0.0}
        )  # fmt: skip
    meta = {"study": "debug", "stages": ["teachers", "students"], "updated": time.time()}
    (sdir / "index.json").write_text(json.dumps({**meta, "jobs": rows}, separators=(",", ":")))
    return {"jobs": n_jobs, "results": sum(r["status"] != "pending" for r in rows)}


def timed(cmd: list[str], repeats: int = 3) -> tuple[float, list[float], str]:
    walls, out = [], ""
    for _ in range(repeats):
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "WANDB_MODE": "disabled"})
        walls.append(time.perf_counter() - t0)
        out = proc.stdout + proc.stderr
        if proc.returncode not in (0, 1):
            raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{out[-3000:]}")
    return statistics.median(walls), walls, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None, help="write the Markdown report here (e.g. docs/study_scale.md)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sdir = Path(tmp) / "study"
        t0 = time.perf_counter()
        made = synthesise(sdir, args.jobs)
        made_s = time.perf_counter() - t0
        py = [sys.executable, "-m", "kdrl.cli.study"]
        status_cmd = [*py, "--status", str(sdir)]
        # the debug study's declaration with this dir: its planned jobs differ from the synthetic index, so
        # the table is written through the study's writer directly (kdrl.study.write_table, as --tables does)
        table_code = (
            "import sys; from pathlib import Path; from kdrl.study import Index, Runner; "
            "sdir = Path(sys.argv[1]); "
            "study = {'name': 'debug', 'stages': {'teachers': {'app': 'train'}, 'students': {'app': 'distill'}}, "
            "'tables': {'main': {'rows': 'method', 'cols': 'student_size', 'plots': False}}}; "
            "[print(t[:600]) for t in Runner(study, sdir).write_tables()]"
        )
        table_cmd = [sys.executable, "-c", table_code, str(sdir)]
        status_s, status_all, status_out = timed(status_cmd, args.repeats)
        table_s, table_all, table_out = timed(table_cmd, args.repeats)
    first = status_out.splitlines()[0]
    lines = [
        f"# kdrl-study bookkeeping at scale ({args.jobs:,} jobs)",
        "",
        "`python scripts/bench_study_index.py --out docs/study_scale.md` (one core: `taskset -c 0`). A synthetic study dir:",
        f"an index of {made['jobs']:,} jobs and {made['results']:,} results.json files (real MinAtar student results from",
        f"docs/minatar/runs, ~{int(statistics.mean(p.stat().st_size for p in SOURCES) / 1024)} KiB each), 1% not run, 0.5% failed; made in {made_s:.1f} s.",
        f"Wall time of a fresh process each (imports included), median of {args.repeats}.",
        "",
        "| what | command | median (s) | runs (s) | target (s) |",
        "|---|---|---|---|---|",
        f"| status | `kdrl-study --status <dir>` | {status_s:.2f} | {', '.join(f'{w:.2f}' for w in status_all)} | 5 |",
        f"| table | `kdrl.study.write_table` (as `kdrl-study ... --tables`) | {table_s:.2f} | "
        f"{', '.join(f'{w:.2f}' for w in table_all)} | 30 |",
        "",
        f"--status says: `{first}`",
        "",
        f"The table's head: `{' '.join(table_out.split())[:300]}`",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
