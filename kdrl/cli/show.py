"""kdrl-show: print results.json files as short human summaries.

    kdrl-show outputs/.../results.json [more results.json ...]

A file that cannot be read is one line on stderr; the others are still shown, and the exit code
is 2 if any failed (KDRL_DEBUG=1 stops at the first with its traceback).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from kdrl.errors import KdrlUserError, attempt

PROG = "kdrl-show"


class ResultsError(KdrlUserError, ValueError):
    """A results.json that is missing, unreadable, truncated or not kdrl's."""


def load(path: str) -> dict[str, Any]:
    if Path(path).is_dir():  # a run dir: its results.json
        if not (Path(path) / "results.json").is_file():
            raise ResultsError(f"{path} is a directory without a results.json: give a run dir or its results.json")
        path = str(Path(path) / "results.json")
    try:
        with open(path) as f:
            r = json.load(f)
    except OSError as exc:
        raise ResultsError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ResultsError(f"{path} is a binary file (a policy or checkpoint?), not a results.json") from exc
    except ValueError as exc:  # JSONDecodeError
        raise ResultsError(f"{path} is not valid JSON (truncated?): {exc}") from exc
    if not isinstance(r, dict):
        raise ResultsError(f"{path} is not a kdrl results.json (got a JSON {type(r).__name__})")
    return r


def summary(path: str) -> str:
    r = load(path)
    if r.get("status") != "ok":
        return f"{path}: status={r.get('status')} error={r.get('error')}"
    try:
        return "\n".join(
            [
                f"{r['kind']} on {r['env_id']} (seed {r['seed']}, {r['params']:,} params)",
                f"  greedy return {r['eval_return_mean']:.1f} ± {r['eval_return_std']:.1f} over {len(r['eval_returns'])} held-out episodes",
                f"  {r['env_steps']:,} env steps, {r['grad_steps']:,} gradient steps, {r['wall_time_s']:.1f} s, {r['sps']:,.0f} env steps/s",
                f"  checkpoint: {r['checkpoint']}",
            ]
        )
    except KeyError as exc:
        raise ResultsError(f"{path} has no {exc} field (not a kdrl results.json?)") from exc
    except (TypeError, ValueError) as exc:  # a field of the wrong type: hand-edited or damaged
        raise ResultsError(f"{path} has a field of the wrong type ({exc}): damaged or hand-edited?") from exc


def show(path: str) -> None:
    print(summary(path))


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog=PROG, description="Summarise kdrl results.json files.")
    p.add_argument("paths", nargs="+", metavar="results.json", help="results.json files or the run dirs holding them")
    args = p.parse_args(argv)
    failed = [path for path in args.paths if attempt(PROG, partial(show, path)) is not None]
    if failed:
        sys.exit(2)


if __name__ == "__main__":
    main()
