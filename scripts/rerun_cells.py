"""Did a rerun reproduce a published table, cell by cell, within what the seeds can tell?

Runs of the same declaration on another CPU are not bit-identical (docs/studies_reproduction.md), so the
question for a rerun is statistical: kdrl.fingerprint.rerun_cells prints, per cell, the published and the
rerun mean [95% CI] as the tables compute them, whether the rerun's mean lies inside the published
interval and P(rerun > published) with its CI; then per column the geometric means over the rows.

    python scripts/rerun_cells.py docs/minatar/second_round/compression/results.csv \\
        outputs/core_timed/tables/compression/results.csv --where student_size=rusu_25,rusu_7,rusu_4
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from kdrl.fingerprint import rerun_cells


def read_runs(path: Path, where: dict[str, list[str]]) -> pd.DataFrame:
    df = pd.read_csv(path)
    for col, values in where.items():
        if col not in df:
            sys.exit(f"{path}: no column {col!r} to filter on (has: {', '.join(df.columns)})")
        df = df[df[col].astype(str).isin(values)]
    if df.empty:
        sys.exit(f"{path}: no runs left after --where {where}")
    return df


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("published", type=Path, help="the published table's results.csv")
    ap.add_argument("rerun", type=Path, help="the rerun's results.csv (<study dir>/tables/<name>/results.csv)")
    ap.add_argument("--rows", default="env_id")
    ap.add_argument("--cols", default="student_size")
    ap.add_argument("--metric", default="normalized_score")
    ap.add_argument("--scale", type=float, default=100.0, help="printed as metric x scale (default: %% of teacher)")
    ap.add_argument("--where", action="append", default=[], metavar="COL=A,B", help="keep only these values")
    args = ap.parse_args(argv)
    where = {}
    for w in args.where:
        col, sep, values = w.partition("=")
        if not sep or not values:
            ap.error(f"--where takes COL=A,B, got {w!r}")
        where[col] = values.split(",")
    for p in (args.published, args.rerun):
        if not p.is_file():
            ap.error(f"no such results.csv: {p}")
    published, rerun = read_runs(args.published, where), read_runs(args.rerun, where)
    print(rerun_cells(published, rerun, args.rows, args.cols, args.metric, args.scale))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
