"""fp32 vs int8 vs pruned students (issue 15): params, bytes on disk, batch-1 latency, held-out return
and greedy agreement with the fp32 student, on CartPole, LunarLander and a MinAtar game.

    python scripts/bench_quant.py                         # trains the CartPole/LunarLander students it lacks
    python scripts/bench_quant.py --sizes rusu_7 rusu_25 \
        --student "minatar_breakout=outputs/study/minatar/compression/env=minatar_breakout,student.size=rusu_7,seed=0" \
        --size-row "minatar_breakout 25%=outputs/study/minatar/compression/env=minatar_breakout,student.size=rusu_25,seed=0" \
        --size-row "cartpole teacher=.cache/kdrl/teachers/CartPole-v1-s0-53f7f1030803"

Each student is a kdrl-distill run dir (student.pt inside); its twins are the same run (same
overrides and seed) with distill.prune.amount (from half-way), or with distill.quantize.int8
(quantisation-aware distillation over the last 10% of the dense run's env steps; its int8-weights
export is exact), trained here when missing. ``--size-row`` adds larger trained nets (a run dir
with student.pt or teacher.pt) to show how the int8 size ratio grows with the net. Every model is run
through onnxruntime (one thread): fp32 ONNX, int8 ONNX (kdrl-export --formats onnx_int8: dynamic
for MLPs, static QDQ for conv nets), int8-weights ONNX (onnx_int8_weights: float activations), and the
same three of the pruned student. Returns: ``--episodes`` held-out episodes (seeds 2,000,000+),
the same seeds for every model of an env, so int8 - fp32 is a paired difference (its 95% CI:
kdrl.statistics.mean_ci over episodes). Agreement: greedy actions equal to the fp32 student's on states the
fp32 student visits (other seeds); on the same states, the largest |Q - Q_fp32| and the fp32 net's
median gap between its two best actions (a net whose gaps are below its int8 error flips actions).
Bytes: the .onnx file, and gzip -9 of it (where pruning's zeros show). Writes docs/quantisation.md and .csv.

    python scripts/bench_quant.py --over-seeds            # int8 vs fp32 over 5 students per env
    python scripts/bench_quant.py --over-seeds --report   # only rebuild that table from its committed CSV

``--over-seeds``: int8 vs fp32 over 5 independently trained students per env (docs/protocol.md: n = 5
seeds). For CartPole and LunarLander, 25% students (rusu_25) on seeds 0-4 distilled from the seed-0
teacher (trained here when missing); for MinAtar Breakout, the five 25% students of `kdrl-study
study=minatar`. Each is exported as fp32, int8 (kdrl-export onnx_int8) and int8 weights
(onnx_int8_weights) and measured as above. Per student: the file's normalised score against its own
fp32 (random = 0, fp32 = 1, so negative returns do not invert it) and its size ratio; per env: mean
[95% bootstrap-t CI] over the 5 students, with failed trainings counted. Writes
docs/quantisation_seeds.md and .csv.
"""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DEFAULT_ENVS = {"cartpole": "CartPole-v1", "lunarlander": "LunarLander-v3"}


def run_distill(run: Path, overrides: list[str]) -> Path:
    if not (run / "student.pt").is_file():
        cmd = [str(BIN / "kdrl-distill"), *overrides, f"hydra.run.dir={run}"]
        subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True)
    return run


def distil(env: str, out: Path, size: str = "rusu_7") -> Path:
    overrides = [f"env={env}", f"student.size={size}", "seed=0", "logger=csv", "trainer.enable_progress_bar=false"]
    return run_distill(out / (f"{env}_prune0" if size == "rusu_7" else f"{env}_{size}"), overrides)


def twin(base: Path, run: Path, extra: list[str]) -> Path:
    """The run of ``base`` again (its own Hydra overrides, same seed) with ``extra`` added: identical
    up to the pruning / int8 point, so its rows differ from the dense student's by that alone."""
    import yaml

    overrides = [o for o in yaml.safe_load((base / ".hydra" / "overrides.yaml").read_text()) if "hydra." not in o]
    return run_distill(run, overrides + extra)


def greedy_of(runner):
    return lambda obs: runner(np.asarray(obs, dtype=np.float32))[1]


def latency_us(runner, obs: np.ndarray, n: int = 2000) -> float:
    one = obs[:1]
    for _ in range(100):
        runner(one)
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        runner(one)
        times.append(time.perf_counter() - t0)
    return 1e6 * float(np.median(times))


def policy_file(run: Path) -> Path:
    """A distill run's student.pt, or a teacher run's teacher.pt."""
    for name in ("student.pt", "teacher.pt"):
        if (run / name).is_file():
            return run / name
    raise SystemExit(f"bench_quant: no student.pt or teacher.pt in {run}")


INT8 = ("onnx_int8", "onnx_int8_weights")
NOTES = "<!-- written by hand below this line; bench_quant.py keeps it -->"
LABELS = {"onnx": "fp32", "onnx_int8": "int8", "onnx_int8_weights": "int8 weights"}


def measure(name: str, runs: dict[str, tuple[Path, tuple[str, ...]]], out: Path, episodes: int) -> list[dict]:
    """``runs``: row-label prefix -> (run dir, export formats); the first is the dense fp32 student."""
    from kdrl.evaluation import eval_seeds, evaluate_policy, random_returns, rollout_states
    from kdrl.export import export_policy, onnx_runner
    from kdrl.io import load_policy
    from kdrl.prune import nonzero_params
    from kdrl.statistics import mean_ci
    from kdrl.teachers import load_teacher_net

    fp32_run = next(iter(runs.values()))[0]
    policy = load_policy(policy_file(fp32_run))
    results = fp32_run / "results.json"
    kwargs = json.loads(results.read_text())["config"]["env"].get("kwargs") if results.is_file() else None
    env_id, stem = policy["env_id"], name.replace(" ", "_").replace("%", "pct")
    models, sources = {}, {}
    for prefix, (run, formats) in runs.items():
        res = export_policy(
            policy_file(run),
            out / stem,
            ["onnx", *formats],
            name=f"{stem}_{prefix.strip() or 'dense'}",
            min_agreement=0.0,  # measured and reported here, not a gate
        )
        for fmt in ("onnx", *formats) if not prefix.startswith("QAT") else formats:
            models[prefix + LABELS[fmt]], sources[prefix + LABELS[fmt]] = res.files[fmt], policy_file(run)
    runners = {k: onnx_runner(p) for k, p in models.items()}
    greedy = {k: greedy_of(r) for k, r in runners.items()}
    states = rollout_states(greedy["fp32"], env_id, eval_seeds(2_100_000, 50), 3000, kwargs)
    q_ref, ref = runners["fp32"](states)
    top2 = np.sort(q_ref, axis=1)[:, -2:]
    gap = float(np.median(top2[:, 1] - top2[:, 0]))  # how far apart the best two actions are
    seeds = eval_seeds(2_000_000, episodes)
    floor = float(np.mean(random_returns(env_id, seeds, kwargs)))  # random = 0, fp32 = 1 (returns can be < 0)
    rows, base = [], None
    for kind, path in models.items():
        returns = np.asarray(evaluate_policy(greedy[kind], env_id, seeds, kwargs), dtype=float)
        base = returns if kind == "fp32" else base
        _, lo, hi, _ = mean_ci(returns - base)  # paired: the same episode seeds for every model
        net, _ = load_teacher_net(sources[kind], env_id, tuple(policy["obs_shape"]), int(policy["n_actions"]))
        fp32_bytes = models["fp32"].stat().st_size
        rows.append({
            "env": name, "model": kind, "params": sum(p.numel() for p in net.parameters()),
            "nonzero": nonzero_params(net), "bytes": path.stat().st_size,
            "gzip_bytes": len(gzip.compress(path.read_bytes(), 9)),
            "x_smaller": fp32_bytes / path.stat().st_size,
            "latency_us": latency_us(runners[kind], states), "episodes": len(returns),
            "return_mean": float(returns.mean()), "return_std": float(returns.std()),
            "pct_of_fp32": 100 * returns.mean() / base.mean() if base.mean() else float("nan"),
            "diff_vs_fp32": float((returns - base).mean()), "diff_ci_lo": lo, "diff_ci_hi": hi,
            "random_return": floor, "score_vs_fp32": (returns.mean() - floor) / (base.mean() - floor),
            "agreement": float((greedy[kind](states) == ref).mean()), "n_states": len(states),
            "max_abs_dq": float(np.abs(runners[kind](states)[0] - q_ref).max()), "fp32_gap_median": gap,
        })  # fmt: skip
    return rows


def markdown_table(rows: list[dict]) -> str:
    lines = [
        "| env | model | params (non-zero) | bytes (gzip -9) | × smaller than fp32 | batch-1 latency (µs) | "
        "held-out return | % of fp32 | − fp32, paired [95% CI] | agreement with fp32 | max abs ΔQ (fp32 median gap) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['env']} | {r['model']} | {r['params']:,} ({r['nonzero']:,}) | {r['bytes']:,} ({r['gzip_bytes']:,}) | "
            f"{r['x_smaller']:.2f} | {r['latency_us']:.1f} | {r['return_mean']:.1f} ± {r['return_std']:.1f} "
            f"(n = {r['episodes']}) | {r['pct_of_fp32']:.1f} | {r['diff_vs_fp32']:+.2f} [{r['diff_ci_lo']:+.2f}, "
            f"{r['diff_ci_hi']:+.2f}] | {100 * r['agreement']:.1f}% of {r['n_states']} | "
            f"{r['max_abs_dq']:.3g} ({r['fp32_gap_median']:.3g}) |"
        )
    return "\n".join(lines)


# ---- --over-seeds: int8 vs fp32 over independently trained students ----------------------------
TEACHERS = {
    "cartpole": ".cache/kdrl/teachers/CartPole-v1-s0-53f7f1030803/teacher.pt",
    "lunarlander": ".cache/kdrl/teachers/LunarLander-v3-s0-c5a016e0b39d/teacher.pt",
}
STUDY = "outputs/study/minatar/compression/env=minatar_breakout,student.size=rusu_25,seed={seed}"  # kdrl-study study=minatar


def students(out: Path, seeds: list[int]) -> dict[str, list[Path | None]]:
    runs: dict[str, list[Path | None]] = {}
    for env, teacher in TEACHERS.items():
        runs[env] = []
        for seed in seeds:
            overrides = [f"env={env}", "student.size=rusu_25", f"seed={seed}", f"teacher.checkpoint={ROOT / teacher}",
                         "logger=csv", "trainer.enable_progress_bar=false"]  # fmt: skip
            try:
                runs[env].append(run_distill(out / f"{env}_rusu_25_t0_s{seed}", overrides))
            except Exception as exc:  # counted as a failure, never dropped
                print(f"{env} seed {seed}: training failed: {exc}", file=sys.stderr)
                runs[env].append(None)
    runs["minatar_breakout"] = [
        ROOT / STUDY.format(seed=s) if (ROOT / STUDY.format(seed=s) / "student.pt").is_file() else None for s in seeds
    ]
    return runs


HEADER = "env,seed,model,params,x_smaller,return_mean,fp32_return_mean,random_return,score_vs_fp32"


def seeds_table(rows, seeds: int) -> str:
    """The Markdown table from the CSV rows (one per student and file); a student with no row failed."""
    import pandas as pd

    from kdrl.statistics import mean_ci

    df = pd.DataFrame(rows)
    lines = [
        "| env | file | n students (failed) | params | × smaller than fp32, mean | normalised score vs fp32, "
        "mean [95% CI] | students with score ≥ 0.99 |",
        "|---|---|---|---|---|---|---|",
    ]
    for env, per_env in df.groupby("env", sort=False):
        failed = seeds - per_env["seed"].nunique()
        for model in ("int8", "int8 weights"):
            got = per_env[per_env["model"] == model]
            scores = got["score_vs_fp32"].astype(float).to_numpy()
            cell = mean_ci(scores).text(".3f")
            lines.append(
                f"| {env} | {model} | {len(got)} ({failed}) | {int(got['params'].iloc[0]):,} | "
                f"{got['x_smaller'].astype(float).mean():.2f} | {cell} | {int((scores >= 0.99).sum())} of {len(got) + failed} |"
            )
    return "\n".join(lines)


def over_seeds(args: argparse.Namespace) -> None:
    if args.report:
        import pandas as pd

        rows = pd.read_csv(args.docs.with_suffix(".csv")).to_dict("records")
    else:
        rows = []
        for env, runs in students(args.out, args.seeds).items():
            for seed, run in zip(args.seeds, runs):
                if run is None:
                    continue
                measured = measure(f"{env}_s{seed}", {"": (run, INT8)}, args.out / "onnx", args.episodes)
                fp32 = measured[0]["return_mean"]
                rows += [{"env": env, "seed": seed, "fp32_return_mean": fp32, **r} for r in measured]
        args.docs.with_suffix(".csv").write_text(
            HEADER + "\n" + "".join(
                f"{r['env']},{r['seed']},{r['model']},{r['params']},{r['x_smaller']:.4f},{r['return_mean']:.3f},"
                f"{r['fp32_return_mean']:.3f},{r['random_return']:.3f},{r['score_vs_fp32']:.4f}\n" for r in rows
            )
        )  # fmt: skip
    text = seeds_table(rows, len(args.seeds))
    print(text)
    args.docs.with_suffix(".md").write_text(
        "# int8 vs fp32 over 5 students per env\n\nMade by `python scripts/bench_quant.py --over-seeds` (`--report` rebuilds "
        f"the table from the CSV): 25% students, {args.episodes} held-out episodes per file (same seeds for every file of a "
        "student); normalised score = (int8 return − random) / (fp32 return − random) on those episodes; CI over the "
        "students: kdrl.statistics.mean_ci (‡: no reliable interval); a failed training counts against the last "
        "column.\n\n" + text + "\n"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=None, help="default outputs/quant (--over-seeds: outputs/quant_seeds)")
    ap.add_argument("--student", action="append", default=[], help="NAME=RUN_DIR (its student.pt); repeatable")
    ap.add_argument("--size-row", action="append", default=[], help="NAME=RUN_DIR of a larger net; repeatable")
    ap.add_argument("--prune", type=float, default=0.5, help="pruned twins of the trained students (0: none)")
    ap.add_argument("--sizes", nargs="+", default=["rusu_7"], help="student sizes of the CartPole/LunarLander rows")
    ap.add_argument("--episodes", type=int, default=100, help="held-out episodes per model (paired seeds)")
    ap.add_argument(
        "--docs", type=Path, default=None, help="default docs/quantisation (--over-seeds: docs/quantisation_seeds)"
    )
    ap.add_argument(
        "--over-seeds", action="store_true", help="int8 vs fp32 over independently trained students per env"
    )
    ap.add_argument(
        "--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="with --over-seeds: the students' seeds"
    )
    ap.add_argument(
        "--report", action="store_true", help="with --over-seeds: only rebuild the table from the committed CSV"
    )
    args = ap.parse_args()
    suffix = "_seeds" if args.over_seeds else ""
    args.out = args.out or ROOT / "outputs" / f"quant{suffix}"
    args.docs = args.docs or ROOT / "docs" / f"quantisation{suffix}"
    if args.over_seeds:
        over_seeds(args)
        return
    runs: dict[str, dict[str, tuple[Path, tuple[str, ...]]]] = {}

    def qat(dense: Path) -> list[str]:
        """int8 from 90% of the env steps the dense student took (it may have stopped early at the
        recipe's stop_at_return): the twin then trains about as long, its last part on int8 weights."""
        res = json.loads((dense / "results.json").read_text())
        at = 0.9 * res["env_steps"] / res["config"]["distill"]["total_timesteps"]
        return ["distill.quantize.int8=true", f"distill.quantize.at={at:.4f}"]

    for env in DEFAULT_ENVS:
        for size in args.sizes:
            dense = distil(env, args.out, size)
            name = env if size == "rusu_7" else f"{env} {size.removeprefix('rusu_')}%"
            qat_run = twin(dense, args.out / (f"{env}_qat" if size == "rusu_7" else f"{env}_{size}_qat"), qat(dense))
            runs[name] = {"": (dense, INT8), "QAT ": (qat_run, ("onnx_int8_weights",))}
            if args.prune and size == "rusu_7":
                prune = [f"distill.prune.amount={args.prune}", "distill.prune.at=0.5"]
                runs[name]["pruned "] = (twin(dense, args.out / f"{env}_prune{args.prune:g}", prune), INT8)
    for item in args.student:
        name, path = item.split("=", 1)
        qat_run = twin(Path(path), args.out / f"{name}_qat", qat(Path(path)))
        runs[name] = {"": (Path(path), INT8), "QAT ": (qat_run, ("onnx_int8_weights",))}
    for item in args.size_row:
        name, path = item.split("=", 1)
        runs[name] = {"": (Path(path), INT8)}
    rows = [r for name, group in runs.items() for r in measure(name, group, args.out / "onnx", args.episodes)]
    table = markdown_table(rows)
    print(table)
    args.docs.parent.mkdir(parents=True, exist_ok=True)
    doc = Path(f"{args.docs}.md")
    notes = doc.read_text().split(NOTES, 1)[1] if doc.is_file() and NOTES in doc.read_text() else "\n"
    doc.write_text(
        "# fp32 vs int8 vs pruned students\n\nMade by `python scripts/bench_quant.py` (command in its docstring); "
        "onnxruntime, one thread.\n\n" + table + "\n\n" + NOTES + notes
    )
    keys = list(rows[0])
    Path(f"{args.docs}.csv").write_text(
        "\n".join([",".join(keys)] + [",".join(str(r.get(k, "")) for k in keys) for r in rows]) + "\n"
    )


if __name__ == "__main__":
    main()
