"""Batch-1 greedy-action latency of a teacher and its students: eager torch, TorchScript, onnxruntime.

    python scripts/bench_latency.py                                  # random-weight CartPole nets
    python scripts/bench_latency.py --teacher T.pt --student S1.pt S2.pt

What is timed is the deployment path, one call per env step: a numpy observation in, a Python int
action out (conversion, forward, argmax). Every runtime gets one thread, a warm-up, then ``--calls``
individually timed calls on real CartPole-like observations; median and p90 are reported. The
exports are made with kdrl.export (verified against torch before timing).

Without arguments the nets are built from random weights (latency does not depend on the values):
a CartPole 4-256-256-2 teacher and 4-64-64-2 and 4-16-2 students, so the script runs anywhere.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from kdrl.export import export_policy, load_policy_net, onnx_session, sample_states
from kdrl.io import save_policy

TARGET_RATIO = 0.3  # the issue: exported student latency <= 0.3 x teacher eager-torch latency
ActFn = Callable[[np.ndarray], int]


@dataclass
class Timing:
    median_us: float
    p90_us: float


def time_calls(act: ActFn, obs: np.ndarray, calls: int, start: int = 0) -> np.ndarray:
    """Nanoseconds of each of ``calls`` calls timed on its own, cycling through ``obs``."""
    n = len(obs)
    samples = np.empty(calls)
    clock = time.perf_counter_ns
    for i in range(start, start + calls):
        o = obs[i % n]
        t0 = clock()
        act(o)
        samples[i - start] = clock() - t0
    return samples


def timing(samples_ns: np.ndarray) -> Timing:
    return Timing(float(np.median(samples_ns)) / 1e3, float(np.percentile(samples_ns, 90)) / 1e3)


# ---- obs numpy -> action int, per runtime ----------------------------------------------------------------
def eager_act(net: torch.nn.Module) -> ActFn:
    @torch.inference_mode()
    def act(obs: np.ndarray) -> int:
        return int(net(torch.from_numpy(obs).unsqueeze(0)).argmax(dim=1))

    return act


def torchscript_act(path: Path, freeze: bool) -> ActFn:
    mod = torch.jit.load(str(path)).eval()
    if freeze:  # parameters become constants; optimize_for_inference fuses what it can
        mod = torch.jit.optimize_for_inference(torch.jit.freeze(mod, preserved_attrs=["act"]), other_methods=["act"])

    @torch.inference_mode()
    def act(obs: np.ndarray) -> int:
        return int(mod.act(torch.from_numpy(obs).unsqueeze(0)))

    return act


def onnx_act(path: Path, level: str) -> ActFn:
    sess = onnx_session(path, threads=1, level=level)
    outputs = ["action"]

    def act(obs: np.ndarray) -> int:
        return int(sess.run(outputs, {"obs": obs[None]})[0][0])

    return act


def runtimes(policy: Path, export_dir: Path) -> dict[str, ActFn]:
    net, _ = load_policy_net(policy)
    res = export_policy(policy, export_dir, name=policy.stem)
    ts, onnx = res.files["torchscript"], res.files["onnx"]
    return {
        "eager torch": eager_act(net),
        "TorchScript": torchscript_act(ts, freeze=False),
        "TorchScript frozen": torchscript_act(ts, freeze=True),
        "onnxruntime basic": onnx_act(onnx, "basic"),
        "onnxruntime all": onnx_act(onnx, "all"),
    }


# ---- default nets ------------------------------------------------------------------------------------
def random_policy(path: Path, hidden: list[int], seed: int) -> Path:
    from kdrl.nets import MLP

    torch.manual_seed(seed)
    cfg = {"_target_": "kdrl.nets.MLP", "width": hidden[0], "depth": len(hidden), "dueling": False, "hidden": hidden}
    return save_policy(path, MLP((4,), 2, hidden=hidden), cfg, "CartPole-v1", (4,), 2)


def default_policies(d: Path) -> tuple[Path, list[Path]]:
    teacher = random_policy(d / "teacher_4-256-256-2.pt", [256, 256], 0)
    students = [random_policy(d / "student_4-64-64-2.pt", [64, 64], 1), random_policy(d / "student_4-16-2.pt", [16], 2)]
    return teacher, students


# ---- report --------------------------------------------------------------------------------------------
def shape_label(policy: Path) -> str:
    from kdrl.nets import count_params

    net, state = load_policy_net(policy)
    sizes = [m.out_features for m in net.modules() if isinstance(m, torch.nn.Linear)]
    dims = "-".join(str(s) for s in [int(np.prod(state["obs_shape"])), *sizes]) if sizes else state["net"]["_target_"]
    return f"{dims} ({count_params(net):,} params)"


def bench(
    policies: dict[str, Path], export_dir: Path, calls: int, warmup: int, rounds: int
) -> dict[str, dict[str, Timing]]:
    """Time every (net, runtime) pair in ``rounds`` interleaved rounds, so load from other processes
    on a shared machine falls on all of them alike instead of on whichever ran during a spike."""
    acts: dict[tuple[str, str], ActFn] = {}
    obs_of: dict[str, np.ndarray] = {}
    for role, path in policies.items():
        _, state = load_policy_net(path)
        obs, _ = sample_states(state["env_id"], tuple(state["obs_shape"]), 256, seed=0)
        obs_of[role] = np.ascontiguousarray(obs, dtype=np.float32)
        for rt, act in runtimes(path, export_dir / role.replace(" ", "_")).items():
            acts[role, rt] = act
            time_calls(act, obs_of[role], warmup)
    per_round = max(1, calls // rounds)
    samples: dict[tuple[str, str], list[np.ndarray]] = {key: [] for key in acts}
    for r in range(rounds):
        for (role, rt), act in acts.items():
            samples[role, rt].append(time_calls(act, obs_of[role], per_round, start=r * per_round))
    results: dict[str, dict[str, Timing]] = {}
    for (role, rt), chunks in samples.items():
        results.setdefault(role, {})[rt] = timing(np.concatenate(chunks))
    return results


def table(results: dict[str, dict[str, Timing]], labels: dict[str, str]) -> str:
    rows = ["| net | runtime | median µs | p90 µs |", "|---|---|---:|---:|"]
    for role, by_rt in results.items():
        for rt, t in by_rt.items():
            rows.append(f"| {role}: {labels[role]} | {rt} | {t.median_us:.1f} | {t.p90_us:.1f} |")
    return "\n".join(rows)


def ratios(results: dict[str, dict[str, Timing]], teacher: str) -> str:
    base = results[teacher]["eager torch"].median_us
    lines = ["", f"teacher eager torch: {base:.1f} µs (median); target: exported student <= {TARGET_RATIO}x"]
    for role, by_rt in results.items():
        if role == teacher:
            continue
        exported = {rt: t for rt, t in by_rt.items() if rt != "eager torch"}
        best_rt = min(exported, key=lambda rt: exported[rt].median_us)
        r = exported[best_rt].median_us / base
        verdict = "meets" if r <= TARGET_RATIO else "does NOT meet"
        lines.append(
            f"{role}: best exported = {best_rt} {exported[best_rt].median_us:.1f} µs -> "
            f"{r:.2f}x teacher eager ({verdict} <= {TARGET_RATIO}x)"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", type=Path, help="teacher policy file (default: random 4-256-256-2)")
    p.add_argument("--student", type=Path, nargs="+", help="student policy file(s) (default: random 4-64-64-2, 4-16-2)")
    p.add_argument("--calls", type=int, default=10000, help="timed calls per net and runtime")
    p.add_argument("--warmup", type=int, default=300)
    p.add_argument("--rounds", type=int, default=10, help="interleaved rounds the calls are split into")
    args = p.parse_args()
    if (args.teacher is None) != (args.student is None):
        p.error("give both --teacher and --student, or neither")
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="kdrl-bench-") as tmp:
        tmp_dir = Path(tmp)
        teacher, students = (args.teacher, args.student) if args.teacher else default_policies(tmp_dir / "policies")
        policies = {
            "teacher": teacher,
            **{f"student {i + 1}" if len(students) > 1 else "student": s for i, s in enumerate(students)},
        }
        labels = {role: shape_label(path) for role, path in policies.items()}
        results = bench(policies, tmp_dir / "export", args.calls, args.warmup, args.rounds)
    print(
        f"batch-1 greedy action, numpy obs -> int action; torch {torch.__version__}, 1 thread, "
        f"{platform.processor() or platform.machine()}, Python {sys.version.split()[0]}; "
        f"{args.calls} calls in {args.rounds} interleaved rounds after {args.warmup} warm-up\n"
    )
    print(table(results, labels))
    print(ratios(results, "teacher"))


if __name__ == "__main__":
    main()
