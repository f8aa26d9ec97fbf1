"""A search's report (kdrl-search): its trials with their states, the compute they used, the best
configuration, each parameter's importance (optuna.importance) and the optimisation history and
intermediate-value plots (Optuna's matplotlib backend, no plotly)."""

from __future__ import annotations

import json
import math
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")


def state_counts(trials: list[Any]) -> dict[str, int]:
    """Trials per state (stale ones, failed when their worker died, counted apart)."""
    from kdrl.search.storage import STALE_ATTR

    counts = Counter(t.state.name for t in trials if not t.system_attrs.get(STALE_ATTR))
    out = {s: int(counts.get(s, 0)) for s in STATES}
    out["stale"] = sum(1 for t in trials if t.system_attrs.get(STALE_ATTR))
    return out


def find_storage(path: str) -> str:
    """A storage string from what the user gives: a storage string, a journal file, or a sweep dir
    (its optimization_results.yaml names the storage; else its optuna.journal)."""
    from kdrl.search.storage import DEFAULT_JOURNAL, JOURNAL_PREFIX

    p = Path(path)
    if p.is_dir():
        res = p / "optimization_results.yaml"
        if res.is_file():
            import yaml

            storage = (yaml.safe_load(res.read_text()) or {}).get("storage")
            if storage:
                return str(storage)
        if (p / DEFAULT_JOURNAL).is_file():
            return JOURNAL_PREFIX + str((p / DEFAULT_JOURNAL).resolve())
        raise FileNotFoundError(f"{path}: no optimization_results.yaml or {DEFAULT_JOURNAL} in this dir")
    if p.is_file() and "://" not in path and not path.startswith(JOURNAL_PREFIX):
        return JOURNAL_PREFIX + str(p.resolve())
    return path


def load_study(storage: str, name: str | None = None) -> Any:
    import optuna

    from kdrl.search.storage import open_storage, storage_url

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    st = open_storage(storage_url(storage))
    names = [s.study_name for s in optuna.get_all_study_summaries(st, include_best_trial=False)]
    if name is None:
        if len(names) != 1:
            raise ValueError(f"{storage} holds {len(names)} studies ({', '.join(names)}): give --study")
        name = names[0]
    elif name not in names:
        raise ValueError(f"no study {name!r} in {storage} (has: {', '.join(names) or 'none'})")
    return optuna.load_study(study_name=name, storage=st)


def trials_frame(study: Any) -> Any:
    """One row per trial: number, state, value(s), params, env steps, job and fit seconds, last
    reported step, the trial's duration (ask to tell), its run dir, and why it failed."""
    import pandas as pd

    from kdrl.search.storage import RETRY_OF_ATTR, STALE_ATTR

    rows = []
    for t in study.get_trials(deepcopy=False):
        steps = sorted(t.intermediate_values)
        env_steps = t.user_attrs.get("kdrl:env_steps")
        row: dict[str, Any] = {
            "number": t.number,
            "state": "STALE" if t.system_attrs.get(STALE_ATTR) else t.state.name,
            "retry_of": t.user_attrs.get(RETRY_OF_ATTR),
            "env_steps": env_steps if env_steps is not None else (steps[-1] if steps else None),
            "last_report_step": steps[-1] if steps else None,
            "reports": len(steps),
            "job_s": t.user_attrs.get("kdrl:job_s"),
            "fit_s": t.user_attrs.get("kdrl:fit_s"),
            "duration_s": t.duration.total_seconds() if t.duration is not None else None,
            "run_dir": t.user_attrs.get("kdrl:run_dir"),
            "error": t.user_attrs.get("kdrl:error"),
        }
        values = t.values if t.values is not None else [None] * len(study.directions)
        if len(values) == 1:
            row["value"] = values[0]
        else:
            row.update({f"value_{i}": v for i, v in enumerate(values)})
        row.update({f"param:{k}": v for k, v in t.params.items()})
        rows.append(row)
    return pd.DataFrame(rows)


@dataclass
class SearchReport:
    study_name: str
    directions: list[str]
    settings: dict[str, Any]
    counts: dict[str, int]
    compute: dict[str, float]
    best: list[dict[str, Any]]
    importance: dict[str, float] | None
    importance_note: str | None
    frame: Any

    def markdown(self) -> str:
        lines = [f"# Search {self.study_name}", ""]
        obj = self.settings.get("objective", {})
        pruner = (self.settings.get("pruner") or {}).get("_target_", "none")
        lines.append(
            f"Objective: {', '.join(f'{d} {m}' for d, m in zip(self.directions, obj.get('metrics', [])))}; "
            f"pruner: {pruner.rsplit('.', 1)[-1]}; reports: {obj.get('periodic')} ({obj.get('report')})."
        )
        lines += ["", "Trials: " + ", ".join(f"{k.lower()} {v}" for k, v in self.counts.items() if v), ""]
        c = self.compute
        lines.append(
            f"Compute: {c['env_steps']:,.0f} env steps, {c['job_s'] / 60:.1f} min of job wall time "
            f"({c['trial_s'] / 60:.1f} min from ask to tell) over {c['trials']} finished trials."
        )
        # a multi-objective study's front is a front even when one trial dominates all the others
        lines += ["", "## Best" if len(self.directions) == 1 else "## Pareto front", ""]
        for b in self.best:
            vals = ", ".join(f"{v:.4g}" for v in b["values"])
            params = " ".join(f"{k}={_fmt(v)}" for k, v in b["params"].items())
            lines.append(f"- trial {b['number']}: {vals} — `{params}`")
        lines += ["", "## Parameter importance (optuna.importance)", ""]
        if self.importance:
            lines += ["| parameter | importance |", "|---|---|"]
            lines += [f"| {k} | {v:.3f} |" for k, v in self.importance.items()]
        else:
            lines.append(self.importance_note or "not computed")
        lines += ["", "## Trials", ""]
        shown = [c for c in self.frame.columns if c not in ("run_dir", "error", "retry_of")]
        lines.append(markdown_table(self.frame[shown]))
        return "\n".join(lines) + "\n"


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def markdown_table(frame: Any) -> str:
    """A DataFrame as a Markdown table (floats to 4 significant digits, missing values empty)."""

    def cell(v: Any) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return ""
        if isinstance(v, float) and v.is_integer() and abs(v) >= 1000:
            return f"{int(v):,}"
        return _fmt(v)

    head = "| " + " | ".join(str(c).removeprefix("param:") for c in frame.columns) + " |"
    rule = "|" + "---|" * len(frame.columns)
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([head, rule, *body])


def compute_used(frame: Any) -> dict[str, float]:
    done = frame[frame["state"].isin(["COMPLETE", "PRUNED", "FAIL", "STALE"])]
    num = lambda col: float(done[col].fillna(0).astype(float).sum()) if col in done else 0.0
    return {
        "trials": int(len(done)),
        "env_steps": num("env_steps"),
        "job_s": num("job_s"),
        "trial_s": num("duration_s"),
    }


def importance(study: Any) -> tuple[dict[str, float] | None, str | None]:
    import optuna
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < 2:
        return None, f"not computed: {len(complete)} complete trial(s), importance needs 2 or more"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            target = None if len(study.directions) == 1 else (lambda t: t.values[0])
            imp = optuna.importance.get_param_importances(study, target=target)
        return {k: float(v) for k, v in imp.items()}, None
    except Exception as exc:  # e.g. a parameter that never varied
        return None, f"not computed: {type(exc).__name__}: {exc}"


def build_report(study: Any) -> SearchReport:
    frame = trials_frame(study)
    best = []
    try:
        trials = [study.best_trial] if len(study.directions) == 1 else study.best_trials
        best = [{"number": t.number, "values": list(t.values), "params": dict(t.params)} for t in trials]
    except ValueError:
        pass
    imp, note = importance(study)
    return SearchReport(
        study_name=study.study_name,
        directions=[d.name.lower() for d in study.directions],
        settings=study.user_attrs.get("kdrl", {}),
        counts=state_counts(study.get_trials(deepcopy=False)),
        compute=compute_used(frame),
        best=best,
        importance=imp,
        importance_note=note,
        frame=frame,
    )


def plot_history(study: Any, out: Path) -> list[Path]:
    """optimisation_history.png (single objective) or pareto_front.png, and intermediate_values.png
    when trials reported; Optuna's matplotlib plots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    written = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna's matplotlib backend is marked experimental
        plots = []
        if len(study.directions) == 1:
            plots.append(("optimization_history.png", lambda: ovm.plot_optimization_history(study)))
        elif len(study.directions) == 2:
            plots.append(("pareto_front.png", lambda: ovm.plot_pareto_front(study)))
        if any(t.intermediate_values for t in study.get_trials(deepcopy=False)):
            plots.append(("intermediate_values.png", lambda: plot_intermediate(study)))
        for name, make in plots:
            try:
                ax = make()
            except Exception as exc:
                print(f"kdrl-search: {name} not drawn: {exc}")
                continue
            fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
            fig.set_size_inches(7, 4.5)
            fig.tight_layout()
            fig.savefig(out / name, dpi=110)
            plt.close(fig)
            written.append(out / name)
    return written


def plot_intermediate(study: Any) -> Any:
    """Each trial's reported values against env steps: complete trials in blue, pruned ones in red
    ending in a cross where they were stopped, others grey."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    colours = {"COMPLETE": "tab:blue", "PRUNED": "tab:red"}
    seen = set()
    for t in study.get_trials(deepcopy=False):
        if not t.intermediate_values:
            continue
        steps = sorted(t.intermediate_values)
        vals = [t.intermediate_values[k] for k in steps]
        state = t.state.name if t.state.name in colours else "other"
        colour = colours.get(state, "grey")
        label = None if state in seen else state.lower()
        seen.add(state)
        ax.plot(steps, vals, color=colour, alpha=0.6, lw=1.2, label=label)
        if state == "PRUNED":
            ax.plot(steps[-1], vals[-1], marker="x", color=colour, ms=7)
    obj = study.user_attrs.get("kdrl", {}).get("objective", {})
    ax.set_xlabel("env steps")
    ax.set_ylabel(f"reported value ({obj.get('periodic', '')}, {obj.get('report', '')})")
    ax.set_title(f"{study.study_name}: reports at the periodic evaluations")
    ax.grid(alpha=0.3)
    ax.legend()
    return ax


def write_report(study: Any, out: Path, plots: bool = True) -> tuple[SearchReport, list[Path]]:
    out.mkdir(parents=True, exist_ok=True)
    report = build_report(study)
    files = [out / "search.md", out / "trials.csv", out / "search.json"]
    files[0].write_text(report.markdown())
    report.frame.to_csv(files[1], index=False)
    body = {
        "study_name": report.study_name,
        "directions": report.directions,
        "settings": report.settings,
        "trials": report.counts,
        "compute": report.compute,
        "best": report.best,
        "importance": report.importance,
    }
    files[2].write_text(
        json.dumps(body, indent=2, default=lambda v: None if isinstance(v, float) and math.isnan(v) else str(v))
    )
    if plots:
        files += plot_history(study, out)
    return report, files
