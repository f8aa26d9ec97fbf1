"""kdrl-search: report an Optuna search (kdrl.search): its trials and their states, the compute they
used, the best configuration, each parameter's importance and the optimisation history plot.

    kdrl-search multirun/distill/2026-12-01/10-00-00            # a sweep dir (its optimization_results.yaml)
    kdrl-search journal:/shared/kdrl.journal --study kdrl_minatar_student_minatar_breakout --out docs/x
    kdrl-search sqlite:///study.db --list                     # the studies a storage holds
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="kdrl-search", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("storage", help="a sweep dir, a journal file, journal:<file> or an SQLAlchemy URL")
    ap.add_argument("--study", default=None, help="the study's name (needed when the storage holds several)")
    ap.add_argument(
        "--out",
        default=None,
        help="where to write search.md, trials.csv, search.json, plots (default: the sweep dir, or .)",
    )
    ap.add_argument("--no-plots", action="store_true")
    ap.add_argument("--list", action="store_true", help="list the storage's studies and exit")
    args = ap.parse_args(argv)
    from kdrl.search.summary import find_storage, load_study, write_report

    try:
        storage = find_storage(args.storage)
        if args.list:
            import optuna

            from kdrl.search.storage import open_storage, storage_url

            for s in optuna.get_all_study_summaries(open_storage(storage_url(storage)), include_best_trial=False):
                print(f"{s.study_name}: {s.n_trials} trial(s)")
            return 0
        study = load_study(storage, args.study)
    except (OSError, ValueError) as exc:
        print(f"kdrl-search: error: {exc}", file=sys.stderr)
        return 1
    out = Path(args.out) if args.out else (Path(args.storage) if Path(args.storage).is_dir() else Path("."))
    report, files = write_report(study, out, plots=not args.no_plots)
    print(report.markdown())
    print("wrote " + ", ".join(str(f) for f in files))
    return 0


if __name__ == "__main__":
    sys.exit(main())
