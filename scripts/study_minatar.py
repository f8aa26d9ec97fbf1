"""The MinAtar distillation study (issue 14): teachers, compression, losses, who acts, teacher reuse.

    python scripts/study_minatar.py                          # every part, in order, 2 jobs at a time
    python scripts/study_minatar.py --parts teachers compression --games breakout asterix
    python scripts/study_minatar.py --status                 # what is done, running-ready, waiting
    python scripts/study_minatar.py --report                 # only rewrite the tables and plots

Each job is one kdrl-train / kdrl-distill process with its own run dir under --out. A job whose
results.json says ok is skipped, and an interrupted one resumes from its checkpoint (kdrl's
``resume``), so the command can be stopped and rerun at any time. Jobs shared by two parts (the
KL student at 7% is in compression, losses and who-acts) run once. Students wait for their game's
teacher, so a worker never idles while a teacher it needs is trained elsewhere. After every job the
finished parts' tables (Markdown, LaTeX, CSV) and plots are rewritten into --docs.

Protocol (docs/protocol.md): students are scored on 20 held-out episodes by the normalised score
(random = 0, teacher = 1), 5 independent seeds, mean with a bootstrap-t 95% CI; failed runs are
counted in the captions, never dropped. One teacher per game (seed 0): the CIs cover student seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GAMES = ("breakout", "asterix", "freeway", "seaquest", "space_invaders")
# Young & Tian (2019)'s DQN at 5M frames, read off their plot (../shared/REFERENCE.md: rough values)
PAPER_DQN = {"breakout": 10, "asterix": 17, "freeway": 50, "seaquest": 20, "space_invaders": 43}
RUSU_GEOMEAN = {"rusu_25": 108.3, "rusu_7": 101.7, "rusu_4": 83.9}  # Rusu et al. 2016, % of the DQN teacher
SIZES = ("rusu_25", "rusu_7", "rusu_4")
PARTS = ("teachers", "compression", "reuse", "losses", "control")
TWO_GAMES = ("breakout", "space_invaders")  # losses, who acts and reuse: two games (the issue asks >= 2)


@dataclass(frozen=True)
class Job:
    """One run: ``app`` (train | distill) with ``overrides``, in ``out / name``."""

    name: str
    app: str
    overrides: tuple[str, ...]
    parts: frozenset[str] = field(default_factory=frozenset)
    needs: str | None = None  # the teacher job's name


def teacher_name(game: str) -> str:
    return f"teachers/{game}_s0"


def student(game: str, tag: str, seed: int, overrides: Sequence[str], parts: set[str], cfg: argparse.Namespace) -> Job:
    common = (
        f"env=minatar_{game}",
        "recipe=minatar_fast",
        f"seed={seed}",
        f"teacher.checkpoint={cfg.out / teacher_name(game) / 'teacher.pt'}",
        f"distill.total_timesteps={cfg.student_steps}",
        f"eval.freq={cfg.student_eval_freq}",
        "logger=csv",
        "trainer.enable_progress_bar=false",
    )
    return Job(
        f"{game}/{tag}_s{seed}", "distill", (*common, *overrides, *cfg.extra), frozenset(parts), teacher_name(game)
    )


def plan(cfg: argparse.Namespace) -> list[Job]:
    """Every job of the selected parts and games, teachers first, shared jobs merged."""
    jobs: dict[str, Job] = {}

    def add(job: Job) -> None:
        old = jobs.get(job.name)
        jobs[job.name] = job if old is None else Job(old.name, old.app, old.overrides, old.parts | job.parts, old.needs)

    parts, seeds = set(cfg.parts), range(cfg.seeds)
    games = [g for g in GAMES if g in cfg.games]
    two = [g for g in games if g in TWO_GAMES] or games[:2]
    students = parts - {"teachers"}
    for game in games:
        if "teachers" in parts or students:
            overrides = (f"env=minatar_{game}", "recipe=minatar_fast", "seed=0", "logger=csv")
            ov = (*overrides, "trainer.enable_progress_bar=false", *cfg.extra)
            add(Job(teacher_name(game), "train", ov, frozenset({"teachers"})))
    kl = ("loss=kl_rusu",)
    for seed in seeds:
        for game in games:
            if "compression" in parts:
                for size in SIZES:
                    add(
                        student(
                            game, f"kl_rusu-{size}-teacher", seed, (*kl, f"student.size={size}"), {"compression"}, cfg
                        )
                    )
        for game in two:
            if "reuse" in parts:
                # the teacher's own architecture, TD settings as the teacher's recipe (optimiser too), so that
                # scratch DQN, kickstarting and QDagger differ only in how they use the teacher
                same = (
                    "student.size=full",
                    "distill.optimizer.lr=${algo.optimizer.lr}",
                    "distill.optimizer.eps=${algo.optimizer.eps}",
                )
                add(student(game, "scratch-full", seed, ("baseline=scratch", *same), {"reuse"}, cfg))
                add(student(game, "kickstart-full", seed, ("experiment=kickstart", *same), {"reuse"}, cfg))
                pre = (
                    f"distill.pretrain.teacher_steps={cfg.pretrain_steps}",
                    f"distill.pretrain.updates={cfg.pretrain_updates}",
                )
                add(student(game, "qdagger-full", seed, ("experiment=qdagger", *same, *pre), {"reuse"}, cfg))
            if "losses" in parts:
                for loss in ("kl_rusu", "nll", "mse"):
                    add(
                        student(
                            game,
                            f"{loss}-rusu_7-teacher",
                            seed,
                            (f"loss={loss}", "student.size=rusu_7"),
                            {"losses"},
                            cfg,
                        )
                    )
            if "control" in parts:
                for control in ("teacher", "student", "mixed"):
                    ov = (*kl, "student.size=rusu_7", f"control={control}")
                    add(student(game, f"kl_rusu-rusu_7-{control}", seed, ov, {"control"}, cfg))
    order = {p: i for i, p in enumerate(PARTS)}
    return sorted(jobs.values(), key=lambda j: (j.app != "train", min(order[p] for p in j.parts)))


# ---- running ----------------------------------------------------------------------------------------
def result_of(out: Path, job: Job) -> dict | None:
    path = out / job.name / "results.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def done(out: Path, job: Job) -> bool:
    res = result_of(out, job)
    return bool(res) and res.get("status") == "ok"


def launch(out: Path, job: Job, bin_dir: Path) -> subprocess.Popen:
    run_dir = out / job.name
    log = out / "logs" / (job.name.replace("/", "__") + ".log")
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = [str(bin_dir / f"kdrl-{job.app}"), *job.overrides, f"hydra.run.dir={run_dir}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "KDRL_NO_PIN": "1"}
    fh = open(log, "a")
    fh.write(f"\n# {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n")
    fh.flush()
    return subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT, env=env)


def kept_files(job: Job) -> tuple[str, ...]:
    """What --docs keeps of a finished job: a teacher's policy and results, a student's results."""
    return ("teacher.pt", "results.json") if job.app == "train" else ("results.json",)


def archive_teachers(jobs: list[Job], cfg: argparse.Namespace) -> None:
    """Copy each finished job's kept files into --docs (teachers/, runs/), and restore from there a
    job that --out lacks (outputs/ is not committed; docs/ is): the study resumes on a fresh machine
    without retraining a teacher or rerunning a finished student."""
    import shutil

    for job in jobs:
        run_dir = cfg.out / job.name
        kept = cfg.docs / (job.name if job.app == "train" else f"runs/{job.name}")
        files = kept_files(job)
        if done(cfg.out, job) and not all((kept / f).is_file() for f in files):
            kept.mkdir(parents=True, exist_ok=True)
            for f in files:
                shutil.copy2(run_dir / f, kept / f)
        elif not done(cfg.out, job) and all((kept / f).is_file() for f in files):
            run_dir.mkdir(parents=True, exist_ok=True)
            for f in files:
                shutil.copy2(kept / f, run_dir / f)
            print(f"restored {job.name} from {kept}", flush=True)


def run(jobs: list[Job], cfg: argparse.Namespace) -> None:
    """Run the unfinished jobs, ``cfg.jobs`` at a time. One runner per --out (a lock file); when the
    runner is stopped (Ctrl-C, SIGTERM) its jobs are stopped too, and resume at the next run."""
    import fcntl
    import signal

    cfg.out.mkdir(parents=True, exist_ok=True)
    lock = open(cfg.out / ".study.lock", "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        sys.exit(f"study_minatar: another runner is using {cfg.out}")
    running: dict[str, subprocess.Popen] = {}

    def stop(signum: int, frame: object) -> None:
        for proc in running.values():
            proc.terminate()
        for proc in running.values():
            proc.wait()
        sys.exit(
            f"study_minatar: stopped by signal {signum}; {len(running)} running jobs stopped (they resume next run)"
        )

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    archive_teachers(jobs, cfg)
    schedule(jobs, cfg, running)


def schedule(jobs: list[Job], cfg: argparse.Namespace, running: dict[str, subprocess.Popen]) -> None:
    todo = [j for j in jobs if not done(cfg.out, j)]
    failed: set[str] = set()
    names = {j.name for j in jobs}
    print(
        f"{len(jobs)} jobs, {len(jobs) - len(todo)} already done, {len(todo)} to run, {cfg.jobs} at a time", flush=True
    )
    t0 = time.time()
    while todo or running:
        for name, proc in list(running.items()):
            if proc.poll() is None:
                continue
            del running[name]
            job = next(j for j in jobs if j.name == name)
            ok = done(cfg.out, job)
            if not ok:
                failed.add(name)
            res = result_of(cfg.out, job) or {}
            print(
                f"[{(time.time() - t0) / 60:6.1f} min] {'ok    ' if ok else 'FAILED'} {name}  {summary(res)}",
                flush=True,
            )
            archive_teachers(jobs, cfg)
            report(jobs, cfg)
        ready = [
            j
            for j in todo
            if j.needs is None or j.needs not in names or done(cfg.out, next(x for x in jobs if x.name == j.needs))
        ]
        blocked = [j for j in todo if j.needs in failed]
        for j in blocked:  # a student whose teacher failed cannot run: it fails too (counted, not dropped)
            todo.remove(j)
            failed.add(j.name)
            print(f"skipped {j.name}: its teacher {j.needs} failed", flush=True)
        while ready and len(running) < cfg.jobs:
            job = ready.pop(0)
            todo.remove(job)
            running[job.name] = launch(cfg.out, job, cfg.bin)
            print(f"[{(time.time() - t0) / 60:6.1f} min] start  {job.name}", flush=True)
        time.sleep(2)
    report(jobs, cfg)
    print(f"finished: {len(failed)} failed" + (f" ({', '.join(sorted(failed))})" if failed else ""), flush=True)


def summary(res: dict) -> str:
    if res.get("kind") == "teacher":
        return f"return {res.get('eval_return_mean', float('nan')):.2f}, {res.get('wall_time_s', 0) / 60:.1f} min"
    if res.get("kind") == "student":
        return f"normalised score {res.get('normalized_score', float('nan')):.3f}, return {res.get('eval_return_mean', float('nan')):.2f}"
    return res.get("error") or ""


# ---- tables and plots -------------------------------------------------------------------------------
def report(jobs: list[Job], cfg: argparse.Namespace) -> None:
    """Rewrite the tables and plots of every part with a finished job (a partial part says so)."""
    cfg.docs.mkdir(parents=True, exist_ok=True)
    for part in PARTS:
        mine = [j for j in jobs if part in j.parts]
        rows = [(j, result_of(cfg.out, j)) for j in mine]
        rows = [(j, r) for j, r in rows if r is not None]
        if rows:
            try:
                WRITERS[part](rows, cfg.docs / part, len(mine))
            except Exception as exc:  # a report must never stop the study: the next job rewrites it
                print(f"study_minatar: could not write the {part} report yet ({type(exc).__name__}: {exc})", flush=True)


def frame(rows: list[tuple[Job, dict]]):
    import pandas as pd

    from kdrl.tables import flatten

    out = []
    for job, res in rows:
        row = flatten(res)
        row["game"], row["tag"] = job.name.split("/")[0], job.name.split("/")[1].rsplit("_s", 1)[0]
        row["status"] = res.get("status", "failed")
        out.append(row)
    return pd.DataFrame(out)


def header(title: str, n_done: int, total: int, command: str) -> str:
    state = "complete" if n_done == total else f"PARTIAL: {n_done} of {total} jobs finished"
    return f"# {title}\n\n{state}. Made by `{command}` (scripts/study_minatar.py).\n\n"


def write_teachers(rows: list[tuple[Job, dict]], stem: Path, total: int) -> None:
    import numpy as np

    lines = [
        "| game | Young & Tian DQN, 5M frames (≈) | teacher: held-out return (20 ep.) | env steps | wall (min) "
        "| first periodic eval ≥ paper: env steps / wall (min) | met (≤ 1M steps, ≤ 15 min) |",
        "|---|---|---|---|---|---|---|",
    ]
    csv = ["game,paper_dqn_5m,return_mean,return_std,env_steps,wall_min,reach_env_steps,reach_wall_min,status"]
    curves = {}
    for job, res in rows:
        game = job.name.split("/")[1].rsplit("_s", 1)[0]
        paper = PAPER_DQN[game]
        if res.get("status") != "ok":
            lines.append(f"| {game} | {paper} | failed: {res.get('error')} | | | | no |")
            csv.append(f"{game},{paper},,,,,,,failed")
            continue
        hist = res.get("eval_history") or []
        curves[game] = ([h["env_steps"] for h in hist], [h["return_mean"] for h in hist], paper)
        hit = next((h for h in hist if h["return_mean"] >= paper), None)
        mean, std = res["eval_return_mean"], res.get("eval_return_std") or float(np.std(res.get("eval_returns") or [0]))
        wall = res["wall_time_s"] / 60
        reach = f"{hit['env_steps']:,} / {hit['wall_s'] / 60:.1f}" if hit else "not reached"
        met = "yes" if hit and hit["env_steps"] <= 1_000_000 and hit["wall_s"] <= 900 else "no"
        lines.append(
            f"| {game} | {paper} | {mean:.2f} ± {std:.2f} | {res['env_steps']:,} | {wall:.1f} | {reach} | {met} |"
        )
        reach_steps, reach_wall = (hit["env_steps"], f"{hit['wall_s'] / 60:.2f}") if hit else ("", "")
        csv.append(f"{game},{paper},{mean:.3f},{std:.3f},{res['env_steps']},{wall:.2f},{reach_steps},{reach_wall},ok")
    text = header(
        "MinAtar teachers (recipe=minatar_fast, seed 0)",
        len(rows),
        total,
        "python scripts/study_minatar.py --parts teachers",
    )
    text += (
        "n = 1 teacher per game (seed 0); return = mean ± std over 20 held-out episodes of the chosen checkpoint "
        "(best periodic evaluation, 10 episodes on other seeds). Wall time: training on one core while a second "
        "job used the other core; periodic evaluations included.\n\n"
    )
    stem.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{stem}.md").write_text(text + "\n".join(lines) + "\n")
    Path(f"{stem}.csv").write_text("\n".join(csv) + "\n")
    plot_curves(
        {g: (np.array(x), np.array(y), None, None) for g, (x, y, _) in curves.items()},
        {g: p for g, (_, _, p) in curves.items()},
        stem,
        "periodic greedy return (10 episodes)",
    )


def plot_curves(curves: dict, refs: dict, stem: Path, ylabel: str, per_game: dict | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = per_game or {k: {k: v} for k, v in curves.items()}
    fig, axes = plt.subplots(1, len(groups), figsize=(4 * len(groups), 3.2), squeeze=False)
    for ax, (game, lines) in zip(axes[0], groups.items()):
        for label, (x, y, lo, hi) in lines.items():
            ax.plot(x, y, label=str(label))
            if lo is not None:
                ax.fill_between(x, lo, hi, alpha=0.25)
        if game in refs:
            ax.axhline(refs[game], color="grey", ls="--", lw=1, label="Young & Tian DQN, 5M")
        ax.set_title(game)
        ax.set_xlabel("env steps")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(f"{stem}.png", dpi=110)
    plt.close(fig)


def write_table(
    rows, stem: Path, total: int, title: str, cols: str, metric: str, command: str, extra: str = ""
) -> None:
    from kdrl.tables import summary_table

    df = frame(rows)
    df["env_id"] = df["game"]
    tab = summary_table(df, "env_id", cols, metric)
    text = header(title, len(rows), total, command) + tab.caption + ".\n\n" + tab.markdown + "\n" + extra
    stem.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{stem}.md").write_text(text)
    Path(f"{stem}.tex").write_text(tab.latex)
    tab.cells.to_csv(f"{stem}.csv", index=False)
    df[
        [
            "game",
            "tag",
            "seed",
            "status",
            "eval_return_mean",
            "teacher_return_mean",
            "random_return_mean",
            "normalized_score",
            "raw_return_ratio",
            "param_ratio",
            "env_steps",
            "grad_steps",
            "wall_time_s",
        ]
    ].sort_values(["game", "tag", "seed"]).to_csv(f"{stem}_runs.csv", index=False)


def write_compression(rows, stem: Path, total: int) -> None:
    from kdrl.scores import geometric_mean
    from kdrl.tables import aggregate

    df = frame(rows)
    df["env_id"] = df["game"]
    agg = aggregate(df, ["env_id", "student_size"], "normalized_score")
    notes = ["", "Against Rusu et al. 2016 (10 Atari games, geometric mean of % of the DQN teacher):", ""]
    notes.append(
        "| size | ours: geometric mean over games (%) | Rusu et al. (%) | games with mean ≥ 100% and CI low ≥ 95% |"
    )
    notes.append("|---|---|---|---|")
    for size in SIZES:
        sub = agg[agg["student_size"] == size]
        if sub.empty:
            continue
        g = geometric_mean(sub["mean"].to_numpy(dtype=float))
        keep = int(((sub["mean"] >= 1.0) & (sub["ci_low"] >= 0.95)).sum())
        notes.append(f"| {size} | {100 * g:.1f} | {RUSU_GEOMEAN[size]} | {keep} of {len(sub)} |")
    plot_cells(agg, "student_size", list(SIZES), stem, "normalised score (% of teacher)")
    write_table(
        rows,
        stem,
        total,
        "Compression (Rusu et al. 2016's KL, tau = 0.01 on the teacher), MinAtar",
        "student_size",
        "normalized_score",
        "python scripts/study_minatar.py --parts compression",
        "\n".join(notes) + "\n",
    )


def plot_cells(agg, cols: str, order: list, stem: Path, ylabel: str) -> None:
    """Mean and 95% CI per game (x) and column value (bars), 100% marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    games = sorted(agg["env_id"].unique())
    order = [c for c in order if c in set(agg[cols])]
    fig, ax = plt.subplots(figsize=(1.6 * len(games) + 2, 3.4))
    width = 0.8 / max(len(order), 1)
    for j, col in enumerate(order):
        sub = agg[agg[cols] == col].set_index("env_id").reindex(games)
        mean, lo, hi = (100 * sub[k].to_numpy(dtype=float) for k in ("mean", "ci_low", "ci_high"))
        x = np.arange(len(games)) + (j - (len(order) - 1) / 2) * width
        err = np.clip(np.vstack([mean - lo, hi - mean]), 0, 150)  # CIs past 150 points are cut at the plot
        ax.bar(x, mean, width, yerr=err, capsize=2, label=str(col))
    ax.axhline(100, color="grey", ls="--", lw=1)
    ax.set_xticks(np.arange(len(games)), games)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(f"{stem}.png", dpi=110)
    plt.close(fig)


def write_losses(rows, stem: Path, total: int) -> None:
    write_table(
        rows,
        stem,
        total,
        "Losses at the 7% student (rusu_7), teacher acts",
        "loss",
        "normalized_score",
        "python scripts/study_minatar.py --parts losses",
    )


def write_control(rows, stem: Path, total: int) -> None:
    write_table(
        rows,
        stem,
        total,
        "Who acts while distilling (KL, rusu_7)",
        "control",
        "normalized_score",
        "python scripts/study_minatar.py --parts control",
    )
    from kdrl.tables import summary_table

    df = frame(rows)
    df["env_id"] = df["game"]
    speed = summary_table(df, "env_id", "control", "to_90pct_env_steps")
    with open(f"{stem}.md", "a") as fh:
        fh.write(
            "\nEnv steps to 90% of the teacher (first periodic evaluation):\n\n"
            + speed.caption
            + ".\n\n"
            + speed.markdown
            + "\n"
        )


def write_reuse(rows, stem: Path, total: int) -> None:
    import numpy as np

    from kdrl.scores import return_range
    from kdrl.statistics import mean_ci

    write_table(
        rows,
        stem,
        total,
        "Using a teacher vs not, at equal env steps (teacher's architecture)",
        "tag",
        "normalized_score",
        "python scripts/study_minatar.py --parts reuse",
    )
    per_game: dict = {}
    for job, res in rows:
        if res.get("status") != "ok" or not res.get("eval_history"):
            continue
        game, tag = job.name.split("/")[0], job.name.split("/")[1].rsplit("_s", 1)[0]
        hist = res["eval_history"]
        per_game.setdefault(game, {}).setdefault(tag.split("-")[0], []).append(
            (np.array([h["env_steps"] for h in hist]), np.array([h["return_mean"] for h in hist]))
        )
    curves = {}
    for game, methods in per_game.items():
        curves[game] = {}
        for method, runs in sorted(methods.items()):
            grid = np.unique(np.concatenate([x for x, _ in runs]) // 1000 * 1000)
            ys = np.stack([np.interp(grid, x, y) for x, y in runs])
            ci = np.array([mean_ci(col, bounds=return_range(res["env_id"]))[1:3] for col in ys.T])
            curves[game][f"{method} (n={len(runs)})"] = (grid, ys.mean(0), ci[:, 0], ci[:, 1])
    if curves:
        plot_curves({}, {}, stem, "periodic greedy return (mean, 95% CI)", per_game=curves)


WRITERS = {
    "teachers": write_teachers,
    "compression": write_compression,
    "losses": write_losses,
    "control": write_control,
    "reuse": write_reuse,
}


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    ap.add_argument("--games", nargs="+", choices=GAMES, default=list(GAMES))
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--jobs", type=int, default=2, help="jobs at a time (one thread each)")
    ap.add_argument("--student-steps", type=int, default=100_000)
    ap.add_argument("--student-eval-freq", type=int, default=10_000)
    ap.add_argument("--pretrain-steps", type=int, default=50_000, help="QDagger: teacher env steps into the replay")
    ap.add_argument("--pretrain-updates", type=int, default=10_000, help="QDagger: offline updates")
    ap.add_argument("--out", type=Path, default=ROOT / "outputs" / "study_minatar")
    ap.add_argument("--docs", type=Path, default=ROOT / "docs" / "minatar")
    ap.add_argument("--bin", type=Path, default=Path(sys.executable).parent)
    ap.add_argument("--extra", nargs="*", default=[], help="overrides for every job (e.g. debug=fast for a smoke run)")
    ap.add_argument("--status", action="store_true", help="list the jobs and whether each is done")
    ap.add_argument("--report", action="store_true", help="only rewrite tables and plots from finished jobs")
    cfg = ap.parse_args(argv)
    cfg.out = cfg.out.resolve()
    jobs = plan(cfg)
    if cfg.status:
        for j in jobs:
            res = result_of(cfg.out, j)
            state = "ok" if res and res.get("status") == "ok" else ("failed" if res else "todo")
            print(f"{state:6s} {j.name:45s} {','.join(sorted(j.parts))}")
        return
    if cfg.report:
        archive_teachers(jobs, cfg)
        report(jobs, cfg)
        return
    run(jobs, cfg)


if __name__ == "__main__":
    main()
