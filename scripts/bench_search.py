#!/usr/bin/env python
"""The two Optuna searches of conf/hparams_search (issue 15), then their best configurations against
the defaults on fresh seeds.

1. ``kdrl-distill hparams_search=cartpole_student_optuna launcher=joblib`` (30 trials, a 4%-params
   CartPole student: lr, temperature, batch, updates per round; objective: held-out normalised score);
2. ``kdrl-train hparams_search=cartpole_teacher_optuna launcher=joblib`` (20 trials, the CartPole teacher;
   objective: held-out return).
Each search trains on seed 0; its best configuration and the defaults are then re-run on seeds 1..5
(never seen by the search) and compared on their held-out evaluation: mean [95% bootstrap-t CI] over
the 5 seeds and Welch's t-test. Wall time and trials per minute are reported. Finished parts are
skipped on a rerun. Writes docs/search.md and docs/search.csv.

    python scripts/bench_search.py [--parts student teacher] [--seeds 1 2 3 4 5]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
COMMON = ["launcher=joblib", "logger=csv", "trainer.enable_progress_bar=false"]
PARTS = {
    # app, preset, overrides of the search and the re-runs (the re-runs also get the preset's student size), metric
    "student": ("kdrl-distill", "cartpole_student_optuna", [], "normalized_score"),
    "teacher": ("kdrl-train", "cartpole_teacher_optuna", [], "eval_return_mean"),
    # CartPole's 4% student reaches the teacher with the defaults already; so does Acrobot's (docs/search.md)
    "student_acrobot": ("kdrl-distill", "cartpole_student_optuna", ["env=acrobot"], "normalized_score"),
}
PART_ENVS = {"student": "CartPole-v1", "teacher": "CartPole-v1", "student_acrobot": "Acrobot-v1"}
SECTION = "## The first searches (issue 15: hydra-optuna-sweeper 1.3, Optuna 2.10, no pruning)"
RERUN_FIXED = {"kdrl-distill": ["student.size=rusu_4"], "kdrl-train": []}


def run(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return time.perf_counter() - t0


def search(part: str, out: Path, env: dict[str, str]) -> dict:
    app, preset, fixed, _ = PARTS[part]
    sweep = out / part / "search"
    done = sweep / "search.json"
    if done.is_file():
        return json.loads(done.read_text())
    wall = run([str(BIN / app), f"hparams_search={preset}", *COMMON, *fixed, f"hydra.sweep.dir={sweep}"], env)
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    trials = [json.loads(p.read_text()) for p in sweep.glob("*/results.json")]
    info = {
        "wall_s": wall,
        "trials": len(trials),
        "failed": sum(r["status"] not in ("ok", "pruned") for r in trials),  # pruned: stopped by the search
        "best_params": best["best_params"],
        "best_value": best["best_value"],
    }
    done.write_text(json.dumps(info, indent=2))
    return info


def rerun(part: str, name: str, params: dict, seeds: list[int], out: Path, env: dict[str, str]) -> list[dict]:
    app, _, fixed, _ = PARTS[part]
    sweep = out / part / name
    res = [json.loads(p.read_text()) for p in sweep.glob("*/results.json")]
    if len(res) < len(seeds):
        overrides = [f"{k}={v}" for k, v in params.items()]
        run([str(BIN / app), "-m", *COMMON, *fixed, *RERUN_FIXED[app], *overrides, f"seed={','.join(map(str, seeds))}",
             f"hydra.sweep.dir={sweep}"], env)  # fmt: skip
        res = [json.loads(p.read_text()) for p in sweep.glob("*/results.json")]
    return sorted(res, key=lambda r: r["seed"])


def ci_cell(part: str, values: list[float]) -> str:
    """'mean [lo, hi]' (kdrl.statistics.mean_ci), clipped to the env's return range for a return metric."""
    from kdrl.scores import return_range
    from kdrl.statistics import mean_ci

    bounds = return_range(PART_ENVS[part]) if PARTS[part][3] == "eval_return_mean" else (-float("inf"), float("inf"))
    return mean_ci(values, bounds=bounds).text(".3f")


def report(docs: Path) -> None:
    """Rebuild the fresh-seed comparison of docs/search.md from docs/search.csv (the searches are not rerun)."""
    import pandas as pd
    from scipy.stats import ttest_ind

    df = pd.read_csv(docs / "search.csv")
    lines = [
        "| search | config | n | held-out metric, mean [95% CI] | failed | Welch p (best > defaults) |",
        "|---|---|---|---|---|---|",
    ]
    for part, grp in df.groupby("search", sort=False):
        values = {}
        for name in ("best", "defaults"):
            runs = grp[grp["config"] == name]
            ok = runs.loc[runs["status"] == "ok", "metric"].astype(float).tolist()
            values[name] = ok
            pval = (
                f"{ttest_ind(values['best'], ok, equal_var=False, alternative='greater').pvalue:.3f}"
                if name == "defaults"
                else ""
            )
            lines.append(f"| {part} | {name} | {len(runs)} | {ci_cell(part, ok)} | {len(runs) - len(ok)} | {pval} |")
    md = (docs / "search.md").read_text()
    head, sep, _ = md.partition("| search | config | n |")
    (docs / "search.md").write_text(head + "\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    from scipy.stats import ttest_ind

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", nargs="+", default=list(PARTS), choices=list(PARTS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3, 4, 5])
    ap.add_argument("--out", type=Path, default=ROOT / "outputs" / "search")
    ap.add_argument("--docs", type=Path, default=ROOT / "docs")
    ap.add_argument("--report", action="store_true", help="only redo the fresh-seed table from docs/search.csv")
    args = ap.parse_args()
    if args.report:
        return report(args.docs)
    env = {**os.environ, "KDRL_CACHE": str(args.out / "cache"), "PYTHONWARNINGS": "ignore", "WANDB_MODE": "disabled"}
    lines = [
        "| search | trials (failed) | wall | trials/min | best on seed 0 | best params |",
        "|---|---|---|---|---|---|",
    ]
    cmp_lines = ["| search | config | n | held-out metric, mean [95% CI] | failed | Welch p (best > defaults) |"]
    cmp_lines.append("|---|---|---|---|---|---|")
    csv = ["search,config,seed,status,metric"]
    for part in args.parts:
        info = search(part, args.out, env)
        metric = PARTS[part][3]
        params = ", ".join(f"{k}={v}" for k, v in info["best_params"].items())
        lines.append(
            f"| {part} | {info['trials']} ({info['failed']}) | {info['wall_s'] / 60:.1f} min | "
            f"{info['trials'] / (info['wall_s'] / 60):.2f} | {info['best_value']:.3f} | {params} |"
        )
        values = {}
        for name, p in (("best", info["best_params"]), ("defaults", {})):
            res = rerun(part, name, p, args.seeds, args.out, env)
            ok = [float(r[metric]) for r in res if r["status"] == "ok"]
            values[name] = ok
            pval = ""
            if name == "defaults":
                pval = f"{ttest_ind(values['best'], ok, equal_var=False, alternative='greater').pvalue:.3f}"
            cmp_lines.append(f"| {part} | {name} | {len(res)} | {ci_cell(part, ok)} | {len(res) - len(ok)} | {pval} |")
            csv += [f"{part},{name},{r['seed']},{r['status']},{r.get(metric)}" for r in res]
    text = "\n".join(lines) + "\n\nRe-run on fresh seeds " + ", ".join(map(str, args.seeds)) + ":\n\n"
    text += "\n".join(cmp_lines) + "\n"
    print(text)
    # docs/search.md: this script's section last; what comes before it (the pruning study) is kept
    md = args.docs / "search.md"
    head = md.read_text().partition(SECTION)[0] if md.is_file() else "# Optuna searches\n\n"
    md.write_text(
        head + SECTION + "\n\nMade by `python scripts/bench_search.py` (2 cores, launcher=joblib).\n\n" + text
    )
    (args.docs / "search.csv").write_text("\n".join(csv) + "\n")


if __name__ == "__main__":
    main()
