"""kdrl-table: every results.json under the given dirs -> tidy CSV, Markdown/LaTeX tables, plots.

    kdrl-table multirun/distill/2026-11-23/... --rows method --cols width --metric return_ratio --out docs/x
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from kdrl.tables import aggregate, collect, learning_curves, pivot, to_latex, to_markdown

def plot_all(df: pd.DataFrame, agg: pd.DataFrame, paths: list[str], out: Path, rows: str, cols: str, metric: str,
             curve_group: str) -> list[Path]:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    if cols in ("width", "student_size") and "param_ratio" in agg:
        fig, ax = plt.subplots(figsize=(5.5, 3.8))
        for key, grp in agg.groupby(rows):
            grp = grp.sort_values("param_ratio")
            x = 100 * grp["param_ratio"].to_numpy()
            ax.errorbar(x, 100 * grp["mean"], yerr=[100 * (grp["mean"] - grp["ci_low"]), 100 * (grp["ci_high"] - grp["mean"])],
                        marker="o", capsize=3, label=str(key))
        ax.axhline(100, color="grey", lw=0.8, ls="--")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        # one tick per column value (its mean fraction over rows): per-row fractions differ slightly
        ax.set_xticks(sorted(set(np.round(100 * agg.groupby(cols)["param_ratio"].mean().dropna(), 1))))
        ax.set_xlabel("student parameters (% of teacher)")
        ax.set_ylabel(f"{metric} (% of teacher)")
        ax.legend(fontsize=8)
        ax.set_title("Student return vs size (mean, 95% CI over seeds)")
        written += _save(fig, out / "ratio_vs_params")
    kl = df[(df["status"] == "ok") & df["loss"].isin(["kl", "kl_rusu"])] if "loss" in df else df.iloc[0:0]
    if kl["temperature"].nunique() > 1:
        fig, ax = plt.subplots(figsize=(5.5, 3.8))
        for w, grp in kl.groupby("width"):
            g = aggregate(grp, ["temperature"], metric).sort_values("temperature")
            ax.errorbar(g["temperature"], 100 * g["mean"], yerr=[100 * (g["mean"] - g["ci_low"]), 100 * (g["ci_high"] - g["mean"])],
                        marker="o", capsize=3, label=f"width {w}")
        ax.set_xscale("log")
        ax.set_xlabel("temperature tau")
        ax.set_ylabel(f"{metric} (% of teacher)")
        ax.legend(fontsize=8)
        ax.set_title("KL distillation: return vs temperature")
        written += _save(fig, out / "ratio_vs_temperature")
    curves = learning_curves(paths, curve_group)
    if curves:
        fig, ax = plt.subplots(figsize=(5.5, 3.8))
        for key, (x, mean, lo, hi) in sorted(curves.items(), key=lambda kv: str(kv[0])):
            ax.plot(x, mean, label=str(key))
            ax.fill_between(x, lo, hi, alpha=0.2)
        ax.set_xlabel("env steps")
        ax.set_ylabel("greedy return (periodic eval)")
        ax.legend(fontsize=8, title=curve_group)
        ax.set_title("Learning curves (mean, 95% CI over seeds)")
        written += _save(fig, out / f"curves_by_{curve_group}")
    plt.close("all")
    return written


def _save(fig, stem: Path) -> list[Path]:
    fig.tight_layout()
    paths = [stem.with_suffix(".png"), stem.with_suffix(".svg")]
    for p in paths:
        fig.savefig(p, dpi=130)
    return paths


def disk_use(paths: list[str]) -> str:
    """How much the runs take on disk, and how much of it is checkpoints."""
    files = [f for p in map(Path, paths) for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file()]
    total = sum(f.stat().st_size for f in files)
    ckpt = sum(f.stat().st_size for f in files if f.suffix in (".ckpt", ".pt"))
    return f"disk use: {total / 2**20:.1f} MiB in {len(files)} files ({ckpt / 2**20:.1f} MiB checkpoints)"


def geomean_row(agg: pd.DataFrame, cols: str, order: list) -> str:
    """Rusu et al. summarise games by the geometric mean of per-game % of teacher."""
    cells = []
    for col in order:  # the pivot table's column order
        means = agg.loc[agg[cols] == col, "mean"].to_numpy(dtype=float)
        ok = means[means > 0]
        g = float(np.exp(np.mean(np.log(ok)))) if len(ok) == len(means) and len(ok) else float("nan")
        cells.append(f"{100 * g:.1f}" if np.isfinite(g) else "– (a mean <= 0)")
    return "| geometric mean | " + " | ".join(cells) + " |"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="kdrl-table", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="+", help="sweep/run directories or results.json files")
    ap.add_argument("--rows", default="method")
    ap.add_argument("--cols", default="width")
    ap.add_argument("--metric", default="return_ratio")
    ap.add_argument("--kind", default="student", help="only results of this kind (teacher/student/all)")
    ap.add_argument("--curve-group", default="method")
    ap.add_argument("--out", default=None, help="directory for the CSV, tables and plots (default: first path)")
    ap.add_argument("--no-plots", action="store_true")
    args = ap.parse_args(argv)
    df = collect(args.paths)
    if df.empty:
        print("kdrl-table: no results.json found under " + ", ".join(args.paths), file=sys.stderr)
        return 1
    if args.kind != "all":
        df = df[df["kind"] == args.kind]
    out = Path(args.out or args.paths[0])
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "results.csv", index=False)
    try:
        df.to_parquet(out / "results.parquet", index=False)
    except ImportError:
        pass  # parquet needs pyarrow; the CSV holds the same rows
    failed = df[df["status"] != "ok"]
    for col in (args.rows, args.cols, args.metric):
        if col not in df:
            print(f"kdrl-table: no column '{col}' in the results (have: {', '.join(df.columns)})", file=sys.stderr)
            return 1
    agg = aggregate(df, [args.rows, args.cols], args.metric)
    pct = args.metric.endswith("return_ratio")
    table = pivot(agg, args.rows, args.cols, pct)
    n = sorted(agg["n"].unique().tolist())
    caption = (f"{args.metric}{' (% of teacher)' if pct else ''}: mean [95% bootstrap CI] over {'/'.join(map(str, n))} seeds; "
               f"{len(df) - len(failed)} ok runs, {len(failed)} failed")
    md = to_markdown(table, df, args.rows, args.cols)
    if pct and args.rows == "env_id" and agg[args.rows].nunique() > 1:
        md += "\n" + geomean_row(agg, args.cols, list(table.columns))
    (out / "table.md").write_text(f"{caption}\n\n{md}\n")
    (out / "table.tex").write_text(to_latex(table, df, args.rows, args.cols, caption))
    agg.to_csv(out / "table_cells.csv", index=False)
    print(caption + "\n\n" + md)
    iqm_table = agg.pivot(index=args.rows, columns=args.cols, values="iqm")
    print("\nIQM:\n" + (iqm_table * (100 if pct else 1)).round(1).to_string())
    if len(failed):
        print(f"\n{len(failed)} failed run(s):")
        for _, r in failed.iterrows():
            print(f"  {r['run_dir']}: {str(r.get('error'))[:200]}")
    if not args.no_plots:
        for p in plot_all(df, agg, args.paths, out, args.rows, args.cols, args.metric, args.curve_group):
            print(f"wrote {p}")
    print(disk_use(args.paths))
    print(f"wrote {out / 'results.csv'}, {out / 'table.md'}, {out / 'table.tex'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
