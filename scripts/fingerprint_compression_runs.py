"""Fingerprint the student paths scripts/fingerprint_runs.py does not run: pruning, int8 training,
both together (with a hybrid loss and mixed control), QDagger's offline phase, early stop at a
return (which waits for the compression points), checkpoint.keep_last rotation and an actor process.

Same JSON as fingerprint_runs.py (compare with its ``compare``), plus each run's results.json
``pretrain``/``prune``/``quantize`` fields, the names of its checkpoint files and a hash of the
weights in best_policy.pt and last_policy.pt (which checkpoint was chosen, and what it holds).

    python scripts/fingerprint_compression_runs.py record before.json [--work DIR]
    python scripts/fingerprint_runs.py compare before.json after.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from kdrl import fingerprint as fp

RESULTS = ("pretrain", "prune", "quantize")
TIMINGS = ("train/actor_wait_s",)  # seconds waited for the actor process: a timing, not an outcome


def runs(work: Path) -> list[tuple[str, list[str]]]:
    t_cp = work / "teacher_cartpole"
    cp = f"teacher.checkpoint={t_cp}/teacher.pt"
    student = lambda name, *args: (name, ["kdrl-distill", cp, *fp.SHORT_STUDENT, *args, f"hydra.run.dir={work}/{name}"])  # noqa: E731
    prune = lambda amount, at: [f"distill.prune.amount={amount}", f"distill.prune.at={at}"]  # noqa: E731
    int8 = lambda at: ["distill.quantize.int8=true", f"distill.quantize.at={at}"]  # noqa: E731
    return [
        ("teacher_cartpole", ["kdrl-train", *fp.TINY_TEACHER, f"hydra.run.dir={t_cp}"]),
        student(
            "prune_int8_stop",
            "loss=kl",
            *prune(0.5, 0.3),
            *int8(0.6),
            "eval.stop_at_return=100",
            "checkpoint.keep_last=3",
        ),
        student("hybrid_prune_int8", "loss=hybrid", "control=mixed", *prune(0.3, 0.5), *int8(0.5)),
        student(
            "qdagger_pretrain",
            "loss=qdagger",
            "control=student",
            "distill.pretrain.teacher_steps=1000",
            "distill.pretrain.updates=300",
        ),
        student("prune_only", "loss=mse", *prune(0.7, 0.4)),
        student(
            "actor_process_stop",
            "loss=kl",
            "control=student",
            "env.actor=process",
            "eval.stop_at_return=200",
            "checkpoint.keep_last=2",
        ),
    ]


def fingerprint(run_dir: Path) -> dict[str, Any]:
    out = fp.fingerprint(run_dir)
    for k in TIMINGS:
        out["metrics"].pop(k, None)
    res = json.loads((run_dir / "results.json").read_text())
    for k in RESULTS:
        v = res.get(k)
        out[f"results_{k}"] = {a: b for a, b in v.items() if "wall" not in a} if isinstance(v, dict) else v
    ckpts = run_dir / "checkpoints"
    out["checkpoint_files"] = sorted(p.name for p in ckpts.iterdir())
    for name in ("best_policy.pt", "last_policy.pt"):
        out[f"weights_{name}"] = fp.weights_hash(ckpts / name)
    return out


def record(path: Path, work: Path) -> None:
    body = fp.record_jobs(
        runs(work),
        work,
        fingerprint,
        note=lambda f: f"return {f.get('eval_return_mean')}  env steps {f.get('env_steps')}",
    )
    path.write_text(json.dumps(body, indent=1, sort_keys=True))
    print(f"wrote {path}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record")
    r.add_argument("out", type=Path)
    r.add_argument("--work", type=Path, default=None)
    args = p.parse_args()
    record(args.out, args.work or Path("outputs/fingerprint") / args.out.stem)


if __name__ == "__main__":
    main()
