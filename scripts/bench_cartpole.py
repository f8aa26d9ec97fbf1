#!/usr/bin/env python
"""CartPole benchmark: kdrl vs Stable-Baselines3 (RL-Zoo settings) vs a plain PyTorch DQN loop.

Part A  time for greedy evaluation (10 episodes, fixed seeds) to reach >= 475, kdrl (its tuned
        conf/env/cartpole.yaml) against SB3 DQN with RL-Zoo's tuned CartPole-v1 hyperparameters.
        Both are evaluated with the same function, on the same seeds, every --eval-freq env steps,
        and stop at the first evaluation >= 475. Times are training wall time (evaluation excluded).
Part B  steps/s and final greedy return (20 held-out episodes) of a CleanRL-style single-file DQN
        loop against kdrl with the same hyperparameters (120-84 MLP, lr 2.5e-4, batch 128, buffer
        10k, train every 10 env steps, target every 500, learning starts 10k, eps 1->0.05 over half
        the run). kdrl steps 8 envs and runs 8 updates per 80 env steps: the same updates per env step.
Part C  Lightning's own overhead: the Part B kdrl run vs the same kdrl module driven by a bare loop.

All runs use one torch thread and run one after another (never two at once).
Usage: python scripts/bench_cartpole.py [--seeds 0 1 2] [--parts A B C] [--steps-b 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("KDRL_NO_PROGRESS", "1")

from kdrl.evaluation import eval_seeds, evaluate_policy  # noqa: E402
from kdrl.foreign import RL_ZOO_DQN_CARTPOLE  # noqa: E402


def run_plain_loop(script: str, args: list[str]) -> dict:
    """One run of a standalone plain loop in scripts/plain/ (its own process); its JSON line."""
    import subprocess

    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve().parent / "plain" / script), *args],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


EVAL_SEED, FINAL_SEED, THRESHOLD = 1_000_000, 2_000_000, 475.0


def compose(overrides: list[str]):
    from hydra import compose as hcompose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from kdrl.config import CONF_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        return hcompose("train", overrides=overrides)


# ---------------------------------------------------------------- Part A: kdrl vs SB3 ----------
def kdrl_time_to_threshold(seed: int, eval_freq: int, out: Path) -> dict:
    from kdrl.runs.teacher import train_teacher

    cfg = compose(
        [
            "env=cartpole",
            f"seed={seed}",
            "logger=none",
            "trainer.enable_progress_bar=false",
            f"eval.freq={eval_freq}",
            "eval.episodes=10",
            f"eval.stop_at_return={THRESHOLD}",
            "algo.total_timesteps=100000",
        ]
    )
    res = train_teacher(cfg, out / f"kdrl_s{seed}")
    hit = next((h for h in res["eval_history"] if h["return_mean"] >= THRESHOLD), None)
    return {
        "seed": seed,
        "reached": hit is not None,
        "env_steps": hit["env_steps"] if hit else res["env_steps"],
        "train_s": hit["train_wall_s"] if hit else res["train_wall_time_s"],
        "final_greedy": res["eval_return_mean"],
    }


def sb3_time_to_threshold(seed: int, eval_freq: int, budget: int = 100_000) -> dict:
    from stable_baselines3 import DQN
    from stable_baselines3.common.callbacks import BaseCallback

    class EvalStop(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.eval_s, self.hit, self.t0 = 0.0, None, time.perf_counter()

        def _on_step(self) -> bool:
            if self.num_timesteps % eval_freq:
                return True
            t = time.perf_counter()
            rets = evaluate_policy(
                lambda o: self.model.predict(o, deterministic=True)[0], "CartPole-v1", eval_seeds(EVAL_SEED, 10)
            )
            self.eval_s += time.perf_counter() - t
            if np.mean(rets) >= THRESHOLD:
                self.hit = (self.num_timesteps, time.perf_counter() - self.t0 - self.eval_s)
                return False
            return True

    model = DQN("MlpPolicy", "CartPole-v1", **RL_ZOO_DQN_CARTPOLE, seed=seed, verbose=0, device="cpu")
    cb = EvalStop()
    cb.t0 = time.perf_counter()
    model.learn(total_timesteps=budget, callback=cb)
    total = time.perf_counter() - cb.t0 - cb.eval_s
    return {
        "seed": seed,
        "reached": cb.hit is not None,
        "env_steps": cb.hit[0] if cb.hit else model.num_timesteps,
        "train_s": cb.hit[1] if cb.hit else total,
    }


# ---------------------------------------------------------------- Part B: plain loop ----------
def plain_dqn(seed: int, total: int) -> dict:
    """CleanRL dqn.py's algorithm, one env: scripts/plain/cleanrl_dqn_cartpole.py in its own process."""
    res = run_plain_loop("cleanrl_dqn_cartpole.py", ["--seed", str(seed), "--total-timesteps", str(total)])
    return {"sps": res["sps"], "wall_s": res["train_s"], "final_greedy": res["return_mean"]}


B_OVERRIDES = [
    "env=cartpole",
    "net.hidden=[120,84]",
    "logger=none",
    "trainer.enable_progress_bar=false",
    "env.num_envs=8",
    "algo.optimizer.lr=2.5e-4",
    "algo.batch_size=128",
    "algo.buffer_size=10000",
    "algo.train_freq=80",
    "algo.gradient_steps=8",
    "algo.target_update_interval=500",
    "algo.learning_starts=10000",
    "algo.exploration.eps_end=0.05",
    "algo.td_loss=mse",
    "algo.double_dqn=false",
    "algo.max_grad_norm=null",
    "eval.stop_at_return=null",
]


def kdrl_same_hparams(seed: int, total: int, out: Path) -> dict:
    """kdrl with Part B's hyperparameters (same 120-84 net, MSE TD loss, no Double DQN, no clipping)."""
    from kdrl.runs.teacher import train_teacher

    cfg = compose(
        B_OVERRIDES
        + [
            f"seed={seed}",
            f"algo.total_timesteps={total}",
            f"algo.exploration.decay_steps={total // 2}",
            f"eval.freq={total}",
            "eval.episodes=1",
        ]
    )
    res = train_teacher(cfg, out / f"kdrl_b_s{seed}")
    return {
        "sps": res["env_steps"] / res["train_wall_time_s"],
        "wall_s": res["train_wall_time_s"],
        "final_greedy": res["eval_return_mean"],
    }


def kdrl_bare(seed: int, total: int) -> dict:
    """The same kdrl module and stream, driven by a plain loop instead of the Lightning Trainer."""
    from kdrl.runs.job import seed_job
    from kdrl.runs.teacher import build_teacher

    cfg = compose(
        B_OVERRIDES + [f"seed={seed}", f"algo.total_timesteps={total}", f"algo.exploration.decay_steps={total // 2}"]
    )
    seed_job(seed, 1)
    module, _ = build_teacher(cfg)
    module.setup("fit")
    opt = module.configure_optimizers()
    t0 = time.perf_counter()
    for stacked in module.stream:
        module.run_updates(opt, stacked)
    wall = time.perf_counter() - t0
    return {"sps": module.env_steps / wall, "wall_s": wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--parts", nargs="+", default=["A", "B", "C"])
    ap.add_argument("--eval-freq", type=int, default=2000)
    ap.add_argument("--steps-b", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repeats of Parts B and C")
    ap.add_argument("--out", default="outputs/bench_cartpole")
    ap.add_argument("--json", default=None, help="also write all figures to this JSON file")
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    report: dict = {}
    if "A" in args.parts:
        rows = []
        for s in args.seeds:
            k = kdrl_time_to_threshold(s, args.eval_freq, out)
            b = sb3_time_to_threshold(s, args.eval_freq)
            rows.append((s, k, b))
            print(
                f"[A] seed {s}: kdrl {k['train_s']:.1f}s @ {k['env_steps']} steps (reached={k['reached']}) | "
                f"SB3 {b['train_s']:.1f}s @ {b['env_steps']} steps (reached={b['reached']})",
                flush=True,
            )
        print("\nPart A: training wall time until greedy eval (10 eps) >= 475 on CartPole-v1")
        print("| seed | kdrl s | kdrl steps | SB3 s | SB3 steps | kdrl/SB3 |\n|---|---|---|---|---|---|")
        for s, k, b in rows:
            kk = f"{k['train_s']:.1f}" + ("" if k["reached"] else " (not reached)")
            bb = f"{b['train_s']:.1f}" + ("" if b["reached"] else " (not reached)")
            print(f"| {s} | {kk} | {k['env_steps']} | {bb} | {b['env_steps']} | {k['train_s'] / b['train_s']:.2f} |")
        both = [(k["train_s"], b["train_s"]) for _, k, b in rows if k["reached"] and b["reached"]]
        if both:
            mk, mb = statistics.median(x for x, _ in both), statistics.median(y for _, y in both)
            print(f"median over seeds where both reached it: kdrl {mk:.1f}s, SB3 {mb:.1f}s, ratio {mk / mb:.2f}")
        report["A"] = [{"seed": s, "kdrl": k, "sb3": b} for s, k, b in rows]
    if "B" in args.parts or "C" in args.parts:
        s = args.seeds[0]
        plains, kdrls, bares = [], [], []
        for rep in range(args.repeats):  # interleaved, so drifts in machine speed hit all three alike
            plains.append(plain_dqn(s, args.steps_b))
            kdrls.append(kdrl_same_hparams(s, args.steps_b, out / f"rep{rep}"))
            if "C" in args.parts:
                bares.append(kdrl_bare(s, args.steps_b))
            print(
                f"[B] rep {rep}: plain {plains[-1]['sps']:,.0f} steps/s, kdrl {kdrls[-1]['sps']:,.0f} steps/s"
                + (f", kdrl bare {bares[-1]['sps']:,.0f} steps/s" if bares else ""),
                flush=True,
            )
        med = lambda runs, k: statistics.median(r[k] for r in runs)  # noqa: E731
        print(f"\nPart B: CleanRL hyperparameters, {args.steps_b} env steps, seed {s}, median of {args.repeats} runs")
        print("| run | env steps/s | train wall s | final greedy (20 eps), per run |\n|---|---|---|---|")
        for name, runs in (("plain PyTorch loop", plains), ("kdrl (Lightning)", kdrls)):
            finals = ", ".join(f"{r['final_greedy']:.0f}" for r in runs)
            print(f"| {name} | {med(runs, 'sps'):,.0f} | {med(runs, 'wall_s'):.1f} | {finals} |")
        print(f"kdrl / plain steps/s (medians): {med(kdrls, 'sps') / med(plains, 'sps'):.2f}x")
        report["B"] = {"plain": plains, "kdrl": kdrls}
        if bares:
            ratio = med(kdrls, "wall_s") / med(bares, "wall_s")
            print(
                f"\nPart C: Lightning overhead = median kdrl wall / median bare-loop wall = "
                f"{med(kdrls, 'wall_s'):.1f} / {med(bares, 'wall_s'):.1f} = {ratio:.3f}x "
                f"(per run: {', '.join(format(k['wall_s'] / b['wall_s'], '.3f') for k, b in zip(kdrls, bares))})"
            )
            report["C"] = {"bare": bares, "ratio": ratio}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
