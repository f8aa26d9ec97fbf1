#!/usr/bin/env python
"""kdrl's DQN loop against plain single-file loops written outside it, at equal learning (issue 13).

    python scripts/bench_speed.py                       # every part, ~25 min on 2 cores
    python scripts/bench_speed.py --parts P2 --seeds 0 1 2 3 4
    python scripts/bench_speed.py --parts P3 P9 --repeats 3

P2  CartPole-v1 with CleanRL dqn.py's algorithm (1 env, scripts/plain/cleanrl_dqn_cartpole.py vs
    ``kdrl-train experiment=cleanrl_cartpole``, in-process envs and ``env.actor=process``; and
    8 vector envs at the same update-to-data ratio, to show what vectorising does to learning),
    one process per run, seeds interleaved. Whole-process wall time (imports included), training
    steps/s, and the held-out greedy return (20 episodes, seeds 2,000,000+i, the last policy).
P3  Lightning's own overhead: the same kdrl module fitted by the Trainer vs driven by a bare loop
    over its stream, in one process (imports paid), CartPole (CleanRL setting) and MinAtar
    Breakout (Young & Tian), interleaved; median of --repeats.
P9  MinAtar Breakout with Young & Tian's settings: scripts/plain/minatar_dqn.py vs kdrl-train
    (1 env, in-process and actor process), whole process, --minatar-steps each, interleaved;
    returns over --minatar-seeds at that budget (two single-thread runs at a time); the cost of
    one update against its arithmetic; the distillation student's update loop.

Timings run one at a time on an otherwise idle machine (the actor-process runs use both cores).
Every figure printed is measured here; --json keeps them all.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENV = {**os.environ, "WANDB_MODE": "disabled", "KDRL_NO_PROGRESS": "1", "PYTHONWARNINGS": "ignore"}


def ci_cell(xs: list[float], digits: int) -> str:
    """'mean [lo, hi]' with kdrl.statistics.mean_ci ('mean ‡ (why)' where it flags)."""
    from kdrl.statistics import mean_ci

    return mean_ci(xs).text(f".{digits}f")


def welch_p(a: list[float], b: list[float]) -> float:
    from scipy import stats

    if min(len(a), len(b)) < 2:
        return float("nan")  # one run a side: no test
    if np.std(a) == 0 and np.std(b) == 0:
        return 1.0 if np.mean(a) == np.mean(b) else 0.0
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def timed(cmd: list[str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    return wall, proc.stdout


def plain_run(script: str, args: list[str]) -> dict:
    wall, out = timed([sys.executable, str(ROOT / "scripts" / "plain" / script), *args])
    res = json.loads(out.strip().splitlines()[-1])
    return {"whole_s": wall, "sps": res["sps"], "return": res["return_mean"], "train_s": res["train_s"]}


def kdrl_run(overrides: list[str], out: Path) -> dict:
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    wall, _ = timed([str(BIN / "kdrl-train"), *overrides, f"hydra.run.dir={out}"])
    res = json.loads((out / "results.json").read_text())
    if res["status"] != "ok":
        raise RuntimeError(f"kdrl run in {out} ended {res['status']}: {res.get('error')}")
    return {
        "whole_s": wall,
        "sps": res["env_steps"] / res["train_wall_time_s"],
        "return": res["eval_return_mean"],
        "train_s": res["train_wall_time_s"],
    }


def table(title: str, rows: dict[str, list[dict]], ref: str) -> None:
    print(f"\n{title}\n")
    print(
        "| loop | n | whole process s (median) | x plain | train steps/s (median) | x plain | held-out return, mean [95% CI] | vs plain (Welch p) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    base = rows[ref]
    bw, bs = statistics.median(r["whole_s"] for r in base), statistics.median(r["sps"] for r in base)
    for name, runs in rows.items():
        w, s = statistics.median(r["whole_s"] for r in runs), statistics.median(r["sps"] for r in runs)
        p = "" if name == ref else f"{welch_p([r['return'] for r in runs], [r['return'] for r in base]):.2f}"
        print(
            f"| {name} | {len(runs)} | {w:.1f} | {bw / w:.2f} | {s:,.0f} | {s / bs:.2f} | {ci_cell([r['return'] for r in runs], 1)} | {p} |"
        )


# ---- P2 -----------------------------------------------------------------------------------------
def part_p2(seeds: list[int], steps: int, work: Path) -> dict:
    rows: dict[str, list[dict]] = {
        "plain (CleanRL algorithm, single file)": [],
        "kdrl": [],
        "kdrl env.actor=process": [],
        "kdrl env.num_envs=8": [],
    }
    for seed in seeds:  # interleaved: drifts in machine speed hit every loop alike
        common = [
            "experiment=cleanrl_cartpole",
            f"seed={seed}",
            f"algo.total_timesteps={steps}",
            f"algo.exploration.decay_steps={steps // 2}",
            f"eval.freq={steps}",
        ]
        rows["plain (CleanRL algorithm, single file)"].append(
            plain_run("cleanrl_dqn_cartpole.py", ["--seed", str(seed), "--total-timesteps", str(steps)])
        )
        rows["kdrl"].append(kdrl_run(common, work / f"p2_inline_{seed}"))
        rows["kdrl env.actor=process"].append(kdrl_run([*common, "env.actor=process"], work / f"p2_proc_{seed}"))
        # 8 envs at the same update-to-data ratio (train_freq counts transitions): what vectorising does
        rows["kdrl env.num_envs=8"].append(kdrl_run([*common, "env.num_envs=8"], work / f"p2_vec8_{seed}"))
        print(
            f"[P2] seed {seed}: "
            + ", ".join(f"{k.split(' (')[0]} {v[-1]['whole_s']:.1f}s/{v[-1]['return']:.0f}" for k, v in rows.items()),
            flush=True,
        )
    table(
        f"P2: CartPole-v1, CleanRL dqn.py's algorithm, 1 env, {steps:,} env steps, seeds {seeds}",
        rows,
        "plain (CleanRL algorithm, single file)",
    )
    return rows


# ---- P3 -----------------------------------------------------------------------------------------
def lightning_overhead(overrides: list[str], repeats: int) -> dict:
    """Trainer.fit vs a bare loop over the same module's stream, same process, interleaved."""
    import torch
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from kdrl.config import CONF_DIR
    from kdrl.runs.job import make_trainer, seed_job
    from kdrl.runs.teacher import build_teacher

    GlobalHydra.instance().clear()
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, "logger=none", "trainer.enable_progress_bar=false"])
    torch.set_num_threads(1)
    times: dict[str, list[float]] = {"trainer": [], "bare": []}
    for _ in range(repeats):
        for how in ("bare", "trainer"):
            seed_job(int(cfg.seed), 1)
            module, _ = build_teacher(cfg)
            if how == "trainer":
                trainer = make_trainer(cfg, [], [], Path(tempfile.mkdtemp()))
                t0 = time.perf_counter()
                trainer.fit(module)
            else:
                module.setup("fit")
                opt = module.configure_optimizers()
                t0 = time.perf_counter()
                for item in module.stream:
                    module.learn(opt, item)
            times[how].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"times": times, "ratio": med["trainer"] / med["bare"], "env_steps": int(cfg.algo.total_timesteps)}


def part_p3(repeats: int) -> dict:
    cases = {
        "CartPole, CleanRL setting (1 env)": [
            "experiment=cleanrl_cartpole",
            "algo.total_timesteps=40000",
            "algo.exploration.decay_steps=20000",
        ],
        "MinAtar Breakout, Young & Tian (1 env)": [
            "env=minatar_breakout",
            "recipe=minatar",  # Young & Tian as published (the default recipe for env=minatar_* is minatar_big_batch)
            "env.num_envs=1",
            "algo.total_timesteps=12000",
        ],
    }
    out = {name: lightning_overhead(ov, repeats) for name, ov in cases.items()}
    print(
        f"\nP3: Lightning's overhead = Trainer.fit wall / bare-loop wall, same module, median of {repeats} interleaved\n"
    )
    print("| case | env steps | bare loop s (runs) | Trainer s (runs) | overhead |\n|---|---|---|---|---|")
    for name, r in out.items():
        b = ", ".join(f"{x:.2f}" for x in r["times"]["bare"])
        t = ", ".join(f"{x:.2f}" for x in r["times"]["trainer"])
        print(f"| {name} | {r['env_steps']:,} | {b} | {t} | {r['ratio']:.3f}x |")
    return out


# ---- P9 -----------------------------------------------------------------------------------------
def minatar_update_cost() -> dict:
    """One Young & Tian update (batch 32, Huber TD, centred RMSProp) through kdrl's DQN module, and
    its arithmetic at this CPU's measured matmul rate."""
    import torch
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from kdrl.config import CONF_DIR
    from kdrl.replay import Transitions
    from kdrl.runs.teacher import build_teacher

    torch.set_num_threads(1)
    GlobalHydra.instance().clear()
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                "env=minatar_breakout",
                "recipe=minatar",  # Young & Tian as published (the default recipe for env=minatar_* is minatar_big_batch)
                "env.num_envs=1",
                "logger=none",
            ],
        )
    module, _ = build_teacher(cfg)
    opt = module.configure_optimizers()
    g = torch.Generator().manual_seed(0)
    obs = (torch.rand(64, 4, 10, 10, generator=g) < 0.1).to(torch.uint8)
    batch = Transitions(
        obs[:32], torch.randint(0, 3, (32,), generator=g), torch.rand(32, generator=g), obs[32:], torch.zeros(32)
    )

    def step() -> None:
        loss, _ = module.loss(batch)
        module.sgd_step(opt, loss)

    module.collector = type("C", (), {"env_steps": 0})()  # sgd_step's target schedule reads env steps
    for _ in range(50):
        step()
    t0 = time.perf_counter()
    for _ in range(500):
        step()
    update_ms = (time.perf_counter() - t0) / 500 * 1e3
    # arithmetic: forward (online + target) and backward (2x forward) of conv + fc + head, in MACs
    conv = 32 * 64 * 16 * 36
    fc = 32 * 1024 * 128 + 32 * 128 * 3
    macs = (conv + fc) * 2 + (conv + fc) * 2 - 32 * 64 * 16 * 36  # no input gradient for the first layer
    a, b = torch.randn(512, 512), torch.randn(512, 512)
    for _ in range(5):
        a @ b
    t0 = time.perf_counter()
    for _ in range(50):
        a @ b
    gflops = 2 * 512**3 * 50 / (time.perf_counter() - t0) / 1e9
    return {"update_ms": update_ms, "macs": macs, "gflops": gflops, "floor_ms": 2 * macs / gflops / 1e6}


def student_loop_speed(work: Path) -> dict:
    """kdrl-distill on MinAtar Breakout (KL, the 7% student, student-driven): updates/s and env
    steps/s of its loop, with a debug-sized teacher (speed does not depend on the teacher's skill)."""
    import shutil

    out = work / "p9_student"
    shutil.rmtree(out, ignore_errors=True)
    cache = work / "p9_cache"
    env = {**ENV, "KDRL_CACHE": str(cache)}
    cmd = [
        str(BIN / "kdrl-distill"),
        "env=minatar_breakout",
        "recipe=minatar",  # Young & Tian as published (the default recipe for env=minatar_* is minatar_big_batch)
        "debug=fast",
        "loss=kl",
        "control=student",
        "distill.total_timesteps=20000",
        "distill.learning_starts=1000",
        "distill.train_freq=1",
        "eval.freq=20000",
        f"hydra.run.dir={out}",
    ]
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True)
    res = json.loads((out / "results.json").read_text())
    return {
        "env_sps": res["env_steps"] / res["train_wall_time_s"],
        "updates_s": res["grad_steps"] / res["train_wall_time_s"],
        "grad_steps": res["grad_steps"],
        "train_s": res["train_wall_time_s"],
    }


def part_p9(repeats: int, steps: int, seeds: list[int], work: Path) -> dict:
    game = "MinAtar/Breakout-v1"
    rows: dict[str, list[dict]] = {"plain (Young & Tian, single file)": [], "kdrl": [], "kdrl env.actor=process": []}
    for r in range(repeats):
        common = [
            "env=minatar_breakout",
            "recipe=minatar",  # Young & Tian as published (the default recipe for env=minatar_* is minatar_big_batch)
            "env.num_envs=1",
            f"seed={r}",
            f"algo.total_timesteps={steps}",
            f"eval.freq={steps}",
            "eval.episodes=1",
            "logger=csv",
            "trainer.enable_progress_bar=false",
        ]
        rows["plain (Young & Tian, single file)"].append(
            plain_run("minatar_dqn.py", ["--env", game, "--seed", str(r), "--total-timesteps", str(steps)])
        )
        rows["kdrl"].append(kdrl_run(common, work / f"p9_inline_{r}"))
        rows["kdrl env.actor=process"].append(kdrl_run([*common, "env.actor=process"], work / f"p9_proc_{r}"))
        print(
            f"[P9] repeat {r}: " + ", ".join(f"{k.split(' (')[0]} {v[-1]['sps']:.0f}/s" for k, v in rows.items()),
            flush=True,
        )
    table(
        f"P9: {game}, Young & Tian's settings, 1 env, {steps:,} env steps, {repeats} interleaved runs "
        "(returns at this budget are noise; see the seeds table)",
        rows,
        "plain (Young & Tian, single file)",
    )
    learn: dict[str, list[float]] = {"plain": [], "kdrl": []}
    if seeds:  # returns: two single-thread runs at a time (not timed)

        def one(args: tuple[str, int]) -> tuple[str, float]:
            which, seed = args
            if which == "plain":
                return which, plain_run(
                    "minatar_dqn.py", ["--env", game, "--seed", str(seed), "--total-timesteps", str(steps)]
                )["return"]
            ov = [
                "env=minatar_breakout",
                "recipe=minatar",  # Young & Tian as published (the default recipe for env=minatar_* is minatar_big_batch)
                "env.num_envs=1",
                f"seed={seed}",
                f"algo.total_timesteps={steps}",
                f"eval.freq={steps}",
                "eval.episodes=1",
                "logger=none",
                "trainer.enable_progress_bar=false",
            ]
            return which, kdrl_run(ov, work / f"p9_seed_{seed}")["return"]

        with ThreadPoolExecutor(2) as pool:
            for which, ret in pool.map(one, [(w, s) for s in seeds for w in ("plain", "kdrl")]):
                learn[which].append(ret)
        print(f"\nP9 returns at {steps:,} env steps, held-out greedy (20 episodes), n = {len(seeds)} seeds each\n")
        print("| loop | returns per seed | mean [95% CI] |\n|---|---|---|")
        for k, v in learn.items():
            print(f"| {k} | {' / '.join(f'{x:.2f}' for x in v)} | {ci_cell(v, 2)} |")
        print(f"Welch p (equal means): {welch_p(learn['kdrl'], learn['plain']):.2f}")
    cost = minatar_update_cost()
    print(
        f"\nOne MinAtar update (kdrl DQN module, batch 32, forward + target + backward + centred RMSProp): "
        f"{cost['update_ms']:.2f} ms; its arithmetic is {cost['macs'] / 1e6:.1f}M multiply-adds = "
        f"{cost['floor_ms']:.2f} ms at this CPU's measured {cost['gflops']:.0f} GFLOP/s (512^3 matmul, 1 thread)"
    )
    student = student_loop_speed(work)
    print(
        f"Student update loop (kdrl-distill, MinAtar Breakout, KL, rusu_7 student, 1 update per env step): "
        f"{student['updates_s']:.0f} updates/s, {student['env_sps']:.0f} env steps/s ({student['grad_steps']} updates "
        f"in {student['train_s']:.1f} s)"
    )
    return {"rows": rows, "returns": learn, "update": cost, "student": student}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", nargs="+", default=["P2", "P3", "P9"], choices=["P2", "P3", "P9"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="P2 seeds")
    ap.add_argument("--steps", type=int, default=100_000, help="P2 env steps per run")
    ap.add_argument("--repeats", type=int, default=3, help="P3 and P9 interleaved timing runs")
    ap.add_argument("--minatar-steps", type=int, default=30_000)
    ap.add_argument("--minatar-seeds", type=int, nargs="*", default=[0, 1, 2, 3, 4])
    ap.add_argument("--work", default="outputs/bench_speed")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    report: dict = {}
    if "P2" in args.parts:
        report["P2"] = part_p2(args.seeds, args.steps, work)
    if "P3" in args.parts:
        report["P3"] = part_p3(args.repeats)
    if "P9" in args.parts:
        report["P9"] = part_p9(args.repeats, args.minatar_steps, args.minatar_seeds, work)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
