"""kdrl-study: run a declared study (conf/study/<name>.yaml) stage by stage on any launcher.

    kdrl-study study=demo                              # every stage, launcher=joblib; tables at the end
    kdrl-study study=minatar launcher=slurm hydra.launcher.partition=cpu
    kdrl-study study=rusu2016 stage=teachers           # one stage (or stage=[a,b])
    kdrl-study study=demo dir=outputs/demo             # the study dir (default: the study's `dir`)
    kdrl-study study=demo --status                     # done, running, failed, pending per stage; and the
                                                       # jobs not ok here whose results are published
    kdrl-study --status outputs/demo                   # the same from the study dir alone
    kdrl-study study=demo --tables                     # only rewrite the tables from finished jobs
    kdrl-study study=cartpole_losses publish=true      # and copy them to their docs/ dirs
    kdrl-study study=minatar --tables table=[reuse] publish=true   # only these tables (the others untouched)
    kdrl-study study=demo wandb=offline                # the tables as a W&B run in the jobs' group (default:
                                                       # as the jobs log); wandb sync <dir>/wandb/offline-run-*

Arguments: ``study=``, ``launcher=`` (local | joblib | submitit_local | slurm | ray), ``stage=``,
``status=true`` (= --status), ``tables=true`` (= --tables), ``table=`` (with --tables: only these
tables, ``table=[a,b]``), ``publish=true``, ``poll_s=``;
``hydra.*`` overrides go to every stage's multirun (``hydra.launcher.n_jobs=2``); anything else
is a Hydra override of the study's declaration (``stages.students.seeds=[0,1]``, ``overrides=[trainer=gpu]``).
Rerunning the command skips finished jobs and reruns failed ones. Exit code 0 when every job of
the selected stages is ok, 1 when some are not, 2 for bad input.

kdrl-study is a thin CLI over Hydra's compose API, not a Hydra app: it is no job itself (no run dir,
no Hydra logging or launcher of its own; ``launcher=`` names the stages' launcher, not its own),
its --status path must stay fast (no torch import, one index file), and each stage runs as its own
Hydra multirun in a subprocess (python -m kdrl.cli.<app> -m), which keeps every stage's Hydra state
clean and works the same on every launcher.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from kdrl.errors import run_cli

PROG = "kdrl-study"
RUNNER_KEYS = ("study", "launcher", "stage", "table", "status", "tables", "publish", "poll_s")


def truthy(value: str) -> bool:
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no", "null"):
        return False
    from kdrl.study import StudyError

    raise StudyError(f"expected true or false, got '{value}'")


def split_top_level(body: str) -> list[str]:
    items, depth, cur = [], 0, ""
    for ch in body:
        if ch == "," and depth == 0:
            items.append(cur)
            cur = ""
            continue
        depth += ch in "[{("
        depth -= ch in "]})"
        cur += ch
    return [*items, cur] if cur or items else []


def quoted_override_list(arg: str) -> str:
    """``overrides=[budget=gpu,trainer=gpu]`` (a list of job overrides, the form a user types) as Hydra
    needs it, each item quoted: ``overrides=['budget=gpu','trainer=gpu']``. Lists already quoted, and
    other keys, are left as they are."""
    key, value = arg.split("=", 1)
    if not key.lstrip("+~").endswith("overrides") or not (value.startswith("[") and value.endswith("]")):
        return arg
    if "'" in value or '"' in value:
        return arg
    items = [i.strip() for i in split_top_level(value[1:-1])]
    return f"{key}=[{','.join(repr(i) for i in items if i)}]"


def parse(argv: Sequence[str]) -> dict:
    from kdrl.study import StudyError

    args: dict = {"overrides": [], "hydra": [], "paths": [], "status": False, "tables": False, "publish": False}
    for arg in argv:
        if arg in ("-h", "--help"):
            print(__doc__)
            sys.exit(0)
        if arg == "--status":
            args["status"] = True
        elif arg == "--tables":
            args["tables"] = True
        elif arg.startswith("-"):
            raise StudyError(f"unknown option {arg} (see kdrl-study --help)")
        elif arg.startswith("~"):  # a Hydra deletion: ~stages.teachers
            args["overrides"].append(arg)
        elif "=" not in arg:
            args["paths"].append(arg)
        else:
            key, value = arg.split("=", 1)
            if key in ("status", "tables", "publish"):
                args[key] = truthy(value)
            elif key in ("stage", "table"):
                args[key] = [s.strip() for s in value.strip("[]").split(",") if s.strip()]
            elif key in RUNNER_KEYS:
                args[key] = value
            elif key.lstrip("+~").startswith("hydra."):  # +hydra.launcher.ray.remote.max_retries=0 too
                args["hydra"].append(arg)
            else:
                args["overrides"].append(quoted_override_list(arg))
    return args


def main(argv: Sequence[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    code = 0

    def body() -> None:
        nonlocal code
        from kdrl.study import Index, Runner, StudyError, declaration_hash, load_study, runner_alive, status_report

        args = parse(argv)
        if args["status"] and args["paths"] and "study" not in args:
            study_dir = Path(args["paths"][0]).resolve()
            declared = study_dir / "study.json"  # the declaration its last run wrote: its published results count
            study = json.loads(declared.read_text()) if declared.is_file() else None
            text, _ = status_report(study_dir, study=study)
            print(text)
            return
        if "study" not in args:
            raise StudyError("give study=<name> (conf/study/<name>.yaml), or --status <study dir>")
        if args["paths"]:
            raise StudyError(f"unexpected argument(s) {' '.join(args['paths'])} (overrides take key=value)")
        study = load_study(args["study"], args["overrides"])
        study_dir = Path(study["dir"]).expanduser().resolve()
        runner = Runner(
            study,
            study_dir,
            launcher=args.get("launcher", "joblib"),
            hydra_args=args["hydra"],
            poll_s=float(args.get("poll_s", 2.0)),
        )
        if args["status"]:
            if not (study_dir / "index.json").exists():
                runner.plan_only()
            text, _ = status_report(study_dir, study=study)
            print(text)
            if Index.load(study_dir).meta.get("declaration") != declaration_hash(study):
                print("the declaration changed since the index was written: the next kdrl-study call re-plans")
        elif args["tables"]:
            runner.plan_only()
            for text in runner.write_tables(publish=args["publish"], names=args.get("table")):
                print(text)
            runner.log_tables()
            if runner_alive(study_dir) is None:  # a running kdrl-study owns the index
                runner.save()
        else:
            if "table" in args:
                raise StudyError("table= selects tables for --tables; a run writes every table")
            code = runner.run(args.get("stage"), publish=args["publish"])

    run_cli(PROG, body)
    sys.exit(code)


if __name__ == "__main__":
    main()
