#!/usr/bin/env python
"""Which declared jobs a config change moves: compose every job of every study in conf/study before and after.

    python scripts/config_drift.py dump /tmp/before.json     # on the old commit (~1 min for all studies)
    python scripts/config_drift.py dump /tmp/after.json      # on the new one
    python scripts/config_drift.py diff /tmp/before.json /tmp/after.json

``diff`` prints, per study stage, how many of its jobs moved and which resolved keys, so a recipe change
shows at once whether published jobs would now compose differently from how they ran.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any


def dump(path: Path) -> None:
    from hydra import compose
    from omegaconf import OmegaConf

    from kdrl.study import hydra_conf, known_studies, load_study, plan

    out: dict[str, Any] = {}
    for name in known_studies():
        jobs = plan(load_study(name), Path("/study") / name)
        with hydra_conf():
            for job in jobs:
                cfg = compose(config_name=job.app, overrides=list(job.overrides))
                out[f"{name}/{job.stage}/{job.name}"] = OmegaConf.to_container(cfg, resolve=True)
        print(f"{name}: {len(jobs)} jobs", file=sys.stderr)
    path.write_text(json.dumps(out, sort_keys=True, default=str))


def leaves(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict) and node:
        return {k: v for key, sub in node.items() for k, v in leaves(sub, f"{prefix}{key}.").items()}
    return {prefix[:-1]: node}


def diff(before: Path, after: Path) -> None:
    a, b = json.loads(before.read_text()), json.loads(after.read_text())
    moved: dict[str, set[str]] = defaultdict(set)
    count: dict[str, int] = defaultdict(int)
    for job in sorted(set(a) | set(b)):
        if job not in a or job not in b:
            print(f"{job}: only {'after' if job in b else 'before'}")
            continue
        la, lb = leaves(a[job]), leaves(b[job])
        keys = {k for k in set(la) | set(lb) if la.get(k, "(absent)") != lb.get(k, "(absent)")}
        if keys:
            stage = job.rsplit("/", 1)[0]
            moved[stage] |= keys
            count[stage] += 1
    print(f"{len(a)} jobs before, {len(b)} after; {sum(count.values())} moved")
    for stage in sorted(moved):
        print(f"  {stage}: {count[stage]} jobs; {', '.join(sorted(moved[stage]))}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("dump").add_argument("out", type=Path)
    d = sub.add_parser("diff")
    d.add_argument("before", type=Path)
    d.add_argument("after", type=Path)
    args = ap.parse_args()
    dump(args.out) if args.cmd == "dump" else diff(args.before, args.after)


if __name__ == "__main__":
    main()
