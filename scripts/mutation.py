"""Mutation testing of the rooms that make kdrl's published numbers, with mutmut 3 (docs/mutation.md).

    make mutation ROOM=losses                      # one room (the Makefile installs the `mutation` extra)
    make mutation                                  # every room, one after the other (hours on 2 cores)
    python scripts/mutation.py td --exclude tests/test_wiring.py,tests/test_refusals.py   # without some tests
    python scripts/mutation.py td --mutants build/mutation/td-before/survivors-td.txt      # only these mutants
    python scripts/mutation.py losses+td                   # one run over two rooms (one coverage pass)

A room is a few source files and the test files that guard them. Each room runs in its own working
directory, build/mutation/<room>[-<tag>]/, holding links to kdrl/, tests/ and conf/ and a
pyproject.toml whose [tool.mutmut] names the room's files and tests (mutmut reads its settings from
the working directory only): mutmut copies the project into <dir>/mutants/, runs the room's tests
once to learn which tests reach which function, then runs, for every mutant, only the tests that
reach its function (pytest -x), one mutant at a time (--max-children 1 unless told otherwise).

Every run starts from a fresh copy (mutmut does not recopy changed sources into an existing
mutants/ dir). It writes <dir>/summary-<room>.json (counts, score, wall time) and <dir>/survivors-<room>.txt (the
surviving mutants' names and diffs, the list to triage in docs/mutation.md), and prints one line:

    room td: 147 mutants, 120 killed, 3 timeout, 20 survived, 4 no tests; score 84.4% in 312 s

score = (killed + timeout) / (mutants - skipped): a mutant no test reaches counts as survived.
Code that runs where mutmut cannot trace it (the actor's forked child) has a room's `untraced`
tests: its "no tests" mutants are retested with them after the mutmut run.

    python scripts/mutation.py data --untraced-only build/mutation/data-full   # that pass alone, on a finished run

A shard of a large room, in a working directory made before (its mutants and its coverage pass reused: the
room's sources must be unchanged since), tested with today's tests, those given first:

    python scripts/mutation.py runs --reuse build/mutation/runs-finish --mutants shard.txt --with-tests tests/x.py::t
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# issue 29's tests: the wiring, the refusals, and the tests written against surviving mutants
NEW = ("tests/test_wiring.py", "tests/test_refusals.py", "tests/test_survivors.py")


@dataclass(frozen=True)
class Room:
    sources: tuple[str, ...]
    tests: tuple[str, ...]  # test files (or node ids) that guard the room
    # Tests for the code mutmut cannot see them reach: a forked child's (the actor process) records
    # its coverage in the child, so its mutants come out "no tests". Each such mutant is retested
    # with these (pytest -x, in this order: the quickest strong check first).
    untraced: tuple[str, ...] = ()


# Test files are chosen per room so that a mutant's tests take seconds: the slow end-to-end files
# (subprocess CLIs, SLURM, hypothesis fuzzing) are left to `make test`.
ROOMS: dict[str, Room] = {
    "losses": Room(("kdrl/losses.py",), ("tests/test_losses.py", *NEW)),
    "td": Room(("kdrl/td.py",), ("tests/test_td_and_schedules.py", "tests/test_nstep.py", *NEW)),
    "schedules": Room(("kdrl/schedules.py",), ("tests/test_td_and_schedules.py", *NEW)),
    "seeding": Room(
        ("kdrl/seeding.py",),
        (
            "tests/test_protocol.py::test_every_rng_of_a_run_is_its_own_stream",
            "tests/test_protocol.py::test_runs_with_neighbouring_seeds_share_no_episodes",
            "tests/test_envs_and_collector.py",
            *NEW,
        ),
    ),
    "evaluation": Room(
        ("kdrl/evaluation.py",),
        ("tests/test_protocol.py", "tests/test_results_schema.py", "tests/test_survivors_evaluation.py", *NEW),
    ),
    "scores": Room(
        ("kdrl/scores.py", "kdrl/tables.py"),
        (
            "tests/test_tables.py",
            "tests/test_results_schema.py",
            "tests/test_survivors_scores.py",
            "tests/test_survivors_tables.py",
        ),
    ),
    "statistics": Room(
        ("kdrl/statistics.py",),
        (
            "tests/test_intervals.py",
            "tests/test_protocol.py::test_mean_ci_covers_at_least_93_percent_at_the_published_n",
            "tests/test_statistics_by_hand.py",
            "tests/test_survivors_plateau.py",
        ),
    ),
    "replay": Room(
        ("kdrl/replay.py",),
        ("tests/test_replay.py", "tests/test_nstep.py", "tests/test_frame_replay.py", "tests/test_survivors_replay.py"),
    ),
    "data": Room(
        ("kdrl/data.py", "kdrl/collector.py", "kdrl/actor.py"),
        (
            "tests/test_envs_and_collector.py",
            "tests/test_td_and_schedules.py",
            "tests/test_fast_loop.py",
            "tests/test_survivors_data.py",
            *NEW,
        ),
        untraced=(
            "tests/test_fast_loop.py::test_actor_process_collects_the_in_process_data_when_the_policy_is_fixed",
            "tests/test_wiring.py::test_actor_process_feeds_epsilon_the_env_steps_of_each_step_of_a_round",
            "tests/test_survivors_data.py",
            "tests/test_fast_loop.py::test_actor_process_runs_are_reproducible_and_learn",
            "tests/test_fast_loop.py::test_actor_process_stopped_early_ends_where_the_inline_run_does",
            "tests/test_fast_loop.py::test_actor_process_reports_env_errors_in_one_line",
            "tests/test_fast_loop.py::test_conv_nets_act_through_torch_in_the_actor_process",
            "tests/test_fast_loop.py::test_actor_child_leaves_the_jobs_signals_to_the_parent",
        ),
    ),
    "validation": Room(("kdrl/validate.py",), ("tests/test_bad_inputs.py", "tests/test_survivors_validation.py", *NEW)),
    "runs": Room(
        ("kdrl/runs/*.py", "kdrl/modules/*.py", "kdrl/callbacks.py"),
        (
            "tests/test_protocol.py",
            "tests/test_distill.py",
            "tests/test_multitask.py",
            "tests/test_survivors_runs.py",
            "tests/test_student_resume.py",
            "tests/test_resume_rules.py",
            "tests/test_resume.py",  # which config keys block a resume, per task (config_differences)
            "tests/test_corrupt_files.py::test_resume_skips_a_damaged_last_ckpt_for_the_previous_one",
            "tests/test_corrupt_files.py::test_resume_with_no_whole_checkpoint_starts_afresh_in_one_line",
            "tests/test_hparams_search.py::test_shared_study_is_created_once_under_a_lock_before_the_sweepers",
            *NEW,
        ),
    ),
}

STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 34: "skipped", 37: "killed"}
TIMEOUT = {36, 24, -24, 152, 255}


def status(code: int | None) -> str:
    if code is None:
        return "not checked"
    if code in TIMEOUT:
        return "timeout"
    return STATUS.get(code, "suspicious")


def toml_list(items: list[str] | tuple[str, ...]) -> str:
    return "[" + ", ".join(json.dumps(x) for x in items) + "]"


def prepare(room: str, spec: Room, tests: list[str], workdir: Path) -> None:
    """A fresh working directory: links to the project and a pyproject.toml with the room's config."""
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    for name in ("kdrl", "tests", "conf"):
        (workdir / name).symlink_to(ROOT / name)
    project = (ROOT / "pyproject.toml").read_text()
    if "[tool.mutmut]" in project:
        raise SystemExit("pyproject.toml has its own [tool.mutmut]; scripts/mutation.py writes the room's")
    config = f"""
[tool.mutmut]
# written by scripts/mutation.py for room '{room}'
source_paths = ["kdrl"]
only_mutate = {toml_list(spec.sources)}
also_copy = ["conf"]
pytest_add_cli_args_test_selection = {toml_list(tests)}
pytest_add_cli_args = ["-p", "no:cacheprovider", "--timeout", "300"]
use_git_change_detection = false
timeout_multiplier = 10.0
"""
    # mutmut's own timeout limits CPU time, which a mutant that deadlocks (a parent waiting on a pipe to its
    # actor child) never spends: pytest-timeout's wall clock (300 s) fails such a test, so the mutant counts
    # as killed instead of holding the run forever
    (workdir / "pyproject.toml").write_text(project + config)


# Generates the room's mutants without testing any (mutmut 3 has no command for it), and prints their names.
GENERATE = """
import json, pathlib
from mutmut.__main__ import create_mutants
from mutmut.utils.file_utils import copy_also_copy_files, copy_src_dir, setup_source_paths
copy_src_dir(); copy_also_copy_files(); setup_source_paths(); create_mutants(1)
for meta in sorted(pathlib.Path("mutants").rglob("*.py.meta")):
    print("\\n".join(json.loads(meta.read_text()).get("exit_code_by_key", {})))
"""


def sample_mutants(room: str, spec: Room, workdir: Path, env: dict, k: int, seed: int) -> tuple[list[str], int]:
    """k of the room's mutants drawn uniformly at random (without replacement) with ``seed``: for a room
    too large to test whole on 2 cores, its score is estimated from the sample, with a binomial interval."""
    out = subprocess.run([sys.executable, "-c", GENERATE], cwd=workdir, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"room {room}: generating its mutants failed:\n{out.stderr[-2000:]}")
    names = sorted(
        n
        for n in out.stdout.split()
        if n.startswith("kdrl.")
        and any(Path(n.split(".x")[0].replace(".", "/") + ".py").match(p) for p in spec.sources)
    )
    if not names:
        raise SystemExit(f"room {room}: no mutants generated")
    return sorted(random.Random(seed).sample(names, min(k, len(names)))), len(names)


def wilson(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson's 95% interval for a proportion: the sampled score's uncertainty."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (centre - half, centre + half)


def retest_untraced(room: str, spec: Room, workdir: Path, env: dict, timeout_s: float = 300) -> int:
    """Retest the room's "no tests" mutants with ``spec.untraced``, as mutmut tests a mutant (the
    mutated copy in mutants/ imported, ``MUTANT_UNDER_TEST`` naming the mutant, pytest -x), and
    write each outcome into mutmut's result files: exit 1 = killed, 0 = survived, past the
    timeout = timeout. Returns the number retested."""
    done = 0
    for meta in sorted((workdir / "mutants" / "kdrl").rglob("*.py.meta")):
        rel = meta.relative_to(workdir / "mutants").as_posix()[: -len(".meta")]
        if not any(Path(rel).match(pattern) for pattern in spec.sources):
            continue
        data = json.loads(meta.read_text())
        codes = data.get("exit_code_by_key", {})
        for name in sorted(n for n, c in codes.items() if status(c) == "no tests"):
            cmd = [
                sys.executable,
                "-m",
                "pytest",
                "-x",
                "-q",
                "-p",
                "no:cacheprovider",
                "--timeout",
                "300",
                *spec.untraced,
            ]
            try:
                code = subprocess.run(
                    cmd,
                    cwd=workdir / "mutants",
                    env={**env, "MUTANT_UNDER_TEST": name},
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    timeout=timeout_s,
                ).returncode
            except subprocess.TimeoutExpired:
                code = 36  # mutmut's timeout code
            if code not in (0, 1, 36):
                raise SystemExit(f"room {room}: pytest exited {code} on {name}: the untraced tests did not run")
            codes[name] = code
            data["exit_code_by_key"] = codes
            meta.write_text(json.dumps(data))  # after each: an interrupted pass keeps what it did
            done += 1
            print(f"room {room}: untraced {name}: {status(code)}", flush=True)
    return done


def retest_listed(room: str, workdir: Path, names: list[str], first: list[str], env: dict) -> dict[str, int]:
    """Test ``names`` in a working directory made before, as mutmut tests a mutant (``MUTANT_UNDER_TEST``,
    pytest -x): ``first``, then the tests its coverage pass found reaching the mutant's function, quickest
    first. Today's tests are copied in; the room's sources must be those the mutants were made from (the
    commit the coverage pass recorded). Each outcome goes into mutmut's result files, as retest_untraced."""
    mutants = workdir / "mutants"
    stats = json.loads((mutants / "mutmut-stats.json").read_text())
    changed = subprocess.run(["git", "diff", "--quiet", stats["git_commit"], "--", "kdrl", "conf"], cwd=ROOT).returncode
    if changed:
        raise SystemExit(
            f"room {room}: kdrl/ or conf/ changed since {workdir} was made ({stats['git_commit'][:7]}): "
            "its mutants are of other code; make a fresh run"
        )
    shutil.rmtree(mutants / "tests")
    shutil.copytree(ROOT / "tests", mutants / "tests")
    by_fn, duration = stats["tests_by_mangled_function_name"], stats["duration_by_test"]
    metas = {}  # the result file of each listed mutant's source file
    for meta in (mutants / "kdrl").rglob("*.py.meta"):
        for name in json.loads(meta.read_text()).get("exit_code_by_key", {}):
            metas[name] = meta
    outcome: dict[str, int] = {}
    for i, name in enumerate(names, 1):
        if name not in metas:
            raise SystemExit(f"room {room}: no mutant {name} in {workdir}")
        reaching = sorted(by_fn.get(name.rsplit("__mutmut_", 1)[0], []), key=lambda t: duration.get(t, 0.0))
        cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "--timeout", "300"]
        t0 = time.perf_counter()
        try:
            code = subprocess.run(
                [*cmd, *dict.fromkeys([*first, *reaching])],
                cwd=mutants,
                env={**env, "MUTANT_UNDER_TEST": name},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=900,
            ).returncode
        except subprocess.TimeoutExpired:
            code = 36  # mutmut's timeout code
        if code not in (0, 1, 36):
            raise SystemExit(f"room {room}: pytest exited {code} on {name}: the tests did not run")
        data = json.loads(metas[name].read_text())
        data["exit_code_by_key"][name] = code
        metas[name].write_text(json.dumps(data))  # after each: an interrupted pass keeps what it did
        outcome[name] = code
        print(f"room {room}: [{i}/{len(names)}] {name}: {status(code)} ({time.perf_counter() - t0:.0f} s)", flush=True)
    return outcome


def summarise(room: str, spec: Room, workdir: Path, wall_s: float, tests: list[str]) -> dict:
    """Counts per status from mutmut's result files, and the survivors' diffs."""
    codes: dict[str, int | None] = {}
    for meta in sorted((workdir / "mutants" / "kdrl").rglob("*.py.meta")):
        rel = meta.relative_to(workdir / "mutants").as_posix()[: -len(".meta")]
        if not any(Path(rel).match(pattern) for pattern in spec.sources):
            continue
        codes.update(json.loads(meta.read_text()).get("exit_code_by_key", {}))
    counts: dict[str, int] = {}
    for code in codes.values():
        counts[status(code)] = counts.get(status(code), 0) + 1
    scored = len(codes) - counts.get("skipped", 0) - counts.get("not checked", 0)
    detected = counts.get("killed", 0) + counts.get("timeout", 0)
    survivors = sorted(name for name, code in codes.items() if status(code) in ("survived", "no tests", "suspicious"))
    summary = {
        "room": room,
        "sources": list(spec.sources),
        "tests": tests,
        "mutants": len(codes),
        **{k: counts.get(k, 0) for k in ("killed", "timeout", "survived", "no tests", "suspicious", "not checked")},
        "score": detected / scored if scored else None,
        "score_ci95": list(wilson(detected, scored)) if counts.get("not checked") else None,  # a sampled run
        "wall_s": round(wall_s, 1),
        "survivors": survivors,
    }
    (workdir / f"summary-{room}.json").write_text(json.dumps(summary, indent=2) + "\n")
    with open(workdir / f"survivors-{room}.txt", "w") as out:
        for name in survivors:
            show = subprocess.run(
                [sys.executable, "-m", "mutmut", "show", name], cwd=workdir, capture_output=True, text=True
            )
            out.write(f"{name}  [{status(codes[name])}]\n{show.stdout.strip()}\n\n")
    return summary


def run_room(room: str, args: argparse.Namespace) -> list[dict]:
    """Run one room, or several (``room`` = "a+b": one mutmut run over their files and tests, one
    summary each; the test-coverage pass is then paid once)."""
    rooms = room.split("+")
    spec = Room(
        tuple(dict.fromkeys(s for r in rooms for s in ROOMS[r].sources)),
        tuple(dict.fromkeys(t for r in rooms for t in ROOMS[r].tests)),
    )
    exclude = {x for x in (args.exclude or "").split(",") if x}
    tests = [t for t in spec.tests if t.split("::")[0] not in exclude]
    workdir = ROOT / "build" / "mutation" / (f"{room}-{args.tag}" if args.tag else room)
    prepare(room, spec, tests, workdir)
    names: list[str] = list(args.only or [])
    if args.mutants:
        names += [line.split()[0] for line in Path(args.mutants).read_text().splitlines() if line.startswith("kdrl.")]
        if not names:
            print(f"room {room}: no mutants listed in {args.mutants}; nothing to run")
            return {}
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the copy in mutants/ must be the one imported
    env.update(WANDB_MODE="disabled", KDRL_NO_PROGRESS="1", KDRL_NO_PIN="1", PYTHONWARNINGS="ignore")
    if args.sample:
        drawn, total = sample_mutants(room, spec, workdir, env, args.sample, args.sample_seed)
        print(f"room {room}: testing a random sample of {len(drawn)} of its {total} mutants (seed {args.sample_seed})")
        names += drawn
    cmd = [sys.executable, "-m", "mutmut", "run", "--max-children", str(args.max_children), *names]
    print(f"room {room}: {' '.join(cmd[1:4])} ... in {workdir.relative_to(ROOT)} ({len(tests)} test paths)", flush=True)
    t0 = time.perf_counter()
    log = open(workdir / "mutmut.log", "w")
    proc = subprocess.run(cmd, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        print(f"room {room}: mutmut exited {proc.returncode}; see {workdir / 'mutmut.log'}")
    for r in rooms:
        if ROOMS[r].untraced and proc.returncode == 0:
            retest_untraced(r, ROOMS[r], workdir, env)
    wall = time.perf_counter() - t0
    out = []
    for r in rooms:
        s = summarise(r, ROOMS[r], workdir, wall, tests)
        print(
            f"room {r}: {s['mutants']} mutants, {s['killed']} killed, {s['timeout']} timeout, "
            f"{s['survived']} survived, {s['no tests']} no tests; score "
            + (f"{100 * s['score']:.1f}%" if s["score"] is not None else "n/a")
            + (
                f" [95% CI {100 * s['score_ci95'][0]:.1f}, {100 * s['score_ci95'][1]:.1f}] over a sample of "
                f"{s['mutants'] - s['not checked']} of {s['mutants']}"
                if s["score_ci95"]
                else ""
            )
            + f" in {wall:.0f} s (survivors: {(workdir / f'survivors-{r}.txt').relative_to(ROOT)})",
            flush=True,
        )
        out.append(s)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "rooms", nargs="*", help=f"rooms to run (default: all), a+b for one run over two: {', '.join(ROOMS)}"
    )
    p.add_argument("--max-children", type=int, default=1, help="mutants tested at once (default 1)")
    p.add_argument("--exclude", help="comma-separated test files left out (e.g. to measure a score without them)")
    p.add_argument("--mutants", help="a file listing mutant names (first word of a line): run only those")
    p.add_argument("--only", action="append", help="a mutant name or glob (kdrl.validate.x__in_range*); repeatable")
    p.add_argument("--sample", type=int, help="test only this many of the room's mutants, drawn at random")
    p.add_argument("--sample-seed", type=int, default=0, help="seed of the --sample draw (default 0)")
    p.add_argument("--tag", help="suffix of the working directory (build/mutation/<room>-<tag>)")
    p.add_argument("--untraced-only", metavar="DIR", help="only retest the untraced mutants of a finished run in DIR")
    p.add_argument("--reuse", metavar="DIR", help="test --mutants/--only in DIR, made before, with today's tests")
    p.add_argument("--with-tests", nargs="*", default=[], help="with --reuse: tests run first on every mutant")
    args = p.parse_args(argv)
    if args.reuse:
        workdir, (room,) = Path(args.reuse).resolve(), args.rooms
        names = list(args.only or [])
        if args.mutants:
            names += [ln.split()[0] for ln in Path(args.mutants).read_text().splitlines() if ln.startswith("kdrl.")]
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env.update(WANDB_MODE="disabled", KDRL_NO_PROGRESS="1", KDRL_NO_PIN="1", PYTHONWARNINGS="ignore")
        t0 = time.perf_counter()
        codes = retest_listed(room, workdir, names, args.with_tests, env)
        killed = sum(status(c) in ("killed", "timeout") for c in codes.values())
        survivors = [n for n, c in codes.items() if status(c) not in ("killed", "timeout")]
        out = workdir / f"survivors-{args.tag or 'reuse'}.txt"
        with open(out, "w") as f:
            for name in survivors:
                show = subprocess.run(
                    [sys.executable, "-m", "mutmut", "show", name], cwd=workdir, capture_output=True, text=True
                )
                f.write(f"{name}  [{status(codes[name])}]\n{show.stdout.strip()}\n\n")
        score = f"{100 * killed / len(codes):.1f}%" if codes else "n/a"
        print(
            f"room {room}: {len(codes)} mutants, {killed} killed, {len(survivors)} survived; score {score} "
            f"in {time.perf_counter() - t0:.0f} s (survivors: {out})"
        )
        return 0
    if args.untraced_only:
        workdir, (room,) = Path(args.untraced_only).resolve(), args.rooms
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env.update(WANDB_MODE="disabled", KDRL_NO_PROGRESS="1", KDRL_NO_PIN="1", PYTHONWARNINGS="ignore")
        t0 = time.perf_counter()
        n = retest_untraced(room, ROOMS[room], workdir, env)
        s = summarise(room, ROOMS[room], workdir, time.perf_counter() - t0, list(ROOMS[room].tests))
        print(
            f"room {room}: {n} untraced mutants retested in {time.perf_counter() - t0:.0f} s; now "
            f"{s['killed']} killed, {s['timeout']} timeout, {s['survived']} survived, {s['no tests']} no tests"
        )
        return 0
    rooms = args.rooms or list(ROOMS)
    unknown = [r for room in rooms for r in room.split("+") if r not in ROOMS]
    if unknown:
        p.error(f"unknown room(s) {', '.join(unknown)}; rooms: {', '.join(ROOMS)}")
    for room in rooms:
        run_room(room, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
