"""Coverage and width of 95% intervals of the mean over n = 3, 5, 10 seeds, on the shapes kdrl's data
has: smooth distributions, a point mass at the ceiling, one outlier, failed seeds, and the per-seed
score vectors of the committed studies used as populations. Prints Markdown tables (docs/protocol.md).

    python scripts/ci_coverage.py [--trials 2000] [--pop-trials 1000] [--csv docs/ci_coverage.csv]
    python scripts/ci_coverage.py --cells     # the audited published cells, old interval against new
    python scripts/ci_coverage.py --only second_round   # only the committed cells of one study (MinAtar round 2)
    python scripts/ci_coverage.py --slopes    # the convergence tables' per-run end slopes as populations
    python scripts/ci_coverage.py --paired    # the budget tables' slope within seeds (paired differences)

Methods: kdrl's ``mean_ci`` (Hall's transformed t, Student's t below 5 seeds, clipped to the score's
range, flagged where ties sit at a bound); the bootstrap-t kdrl used before (zero-spread resamples
dropped, unclipped); Student's t, a repaired bootstrap-t and BCa, each clipped to the range.
Coverage of kdrl's method is over the experiments it does not flag ("cov | ok"), with the share it
flags; the others never flag. Width is the mean width of the intervals counted.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import norm
from scipy.stats import t as student_t

from kdrl.scores import normalized_bounds
from kdrl.statistics import mean_ci, mean_slope, run_end_slope, slope_ci
from kdrl.tables import last_paired_differences

ROOT = Path(__file__).resolve().parents[1]
INF = math.inf


# ---- comparators (kdrl's own method is kdrl.statistics.mean_ci) -----------------------------------------
def old_bootstrap_t(x, bounds, reps=1999):
    """kdrl's interval before: bootstrap-t that drops resamples with zero spread, not clipped."""
    n, m = len(x), x.mean()
    se = x.std(ddof=1) / np.sqrt(n)
    if se == 0:
        return m, m
    b = x[np.random.default_rng(0).integers(0, n, size=(reps, n))]
    b_se = b.std(axis=1, ddof=1) / np.sqrt(n)
    ok = b_se > 0
    t = (b.mean(axis=1)[ok] - m) / b_se[ok]
    return m - np.quantile(t, 0.975) * se, m - np.quantile(t, 0.025) * se


def student(x, bounds):
    n, m = len(x), x.mean()
    h = student_t.ppf(0.975, n - 1) * x.std(ddof=1) / np.sqrt(n)
    return max(m - h, bounds[0]), min(m + h, bounds[1])


def repaired_bootstrap_t(x, bounds, reps=1999):
    """Bootstrap-t keeping zero-spread resamples (t = 0, or +-1e12 standing for +-inf) with a relative
    tolerance, clipped to the range."""
    n, m = len(x), x.mean()
    scale = max(np.abs(x).max(), 1.0)
    se = x.std(ddof=1) / np.sqrt(n)
    if se <= 1e-12 * scale:
        return m, m
    b = x[np.random.default_rng(0).integers(0, n, size=(reps, n))]
    d, b_se = b.mean(axis=1) - m, b.std(axis=1, ddof=1) / np.sqrt(n)
    tiny = b_se <= 1e-12 * scale
    t = np.where(tiny, np.where(np.abs(d) > 1e-12 * scale, np.sign(d) * 1e12, 0.0), d / np.where(tiny, 1, b_se))
    return max(m - np.quantile(t, 0.975) * se, bounds[0]), min(m - np.quantile(t, 0.025) * se, bounds[1])


def bca(x, bounds, reps=1999):
    n, m = len(x), x.mean()
    bm = x[np.random.default_rng(0).integers(0, n, size=(reps, n))].mean(axis=1)
    p = np.clip((bm < m).mean() + 0.5 * (bm == m).mean(), 1 / (reps + 1), reps / (reps + 1))
    z0 = norm.ppf(p)
    jk = (m * n - x) / (n - 1)
    d = jk.mean() - jk
    den = 6 * (d**2).sum() ** 1.5
    a = (d**3).sum() / den if den > 0 else 0.0
    q = lambda al: norm.cdf(z0 + (z0 + norm.ppf(al)) / (1 - a * (z0 + norm.ppf(al))))
    return max(np.quantile(bm, q(0.025)), bounds[0]), min(np.quantile(bm, q(0.975)), bounds[1])


COMPARATORS = {
    "bootstrap-t (before)": old_bootstrap_t,
    "Student t": student,
    "bootstrap-t repaired": repaired_bootstrap_t,
    "BCa": bca,
}


# ---- the suite ---------------------------------------------------------------------------------------------
def _mix(p, rare, common):
    return lambda r, n: np.where(r.random(n) < p, rare(r, n), common(r, n))


# name -> (draw(rng, n), score bounds, rare-component probability or None)
SHAPES = {
    "normal(0.8, 0.15)": (lambda r, n: r.normal(0.8, 0.15, n), (-INF, INF), None),
    "beta(8, 2)": (lambda r, n: r.beta(8, 2, n), (0.0, 1.0), None),
    "beta(2, 2)": (lambda r, n: r.beta(2, 2, n), (0.0, 1.0), None),
    "1 - gamma(2, 0.1)": (lambda r, n: 1 - r.gamma(2, 0.1, n), (-INF, 1.0), None),
    "lognormal(-0.1, 0.25)": (lambda r, n: np.exp(r.normal(-0.1, 0.25, n)), (0.0, INF), None),
    "ceiling: 1 w.p. 0.7, else U(0.3, 1)": (
        _mix(0.7, lambda r, n: np.ones(n), lambda r, n: r.uniform(0.3, 1, n)),
        (0.0, 1.0),
        None,
    ),
    "ceiling: 1 w.p. 0.3, else beta(8, 2)": (
        _mix(0.3, lambda r, n: np.ones(n), lambda r, n: r.beta(8, 2, n)),
        (0.0, 1.0),
        None,
    ),
    "one outlier: 10% at N(0.7, 0.05), else N(0.35, 0.03)": (
        _mix(0.1, lambda r, n: r.normal(0.7, 0.05, n), lambda r, n: r.normal(0.35, 0.03, n)),
        (-0.03, INF),
        0.1,
    ),
    "failures: 20% at N(0.05, 0.03), else N(0.9, 0.05)": (
        _mix(0.2, lambda r, n: r.normal(0.05, 0.03, n), lambda r, n: r.normal(0.9, 0.05, n)),
        (-INF, INF),
        0.2,
    ),
    "failures: 40% at N(0.05, 0.03), else N(0.9, 0.05)": (
        _mix(0.4, lambda r, n: r.normal(0.05, 0.03, n), lambda r, n: r.normal(0.9, 0.05, n)),
        (-INF, INF),
        0.4,
    ),
}

STUDIES = [
    "docs/cartpole_losses/results.csv",
    "docs/control/results.csv",
    "docs/lunarlander_students/results.csv",
    "docs/rusu2016/compression/results.csv",
    "docs/rusu2016/losses/results.csv",
    "docs/minatar/second_round/compression/results.csv",  # issue 27's second round: teacher variance in every cell
    "docs/minatar/second_round/losses/results.csv",  # its rusu_7 KL cells are compression's: counted once
    "docs/minatar/second_round/control/results.csv",
    "docs/minatar/second_round/compression_rusu/results.csv",  # one teacher seed: student variance only
    "docs/minatar/second_round/compression_rusu_asterix/results.csv",  # Asterix over three wide teacher seeds
    "docs/minatar/second_round/compression_rusu_n3/results.csv",  # and SpaceInvaders (its other cells: counted once)
    "docs/minatar/second_round/compression_rusu_breakout/results.csv",  # and Breakout (one teacher's: counted once)
    "docs/minatar/second_round/compression_rusu_freeway/results.csv",  # and Freeway (one teacher's: counted once)
    "docs/minatar/second_round/reuse/results.csv",
]
# columns that split a study's cells beyond the usual ones (reuse: its kickstart and qdagger share a method name)
CELL_KEYS = {
    "docs/minatar/second_round/reuse/results.csv": ("stage",),
    "docs/minatar/second_round/compression_rusu_breakout/results.csv": ("stage",),  # one teacher / three teachers
    "docs/minatar/second_round/compression_rusu_freeway/results.csv": ("stage",),
}


def populations() -> list[tuple[str, np.ndarray, tuple[float, float]]]:
    """Every committed cell's per-seed normalised scores (ok runs, >= 3 seeds), deduplicated, with the
    bounds its env's return range gives it."""
    cells, seen = [], set()
    for f in STUDIES:
        df = pd.read_csv(ROOT / f)
        df = df[df["status"] == "ok"]
        keys = [k for k in ("env_id", "method", "width", "student_size", "control") if k in df and df[k].notna().any()]
        keys += CELL_KEYS.get(f, ())
        for key, g in df.groupby(keys, dropna=False):
            study = f.removeprefix("docs/").removesuffix("/results.csv")
            cells.append((f"{study}: " + " ".join(str(k) for k in key if k == k), g, g["env_id"].iloc[0]))
    for f in sorted((ROOT / "docs/minatar").glob("*_runs.csv")):
        df = pd.read_csv(f)
        df = df[df["status"] == "ok"]
        envs = {"space_invaders": "SpaceInvaders"}
        for (game, tag), g in df.groupby(["game", "tag"]):
            env = f"MinAtar/{envs.get(game, game.capitalize())}-v1"
            cells.append((f"minatar {f.stem.replace('_runs', '')}: {game} {tag}", g, env))
    out = []
    for name, g, env in cells:
        v = g["normalized_score"].to_numpy(float)
        if len(v) < 3 or not np.isfinite(v).all() or tuple(np.round(v, 9)) in seen:
            continue
        seen.add(tuple(np.round(v, 9)))
        out.append((name, v, normalized_bounds(env, g["teacher_return_mean"], g["random_return_mean"])))
    return out


# the convergence (end_slope) tables' curves: each run's slope per doubling over its last third is one value
SLOPE_CURVES = [
    "docs/minatar/second_round/convergence/curves.csv",
    "docs/minatar/second_round/convergence_rusu/curves.csv",
    "docs/minatar/second_round/convergence_rusu_asterix/curves.csv",
    "docs/minatar/second_round/convergence_rusu_n3/curves.csv",  # its Asterix cells are convergence_rusu_asterix's
    "docs/minatar/second_round/convergence_rusu_breakout/curves.csv",
    "docs/minatar/second_round/convergence_rusu_freeway/curves.csv",
    "docs/minatar/second_round/convergence_losses/curves.csv",
    "docs/minatar/second_round/convergence_control/curves.csv",
]


def slope_populations() -> list[tuple[str, np.ndarray, tuple[float, float]]]:
    """Every convergence cell's per-run end slopes (kdrl.statistics.run_end_slope, as the table computes
    them), unbounded: the interval the end_slope table prints is mean_ci of these."""
    out = []
    for f in SLOPE_CURVES:
        df = pd.read_csv(ROOT / f)
        study = f.removeprefix("docs/minatar/second_round/").removesuffix("/curves.csv")
        cell = df.columns[1]  # the table's second group: student_size, method or control
        for (env, size), g in df.groupby(["env_id", cell], sort=False):
            runs = [run_end_slope(r["env_steps"], r["normalized_score"]) for _, r in g.groupby("seed")]
            v = np.array([s for s in runs if s is not None])
            if len(v) >= 3:
                out.append((f"{study} slopes: {env} {size}", v, (-INF, INF)))
    return out


def measure(draw, bounds, true, n, trials, seed=12345, slopes=False):
    """{method: (coverage, width, flagged share)} over ``trials`` simulated experiments. ``slopes``: kdrl's
    interval is the end_slope table's (``mean_slope``: no spread gives a point, never a flag)."""
    rng = np.random.default_rng(seed)
    acc = {k: [0, 0, 0.0] for k in ["kdrl", *COMPARATORS]}  # hits, counted, width sum
    flagged = 0
    for _ in range(trials):
        x = draw(rng, n)
        ci = mean_slope(x) if slopes else mean_ci(x, bounds=bounds)
        if not slopes and ci.flag:
            flagged += 1
        else:
            a = acc["kdrl"]
            a[0] += ci.low <= true <= ci.high
            a[1] += 1
            a[2] += ci.high - ci.low
        for name, f in COMPARATORS.items():
            lo, hi = f(x, bounds)
            a = acc[name]
            a[0] += lo <= true <= hi
            a[1] += 1
            a[2] += hi - lo if np.isfinite(hi - lo) else np.nan
    res = {k: (h / c if c else math.nan, w / c if c else math.nan) for k, (h, c, w) in acc.items()}
    return res, flagged / trials


# ---- the budget tables' slope within seeds (pair_by: seed) ---------------------------------------------------
# per-seed differences per doubling: name -> draw(rng, n)
PAIRED_SHAPES = {
    "normal(0, 0.1)": lambda r, n: r.normal(0.0, 0.1, n),
    "one outlier seed: 10% at +0.6, else N(0, 0.08)": _mix(
        0.1, lambda r, n: np.full(n, 0.6), lambda r, n: r.normal(0.0, 0.08, n)
    ),
    "ties at the ceiling: 0 w.p. 0.7, else N(0, 0.1)": _mix(
        0.7, lambda r, n: np.zeros(n), lambda r, n: r.normal(0.0, 0.1, n)
    ),
    "a seed failing at one budget: 10% at -0.8, else N(0.02, 0.08)": _mix(
        0.1, lambda r, n: np.full(n, -0.8), lambda r, n: r.normal(0.02, 0.08, n)
    ),
}
PAIRED_TABLES = ["docs/minatar/student_budget/results.csv", "docs/minatar/student_budget_plateau/results.csv"]


def paired_interval(d: np.ndarray) -> tuple[float, float]:
    """The interval a budget table with ``pair_by: seed`` prints for per-seed differences ``d`` (one doubling
    apart): kdrl.statistics.slope_ci within seeds, as the table calls it."""
    n = len(d)
    s = slope_ci(np.r_[np.zeros(n), np.ones(n)], np.r_[np.zeros(n), d], blocks=[*range(n), *range(n)])
    return s.low, s.high


def paired_coverage(trials: int, pop_trials: int) -> None:
    """Coverage and width of the slope-within-seeds interval on difference shapes and on the committed
    curves' per-seed differences as populations (drawn with replacement)."""
    suite = [(k, f, float(f(np.random.default_rng(999), 2_000_000).mean()), trials) for k, f in PAIRED_SHAPES.items()]
    for csv in PAIRED_TABLES:
        df = pd.read_csv(ROOT / csv)
        for (env, size), g in df[df["status"] == "ok"].groupby(["env_id", "student_size"]):
            _, _, d = last_paired_differences(g)
            v = d.to_numpy()
            suite.append((f"{Path(csv).parent.name}: {env} {size}", lambda r, n, v=v: v[r.integers(0, len(v), n)],
                          float(v.mean()), pop_trials))  # fmt: skip
    print("Coverage of the 95% slope within seeds (width in brackets), per n seeds\n")
    print("| shape of the per-seed differences | experiments | n = 3 | n = 5 | n = 10 |")
    print("|---|---|---|---|---|")
    for name, draw, true, k in suite:
        cells = []
        for n in (3, 5, 10):
            rng = np.random.default_rng(12345)
            hits, width, counted = 0, 0.0, 0
            for _ in range(k):
                lo, hi = paired_interval(draw(rng, n))
                if np.isfinite(lo) and np.isfinite(hi):
                    hits += lo <= true <= hi
                    width += hi - lo
                    counted += 1
            cells.append(f"{hits / counted:.3f} ({width / counted:.2f})" if counted else "–")
        print(f"| {name} | {k} | " + " | ".join(cells) + " |")


def _cell_values(csv: str, where: dict, metric: str = "normalized_score") -> pd.DataFrame:
    df = pd.read_csv(ROOT / csv)
    for k, v in where.items():
        df = df[df[k].astype(str) == str(v)]
    return df[df["status"] == "ok"]


# (label, file, row filter, env id, scale): the cells the statistics audit named
AUDITED = [
    ("CartPole losses kl 4.0%", "docs/cartpole_losses/results.csv", {"method": "kl (tau=0.01)", "width": 48}, "CartPole-v1", 100),
    ("CartPole losses kl 6.8%", "docs/cartpole_losses/results.csv", {"method": "kl (tau=0.01)", "width": 64}, "CartPole-v1", 100),
    ("CartPole losses nll 25.8%", "docs/cartpole_losses/results.csv", {"method": "nll", "width": 128}, "CartPole-v1", 100),
    ("CartPole losses mse 4.0%", "docs/cartpole_losses/results.csv", {"method": "mse", "width": 48}, "CartPole-v1", 100),
    ("CartPole control teacher", "docs/control/results.csv", {"control": "teacher"}, "CartPole-v1", 100),
    ("MinAtar Asterix 25%", "docs/minatar/compression_runs.csv", {"game": "asterix", "tag": "kl_rusu-rusu_25-teacher"}, "MinAtar/Asterix-v1", 100),
    ("MinAtar Asterix 7%", "docs/minatar/compression_runs.csv", {"game": "asterix", "tag": "kl_rusu-rusu_7-teacher"}, "MinAtar/Asterix-v1", 100),
    ("MinAtar Breakout 4%", "docs/minatar/compression_runs.csv", {"game": "breakout", "tag": "kl_rusu-rusu_4-teacher"}, "MinAtar/Breakout-v1", 100),
    ("MinAtar SpaceInvaders 7% (%)", "docs/minatar/compression_runs.csv", {"game": "space_invaders", "tag": "kl_rusu-rusu_7-teacher"}, "MinAtar/SpaceInvaders-v1", 100),
    ("MinAtar SpaceInvaders 7% (fraction)", "docs/minatar/compression_runs.csv", {"game": "space_invaders", "tag": "kl_rusu-rusu_7-teacher"}, "MinAtar/SpaceInvaders-v1", 1),
    ("MinAtar SpaceInvaders mixed", "docs/minatar/control_runs.csv", {"game": "space_invaders", "tag": "kl_rusu-rusu_7-mixed"}, "MinAtar/SpaceInvaders-v1", 100),
    ("MinAtar SpaceInvaders kickstart", "docs/minatar/reuse_runs.csv", {"game": "space_invaders", "tag": "kickstart-full"}, "MinAtar/SpaceInvaders-v1", 100),
]  # fmt: skip


def audited_cells() -> None:
    """The published cells the audit named: the old interval, Student's t and kdrl's, side by side."""
    print("| cell | seeds | old bootstrap-t | Student t | kdrl (new) |\n|---|---|---|---|---|")
    rows = [(label, _cell_values(f, w), env, k) for label, f, w, env, k in AUDITED]
    search = pd.read_csv(ROOT / "docs/search.csv")
    teacher = search[(search["search"] == "teacher") & (search["config"] == "best") & (search["status"] == "ok")]
    for label, df, env, k in rows:
        v = k * df["normalized_score"].to_numpy(float)
        b = normalized_bounds(env, df["teacher_return_mean"], df["random_return_mean"])
        _cell_row(label, v, (k * b[0], k * b[1]), 1 if k == 100 else 3)
    _cell_row("CartPole teacher search, best (return)", teacher["metric"].to_numpy(float), (0.0, 500.0), 1)


def _cell_row(label, v, bounds, d) -> None:
    f = lambda a, b: f"[{a:.{d}f}, {b:.{d}f}]"  # noqa: E731
    new = mean_ci(v, bounds=bounds).text(f".{d}f")
    seeds = " / ".join(f"{x:.{d}f}" for x in v)
    print(
        f"| {label} | {seeds} | {v.mean():.{d}f} {f(*old_bootstrap_t(v, bounds))} | {f(*student(v, (-INF, INF)))} | {new} |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", action="store_true", help="only the audited published cells, old against new")
    ap.add_argument("--trials", type=int, default=2000)
    ap.add_argument("--pop-trials", type=int, default=1000)
    ap.add_argument("--csv", default=None, help="also write every (shape, n, method) row here")
    ap.add_argument(
        "--only", default=None, help="only the committed cells whose name contains this (no simulated shapes)"
    )
    ap.add_argument(
        "--slopes", action="store_true", help="the convergence tables' per-run end slopes as the populations"
    )
    ap.add_argument("--paired", action="store_true", help="the budget tables' slope within seeds")
    args = ap.parse_args()
    if args.paired:
        paired_coverage(args.trials, args.pop_trials)
        return
    if args.cells:
        audited_cells()
        return
    t0 = time.time()
    rows = []
    shapes = {} if args.only or args.slopes else SHAPES
    suite = [
        (name, draw, b, rare, float(draw(np.random.default_rng(999), 2_000_000).mean()), args.trials)
        for name, (draw, b, rare) in shapes.items()
    ]
    for name, v, b in slope_populations() if args.slopes else populations():
        if args.only and args.only not in name:
            continue
        draw = lambda r, n, v=v: v[r.integers(0, len(v), n)]
        rare = None
        suite.append((name, draw, b, rare, float(v.mean()), args.pop_trials))
    for name, draw, b, rare, true, trials in suite:
        for n in (3, 5, 10):
            res, fl = measure(draw, b, true, n, trials, slopes=args.slopes)
            for method, (cov, width) in res.items():
                rows.append(
                    {
                        "shape": name,
                        "n": n,
                        "method": method,
                        "coverage": cov,
                        "width": width,
                        "flagged": fl if method == "kdrl" else 0.0,
                        "rare": rare,
                        "trials": trials,
                    }
                )
    df = pd.DataFrame(rows)
    if df.empty:
        print(f"ci_coverage: no committed cell's name contains {args.only!r}")
        return
    if args.csv:
        df.to_csv(args.csv, index=False)
    methods = ["kdrl", *COMPARATORS]
    shapes = list(shapes)
    print(f"Coverage of nominal 95% intervals of the mean (width in brackets), {args.trials} experiments per cell\n")
    print("| shape | n | " + " | ".join(methods) + " | kdrl flags |")
    print("|---" * (len(methods) + 3) + "|")
    for s in shapes:
        for n in (3, 5, 10):
            d = df[(df["shape"] == s) & (df["n"] == n)].set_index("method")
            cells = [f"{d.loc[m, 'coverage']:.3f} ({d.loc[m, 'width']:.2f})" for m in methods]
            print(f"| {s} | {n} | " + " | ".join(cells) + f" | {d.loc['kdrl', 'flagged']:.2f} |")
    pops = df[~df["shape"].isin(shapes)]
    print(
        f"\nCommitted cells as populations ({pops['shape'].nunique()} cells, {args.pop_trials} experiments each): "
        "median and minimum coverage over cells, share of cells >= 0.93, mean width\n"
    )
    print("| n | method | median | min | share >= 0.93 | width |")
    print("|---|---|---|---|---|---|")
    for n in (3, 5, 10):
        for m in methods:
            d = pops[(pops["n"] == n) & (pops["method"] == m)].dropna(subset=["coverage"])
            print(
                f"| {n} | {m} | {d['coverage'].median():.3f} | {d['coverage'].min():.3f} | "
                f"{(d['coverage'] >= 0.93).mean():.2f} ({len(d)} cells) | {d['width'].median():.3f} |"
            )
    worst = pops[(pops["method"] == "kdrl") & (pops["coverage"] < 0.93)].sort_values("coverage")
    print("\nPopulations where kdrl's unflagged coverage is below 0.93:")
    for _, r in worst.iterrows():
        print(f"  n={r['n']:2d} {r['coverage']:.3f} flagged {r['flagged']:.2f}  {r['shape']}")
    print(f"\n({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
