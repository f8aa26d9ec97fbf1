"""The wiring: the numbers that go into a run, not only the shapes that come out (issue 29).

Six tiny real runs (teacher, two students, the scratch baseline, both multi-task modes; a few
seconds each, with more than one env per vector env) are recorded by the spies of
tests/wiring_spies.py, and the tests check what went in:

* schedules: the counter fed to every schedule (epsilon, beta, lambda, the target network's period,
  the evaluation period) is the env-step counter it is defined on, and each schedule and learning
  rate comes from its own config block;
* seeds: the seeds every evaluation actually played (periodic, final, generalisation, agreement,
  random baseline) in every job kind;
* streams: no two consumers in a run draw from one random stream.

A manual mutation study (issue 29) found three one-line wiring bugs that the suite let through; each
fails a test here (docs/mutation.md names them).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from kdrl.data import EnvCollector
from kdrl.envs import make_vector_env
from kdrl.evaluation import eval_seeds
from kdrl.io import save_policy
from kdrl.nets import MLP
from kdrl.replay import ReplayBuffer
from kdrl.runs.distill import DistillJob
from kdrl.runs.job import plain, run_job
from kdrl.runs.multitask import MultiTaskJob
from kdrl.runs.teacher import TeacherJob
from kdrl.schedules import LinearSchedule
from tests.helpers import compose_cfg
from tests.wiring_spies import Recording, recorded_job, recording

SEED = 7  # not 0: a consumer that ignores the run's seed shows up
QUIET = [
    "debug=fast",
    "logger=none",
    "trainer.enable_progress_bar=false",
    f"seed={SEED}",
    "eval.epsilon=0.01",
    "eval.stop_at_return=null",  # every run spends its whole budget
]
DECAYING = "{eps_start:0.5,eps_end:0.05,decay_steps:600}"  # an exploration that changes within the budget


def linear_teacher(path: Path, env_id: str, obs_dim: int, n_actions: int, w: list[float], pos: int, neg: int) -> Path:
    """A kdrl MLP checkpoint acting ``pos`` when w.s > 0 and ``neg`` otherwise (as tests/test_multitask.py):
    a good teacher that takes no training."""
    net = MLP((obs_dim,), n_actions, hidden=[2])
    hidden, head = [m for m in net.modules() if isinstance(m, nn.Linear)]
    wt = 10.0 * torch.tensor(w, dtype=torch.float32)
    with torch.no_grad():
        hidden.weight.copy_(torch.stack([wt, -wt]))
        hidden.bias.zero_()
        head.weight.zero_()
        head.bias.fill_(-1.0)
        head.weight[pos, 0], head.bias[pos] = 1.0, 0.0
        head.weight[neg, 1], head.bias[neg] = 1.0, 0.0
    cfg = {"_target_": "kdrl.nets.MLP", "width": 2, "depth": 1, "dueling": False, "hidden": [2]}
    return save_policy(path, net, cfg, env_id, (obs_dim,), n_actions)


@dataclass
class Run:
    cfg: Any
    res: dict[str, Any]
    rec: Recording
    job: Any

    @property
    def module(self) -> Any:
        return self.job.module


def record_run(job_cls: type, cfg: Any, out: Path, **kwargs: Any) -> Run:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KDRL_NO_PIN", "1")  # an actor process must not pin the CPUs other test processes share
        with recording(mp) as rec:
            job = recorded_job(job_cls, rec)(cfg, out, **kwargs)
            res = run_job(job)
    assert res["status"] == "ok"
    return Run(cfg, res, rec, job)


@pytest.fixture(scope="module")
def teachers(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("teachers")
    return {
        "cartpole": linear_teacher(d / "cartpole.pt", "CartPole-v1", 4, 2, [0, 0, 1, 0.3], pos=1, neg=0),
        "acrobot": linear_teacher(d / "acrobot.pt", "Acrobot-v1", 6, 3, [0, 0, 0, 0, 0, 1], pos=2, neg=0),
    }


# Distinct values in every block, so a value read from the wrong block shows.
TEACHER = [
    *QUIET,
    "net.width=32",
    "env.num_envs=4",
    "algo.total_timesteps=1200",
    "algo.learning_starts=200",
    "algo.train_freq=16",
    "algo.gradient_steps=4",
    "algo.target_update_interval=100",
    "algo.exploration.decay_steps=800",
    "algo.optimizer.lr=0.0021",
    "eval.freq=500",
]
STUDENT = [
    *QUIET,
    "student.width=16",
    "algo.target_update_interval=64",
    "algo.optimizer.lr=0.0021",
    "distill.optimizer.lr=0.0017",
    f"distill.exploration={DECAYING}",
]
MIXED = [
    "env.num_envs=3",
    "control=mixed",
    "loss=hybrid",
    "loss.distill_weight.decay_steps=900",
    "distill.mixed.decay_steps=800",
    "distill.target_update_interval=100",
]
QDAGGER = [
    "experiment=qdagger",
    "env.num_envs=4",
    "env.actor=process",
    "distill.target_update_interval=100",
    "distill.pretrain={teacher_steps:300,updates:100,epsilon:0.05}",
]
SCRATCH = ["baseline=scratch", "env.num_envs=4", "algo.target_update_interval=100", "algo.exploration.decay_steps=8000"]
MULTITASK = [
    *QUIET,
    "student.width=32",
    "multitask.num_envs=2",
    "multitask.optimizer.lr=0.0013",
    f"distill.exploration={DECAYING}",
    "dqn.target_update_interval=100",
    "dqn.exploration.decay_steps=600",
]

KINDS = ("teacher", "student_mixed", "student_qdagger", "scratch", "multitask_distill", "multitask_joint")
SINGLE = ("teacher", "student_mixed", "student_qdagger", "scratch")
STUDENTS = ("student_mixed", "student_qdagger", "scratch")
MULTI = ("multitask_distill", "multitask_joint")


class Runs(dict):
    """The recorded runs, each made the first time a test asks for it (a test of one job kind, or
    a mutation run of one test, pays for that run only: a few seconds)."""

    def __init__(self, root: Path, teachers: dict[str, Path]) -> None:
        super().__init__()
        self.root, self.teachers = root, teachers

    def __missing__(self, kind: str) -> Run:
        given = f"teacher.checkpoint={self.teachers['cartpole']}"
        both = f"teacher.checkpoints={{cartpole:{self.teachers['cartpole']},acrobot:{self.teachers['acrobot']}}}"
        out = self.root / kind
        if kind == "teacher":
            run = record_run(TeacherJob, compose_cfg("train", TEACHER), out)
        elif kind in STUDENTS:
            extra = {"student_mixed": MIXED, "student_qdagger": QDAGGER, "scratch": SCRATCH}[kind]
            run = record_run(DistillJob, compose_cfg("distill", [*STUDENT, given, *extra]), out, choices={})
        else:
            mode = {"multitask_distill": "distill", "multitask_joint": "joint_dqn"}[kind]
            cfg = compose_cfg("multitask", [*MULTITASK, both, f"mode={mode}"])
            run = record_run(MultiTaskJob, cfg, out, choices={})
        self[kind] = run
        return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory, teachers) -> Runs:
    """Every job kind once, recorded (about 15 s for all six)."""
    return Runs(tmp_path_factory.mktemp("runs"), teachers)


def is_multi(run: Run) -> bool:
    return isinstance(run.job, MultiTaskJob)


def budget(run: Run) -> int:
    """The env-step budget (per task for multi-task)."""
    c = run.cfg
    if is_multi(run):
        return int(c.multitask.steps_per_task)
    return int(c.algo.total_timesteps if isinstance(run.job, TeacherJob) else c.distill.total_timesteps)


def num_envs(run: Run) -> int:
    return int(run.cfg.multitask.num_envs if is_multi(run) else run.cfg.env.num_envs)


# ==== schedules: the counter each one is fed =========================================================================
@pytest.mark.parametrize("kind", KINDS)
def test_epsilon_is_fed_env_steps(runs, kind):
    """Each collector's epsilon is a schedule of its env steps (transitions), not of vector steps:
    with n envs it is evaluated at 0, n, 2n, ... up to the budget (issue 29, survivor 1:
    env_steps // num_envs made epsilon decay n times slower)."""
    run = runs[kind]
    n, total = num_envs(run), budget(run)
    calls = run.rec.sched("epsilon")
    assert calls, "no epsilon was drawn"
    for c in calls:
        assert c.t == c.truth["env_steps"], f"epsilon fed {c.t} at env step {c.truth['env_steps']} ({n} envs)"
    collectors = run.module.collectors if kind in MULTI else [run.module.collector]
    fed = defaultdict(set)
    for c in calls:
        fed[c.truth["owner"]].add(c.t)
    assert set(fed) == {id(col) for col in collectors}  # every collector has its own draws, one schedule
    for col in collectors:
        assert sorted(fed[id(col)]) == list(range(0, col.env_steps, n))
        # (LinearSchedule's own __call__: the recording one would record this call)
        assert col.epsilon == LinearSchedule.__call__(run.module.exploration, col.env_steps - n)
        # multi-task stops when the first task's budget is spent: the others within a round of it
        assert total - run.module.data.train_freq - n < col.env_steps <= total
    assert max(col.env_steps for col in collectors) == total


@pytest.mark.parametrize("kind", KINDS)
def test_epsilon_schedule_comes_from_its_block(runs, kind):
    c = runs[kind].cfg
    expl = {
        "teacher": lambda: c.algo.exploration,
        "student_mixed": lambda: c.distill.exploration,
        "student_qdagger": lambda: c.distill.exploration,
        "multitask_distill": lambda: c.distill.exploration,
        "multitask_joint": lambda: c.dqn.exploration,
    }
    schedule = runs[kind].module.exploration
    if kind == "scratch":  # the teacher's schedule fitted to the student's budget (runs/distill.fitted_to_budget)
        total = int(c.distill.total_timesteps)
        a = c.algo.exploration
        assert (schedule.start, schedule.end, schedule.duration) == (a.eps_start, a.eps_end, total // 2)
        return
    e = expl[kind]()
    assert (schedule.start, schedule.end, schedule.duration, schedule.delay) == (
        e.eps_start,
        e.eps_end,
        e.decay_steps,
        e.get("delay_steps", 0),
    )


def test_beta_is_fed_env_steps(runs):
    """control=mixed: the probability that the teacher acts decays over env steps."""
    run = runs["student_mixed"]
    n, total = num_envs(run), budget(run)
    calls = run.rec.sched("beta")
    assert len(calls) > total // n // 2
    for c in calls:
        assert c.t == c.truth["env_steps"], f"beta fed {c.t} at env step {c.truth['env_steps']}"
    assert {c.t for c in calls} <= set(range(0, total + 1, n)) and max(c.t for c in calls) >= total - 10 * n
    beta, mixed = run.module.beta, run.cfg.distill.mixed
    assert (beta.start, beta.end, beta.duration) == (mixed.beta_start, mixed.beta_end, mixed.decay_steps)
    # and the draws follow it: the teacher acted on about sum(beta(t)) of the greedy steps, not all or none
    assert 0 < run.module.teacher_acted < total


def test_lambda_is_fed_env_steps_once_per_update(runs):
    """A hybrid loss's lambda is a schedule of env steps, evaluated once per update."""
    run = runs["student_mixed"]
    calls = run.rec.sched("lambda")
    assert len(calls) == run.res["grad_steps"] == run.module.optimizer_steps
    for c in calls:
        assert c.t == c.truth["env_steps"], f"lambda fed {c.t} at env step {c.truth['env_steps']}"
    ts = [c.t for c in calls]
    assert ts == sorted(ts) and ts[0] >= run.cfg.distill.learning_starts and ts[-1] > budget(run) - 20
    w, cw = run.module.objective.distill_weight, run.cfg.loss.distill_weight
    assert (w.kind, w.value, w.end, w.decay_steps) == (cw.kind, cw.value, cw.end, cw.decay_steps)


def test_qdagger_lambda_observes_each_periodic_score_against_the_periodic_references(runs):
    """QDagger's lambda reads the student's periodic return against the teacher's and a random policy's
    returns on the same periodic seeds, in that order, at every periodic evaluation."""
    run = runs["student_qdagger"]
    teacher, rand = run.job.reference
    history = run.res["eval_history"]
    assert run.rec.lambda_observed == [(h["return_mean"], teacher, rand) for h in history]
    build = run.rec.calls(phase="build")
    assert teacher == pytest.approx(np.mean(_returns_of(run, build, "evaluate_policy")))
    # the offline phase's updates see lambda at env step 0, then every online update at its env step
    calls = run.rec.sched("lambda")
    offline = int(run.cfg.distill.pretrain.updates)
    assert [c.t for c in calls[:offline]] == [0] * offline
    assert all(c.t == c.truth["env_steps"] > 0 for c in calls[offline:])


def _returns_of(run: Run, calls, fn):
    """Re-play a recorded evaluation (the recording keeps seeds, not returns)."""
    from kdrl.evaluation import evaluate_policy
    from kdrl.runs.distill import greedy_of

    c = next(c for c in calls if c.fn == fn)
    return evaluate_policy(greedy_of(c.who), c.env_id, c.seeds, c.kwargs, epsilon=c.epsilon)


def expected_syncs(progress: list[int], interval: int) -> list[int]:
    """The target schedule as documented (kdrl/td.py): a refresh at the first update at or after each
    multiple of ``interval`` of the counter."""
    out, due = [], interval
    for p in progress:
        if p >= due:
            out.append(p)
            due = (p // interval + 1) * interval
    return out


TARGET_INTERVAL = {  # the block each target period is read from (the others hold other values)
    "teacher": ("algo", 100),
    "student_mixed": ("distill", 100),  # algo's is 64
    "student_qdagger": ("distill", 100),
    "scratch": ("algo", 100),
    "multitask_joint": ("dqn", 100),
}


@pytest.mark.parametrize("kind", list(TARGET_INTERVAL))
def test_target_network_syncs_on_env_steps(runs, kind):
    """The target net is refreshed at the first update at or after every ``target_update_interval``
    env steps (per-task env steps for multi-task), and a refresh copies the online weights."""
    run = runs[kind]
    block, interval = TARGET_INTERVAL[kind]
    assert int(run.cfg[block].target_update_interval) == interval
    online = [r for r in run.rec.target if not r["offline"]]
    assert len(online) == run.module.optimizer_steps - (run.res.get("pretrain") or {}).get("updates", 0)
    counter = "task_env_steps" if kind in MULTI else "env_steps"
    for r in online:
        assert r["interval"] == interval
        assert r["progress"] == r[counter], f"target fed {r['progress']} at {counter} {r[counter]}"
    progress = [r["progress"] for r in online]
    syncs = [r["progress"] for r in online if r["synced"]]
    assert syncs == expected_syncs(progress, interval) and len(syncs) >= 5
    assert all(r["changed"] for r in online if r["synced"])
    assert not any(r["changed"] for r in online if not r["synced"])
    if kind in MULTI:  # per-task steps: two tasks do not sync twice as often
        assert all(r["env_steps"] == 2 * r["task_env_steps"] for r in online)


def test_qdagger_offline_phase_maps_updates_to_the_target_period(runs):
    """distill.pretrain: every offline update feeds the target the env steps its updates stand for at
    the online ratio (each round of ``gradient_steps`` updates = ``train_freq`` env steps), so the
    target syncs on the configured period counted in updates (audit 1: it synced once per 256)."""
    run = runs["student_qdagger"]
    d = run.cfg.distill
    offline = [r for r in run.rec.target if r["offline"]]
    assert len(offline) == d.pretrain.updates == run.res["pretrain"]["updates"]
    progress = [r["progress"] for r in offline]
    assert progress == [-(-k // d.gradient_steps) * d.train_freq for k in range(1, len(offline) + 1)]
    syncs = [r["progress"] for r in offline if r["synced"]]
    assert syncs == expected_syncs(progress, int(d.target_update_interval)) and len(syncs) >= 2
    assert all(r["env_steps"] == 0 for r in offline)


LR = {  # the optimiser's block per job kind, and the value the run configs give it
    "teacher": ("kdrl.runs.teacher", 0.0021),
    "student_mixed": ("kdrl.runs.distill", 0.0017),
    "student_qdagger": ("kdrl.runs.distill", 0.0017),
    "scratch": ("kdrl.runs.teacher", 0.0021),  # plain DQN with the teacher's algo settings
    "multitask_distill": ("kdrl.runs.multitask", 0.0013),
    "multitask_joint": ("kdrl.runs.multitask", 0.0013),
}


@pytest.mark.parametrize("kind", KINDS)
def test_learning_rate_comes_from_its_block_and_stays(runs, kind):
    """kdrl has no learning-rate schedule: each optimiser is built once from its own block's lr and
    keeps it for the whole run."""
    run = runs[kind]
    site, lr = LR[kind]
    assert [(s, kw["lr"]) for s, kw in run.rec.optimizers] == [(site, lr)]
    opt = run.module.trainer.optimizers[0]
    assert [g["lr"] for g in opt.param_groups] == [lr]


@pytest.mark.parametrize("kind", KINDS)
def test_periodic_evaluations_land_on_their_env_steps(runs, kind):
    """The k-th periodic evaluation happens in the round that reaches k * eval.freq env steps
    (per-task env steps for multi-task), and a last one at the end of the run."""
    run = runs[kind]
    freq, n = int(run.cfg.eval.freq), num_envs(run)
    step = run.module.data.train_freq
    counter = "task_env_steps" if kind in MULTI else "env_steps"
    history = run.res["eval_history"]
    start = 1 if run.res.get("pretrain") else 0  # QDagger scores the pretrained student at env step 0
    if start:
        assert history[0][counter] == 0
    periodic, last = history[start:-1], history[-1]
    assert len(periodic) == (budget(run) - 1) // freq
    for k, h in enumerate(periodic, start=1):
        assert k * freq <= h[counter] < k * freq + step + n, (k, h[counter])
    assert last[counter] == (run.module.task_env_steps if kind in MULTI else budget(run))
    assert last[counter] > budget(run) - step - n


@pytest.mark.parametrize("kind", SINGLE)
def test_updates_follow_env_steps(runs, kind):
    """``gradient_steps`` updates per ``train_freq`` env steps once ``learning_starts`` env steps (and
    one batch) are in, whatever num_envs."""
    run = runs[kind]
    d = run.module.data
    starts = max(run.module.stream.learning_starts, d.batch_size)
    assert starts == max(d.learning_starts, d.batch_size) > 0
    assert run.res["grad_steps"] == d.gradient_steps * ((run.res["env_steps"] - starts) // d.train_freq + 1)


# ==== seeds: what every evaluation actually played ====================================================================
def seeds(base: int, n: int) -> list[int]:
    return eval_seeds(int(base), int(n))


def label(run: Run, who: Any) -> str:
    """Whose policy played, by name (readable failure messages)."""
    job, module = run.job, run.module
    names = {id(None): "random", id(module): "module", id(module.q_net): "student"}
    if isinstance(job, MultiTaskJob):
        names.update({id(t.teacher): f"teacher[{t.name}]" for t in job.tasks})
        names.update({id(v): f"student[{t.name}]" for v, t in zip(module.views, job.tasks)})
    elif hasattr(job, "teacher"):
        names[id(job.teacher)] = "teacher"
    return names.get(id(who), repr(who)[:40])


def test_teacher_evaluations_use_their_seeds(runs):
    run = runs["teacher"]
    e = run.cfg.eval
    periodic = seeds(e.seed, e.episodes)
    fit = run.rec.calls(phase="fit")
    assert len(fit) == len(run.res["eval_history"])
    for c in fit:
        got = (c.fn, c.site, label(run, c.who), c.seeds, c.epsilon)
        assert got == ("evaluate_policy", "kdrl.callbacks", "module", periodic, e.epsilon)
    (final,) = run.rec.calls(phase="final")
    got = (final.fn, label(run, final.who), final.seeds, final.epsilon)
    assert got == ("evaluate_policy", "module", seeds(e.final_seed, e.final_episodes), e.epsilon)
    assert not set(final.seeds) & set(periodic)
    assert run.rec.calls(phase="build") == []


@pytest.mark.parametrize("kind", STUDENTS)
def test_student_evaluations_use_their_seeds(runs, kind):
    """Students (and the scratch baseline): the teacher reference and the random baseline on the
    periodic seeds; periodic evaluations on them; the final evaluation of student, teacher and random
    policy on the held-out final seeds (issue 29, survivor 2: the student's final evaluation on
    eval.seed); generalisation and agreement on their own offsets of the final seed."""
    run = runs[kind]
    e = run.cfg.eval
    env_id = run.cfg.env.id
    periodic = seeds(e.seed, e.episodes)
    final = seeds(e.final_seed, e.final_episodes)
    general = seeds(e.final_seed + 50_000, e.generalisation_episodes)
    agreement = seeds(e.final_seed + 90_000, 100)
    build = [(c.fn, label(run, c.who), c.seeds, c.epsilon) for c in run.rec.calls(phase="build")]
    assert build == [("evaluate_policy", "teacher", periodic, e.epsilon), ("random_returns", "random", periodic, None)]
    fit = run.rec.calls(phase="fit")
    assert len(fit) == len(run.res["eval_history"])
    for c in fit:
        assert (c.site, label(run, c.who), c.seeds, c.epsilon) == ("kdrl.callbacks", "module", periodic, e.epsilon)

    calls = run.rec.calls(phase="final")
    assert all(c.env_id == env_id for c in calls)
    plain_calls = [c for c in calls if c.fn != "rollout_states" and c.wrappers == 0 and not c.kwargs]
    performance = [(c.fn, label(run, c.who), c.seeds, c.epsilon) for c in plain_calls]
    assert performance == [
        ("evaluate_policy", "student", final, e.epsilon),  # the student's headline score
        ("evaluate_policy", "teacher", final, e.epsilon),
        ("random_returns", "random", final, None),
    ], "the final evaluation must play student, teacher and random policy on the held-out final seeds"
    perturbed = [c for c in calls if c.fn == "evaluate_policy" and (c.wrappers or c.kwargs)]
    names = [p["name"] for p in plain(run.cfg.env.perturbations)]
    assert len(perturbed) == 2 * len(names) == 2 * len(run.res["generalisation"])
    assert [label(run, c.who) for c in perturbed] == ["teacher", "student"] * len(names)
    assert all(c.seeds == general and c.epsilon == e.epsilon for c in perturbed)
    (rollout,) = [c for c in calls if c.fn == "rollout_states"]
    assert (label(run, rollout.who), rollout.seeds) == ("teacher", agreement)
    selection = set(periodic)
    for c in calls:  # nothing that selected the checkpoint is reused by the numbers reported on it
        assert not set(c.seeds) & selection, c


@pytest.mark.parametrize("kind", MULTI)
def test_multitask_evaluations_use_their_seeds(runs, kind):
    run = runs[kind]
    e, job = run.cfg.eval, run.job
    periodic, final = seeds(e.seed, e.episodes), seeds(e.final_seed, e.final_episodes)
    tasks = job.tasks
    ids = [t.spec.env_id for t in tasks]
    build = [(c.fn, label(run, c.who), c.env_id, c.seeds) for c in run.rec.calls(phase="build")]
    assert build == [
        *[("evaluate_policy", f"teacher[{t.name}]", t.spec.env_id, periodic) for t in tasks],
        *[("random_returns", "random", t.spec.env_id, periodic) for t in tasks],
    ]
    fit = run.rec.calls(phase="fit")
    assert len(fit) == len(ids) * len(run.res["eval_history"])
    assert [c.env_id for c in fit] == ids * len(run.res["eval_history"])
    assert all(c.site == "kdrl.callbacks" and c.seeds == periodic for c in fit)
    got = [(c.fn, label(run, c.who), c.env_id, c.seeds) for c in run.rec.calls(phase="final")]
    assert got == [
        *[("evaluate_policy", f"teacher[{t.name}]", t.spec.env_id, final) for t in tasks],
        *[("random_returns", "random", t.spec.env_id, final) for t in tasks],
        *[("evaluate_policy", f"student[{t.name}]", t.spec.env_id, final) for t in tasks],
    ]
    assert all(c.epsilon == e.epsilon for c in run.rec.calls(phase="final") if c.fn == "evaluate_policy")
    assert not set(final) & set(periodic)


@pytest.mark.parametrize("kind", MULTI)
def test_multitask_periodic_evaluations_use_eval_epsilon(runs, kind):
    """Found by this file (issue 29): the student's periodic evaluations were played greedily while
    their teacher reference was played with eval.epsilon, so the periodic % of teacher that picks the
    best checkpoint compared unlike policies."""
    run = runs[kind]
    fit = run.rec.calls(phase="fit")
    assert run.cfg.eval.epsilon > 0 and fit  # the recorded runs set eval.epsilon, so greedy would differ
    assert all(c.epsilon == run.cfg.eval.epsilon for c in fit)


# ==== random streams: one consumer each ===============================================================================
# make_vector_env resets its envs on the "envs" stream and the collector resets the same envs again with
# the same seeds (a repeat of one purpose, not a second consumer of its draws)
SAME_PURPOSE = {frozenset({"kdrl/envs.py:make_vector_env", "kdrl/collector.py:EnvCollector.__init__"})}


def consumers_by_stream(rec: Recording) -> dict[tuple, set[tuple[str, int | None]]]:
    out: dict[tuple, set[tuple[str, int | None]]] = defaultdict(set)
    for s in rec.streams:
        out[(s.seed, s.key)].add((s.consumer, s.owner))
    return out


def shared_streams(rec: Recording) -> dict[tuple, list[str]]:
    """The streams that more than one consumer (call site, and object) drew from."""
    bad = {}
    for key, who in consumers_by_stream(rec).items():
        names = {c for c, _ in who}
        if len(who) > 1 and not (len(names) == len(who) and frozenset(names) in SAME_PURPOSE):
            bad[key] = sorted(f"{c} (object {o})" if o else c for c, o in who)
    return bad


PURPOSES = {
    "teacher": {("global",), ("envs",), ("actions",), ("collector",), ("replay",)},
    "student_mixed": {("global",), ("envs",), ("actions",), ("collector",), ("replay",), ("control",)},
    "student_qdagger": {
        ("global",),
        ("envs",),
        ("actions",),
        ("collector",),
        ("replay",),
        ("control",),
        ("pretrain", "envs"),
        ("pretrain", "actions"),
        ("pretrain", "collector"),
    },
}
PURPOSES["scratch"] = PURPOSES["teacher"]
PURPOSES["multitask_distill"] = PURPOSES["multitask_joint"] = {("global",)} | {
    ("task", i, p) for i in (0, 1) for p in ("envs", "actions", "collector", "replay")
}


@pytest.mark.parametrize("kind", KINDS)
def test_no_two_consumers_draw_from_one_stream(runs, kind):
    """Every random stream of a run (kdrl.seeding) has one consumer (issue 29, survivor 3: under
    control=mixed the 'who acts' draws came from the collector's exploration stream)."""
    rec = runs[kind].rec
    assert shared_streams(rec) == {}
    keys = {s.key for s in rec.streams}
    assert keys == PURPOSES[kind]
    assert {s.seed for s in rec.streams} == {SEED}  # every stream is the run's own


def test_the_stream_check_sees_two_collectors_on_one_stream():
    """The check above is not vacuous: two collectors built on one key are two consumers of it."""
    kept = []  # alive, so the two collectors are two objects
    with pytest.MonkeyPatch.context() as mp, recording(mp) as rec:
        for _ in range(2):
            envs = make_vector_env("CartPole-v1", 2, SEED)
            greedy = lambda o: np.zeros(len(o), np.int64)
            kept.append(EnvCollector(envs, ReplayBuffer(16, (4,)), greedy, lambda t: 0.1, seed=SEED))
            envs.close()
    assert set(shared_streams(rec)) == {(SEED, ("collector",)), (SEED, ("envs",))}


# ==== the actor process draws the same exploration as the collector would ============================================
def test_actor_process_feeds_epsilon_the_env_steps_of_each_step_of_a_round():
    """env.actor=process: the parent draws a whole round's exploration up front, at the env step each
    vector step will have."""
    from kdrl.actor import ActorCollector

    seen: list[int] = []

    def eps(t: int) -> float:
        seen.append(t)
        return LinearSchedule(1.0, 0.0, 100)(t)

    envs = make_vector_env("CartPole-v1", 4, SEED)
    net = nn.Linear(4, 2)
    actor = ActorCollector(
        envs,
        ReplayBuffer(256, (4,)),
        lambda o: net(torch.as_tensor(o, dtype=torch.float32)).argmax(1).numpy(),
        eps,
        lambda: [net],
        max_round=5,
        seed=SEED,
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KDRL_NO_PIN", "1")
        try:
            actor.launch(5)
            actor.join()
            actor.launch(3)
            actor.join()
        finally:
            actor.close()
            envs.close()
    assert seen == [0, *range(0, 32, 4)] and actor.env_steps == 32
