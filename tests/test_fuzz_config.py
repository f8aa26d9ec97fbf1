"""Property-based fuzzing of the apps' configs (tests/fuzz_config.py), bounded for make test: every
key of each app's default config once, then derandomized hypothesis examples (1-3 keys, at most
one config-group choice) on the validation path only. Each must pass, or be refused by Hydra's
compact errors or in one kdrl line naming the key; never an error from deep code.
`python tests/fuzz_config.py` is the long mode (more examples, every sweep value, the real CLI)."""

from __future__ import annotations

import pytest

from tests.fuzz_config import APPS, Fuzzer, Raw, compose_agrees, describe, fuzz, sweep

EXAMPLES = 100  # hypothesis examples per app: about 5 s each on a quiet two-core machine


@pytest.fixture(scope="module")
def fz():
    with Fuzzer() as f:
        yield f


@pytest.mark.parametrize("app", APPS)
def test_every_key_is_accepted_or_refused_in_one_line(fz, app):
    n = sweep(fz, app)  # one value per key, cycling through null, wrong types, edges, bad interpolations
    crashes = [o for o in fz.stats.crashes if o.app == app]
    assert not crashes, "\n".join(describe(o) for o in crashes[:5])
    assert n == len(fz.leaves(app, ())) and n > 50


@pytest.mark.parametrize("app", APPS)
def test_fuzzed_overrides_are_accepted_or_refused_in_one_line(fz, app):
    fuzz(fz, app, EXAMPLES, max_groups=1, strict=True)  # a crash fails here, shrunk to its minimal overrides
    assert fz.stats.kinds[app, "passed"] and fz.stats.kinds[app, "rejected"] and fz.stats.kinds[app, "hydra"]


# (app, overrides, what the one-line refusal says). Found by the fuzzer, where they were Hydra's traceback
# or a TypeError, ValueError, AttributeError or OmegaConf error from deep code; the last five were one-line
# errors only once training had started (the first three found by tests/fuzz_config.py --run, the last
# two seen in the code next to them).
FOUND = [
    ("train", ["debug=null"], "config group 'debug' takes an option name (fast)"),
    ("distill", ["launcher=[1,2]"], "config group 'launcher' takes an option name"),
    ("train", ["budget=junk"], "budget must be one of cpu, gpu, paper, got 'junk'"),
    ("train", ["budget=???"], "budget has no value (???)"),
    ("distill", ["algo.gamma=???"], "algo.gamma has no value (???)"),
    ("distill", ["algo.gamma=${no.such.key}"], "algo.gamma = ${no.such.key} cannot be resolved"),
    ("train", ["algo.td_loss=${oc.env:KDRL_NO_SUCH_VAR}"], "algo.td_loss = ${oc.env:KDRL_NO_SUCH_VAR} cannot be"),
    ("distill", ["budgets.cpu.teacher=''"], "algo.total_timesteps must be an integer >= 1, got ''"),
    ("distill", ["distill.batch_size=junk"], "distill.batch_size must be an integer >= 1, got 'junk'"),
    ("distill", ["loss.td=junk"], "loss.td must be null or a mapping"),
    ("distill", ["loss.feature_weight=junk"], "loss.feature_weight must be a number >= 0, got 'junk'"),
    ("distill", ["student.size=[1]"], "student.size must be null or one of the recipe's student_sizes"),
    ("multitask", ["teacher.checkpoints=5"], "teacher.checkpoints must be null or a mapping"),
    ("multitask", ["tasks=null"], "tasks must be a non-empty list of distinct env presets, got None"),
    ("multitask", ["loss.temperature=junk"], "loss.temperature must be in (0.0, inf], got 'junk'"),
    ("train", ["env.id=${no.such.key}"], "env.id names the run dir (hydra.run.dir"),
    ("distill", ["loss.name=" + "a" * 300], "hydra.run.dir resolves to a path with a name over 255 bytes"),
    ("distill", ["loss.temperature=null"], "loss.temperature must be in (0.0, inf], got None"),
    ("multitask", ["student.obs_scale=null"], "student.obs_scale must be a number > 0, got None"),
    (
        "train",
        ["env=minatar_asterix", "algo.optimizer.alpha=inf"],
        "algo.optimizer.alpha must be null or in [0.0, 1.0]",
    ),
    ("train", ["logger.wandb=onlin"], "logger.wandb must be one of offline, online, disabled"),
    ("multitask", ["tasks=[cartpole,nope]"], "tasks must be env presets"),
]


@pytest.mark.parametrize("app,overrides,expected", FOUND, ids=[" ".join(c[1])[:40] for c in FOUND])
def test_found_failures_are_refused_in_one_line(fz, app, overrides, expected):
    groups = [o for o in overrides if o.split("=")[0] in fz.groups[app]]
    keys = [o for o in overrides if o not in groups]
    o = fz.run(app, groups, [(k, Raw(v)) for k, v in (kv.split("=", 1) for kv in keys)])
    assert o.kind == "rejected" and expected in o.message, describe(o)


def test_loss_feature_weight_null_means_off(fz):
    """found by the fuzzer: loss.feature_weight=null (StudentLoss reads it as 0) passed validation and
    then failed in DistillJob.fields with float(None)."""
    o = fz.run("distill", [], [("loss.feature_weight", None)])
    assert o.kind == "passed", describe(o)


CACHED = [
    ("train", [], ["seed=3", "algo.optimizer.lr=1e-300", "env.kwargs={a:1}"]),
    ("distill", ["loss=hybrid"], ["algo.gamma=0.5", "loss.distill_weight.value=nan", "student.hidden=[3,4]"]),
    ("distill", ["env=minatar_breakout"], ["budget=paper", "net.channels=[]", "student.size=null"]),
    ("distill", [], ["algo.gamma=${no.such.key}", "teacher.overrides=[a,1]"]),
    ("multitask", ["loss=nll"], ["tasks=[cartpole]", "multitask.num_envs=2", "student.conv={channels:[1]}"]),
    ("train", ["net=nature_cnn"], ["algo.lrr=1"]),
    ("train", [], ["seed=[1,"]),
    ("distill", ["experiment=qdagger"], ["distill.pretrain.updates=-1", "eval.stop_at_return=-inf"]),
]


@pytest.mark.parametrize("app,groups,overrides", CACHED)
def test_cached_composition_is_what_hydra_composes(fz, app, groups, overrides):
    """The fuzzer composes once per set of group choices and applies leaf overrides to a copy as
    Hydra's ConfigLoaderImpl does: the result must be Hydra's own."""
    assert compose_agrees(fz, app, groups, overrides) is None
