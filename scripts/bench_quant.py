"""fp32 vs int8 vs pruned students (issue 15): params, bytes on disk, batch-1 latency, held-out return
and greedy agreement with the fp32 student, on CartPole, LunarLander and a MinAtar game.

    python scripts/bench_quant.py                         # trains the CartPole/LunarLander students it lacks
    python scripts/bench_quant.py --student minatar_breakout=outputs/study_minatar/breakout/kl_rusu-rusu_7-teacher_s0

Each student is a kdrl-distill run dir (student.pt inside); its pruned twin is the same run with
distill.prune.amount (trained here when missing). Every model is run through onnxruntime (one thread):
fp32 ONNX, int8 ONNX (kdrl-export --formats onnx_int8), and the pruned student's fp32 ONNX. Returns:
20 held-out episodes (seeds 2,000,000+); agreement: greedy actions equal to the fp32 student's on
states the fp32 student visits (other seeds). Writes docs/quantisation.md and .csv.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BIN = Path(sys.executable).parent
DEFAULT_ENVS = {"cartpole": "CartPole-v1", "lunarlander": "LunarLander-v3"}


def distil(env: str, out: Path, prune: float) -> Path:
    run = out / f"{env}_prune{prune:g}"
    if (run / "student.pt").is_file():
        return run
    cmd = [str(BIN / "kdrl-distill"), f"env={env}", "student.size=rusu_7", "seed=0", "logger=csv",
           "trainer.enable_progress_bar=false", f"hydra.run.dir={run}"]  # fmt: skip
    if prune:
        cmd += [f"distill.prune.amount={prune}", "distill.prune.at=0.5"]
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True)
    return run


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


def measure(name: str, fp32_run: Path, pruned_run: Path | None, out: Path) -> list[dict]:
    from kdrl.evaluation import eval_seeds, evaluate_policy, rollout_states
    from kdrl.export import export_policy, onnx_runner
    from kdrl.io import load_policy
    from kdrl.prune import nonzero_params
    from kdrl.teachers import load_teacher_net

    policy = load_policy(fp32_run / "student.pt")
    env_id, kwargs = (
        policy["env_id"],
        (json.loads((fp32_run / "results.json").read_text())["config"]["env"]).get("kwargs"),
    )
    models = {}
    res = export_policy(fp32_run / "student.pt", out / name, ["onnx", "onnx_int8"], name=f"{name}_fp32", n_verify=512)
    models["fp32"] = res.files["onnx"]
    models["int8"] = res.files["onnx_int8"]
    int8_agree_export = res.info["verification"]["onnx_int8"]["agreement"]
    if pruned_run is not None:
        pres = export_policy(pruned_run / "student.pt", out / name, ["onnx", "onnx_int8"], name=f"{name}_pruned")
        models["pruned fp32"] = pres.files["onnx"]
        models["pruned int8"] = pres.files["onnx_int8"]
    runners = {k: onnx_runner(p) for k, p in models.items()}
    greedy = {k: greedy_of(r) for k, r in runners.items()}
    states = rollout_states(greedy["fp32"], env_id, eval_seeds(2_100_000, 50), 3000, kwargs)
    ref = greedy["fp32"](states)
    seeds = eval_seeds(2_000_000, 20)
    rows, base = [], None
    for kind, path in models.items():
        returns = evaluate_policy(greedy[kind], env_id, seeds, kwargs)
        mean = float(np.mean(returns))
        base = mean if kind == "fp32" else base
        src = pruned_run if kind.startswith("pruned") else fp32_run
        net, _ = load_teacher_net(src / "student.pt", env_id, tuple(policy["obs_shape"]), int(policy["n_actions"]))
        rows.append({
            "env": name, "model": kind, "params": sum(p.numel() for p in net.parameters()),
            "nonzero": nonzero_params(net), "bytes": path.stat().st_size,
            "latency_us": latency_us(runners[kind], states), "return_mean": mean,
            "return_std": float(np.std(returns)), "pct_of_fp32": 100 * mean / base if base else float("nan"),
            "agreement": float((greedy[kind](states) == ref).mean()), "n_states": len(states),
        })  # fmt: skip
    rows[1]["export_check_agreement"] = int8_agree_export
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "outputs" / "quant")
    ap.add_argument("--student", action="append", default=[], help="NAME=RUN_DIR (its student.pt); repeatable")
    ap.add_argument("--prune", type=float, default=0.5, help="pruned twins of the trained students (0: none)")
    ap.add_argument("--docs", type=Path, default=ROOT / "docs" / "quantisation")
    args = ap.parse_args()
    runs: dict[str, tuple[Path, Path | None]] = {}
    for env in DEFAULT_ENVS:
        runs[env] = (distil(env, args.out, 0.0), distil(env, args.out, args.prune) if args.prune else None)
    for item in args.student:
        name, path = item.split("=", 1)
        runs[name] = (Path(path), None)
    rows = [r for name, (fp32, pruned) in runs.items() for r in measure(name, fp32, pruned, args.out / "onnx")]
    lines = [
        "| env | model | params (non-zero) | bytes | batch-1 latency (µs) | held-out return (20 ep.) | % of fp32 | agreement with fp32 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['env']} | {r['model']} | {r['params']:,} ({r['nonzero']:,}) | {r['bytes']:,} | {r['latency_us']:.1f} | "
            f"{r['return_mean']:.1f} ± {r['return_std']:.1f} | {r['pct_of_fp32']:.1f} | {100 * r['agreement']:.1f}% of {r['n_states']} |"
        )
    table = "\n".join(lines)
    print(table)
    args.docs.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.docs}.md").write_text(
        "# fp32 vs int8 vs pruned students\n\nMade by `python scripts/bench_quant.py`; onnxruntime, one thread.\n\n"
        + table
        + "\n"
    )
    keys = list(rows[0])
    Path(f"{args.docs}.csv").write_text(
        "\n".join([",".join(keys)] + [",".join(str(r.get(k, "")) for k in keys) for r in rows]) + "\n"
    )


if __name__ == "__main__":
    main()
