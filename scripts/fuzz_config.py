"""Fuzz every key of every kdrl app's config (the long mode of tests/test_fuzz_config.py).

    python scripts/fuzz_config.py                           # ~2 min: 300 examples per app + the key sweep
    python scripts/fuzz_config.py --examples 5000 --seed 1  # longer, another seed
    python scripts/fuzz_config.py --run --runs 20           # + the real CLI at debug size on 20 of them

In-process (tests/fuzz_config.py): each example's overrides are composed and run through the
validation path; it must pass, or be refused by Hydra's compact errors or in one kdrl line naming
the key. With ``--run``, a sample of the examples that pass validation (with ``debug=fast``) run
the real CLI in a subprocess with a timeout: exit 0 with results.json status ok, or a non-zero
exit with exactly one ``<prog>: error:`` line, no traceback and no results.json marked ok.

Prints, per app: examples run, distinct keys covered, group choices drawn, rejected by Hydra, rejected
by kdrl's validation, passed, crashes (property violations); with --run, the CLI's outcomes. Exit
code 1 when any crash was found.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fuzz_config import (  # noqa: E402
    APPS,
    PROGS,
    Fuzzer,
    Outcome,
    compose_agrees,
    coverage_table,
    fuzz,
    sweep_all,
)

MEMORY_LIMIT = 12 * 2**30  # a CLI run that tries to allocate a huge replay fails instead of swapping the box


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--examples", type=int, default=300, help="hypothesis examples per app (default 300)")
    p.add_argument("--apps", default=",".join(APPS), help="comma-separated (default: all)")
    p.add_argument("--groups", type=int, default=2, help="config-group choices per example, at most (default 2)")
    p.add_argument("--keys", type=int, default=3, help="mutated keys per example, at most (default 3)")
    p.add_argument("--seed", type=int, default=None, help="hypothesis seed (default: derandomized, as in make test)")
    p.add_argument(
        "--sweep",
        choices=("all", "one", "none"),
        default="all",
        help="per-key sweep: every sweep value of every key (all), one per key (one), or none",
    )
    p.add_argument("--check-compose", type=int, default=30, help="examples per app checked against Hydra's compose")
    p.add_argument("--run", action="store_true", help="also run the real CLI on a sample of the passing examples")
    p.add_argument("--runs", type=int, default=20, help="CLI runs with --run (default 20, spread over the apps)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per CLI run (default 120)")
    return p.parse_args()


# ---- the real CLI -----------------------------------------------------------------------------------
def cli_argv(o: Outcome) -> list[str]:
    groups = [g for g in o.groups if not g.startswith("debug=")]
    return ["debug=fast", *groups, *o.overrides]


def limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    os.setsid()


def run_cli(o: Outcome, cache: Path, timeout: float) -> tuple[str, str]:
    """(verdict, detail): ok | refused (one kdrl line, a kdrl message) | late (one line, but an error
    from deep code: validation could have said it) | timeout | crash (the invariant broken)."""
    prog = PROGS[o.app]
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("KDRL_DEBUG", "HYDRA_FULL_ERROR")},
        "KDRL_CACHE": str(cache),
        "WANDB_MODE": "disabled",
        "KDRL_NO_PROGRESS": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHONWARNINGS": "ignore",
    }
    with tempfile.TemporaryDirectory(prefix="kdrl-fuzz-run-") as cwd:
        proc = subprocess.Popen(
            [sys.executable, "-m", f"kdrl.cli.{o.app}", *cli_argv(o)],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=limit_memory,
        )
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            return "timeout", f"over {timeout:.0f} s"
        results = [json.loads(p.read_text()) for p in Path(cwd).rglob("results.json")]
    statuses = [r.get("status") for r in results]
    errors = [line for line in err.splitlines() if line.startswith(f"{prog}: error:")]
    if "Traceback" in out + err:
        return "crash", "a traceback: " + (err.strip().splitlines() or ["?"])[-1][:300]
    if proc.returncode == 0:  # one results.json, or one per job of a sweep (hparams_search=...)
        if not statuses or any(s != "ok" for s in statuses):
            return "crash", f"exit 0 but results.json statuses {statuses[:5]}"
        return "ok", "" if len(statuses) == 1 else f"{len(statuses)} jobs"
    if proc.returncode < 0:
        return "crash", f"killed by signal {-proc.returncode}"
    if "ok" in statuses:
        return "crash", f"exit {proc.returncode} with a results.json marked ok"
    if len(errors) != 1:
        return "crash", f"exit {proc.returncode} with {len(errors)} error lines: {err.strip()[-300:]!r}"
    message = errors[0][len(prog) + len(": error: ") :]
    head = message.split(":")[0]
    late = head.isidentifier() and head[0].isupper() and (head.endswith("Error") or head.endswith("Exception"))
    return ("late" if late else "refused"), message[:300]


def main() -> int:
    args = parse_args()
    apps = [a for a in args.apps.split(",") if a]
    t0 = time.perf_counter()
    compose_mismatches: list[str] = []
    with Fuzzer() as fz:
        for app in apps:
            t = time.perf_counter()
            sampled: list[Outcome] = []

            def keep(o: Outcome, sampled: list[Outcome] = sampled) -> None:
                if len(sampled) < args.check_compose:
                    sampled.append(o)

            n_sweep = 0
            if args.sweep != "none":
                n_sweep = sweep_all(fz, app, per_key=None if args.sweep == "all" else 1)
            fuzz(
                fz,
                app,
                args.examples,
                max_groups=args.groups,
                max_keys=args.keys,
                seed=args.seed,
                on_outcome=keep,
            )
            for o in sampled:
                diff = compose_agrees(fz, app, o.groups, o.overrides)
                if diff:
                    compose_mismatches.append(diff)
            print(
                f"{app}: {fz.stats.examples[app]} examples ({n_sweep} in the key sweep) in "
                f"{time.perf_counter() - t:.0f} s, {len(sampled)} checked against Hydra's compose",
                flush=True,
            )

        cli: dict[str, Counter] = {app: Counter() for app in apps}
        cli_notes: list[str] = []
        if args.run:
            rng = random.Random(args.seed or 0)
            cache = Path(tempfile.mkdtemp(prefix="kdrl-fuzz-cache-"))
            per_app = max(1, args.runs // len(apps))
            for app in apps:
                # the CLI adds debug=fast: keep the examples that still pass validation with it
                candidates = [
                    o for o in fz.stats.passed.get(app, []) if not any(g.startswith("debug=") for g in o.groups)
                ]
                pool = [o for o in candidates if fz.run(app, ["debug=fast", *o.groups], o.mutations).kind == "passed"]
                for o in rng.sample(pool, min(per_app, len(pool))):
                    t = time.perf_counter()
                    verdict, detail = run_cli(o, cache, args.timeout)
                    cli[app][verdict] += 1
                    cli[app]["runs"] += 1
                    line = f"{PROGS[app]} {' '.join(cli_argv(o))}"
                    print(f"  [{verdict:<7} {time.perf_counter() - t:5.0f} s] {line[:160]}  {detail[:200]}", flush=True)
                    if verdict in ("crash", "late"):
                        cli_notes.append(f"{verdict}: {line}\n    {detail}")

        extra = {app: {f"cli {k}": v for k, v in cli[app].items()} for app in apps} if args.run else None
        print()
        print(coverage_table(fz.stats, fz, extra))
        total_keys = sum(len(fz.all_keys.get(app, ())) for app in apps)
        covered = sum(len(fz.stats.keys.get(app, set()) & fz.all_keys.get(app, set())) for app in apps)
        print(
            f"\n{sum(fz.stats.examples.values())} examples, {covered}/{total_keys} (app, key) pairs covered, "
            f"{fz.compositions} Hydra compositions, {time.perf_counter() - t0:.0f} s"
        )
        if compose_mismatches:
            print(f"\n{len(compose_mismatches)} cached compositions differ from Hydra's:")
            print("\n".join(compose_mismatches[:20]))
        crashes = fz.stats.crashes
        if crashes:
            sites: dict[str, list[Outcome]] = {}
            for o in crashes:
                sites.setdefault(crash_site(o), []).append(o)
            print(f"\n{len(crashes)} crash(es) in the validation path, at {len(sites)} distinct site(s):")
            for site, found in sorted(sites.items(), key=lambda kv: -len(kv[1])):
                o = min(found, key=lambda o: len(" ".join(o.argv)))
                print(
                    f"- {len(found)} x {site}\n  e.g. {PROGS[o.app]} {' '.join(o.argv)[:200]}\n  -> {o.message[:200]}"
                )
        if cli_notes:
            print("\nCLI runs that broke the invariant (crash) or failed late, after validation (late):")
            print("\n".join(cli_notes))
        bad = crashes or compose_mismatches or any(c["crash"] for c in cli.values())
        return 1 if bad else 0


def crash_site(o: Outcome) -> str:
    """Where a crash comes from: its error type and the last frame of its traceback."""
    frames = re.findall(r'File "([^"]+)", line (\d+)', o.detail)
    where = f"{Path(frames[-1][0]).name}:{frames[-1][1]}" if frames else "-"
    return f"{o.message.split(':')[0][:60]} at {where}"


if __name__ == "__main__":
    sys.exit(main())
