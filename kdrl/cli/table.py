"""kdrl-table: every results.json under the given dirs -> tidy CSV, Markdown/LaTeX tables, plots.

kdrl-table multirun/distill/2026-11-23/... --rows method --cols width --out docs/x
kdrl-table docs/minatar/runs --rows env_id --cols student_size --aggregate --compare rusu_25,rusu_7

--aggregate adds the aggregates across the --rows values (the tasks) for each --cols value: IQM and
mean with stratified-bootstrap CIs, P(X > Y) for each --compare pair, and performance profiles.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from kdrl.errors import OutputPathError, one_line, writable_dir
from kdrl.tables import (
    UNFINISHED,
    collect,
    collect_unfinished,
    cross_task,
    disk_use,
    plot_all,
    plot_profiles,
    summary_table,
    write_csv_atomic,
    write_text_atomic,
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="kdrl-table", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "paths", nargs="+", help="sweep/run directories, results.json files, or a results.csv kdrl-table wrote"
    )
    ap.add_argument("--rows", default="method")
    ap.add_argument("--cols", default="width")
    ap.add_argument("--metric", default="normalized_score", help="results key (default: the normalised score)")
    ap.add_argument("--kind", default="student", help="only results of this kind (teacher/student/all)")
    ap.add_argument("--curve-group", default="method")
    ap.add_argument("--out", default=None, help="directory for the CSV, tables and plots (default: first path)")
    ap.add_argument("--no-plots", action="store_true")
    ap.add_argument("--aggregate", action="store_true", help="aggregates across the --rows values (tasks)")
    ap.add_argument(
        "--compare", action="append", default=[], metavar="X,Y", help="P(X > Y) for two --cols values (repeatable)"
    )
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    df = collect(args.paths)
    # runs still going (a run dir without results.json): counted per cell, their cells marked incomplete
    unfinished = collect_unfinished([p for p in args.paths if Path(p).is_dir()])
    if df.empty and len(unfinished):
        df = unfinished
    elif len(unfinished):
        df = pd.concat([df, unfinished], ignore_index=True)
    if df.empty:
        print("kdrl-table: no results.json found under " + ", ".join(args.paths), file=sys.stderr)
        return 1
    unreadable = df[df["status"] == "unreadable"]
    df = df[df["status"] != "unreadable"]
    if df.empty and len(unreadable) == 1:  # the one file given, or all there was: one line
        r = unreadable.iloc[0]
        print(
            f"kdrl-table: error: none of the 1 results file(s) could be read: {r['run_dir']}: {r['error']}",
            file=sys.stderr,
        )
        return 1
    for _, r in unreadable.head(20).iterrows():
        print(f"kdrl-table: unreadable: {r['run_dir']}: {r['error']}", file=sys.stderr)
    if len(unreadable) > 20:
        print(f"kdrl-table: ... and {len(unreadable) - 20} more unreadable", file=sys.stderr)
    if df.empty:
        print(f"kdrl-table: error: none of the {len(unreadable)} results file(s) could be read", file=sys.stderr)
        return 1
    if args.kind != "all":
        df = df[df["kind"] == args.kind]
        if df.empty:
            print(f"kdrl-table: error: no results of kind '{args.kind}' (use --kind all)", file=sys.stderr)
            return 1
    for col in (args.rows, args.cols, args.metric):  # before anything is written
        if col not in df:
            print(f"kdrl-table: no column '{col}' in the results (have: {', '.join(df.columns)})", file=sys.stderr)
            return 1
    readable = [p for p in args.paths if Path(p).exists()]
    first = Path(readable[0])
    try:
        out = writable_dir(args.out or (first.parent if first.is_file() else first), "--out")
    except OutputPathError as exc:
        print(f"kdrl-table: error: {exc}", file=sys.stderr)
        return 1
    summary = summary_table(df, args.rows, args.cols, args.metric)
    try:  # each file whole or not at all: a full disk keeps the previous table (kdrl.io.atomic_write)
        write_csv_atomic(out / "results.csv", df)
        try:
            df.to_parquet(out / "results.parquet", index=False)
        except ImportError:
            pass  # parquet needs pyarrow; the CSV holds the same rows
        write_text_atomic(out / "table.tex", summary.latex)
        write_csv_atomic(out / "table_cells.csv", summary.cells)
        write_text_atomic(out / "table.md", f"{summary.caption}\n\n{summary.markdown}\n")
    except OSError as exc:
        print(f"kdrl-table: error: {one_line(exc)}", file=sys.stderr)
        return 1
    print(summary.caption + "\n\n" + summary.markdown)
    print("\nIQM:\n" + summary.iqm.to_string())
    if args.aggregate or args.compare:
        pairs = [tuple(c.split(",")) for c in args.compare]
        bad = [c for c, p in zip(args.compare, pairs) if len(p) != 2]
        if bad:
            print(f"kdrl-table: error: --compare takes two --cols values X,Y, got '{bad[0]}'", file=sys.stderr)
            return 1
        # --cols values are strings on the command line; match them to the column's own values
        names = {str(v): v for v in df[args.cols].dropna().unique()}
        try:
            ct = cross_task(
                df, args.rows, args.cols, args.metric, [(names.get(x, x), names.get(y, y)) for x, y in pairs]
            )
        except ValueError as exc:
            print(f"kdrl-table: error: {exc}", file=sys.stderr)
            return 1
        try:
            write_text_atomic(out / "aggregate.md", ct.markdown + "\n")
            write_csv_atomic(out / "aggregate.csv", ct.cells)
        except OSError as exc:
            print(f"kdrl-table: error: {one_line(exc)}", file=sys.stderr)
            return 1
        print("\n" + ct.markdown)
        if not args.no_plots:
            for p in plot_profiles(ct, out, args.metric):
                print(f"wrote {p}")
    failed = df[~df["status"].isin(["ok", "pruned", UNFINISHED])]  # pruned: stopped by a search's pruner, on purpose
    if len(failed):
        print(f"\n{len(failed)} failed run(s):")
        for _, r in failed.iterrows():
            print(f"  {r['run_dir']}: {str(r.get('error'))[:200]}")
    if not args.no_plots:
        for p in plot_all(df, summary.cells, readable, out, args.rows, args.cols, args.metric, args.curve_group):
            print(f"wrote {p}")
    print(disk_use(readable))
    if len(unreadable):
        print(f"{len(unreadable)} unreadable results file(s) skipped (listed on stderr)")
    print(f"wrote {out / 'results.csv'}, {out / 'table.md'}, {out / 'table.tex'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
