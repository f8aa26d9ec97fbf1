"""The evaluation protocol (docs/protocol.md): one test per audit finding (issue 12)."""

import numpy as np
import pytest
import torch

from kdrl.runs.teacher import train_teacher
from tests.helpers import compose_cfg

QUIET = ["logger=csv", "trainer.enable_progress_bar=false"]
TINY_TEACHER = [
    "algo.total_timesteps=3000",
    "algo.learning_starts=500",
    "eval.freq=1000",
    "eval.episodes=2",
    "eval.final_episodes=3",
    *QUIET,
]


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher")
    overrides = [*TINY_TEACHER, "eval.stop_at_return=null", "checkpoint.keep_last=4"]
    return out, train_teacher(compose_cfg("train", overrides), out)


# ---- 13. no prefetch: collection is not a round ahead of the updates -------------------------------------------
def test_checkpoints_count_only_updates_performed(teacher_run):
    out, res = teacher_run
    ckpts = sorted((out / "checkpoints").glob("step-*.ckpt"))
    assert len(ckpts) >= 2  # mid-training checkpoints, where Lightning's prefetched batch used to be counted
    for path in ckpts:
        ckpt = torch.load(path, weights_only=True)
        assert ckpt["kdrl_stream"]["grad_steps"] == ckpt["kdrl"]["optimizer_steps"], path.name
    # each evaluation sees the updates of the env steps collected so far, no round ahead: with
    # train_freq 64 and 32 updates per round, grad_steps = 32 * (rounds since learning_starts)
    for h in res["eval_history"]:
        assert h["grad_steps"] == 32 * ((h["env_steps"] - 500) // 64 + 1)


# ---- 14. a frozen teacher stays in eval mode ------------------------------------------------------------------
def test_frozen_teacher_stays_in_eval_mode_after_evaluations(teacher_run, tmp_path):
    from kdrl.envs import probe_spec
    from kdrl.runs.distill import build_student_module
    from kdrl.runs.job import plain
    from kdrl.teachers import load_teacher_net

    cfg = compose_cfg("distill", ["student.width=16", *QUIET])
    spec = probe_spec(plain(cfg.env))
    teacher, _ = load_teacher_net(teacher_run[0] / "teacher.pt", spec.env_id, spec.obs_shape, spec.n_actions)
    module = build_student_module(cfg, spec, teacher, {**plain(cfg.net), "width": 16})
    module.eval()
    module.train()  # what an evaluation callback does around its episodes
    assert module.training and module.q_net.training and not module.teacher.training


# ---- 9. runs are independent: no sub-env of one run replays another run's episodes ---------------------------
def test_runs_with_neighbouring_seeds_share_no_episodes():
    from kdrl.runs.teacher import build_teacher

    starts = {}
    for seed in (0, 1):
        module, _ = build_teacher(compose_cfg("train", [f"seed={seed}", "env.num_envs=4", *QUIET]))
        module.setup("fit")
        starts[seed] = module.collector.obs.copy()
    # every first observation of run 0 differs from every first observation of run 1 (before: run 0's
    # sub-env i reset with seed i, so its sub-envs 1-3 started where run 1's sub-envs 0-2 did)
    assert not any(np.array_equal(a, b) for a in starts[0] for b in starts[1])
    assert len({tuple(o) for o in np.concatenate([starts[0], starts[1]])}) == 8


def test_every_rng_of_a_run_is_its_own_stream():
    from kdrl.seeding import seed_ints

    purposes = ["envs", "actions", "collector", "replay", "control", "global"]
    ints = [seed_ints(seed, p)[0] for seed in range(20) for p in purposes]
    assert len(set(ints)) == len(ints)  # 120 distinct seeds: no stream is shared between runs or purposes
    assert seed_ints(3, "task", 1, "envs", n=2) == seed_ints(3, "task", 1, "envs", n=2)  # and reproducible


# ---- 2. the scratch baseline learns on its own budget; a run that cannot update is refused -------------------
@pytest.mark.parametrize("env", ["atari_pong", "minatar_breakout"])
def test_scratch_baseline_schedules_fit_its_budget(env):
    from kdrl.runs.distill import fitted_to_budget
    from kdrl.runs.job import plain

    cfg = compose_cfg("distill", [f"env={env}", "baseline=scratch"])
    total = int(cfg.distill.total_timesteps)
    algo = fitted_to_budget(plain(cfg.algo), total)
    assert algo["total_timesteps"] == total and algo["learning_starts"] <= total // 10
    expl = algo["exploration"]
    assert expl["delay_steps"] + expl["decay_steps"] <= total // 2  # epsilon at its end value by half the run
    assert algo["learning_starts"] < plain(cfg.algo)["learning_starts"]  # fitted, not copied


def test_a_run_that_cannot_make_an_update_is_refused():
    from kdrl.validate import ConfigError, validate_common, validate_distill

    with pytest.raises(ConfigError, match=r"algo.learning_starts \(5000\).*no update within algo.total_timesteps"):
        validate_common(compose_cfg("train", ["algo.learning_starts=5000", "algo.total_timesteps=3000"]))
    with pytest.raises(ConfigError, match=r"distill.learning_starts.*no update within distill.total_timesteps"):
        validate_distill(compose_cfg("distill", ["distill.total_timesteps=400", "distill.learning_starts=500"]))
    with pytest.raises(ConfigError, match="no update"):  # Atari's 80k learning_starts against a 50k budget
        validate_common(compose_cfg("train", ["env=atari_pong", "algo.total_timesteps=50000"]))


# ---- 1. QDagger's lambda on the normalised score ----------------------------------------------------------------
@pytest.mark.parametrize(
    "student,teacher,random,lam",
    [
        (-500.0, -77.0, -500.0, 1.0),  # Acrobot: a student at the random floor gets full distillation (was 0)
        (-70.0, -77.0, -500.0, 0.0),  # a student above the teacher gets none (was 0.09)
        (-100.0, 252.0, -150.0, 1.0 - 50.0 / 402.0),  # was 1.40
        (-20.0, 20.0, -20.0, 1.0),  # was 2.0
        (10.0, 20.0, 0.0, 0.5),  # positive returns with a zero floor: Agarwal et al.'s 1 - S/T
    ],
)
def test_qdagger_lambda_is_one_minus_the_normalised_score_clipped(student, teacher, random, lam):
    from kdrl.losses import LambdaSchedule

    schedule = LambdaSchedule("qdagger", value=1.0)
    schedule.observe(student, teacher, random)
    assert schedule(0) == pytest.approx(lam)
    assert 0.0 <= schedule(0) <= 1.0


def test_qdagger_lambda_ignores_a_teacher_no_better_than_random():
    from kdrl.losses import LambdaSchedule

    schedule = LambdaSchedule("qdagger", value=1.0)
    schedule.observe(5.0, 1.0, 1.0)  # no normalised score exists: keep the starting value
    assert schedule(0) == 1.0


# ---- 6. the teacher reference comes from episodes that selected nothing -----------------------------------------
@pytest.mark.parametrize("app", ["distill", "multitask"])
def test_student_periodic_seeds_are_not_the_teachers_selection_seeds(app):
    from kdrl.evaluation import eval_seeds

    teacher, student = compose_cfg("train", []), compose_cfg(app, [])
    selected = set(eval_seeds(teacher.eval.seed, 1000))  # the teacher's best checkpoint and early stop
    assert not selected & set(eval_seeds(student.eval.seed, student.eval.episodes))
    held_out = set(eval_seeds(student.eval.final_seed, student.eval.final_episodes))
    assert not held_out & selected and not held_out & set(eval_seeds(student.eval.seed, student.eval.episodes))


# ---- 7. the normalised score is the metric; refused when the teacher does not beat random ---------------------
def test_normalised_score_is_the_default_metric_everywhere():
    import inspect

    import kdrl.cli.table as table_cli

    assert compose_cfg("distill", []).optimized_metric == "normalized_score"  # what a sweeper optimises
    assert compose_cfg("multitask", []).optimized_metric == "normalized_score"
    assert 'default="normalized_score"' in inspect.getsource(table_cli)  # kdrl-table's --metric


@pytest.mark.parametrize(
    "teacher,random,beats",
    [
        ([500.0] * 5, [22.0, 15.0, 30.0, 19.0, 25.0], True),  # CartPole
        (
            [0.0, 2.0, 1.0, 0.0, 3.0, 0.0, 1.0, 2.0],
            [1.0, 0.0, 2.0, 1.0, 0.0, 1.0, 2.0, 0.0],
            False,
        ),  # MinAtar Asterix 0.9 +- 1.1
        ([-80.0, -75.0, -78.0, -77.0], [-500.0] * 4, True),  # Acrobot: negative returns
        ([3.0, 3.0], [3.0, 3.0], False),
    ],
)
def test_teacher_beats_random_decides_whether_a_score_exists(teacher, random, beats):
    from kdrl.scores import teacher_beats_random

    assert teacher_beats_random(teacher, random) is beats


# ---- 3. a CI whose coverage is measured -------------------------------------------------------------------------
# Realistic per-seed normalised scores: near-normal, piled up below the teacher (beta(8, 2)), spread
# (beta(2, 2)), long left tail of occasional failures (1 - gamma), multiplicative noise (lognormal).
SCORE_DISTRIBUTIONS = {
    "normal": (lambda r, n: r.normal(0.8, 0.15, n), 0.8),
    "beta(8,2)": (lambda r, n: r.beta(8, 2, n), 0.8),
    "beta(2,2)": (lambda r, n: r.beta(2, 2, n), 0.5),
    "1-gamma(2,0.1)": (lambda r, n: 1 - r.gamma(2, 0.1, n), 0.8),
    "lognormal": (lambda r, n: np.exp(r.normal(-0.1, 0.25, n)), float(np.exp(-0.1 + 0.25**2 / 2))),
}


def coverage(n: int, draw, true: float, trials: int, ci) -> float:
    rng = np.random.default_rng(12345)
    hits = 0
    for _ in range(trials):
        lo, hi = ci(draw(rng, n))[-3:-1]
        hits += lo <= true <= hi
    return hits / trials


@pytest.mark.parametrize("n", [5, 10])
@pytest.mark.parametrize("dist", list(SCORE_DISTRIBUTIONS))
def test_mean_ci_covers_at_least_93_percent_at_the_published_n(n, dist):
    """Tables are published with n >= 5 seeds; 2,000 simulated experiments per case (fixed seeds)."""
    from kdrl.statistics import mean_ci

    draw, true = SCORE_DISTRIBUTIONS[dist]
    assert coverage(n, draw, true, 2000, mean_ci) >= 0.93


def test_percentile_bootstrap_was_min_max_at_three_seeds():
    from kdrl.statistics import bootstrap_ci, mean_ci

    x = [0.2, 0.9, 1.0]
    assert bootstrap_ci(x) == pytest.approx((0.2, 1.0))  # the old method: [min, max], whatever the spread
    _, lo, hi, _ = mean_ci(x)
    assert lo < 0.2 and 1.0 < hi < 3.0  # three seeds cannot pin the mean down, and the interval says so


def test_tables_state_n_and_flag_fewer_than_five_seeds():
    import pandas as pd

    from kdrl.tables import summary_table

    rows = [
        {"status": "ok", "method": "kl", "width": 64, "normalized_score": v, "param_ratio": 0.07, "seed": i}
        for i, v in enumerate([0.9, 1.0, 0.95])
    ]
    rows += [
        {"status": "ok", "method": "mse", "width": 64, "normalized_score": v, "param_ratio": 0.07, "seed": i}
        for i, v in enumerate([0.3, 0.2, 0.4, 0.1, 0.3])
    ]
    table = summary_table(pd.DataFrame(rows), "method", "width", "normalized_score")
    assert "over n = 3/5 seeds" in table.caption and "† n < 5" in table.caption
    kl, mse = (line for line in table.markdown.splitlines() if line.startswith(("| kl", "| mse")))
    assert kl.rstrip(" |").endswith("†") and not mse.rstrip(" |").endswith("†")


# ---- 4. IQM as rliable computes it --------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 10, 13])
def test_iqm_matches_rliable(n):
    metrics = pytest.importorskip("rliable.metrics")
    from kdrl.statistics import iqm

    x = np.random.default_rng(n).normal(0.8, 0.2, n)
    assert iqm(x) == pytest.approx(metrics.aggregate_iqm(x[:, None]))
    if n == 3:
        assert iqm([0.7, 0.9, 1.0]) == pytest.approx(0.8667, abs=1e-4)  # was 0.903 (fractional weights)


# ---- 5. speed: seeds that never reach the level are censored, not dropped ----------------------------------
def test_speed_counts_non_reaching_seeds_at_their_budget():
    import pandas as pd

    from kdrl.tables import aggregate, flatten

    hits = [{"env_steps": 2000, "train_wall_s": 1.0}, {"env_steps": 4000, "train_wall_s": 2.0}, None]
    df = pd.DataFrame(
        [
            flatten(
                {"status": "ok", "loss": "kl", "width": 64, "env_steps": 10_000, "seed": i, "speed": {"to_90pct": h}}
            )
            for i, h in enumerate(hits)
        ]
    )
    agg = aggregate(df, ["method", "width"], "to_90pct_env_steps").iloc[0]
    assert agg["n"] == 3  # was 2: the seed that never got there was dropped
    assert agg["reached"] == pytest.approx(2 / 3) and agg["mean"] == 4000.0  # median of 2000, 4000, 10000 (budget)


# ---- 10. teacher variance: each student seed can have its own teacher ---------------------------------------
def test_seed_from_student_gives_each_student_its_own_teacher():
    from kdrl.runs.distill import teacher_seed

    assert teacher_seed(compose_cfg("distill", ["seed=3"])) == 0  # default: one teacher for every student
    assert teacher_seed(compose_cfg("distill", ["seed=3", "teacher.seed_from_student=true"])) == 3


# ---- 11. the teacher cache key: kdrl-distill's env/net/algo changes reach the teacher; a code version ------------
def test_distill_overrides_of_the_teachers_sections_reach_the_teacher_and_its_key():
    from kdrl.teachers import TEACHER_CACHE_VERSION, teacher_config, teacher_key, teacher_overrides

    plain_cfg, changed = compose_cfg("distill", []), compose_cfg("distill", ["algo.gamma=0.95", "net.width=128"])
    overrides = teacher_overrides(changed, {}, "cartpole")
    assert "algo.gamma=0.95" in overrides and "net.width=128" in overrides
    tcfg = teacher_config("cartpole", 0, overrides)
    assert tcfg.algo.gamma == 0.95 and tcfg.net.width == 128
    default_key = teacher_key(teacher_config("cartpole", 0, teacher_overrides(plain_cfg, {}, "cartpole")))
    assert teacher_key(tcfg) != default_key  # was the same key: algo.gamma=0.95 reused the gamma 0.99 teacher
    assert TEACHER_CACHE_VERSION >= 2


def test_a_students_actor_mode_does_not_reach_its_teacher_or_its_key():
    """env.actor is how a job runs, not what its teacher is: ``kdrl-distill control=student
    env.actor=process`` (or a scratch baseline's) reuses the teacher of the plain config, trained as
    the recipe says (audit 5: the actor reached the overrides, key dce3344e9f3f, not 53f7f1030803).
    Set for the teacher itself (teacher.overrides) it still trains that teacher differently (the
    actor's one-round policy lag), so it is another teacher there."""
    from kdrl.runs.distill import teacher_request
    from kdrl.teachers import teacher_config, teacher_key

    def teacher_of(overrides: list[str]):
        req = teacher_request(compose_cfg("distill", overrides), {})
        return req.overrides, teacher_config(req.env, req.seed, list(req.overrides))

    plain_overrides, plain_tcfg = teacher_of(["control=student"])
    for extra in (["env.actor=process"], ["env.actor=process", "baseline=scratch"]):
        overrides, tcfg = teacher_of(["control=student", *extra])
        assert overrides == plain_overrides == ("budget=cpu",)
        assert tcfg.env.actor == "inline"
        assert teacher_key(tcfg) == teacher_key(plain_tcfg)
    overrides, tcfg = teacher_of(["control=student", 'teacher.overrides=["env.actor=process"]'])
    assert tcfg.env.actor == "process" and teacher_key(tcfg) != teacher_key(plain_tcfg)


def test_teacher_key_carries_the_code_version(monkeypatch):
    import kdrl.teachers as teachers

    tcfg = teachers.teacher_config("cartpole", 0, [])
    before = teachers.teacher_key(tcfg)
    monkeypatch.setattr(teachers, "TEACHER_CACHE_VERSION", teachers.TEACHER_CACHE_VERSION + 1)
    assert teachers.teacher_key(tcfg) != before


# ---- 8. temperature: what the tau^2 factor does at a sharp tau, and the hint loss's relative scale ----------
def _grad_norm(loss_fn, q_s):
    q = q_s.clone().requires_grad_(True)
    loss_fn(q).backward()
    return float(q.grad.norm())


def test_sharp_kl_with_the_tau_squared_factor_has_a_much_smaller_gradient_than_rusus_form():
    from kdrl.losses import kl_loss, nll_loss

    g = torch.Generator().manual_seed(0)
    q_t, q_s = torch.randn(64, 4, generator=g), torch.randn(64, 4, generator=g)
    sharp = _grad_norm(lambda q: kl_loss(q, q_t, 0.01), q_s)
    rusu = _grad_norm(lambda q: kl_loss(q, q_t, 0.01, student_temperature=1.0, tau_squared=False), q_s)
    nll = _grad_norm(lambda q: nll_loss(q, q_t), q_s)
    unit = _grad_norm(lambda q: kl_loss(q, q_t, 1.0), q_s)
    assert sharp < rusu / 20 and sharp < nll / 20 and sharp < unit / 20  # the README says so, with figures
    from omegaconf import OmegaConf

    from kdrl.config import CONF_DIR

    for preset in ("rusu2016_compression", "rusu2016_losses"):  # the paper's presets use the paper's form
        axes = OmegaConf.load(f"{CONF_DIR}/experiment/{preset}.yaml").hydra.sweeper.params
        assert "kl_rusu" in axes.loss.split(",") and "kl" not in axes.loss.split(",")


def test_hint_loss_dominates_sharp_kl_in_the_feature_loss():
    from kdrl.losses import hint_loss, kl_loss

    g = torch.Generator().manual_seed(0)
    h_s, h_t = torch.randn(64, 64, generator=g), torch.randn(64, 256, generator=g).relu()
    q_t, q_s = torch.randn(64, 2, generator=g), torch.randn(64, 2, generator=g)
    projection = torch.nn.Linear(64, 256)
    hint = _grad_norm(lambda h: hint_loss(h, h_t, projection), h_s)
    kl = _grad_norm(lambda q: kl_loss(q, q_t, 0.01), q_s)
    assert hint > 10 * kl  # documented in the README: `feature` at tau = 0.01 is mostly hint learning


# ---- 15. evaluation epsilon is a config key (greedy by default) -----------------------------------------------
def test_evaluation_epsilon_is_a_key_and_is_checked():
    from kdrl.evaluation import evaluate_policy, random_returns
    from kdrl.validate import ConfigError, validate_common

    assert compose_cfg("train", []).eval.epsilon == 0.0 and compose_cfg("distill", []).eval.epsilon == 0.0
    with pytest.raises(ConfigError, match=r"eval.epsilon must be in \[0.0, 1.0\]"):
        validate_common(compose_cfg("train", ["eval.epsilon=1.5"]))
    seeds = [5, 6, 7]
    always_left = lambda obs: np.zeros(len(obs), dtype=np.int64)  # noqa: E731
    assert evaluate_policy(always_left, "CartPole-v1", seeds, epsilon=1.0, rng_seed=5) == random_returns(
        "CartPole-v1", seeds
    )


def test_mean_ci_of_undefined_scores_is_undefined_not_a_crash():
    # a teacher no better than random makes every normalised score NaN (docs/protocol.md)
    from kdrl.statistics import mean_ci

    _, lo, hi, _ = mean_ci([float("nan")] * 5)
    assert np.isnan(lo) and np.isnan(hi)
    assert np.isnan(mean_ci([1.0, 0.9, float("nan"), 0.8, 0.95]).low)
