"""kdrl-table: every results.json under the given dirs -> tidy CSV, Markdown/LaTeX tables, plots.

kdrl-table multirun/distill/2026-11-23/... --rows method --cols width --out docs/x
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kdrl.tables import collect, disk_use, plot_all, summary_table


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="kdrl-table", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("paths", nargs="+", help="sweep/run directories or results.json files")
    ap.add_argument("--rows", default="method")
    ap.add_argument("--cols", default="width")
    ap.add_argument("--metric", default="normalized_score", help="results key (default: the normalised score)")
    ap.add_argument("--kind", default="student", help="only results of this kind (teacher/student/all)")
    ap.add_argument("--curve-group", default="method")
    ap.add_argument("--out", default=None, help="directory for the CSV, tables and plots (default: first path)")
    ap.add_argument("--no-plots", action="store_true")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    df = collect(args.paths)
    if df.empty:
        print("kdrl-table: no results.json found under " + ", ".join(args.paths), file=sys.stderr)
        return 1
    unreadable = df[df["status"] == "unreadable"]
    df = df[df["status"] != "unreadable"]
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
    readable = [p for p in args.paths if Path(p).exists()]
    out = Path(args.out or readable[0])
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "results.csv", index=False)
    try:
        df.to_parquet(out / "results.parquet", index=False)
    except ImportError:
        pass  # parquet needs pyarrow; the CSV holds the same rows
    for col in (args.rows, args.cols, args.metric):
        if col not in df:
            print(f"kdrl-table: no column '{col}' in the results (have: {', '.join(df.columns)})", file=sys.stderr)
            return 1
    summary = summary_table(df, args.rows, args.cols, args.metric)
    (out / "table.md").write_text(f"{summary.caption}\n\n{summary.markdown}\n")
    (out / "table.tex").write_text(summary.latex)
    summary.cells.to_csv(out / "table_cells.csv", index=False)
    print(summary.caption + "\n\n" + summary.markdown)
    print("\nIQM:\n" + summary.iqm.to_string())
    failed = df[df["status"] != "ok"]
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
