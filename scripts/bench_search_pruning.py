#!/usr/bin/env python
"""Pruning against no pruning, same number of trials (issue: "Search that prunes"), then the best
configurations against the defaults on fresh seeds.

1. Two searches of ``hparams_search=minatar_student_optuna`` (a 4%-params MinAtar Breakout student,
   ``--steps`` env steps, an evaluation every ``--eval-freq``, the median pruner's warm-up 3
   evaluations; objective: held-out normalised score) with the same sampler
   seed and the same number of trials, one with the median pruner (the preset's) and one without
   (``hydra.sweeper.pruner=none``), two trials at a time through the joblib launcher. Both distil one
   teacher (``--teacher``: a teacher.pt; train one with ``kdrl-train env=minatar_breakout
   recipe=minatar_fast``).
2. Compute used by each: env steps summed over trials, job wall time summed over trials, the search's
   own wall time; the best value found and its configuration.
3. The best configuration of each search and the preset's defaults re-run on seeds 1..5 (the searches
   trained seed 0), mean [95% CI] (kdrl.statistics.mean_ci) of the held-out normalised score.

Writes <docs>/search_pruning/: summary.csv (one row per search and per re-run), trials.csv (every
trial of both searches), <search>_history.png and <search>_intermediate.png; prints the tables of
docs/search.md. Finished parts are skipped on a rerun
(a search's study continues to its n_trials).

    python scripts/bench_search_pruning.py --teacher outputs/teacher_breakout/teacher.pt --trials 8 \
        --steps 30000 --eval-freq 3000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PRESET = "minatar_student_optuna"
# the preset's fixed settings, for re-runs outside the search (kdrl-distill without hparams_search)
FIXED = [
    "env=minatar_breakout",
    "recipe=minatar_fast",
    "loss=kl_rusu",
    "student.size=rusu_4",
    "control=teacher",
    "logger=csv",
    "trainer.enable_progress_bar=false",
]


def budget(args: argparse.Namespace) -> list[str]:
    return [f"distill.total_timesteps={args.steps}", f"eval.freq={args.eval_freq}"]


def run(cmd: list[str], env: dict[str, str], log: Path) -> float:
    t0 = time.perf_counter()
    with log.open("a") as f:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}; see {log}")
    return time.perf_counter() - t0


def search(name: str, pruner: str, args: argparse.Namespace, env: dict[str, str]) -> dict:
    from kdrl.search.summary import build_report, find_storage, load_study

    sweep = args.out / name
    done = sweep / "bench.json"
    if done.is_file():
        return json.loads(done.read_text())
    cmd = [
        str(BIN / "kdrl-distill"),
        f"hparams_search={PRESET}",
        "launcher=joblib",
        f"teacher.checkpoint={args.teacher}",
        f"hydra.sweeper.pruner={pruner}",
        f"hydra.sweeper.n_trials={args.trials}",
        "hydra.sweeper.n_jobs=2",
        f"hydra.sweeper.study_name=bench_{name}",
        f"hydra.sweep.dir={sweep}",
        *budget(args),
        f"hydra.sweeper.pruners.median.n_warmup_steps={3 * args.eval_freq}",
    ]
    wall = run(cmd, env, args.out / f"{name}.log")
    study = load_study(find_storage(str(sweep)))
    rep = build_report(study)
    (sweep / "search.md").write_text(rep.markdown())
    info = {
        "search": name,
        "pruner": pruner,
        "trials": rep.counts,
        "env_steps": rep.compute["env_steps"],
        "job_s": rep.compute["job_s"],
        "search_wall_s": wall,
        "best_value": rep.best[0]["values"][0] if rep.best else None,
        "best_trial": rep.best[0]["number"] if rep.best else None,
        "best_params": rep.best[0]["params"] if rep.best else {},
        "importance": rep.importance,
    }
    done.write_text(json.dumps(info, indent=2))
    return info


def rerun(name: str, params: dict, args: argparse.Namespace, env: dict[str, str]) -> list[dict]:
    sweep = args.out / f"rerun_{name}"
    res = [json.loads(p.read_text()) for p in sweep.glob("*/results.json")]
    if sum(r.get("status") == "ok" for r in res) < len(args.seeds):
        overrides = [f"{k}={v!r}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()]
        cmd = [str(BIN / "kdrl-distill"), "-m", "launcher=joblib", *FIXED, *budget(args), f"teacher.checkpoint={args.teacher}",
               *overrides, f"seed={','.join(map(str, args.seeds))}", f"hydra.sweep.dir={sweep}"]  # fmt: skip
        run(cmd, env, args.out / f"rerun_{name}.log")
        res = [json.loads(p.read_text()) for p in sweep.glob("*/results.json")]
    return sorted(res, key=lambda r: r["seed"])


def ci_cell(values: list[float], runs: list[dict]) -> str:
    from kdrl.scores import normalized_bounds
    from kdrl.statistics import mean_ci

    refs = [r["teacher_reference"] for r in runs if r.get("teacher_reference")]
    bounds = normalized_bounds(
        "MinAtar/Breakout-v1", [t["return_mean"] for t in refs], [t["random_mean"] for t in refs]
    )
    m, lo, hi, flag = mean_ci(values, bounds=bounds)
    return f"{m:.3f} ‡ ({flag})" if flag else f"{m:.3f} [{lo:.3f}, {hi:.3f}]"


def trials_csv(args: argparse.Namespace) -> None:
    """docs/search_pruning/: trials.csv (every trial of both searches: state, value, env steps, times,
    params) and each search's history and intermediate-value plots."""
    import pandas as pd

    from kdrl.search.summary import find_storage, load_study, plot_history, trials_frame

    frames = []
    docs = args.docs / "search_pruning"
    for name in ("median", "no_pruning"):
        study = load_study(find_storage(str(args.out / name)))
        for png in plot_history(study, args.out / name):  # docs/search_pruning/<search>_history.png, ...
            short = {"optimization_history.png": "history", "intermediate_values.png": "intermediate"}[png.name]
            (docs / f"{name}_{short}.png").write_bytes(png.read_bytes())
        f = trials_frame(study)
        f.insert(0, "search", name)
        frames.append(f.drop(columns=["run_dir", "error", "retry_of"]))
    pd.concat(frames).to_csv(args.docs / "search_pruning" / "trials.csv", index=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", type=Path, required=True)
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--steps", type=int, default=50_000, help="each student's env steps (the preset's 50k)")
    ap.add_argument("--eval-freq", type=int, default=5_000, help="env steps between periodic evaluations")
    ap.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3, 4, 5])
    ap.add_argument("--out", type=Path, default=ROOT / "outputs" / "search_pruning")
    ap.add_argument("--docs", type=Path, default=ROOT / "docs")
    ap.add_argument("--no-reruns", action="store_true")
    ap.add_argument("--rerun", nargs="+", default=["median", "no_pruning"], help="whose best configurations to re-run")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    args.teacher = args.teacher.resolve()
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "WANDB_MODE": "disabled", "KDRL_NO_PROGRESS": "1"}
    searches = [search("median", "median", args, env), search("no_pruning", "none", args, env)]
    csv = ["row,search,pruner,seed,status,value,env_steps,job_s,params"]
    lines = [
        "| search | trials: complete / pruned / failed | env steps (sum) | job wall (sum) | search wall | best value (seed 0) | best configuration |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in searches:
        t = s["trials"]
        params = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in s["best_params"].items())
        lines.append(
            f"| {s['search']} | {t['COMPLETE']} / {t['PRUNED']} / {t['FAIL']} | {s['env_steps']:,.0f} | "
            f"{s['job_s'] / 60:.1f} min | {s['search_wall_s'] / 60:.1f} min | {s['best_value']:.3f} | `{params}` |"
        )
        csv.append(f'search,{s["search"]},{s["pruner"]},0,,{s["best_value"]},{s["env_steps"]},{s["job_s"]},"{params}"')
    text = "\n".join(lines) + "\n"
    if not args.no_reruns:
        configs = {"defaults": {}}
        for s in searches:
            if s["search"] in args.rerun and s["best_params"] not in configs.values():
                configs[f"best_{s['search']}"] = s["best_params"]
        cmp = [
            f"Re-run on fresh seeds {', '.join(map(str, args.seeds))} (held-out normalised score, 20 episodes each):",
            "",
            "| configuration | n ok | mean [95% CI] |",
            "|---|---|---|",
        ]
        for name, params in configs.items():
            runs = rerun(name, params, args, env)
            ok = [r for r in runs if r.get("status") == "ok"]
            vals = [float(r["normalized_score"]) for r in ok]
            cmp.append(f"| {name} | {len(ok)} | {ci_cell(vals, ok)} |")
            for r in runs:
                csv.append(
                    f"rerun,{name},,{r['seed']},{r.get('status')},{r.get('normalized_score')},{r.get('env_steps')},"
                    f"{r.get('job_wall_time_s')},"
                )
        text += "\n" + "\n".join(cmp) + "\n"
    print(text)
    (args.docs / "search_pruning").mkdir(parents=True, exist_ok=True)
    (args.docs / "search_pruning" / "summary.csv").write_text("\n".join(csv) + "\n")
    trials_csv(args)
    (args.out / "section.md").write_text(text)


if __name__ == "__main__":
    main()
