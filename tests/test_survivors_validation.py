"""The validation room's sampled mutation survivors (docs/mutation.md, issue 29): refusal messages of
the rule helpers and of the recipe/env check, the replay-memory refusal (its sizes, its boundary, the
frame-stack alternative), where the memory figure comes from, the env-spec cache, interpolation
references and unresolvable budgets, and kdrl-data's teacher check."""

from __future__ import annotations

import copy
import functools
import math

import pytest
from omegaconf import OmegaConf

import kdrl.envs
import kdrl.validate as V
from kdrl.replay import replay_nbytes
from kdrl.validate import ConfigError
from tests.helpers import compose_cfg


def test_a_nullable_integer_rule_says_null_is_allowed():
    with pytest.raises(ConfigError, match=r"must be null or an integer >= 2"):
        V._int_at_least({"a": 1}, "a", 2, nullable=True)
    with pytest.raises(ConfigError, match=r"must be an integer >= 2"):
        V._int_at_least({"a": 1}, "a", 2)
    V._int_at_least({"a": None}, "a", 2, nullable=True)


def test_a_recipe_of_another_family_is_refused_naming_the_recipes_that_fit():
    cfg = {"env_family": "gym", "recipe_for": {"name": "minatar_fast", "families": ["minatar"]}, "env": {"id": "X-v0"}}
    fitting = V.recipes_for("gym")
    assert fitting  # the gym family has recipes of its own
    with pytest.raises(ConfigError) as err:
        V._recipe_fits_env(cfg)
    assert f"recipes for gym envs: {', '.join(fitting)} (or leave recipe= out" in str(err.value)
    # (x__recipe_fits_env__mutmut_98: the env id read from nowhere)
    assert str(err.value).startswith("recipe=minatar_fast is made for minatar envs, but the env (X-v0) is a gym env:")


def memory(monkeypatch, nbytes):
    monkeypatch.setattr(V, "available_memory", lambda: (nbytes, "test memory"))


def test_a_replay_that_fits_exactly_is_accepted_and_one_byte_less_is_refused(monkeypatch):
    cfg = {"algo": {"buffer_size": 50_000, "replay": "standard"}}
    envs = [{"id": "CartPole-v1", "num_envs": 2}]
    need = 2 * replay_nbytes("standard", 50_000, (4,), "float32", 2)  # the replay and a checkpoint's copy of it
    memory(monkeypatch, need)
    V._replay_fits(cfg, "algo", envs)
    memory(monkeypatch, need - 1)
    with pytest.raises(ConfigError) as err:
        V._replay_fits(cfg, "algo", envs)
    size = replay_nbytes("standard", 50_000, (4,), "float32", 2)
    assert str(err.value).startswith(
        f"algo.buffer_size=50,000 needs a standard replay of {V._gb(size)} (float32 observations (4,), obs and "
        f"next_obs), and each checkpoint copies what it holds: {V._gb(need)} in all, more than the "
        f"{V._gb(need - 1)} this machine has (test memory): lower algo.buffer_size (about 49,000 fit)"
    )


def test_stacked_frames_in_a_standard_replay_are_pointed_to_the_frame_stack_replay(monkeypatch):
    memory(monkeypatch, 10**6)
    envs = [{"id": "ALE/Breakout-v5", "num_envs": 4}]
    with pytest.raises(ConfigError) as err:
        V._replay_fits({"algo": {"buffer_size": 1000, "replay": "standard"}}, "algo", envs)
    frames = replay_nbytes("frame_stack", 1000, (4, 84, 84), "uint8", 4)
    assert str(err.value).endswith(f", or algo.replay=frame_stack, which stores each frame once ({V._gb(frames)})")
    with pytest.raises(ConfigError) as err:  # auto resolves to the frame-stack replay for Atari pixels
        V._replay_fits({"algo": {"buffer_size": 10**6, "replay": "auto"}}, "algo", envs)
    assert "needs a frame_stack replay of" in str(err.value) and "each frame once" in str(err.value)


def test_without_meminfo_the_memory_is_the_available_pages(monkeypatch):
    import os

    class Unreadable:
        def __init__(self, *_):
            pass

        def read_text(self):
            raise OSError("no such file")

    monkeypatch.setattr(V, "Path", Unreadable)
    monkeypatch.setattr(V, "_cgroup_memory_limit", lambda: None)
    pages = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    got = V.available_memory()
    assert got[1] == "available physical pages" and abs(got[0] - pages) < 2**30


def test_env_specs_are_cached_per_id_and_kwargs(monkeypatch):
    probed = []
    monkeypatch.setattr(kdrl.envs, "probe_spec", lambda env: probed.append(env) or ("spec", repr(env["kwargs"])))
    monkeypatch.setattr(V, "_SPECS", {})
    a = V._spec_of({"id": "X-v0", "kwargs": {"size": 5}})
    b = V._spec_of({"id": "X-v0", "kwargs": {"size": 7}})
    assert V._spec_of({"id": "X-v0", "kwargs": {"size": 5}}) == a != b
    assert probed == [{"id": "X-v0", "kwargs": {"size": 5}}, {"id": "X-v0", "kwargs": {"size": 7}}]


def test_interpolation_references_name_the_keys_an_expression_reads():
    pats = V.interpolation_references("${budgets.${budget}.student}")
    assert any(p.fullmatch("budget") for p in pats) and any(p.fullmatch("budgets.cpu.student") for p in pats)
    pats = V.interpolation_references("${oc.select:student.size,w${student.width}}")
    assert any(p.fullmatch("student.size") for p in pats) and any(p.fullmatch("student.width") for p in pats)
    assert V.interpolation_references("plain") == []


def test_an_unresolvable_budget_is_a_config_error_naming_it():
    with pytest.raises(ConfigError, match=r"^budget = \$\{nope\} cannot be resolved"):
        V.resolved(OmegaConf.create({"budget": "${nope}", "budgets": {}}))


def test_kdrl_data_without_a_teacher_is_refused():
    from kdrl.config import compose_config

    with pytest.raises(ConfigError, match=r"^kdrl-data needs the teacher that plays: set teacher.checkpoint="):
        V.validate_data(compose_config("data", ["teacher.checkpoint=null"]))


# ---- the sample of 200 (seed 1, 2026-12-06) -------------------------------------------------------------------------
DEBUG = ["debug=fast"]


def _refusal(app: str, overrides: list[str]) -> str | None:
    check = {"distill": V.validate_distill, "train": V.validate_common}[app]
    try:
        check(compose_cfg(app, DEBUG + overrides))
    except ConfigError as e:
        return str(e)
    return None


@pytest.mark.parametrize(
    ("app", "overrides", "message"),
    [
        (  # x_validate_distill__mutmut_339, 340, 345: the control read wrongly or the message dropped
            "distill",
            ["distill.dataset=/tmp/d.npz", "control=student"],
            "distill.dataset is the teacher's play: control must be teacher, got control='student'",
        ),
        (  # x_validate_distill__mutmut_334
            "distill",
            ["distill.dataset=/tmp/d.npz", "baseline=scratch"],
            "distill.dataset is a teacher's play to distil from: not for baseline=scratch",
        ),
        (  # x_validate_distill__mutmut_388, 393: the control in the message read from nowhere
            "distill",
            ["env.actor=process", "control=teacher"],
            "env.actor=process runs only with control=student, got control='teacher' (use env.actor=inline)",
        ),
        (  # x__run_keys__mutmut_61: the final episodes read from nowhere, the rule never applied
            "distill",
            ["eval.final_episodes=10", "eval.reference_episodes=5"],
            "eval.reference_episodes (5) must be >= eval.final_episodes (10): the teacher reference covers the "
            "students' final held-out episodes",
        ),
        (  # x__env__mutmut_63: the rule's text dropped
            "train",
            ["+env.perturbations=[1]"],
            "env.perturbations must be a list of {name: ..., physics/obs_noise/kwargs: ...} entries, got [1]",
        ),
        # accepted: a dataset with control=teacher (x_validate_distill__mutmut_340: every dataset refused), and a
        # scratch baseline with the actor process whatever `control` says (x_validate_distill__mutmut_12: "SCRATCH")
        ("distill", ["distill.dataset=/tmp/d.npz", "control=teacher"], None),
        ("distill", ["baseline=scratch", "env.actor=process", "control=teacher"], None),
    ],
)
def test_the_sampled_refusals_say_exactly_why_and_their_edges_are_accepted(app, overrides, message):
    assert _refusal(app, overrides) == message


def test_an_unresolvable_config_names_the_unset_key_or_the_key_that_failed():
    """(x__unresolvable__mutmut_5: a ``???`` never reported as unset; 38: the fallback message dropped)"""
    assert str(V._unresolvable(OmegaConf.create({"a": {"b": "???"}}), Exception("x"))) == (
        "a.b has no value (???): give it one, e.g. a.b=<value>"
    )

    class Failed(Exception):
        full_key = "distill.gamma"

    assert str(V._unresolvable(OmegaConf.create({"a": 1}), Failed("no such key\nfull trace"))) == (
        "distill.gamma cannot be resolved: no such key"
    )


def test_a_preset_env_is_its_conf_file_with_the_num_envs_asked_for():
    """(x__preset_env__mutmut_1, 2, 6: the file not read; 17: the asked num_envs ignored) an env preset is
    conf/env/<name>.yaml's env block with ``num_envs`` set (1 when it is not an integer); an unknown one is None."""
    env = V._preset_env("cartpole", 4)
    assert (env["id"], env["num_envs"]) == ("CartPole-v1", 4)
    assert V._preset_env("cartpole", "${x}")["num_envs"] == 1
    assert V._preset_env("no_such_env", 4) is None


def test_a_configs_own_budgets_are_its_keys_and_the_defaults_otherwise():
    """(x__budgets__mutmut_1: a config's own budgets ignored)"""
    assert V._budgets({"budgets": {"laptop": 1, "cluster": 2}}) == ("laptop", "cluster")
    assert V._budgets({}) == V.BUDGETS


def test_a_recipe_file_that_cannot_be_read_does_not_hide_the_recipes_after_it(tmp_path, monkeypatch):
    """(x_recipes_for__mutmut_22: ``break`` at the first unreadable recipe file)"""
    import kdrl.config

    (tmp_path / "recipe").mkdir()
    (tmp_path / "recipe" / "a_broken.yaml").write_text("recipe_for: [unclosed\n")
    (tmp_path / "recipe" / "b_gym.yaml").write_text("recipe_for: {families: [gym]}\n")
    monkeypatch.setattr(kdrl.config, "CONF_DIR", str(tmp_path))
    assert V.recipes_for("gym") == ["b_gym"]


def test_a_memory_cgroup_limit_below_the_available_memory_is_the_figure_and_says_so(monkeypatch):
    """(x_available_memory__mutmut_33: where the figure comes from misspelt; 3: /proc/meminfo not read) the memory a
    run has is the smaller of MemAvailable and the cgroup's limit, named."""
    monkeypatch.setattr(V, "_cgroup_memory_limit", lambda: 1024)
    assert V.available_memory() == (1024, "the memory cgroup's limit (a SLURM --mem, a container limit)")
    monkeypatch.setattr(V, "_cgroup_memory_limit", lambda: None)
    assert V.available_memory()[1] == "MemAvailable in /proc/meminfo"  # Linux has it


def _replay_need(cap: int, steps: int | None, kind: str = "auto", shape=(4,), dtype="float32", n: int = 4) -> int:
    """What _replay_fits counts for one replay: its bytes, plus a checkpoint's copy of the part ``steps`` fill."""
    size = replay_nbytes(kind, cap, shape, dtype, n)
    return int(size * (1 + (1 if steps is None else min(1, steps / cap))))


def test_a_teachers_replay_is_checked_at_the_part_its_budget_fills(monkeypatch):
    """(x_validate_common__mutmut_25: the check given no config, never made; 41: the budget not read, the replay
    counted full) kdrl-train's debug CartPole teacher (buffer 5,000, 3,000 env steps, 4 envs) fits in exactly its
    replay plus a checkpoint's copy of 3,000 of its 5,000 rows, and not in a byte less."""
    cfg = compose_cfg("train", DEBUG)
    assert (cfg.algo.buffer_size, cfg.algo.total_timesteps, cfg.env.num_envs) == (5000, 3000, 4)
    need = _replay_need(5000, 3000)
    memory(monkeypatch, need)
    V.validate_common(cfg)
    memory(monkeypatch, need - 1)
    with pytest.raises(ConfigError, match=r"^algo\.buffer_size=5,000 needs a standard replay"):
        V.validate_common(cfg)


def test_a_students_replays_are_checked_as_the_job_builds_them(monkeypatch):
    """(x_validate_distill__mutmut_448: the student's budget not read, its replay counted full; 450: an on-demand
    teacher's replay checked even when teacher.checkpoint is given; 481: the scratch baseline's replay looked up
    under another block, never checked)"""
    student = _replay_need(10_000, 1200)  # distill.buffer_size at distill.total_timesteps (debug=fast)
    memory(monkeypatch, student)
    V.validate_distill(compose_cfg("distill", DEBUG))  # the on-demand teacher's replay (5,000 rows) fits too
    given = ["teacher.checkpoint=/runs/t/best.pt"]
    V.validate_distill(compose_cfg("distill", [*DEBUG, *given, "algo.buffer_size=50000"]))  # no teacher replay built
    scratch = _replay_need(5000, 1200)  # the algo block's replay at the student budget
    memory(monkeypatch, scratch - 1)
    with pytest.raises(ConfigError, match=r"^algo\.buffer_size=5,000 needs"):
        V.validate_distill(compose_cfg("distill", [*DEBUG, *given, "baseline=scratch"]))


def test_a_frame_stack_replay_is_counted_whole_whatever_its_budget_fills(monkeypatch):
    """(x__replay_fits__mutmut_58: "FRAME_STACK", a frame-stack replay counted at its filled part; 65: its size
    computed for no kind) a checkpoint copies all of a frame-stack replay, filled or not."""
    cfg = {"algo": {"buffer_size": 1000, "replay": "frame_stack"}}
    envs = [{"id": "ALE/Breakout-v5", "num_envs": 4}]
    need = 2 * replay_nbytes("frame_stack", 1000, (4, 84, 84), "uint8", 4)
    memory(monkeypatch, need)
    V._replay_fits(cfg, "algo", envs, steps=100)
    memory(monkeypatch, need - 1)
    with pytest.raises(ConfigError, match=r"^algo\.buffer_size=1,000 needs a frame_stack replay"):
        V._replay_fits(cfg, "algo", envs, steps=100)


def test_kdrl_data_checks_its_teacher_keys_and_builds_no_teacher_replay(monkeypatch):
    """(x_validate_data__mutmut_6: the algo block's replay checked though kdrl-data builds none; 38: trust_code not
    checked; 49: the teacher looked up under another key, every data job refused)"""
    given = [*DEBUG, "teacher.checkpoint=/runs/t/best.pt"]
    memory(monkeypatch, 1)  # no replay fits: kdrl-data builds none
    V.validate_data(compose_cfg("data", given))
    with pytest.raises(ConfigError, match=r"^teacher\.trust_code must be true or false, got 'yes'$"):
        V.validate_data(compose_cfg("data", [*given, "teacher.trust_code=yes"]))


def test_an_unknown_student_size_is_refused_naming_it_and_the_known_ones():
    """(x__student__mutmut_24: the refused size shown as None)"""
    assert _refusal("distill", ["student.size=huge"]) == (
        "student.size must be null or one of the recipe's student_sizes: full, rusu_25, rusu_7, rusu_4, got 'huge'"
    )


def test_a_value_where_a_block_belongs_is_refused_naming_the_block():
    """(x__get__mutmut_10: the block's name joined by "XX.XX")"""
    with pytest.raises(ConfigError, match=r"^a\.b must be a config block \(a mapping with c, \.\.\.\), got 3$"):
        V._get({"a": {"b": 3}}, "a.b.c")


@pytest.mark.parametrize(
    ("proc_self_cgroup", "files", "limit"),
    [
        (  # cgroup v2 (a SLURM job): the tightest of the job's cgroup and its parents under the root
            "0::/slurm/job_1\n",
            {"sys/fs/cgroup/memory.max": "max", "sys/fs/cgroup/slurm/memory.max": "2147483648",
             "sys/fs/cgroup/slurm/job_1/memory.max": "4294967296"},
            2147483648,
        ),
        (  # cgroup v1 (a container): the memory controller's hierarchy; the root's 2^63-ish means no limit
            "7:cpu,cpuacct:/docker/abc\n5:memory:/docker/abc\n",
            {"sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712",
             "sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes": "1073741824"},
            1073741824,
        ),
        ("0::/\n", {"sys/fs/cgroup/memory.max": "max"}, None),  # no limit set
        (  # a path with a colon (split at the first two only) and a leading X (only "/" stripped)
            "0::/Xvnc.slice/job:1\n",
            {"sys/fs/cgroup/memory.max": "max", "sys/fs/cgroup/Xvnc.slice/job:1/memory.max": "1073741824"},
            1073741824,
        ),
        ("0::/\n", {"sys/fs/cgroup/memory.max": str(2**60)}, None),  # 2^60 and above: no limit
        ("0::/\n", {"sys/fs/cgroup/memory.max": str(2**60 - 1)}, 2**60 - 1),
        (  # v1: only the memory controller's line counts (here co-mounted with another), not the cpu one's
            "7:cpu,cpuacct:/other\n5:memory,hugetlb:/docker/abc\n",
            {"sys/fs/cgroup/memory/other/memory.limit_in_bytes": "1024",
             "sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes": "1073741824"},
            1073741824,
        ),
    ],
)  # fmt: skip
def test_the_memory_cgroups_limit_is_read_from_v2_and_v1_hierarchies(
    tmp_path, monkeypatch, proc_self_cgroup, files, limit
):
    """(x__cgroup_memory_limit__mutmut_8: the line split on spaces; 18: v2 lines not recognised; 22, 33, 36: the
    hierarchy or the file misnamed; 43: the parents between the root and the job's cgroup skipped; 50: ``2 * 60``
    for ``2**60``, every real limit ignored; the room run whole: 11, 12, 14: the line split at every colon or from
    the right; 28-30: the controllers not split at commas, or the memory line skipped; 42: "X" stripped from the
    path; 49: 2**60 taken for a limit) on a file tree made by hand under tmp_path."""
    real_path = V.Path
    for rel, text in {"proc/self/cgroup": proc_self_cgroup, **files}.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text + "\n")
    monkeypatch.setattr(V, "Path", lambda p: real_path(str(tmp_path) + str(p)))
    assert V._cgroup_memory_limit() == limit


# ---- a fresh sample of 200 (seed 2, drawn after the tests above) ----------------------------------------------------
def test_a_budget_the_recipe_lacks_and_an_unset_value_are_named_before_resolving():
    """(x_resolved__mutmut_3, 27: the budget looked for under another key, OmegaConf's interpolation error instead;
    38: ``throw_on_missing=False``, an unset ??? passed on as the string "???")"""
    with pytest.raises(ConfigError, match=r"^budget must be one of cpu, gpu, paper, got 'nope'$"):
        V.resolved(compose_cfg("train", [*DEBUG, "budget=nope"]))
    with pytest.raises(ConfigError, match=r"^a\.b has no value \(\?\?\?\): give it one, e\.g\. a\.b=<value>$"):
        V.resolved(OmegaConf.create({"a": {"b": "???"}, "c": 1}))


def test_a_student_sizes_conv_keys_are_checked_though_it_sets_only_some():
    """(x__net__mutmut_40: ``and``, a recipe's student size with a malformed conv key accepted)"""
    with pytest.raises(ConfigError, match=r"^s\.channels must be a non-empty list of integers >= 1, got 'x'$"):
        V._net({"s": {"channels": "x"}}, "s", partial=True)
    V._net({"s": {"channels": [16]}}, "s", partial=True)  # only the keys it sets


def test_a_replay_size_that_is_not_a_positive_integer_is_left_to_its_own_rule(monkeypatch):
    """(x__replay_fits__mutmut_11: ``and``, a non-integer buffer size compared with 1: a TypeError) the buffer size's
    own rule names it; the memory check skips it."""
    memory(monkeypatch, 1)
    envs = [{"id": "CartPole-v1", "num_envs": 1}]
    for bad in ("many", 0, -3):
        V._replay_fits({"algo": {"buffer_size": bad, "replay": "standard"}}, "algo", envs)


def test_an_on_demand_teacher_and_the_student_replays_at_their_budgets_and_without_a_pretrain_block(monkeypatch):
    """(x_validate_distill__mutmut_467: the on-demand teacher's budget not read, its replay counted full; 505: the
    student's replay looked up under another block, never checked; 492: a config without distill.pretrain, a
    TypeError)"""
    student = _replay_need(10_000, 1200)
    teacher = _replay_need(8000, 3000)  # an 8,000-row teacher replay at 3,000 env steps: fits beside the student's
    assert teacher <= student < _replay_need(8000, None)
    memory(monkeypatch, student)
    V.validate_distill(compose_cfg("distill", [*DEBUG, "algo.buffer_size=8000"]))
    V.validate_distill(compose_cfg("distill", [*DEBUG, "~distill.pretrain"]))
    memory(monkeypatch, student - 1)
    with pytest.raises(ConfigError, match=r"^distill\.buffer_size=10,000 needs"):
        V.validate_distill(compose_cfg("distill", [*DEBUG, "teacher.checkpoint=/runs/t/best.pt"]))


def test_a_multitask_students_replays_are_checked_at_the_part_each_tasks_budget_fills(monkeypatch):
    """(x_validate_multitask__mutmut_405: the per-task budget not read, every replay counted full) one replay per
    task (CartPole's 4 floats and Acrobot's 6, one env each, 2,000 rows, 1,200 env steps per task under debug=fast):
    exactly their sum fits, a byte less does not."""
    cfg = compose_cfg("multitask", DEBUG)
    assert (list(cfg.tasks), cfg.multitask.buffer_size, cfg.multitask.steps_per_task) == (
        ["cartpole", "acrobot"],
        2000,
        1200,
    )
    need = _replay_need(2000, 1200, shape=(4,), n=1) + _replay_need(2000, 1200, shape=(6,), n=1)
    memory(monkeypatch, need)
    V.validate_multitask(cfg)
    memory(monkeypatch, need - 1)
    with pytest.raises(ConfigError, match=r"^multitask\.buffer_size=2,000 needs 2 standard replays, one per task"):
        V.validate_multitask(cfg)


# ---- the rest of the room, run whole (2026-12-06): every mutant the two samples had not drawn ----------------------
@functools.cache
def _debug_config(app: str) -> dict:
    """``app``'s debug=fast config, resolved once (validation of a plain dict is milliseconds)."""
    extra = ["teacher.checkpoint=/runs/t/best.pt"] if app == "data" else []
    return V.resolved(compose_cfg(app, [*DEBUG, *extra]))


DROP = object()  # (in _refusal_of's changes) remove the key
VALIDATORS = {"train": V.validate_common, "distill": V.validate_distill, "data": V.validate_data,
              "multitask": V.validate_multitask}  # fmt: skip


def _refusal_of(app: str, changes: dict) -> str | None:
    """The one-line refusal of ``app``'s debug config with ``changes`` (dotted key: value; a value of DROP removes
    the key) set after resolving, or None where it is accepted."""
    cfg = copy.deepcopy(_debug_config(app))
    for key, value in changes.items():
        *blocks, leaf = key.split(".")
        node = cfg
        for block in blocks:
            node = node[block]
        if value is DROP:
            del node[leaf]
        else:
            node[leaf] = value
    try:
        VALIDATORS[app](cfg)
    except ConfigError as e:
        return str(e)
    return None


def test_an_unresolvable_interpolation_is_named_at_its_root_with_the_first_line_of_why():
    """(x__unresolvable__mutmut_16-19: the why split wrongly or dropped; 24, 25: the failing keys compared wrongly,
    the key that reads a failing one named instead of its root; 33, 36, 37: an error without a full_key, or its
    fallback misspelt) ``a: ${b}`` fails because ``b: ${no.such}`` does: b is named."""
    with pytest.raises(ConfigError) as err:
        V.resolved(OmegaConf.create({"a": "${b}", "b": "${no.such}"}))
    assert str(err.value) == "b = ${no.such} cannot be resolved: Interpolation key 'no.such' not found"
    assert str(V._unresolvable(OmegaConf.create({"a": 1}), Exception("x\ny"))) == "the config cannot be resolved: x"


def test_an_unset_value_in_a_list_is_named_by_its_index():
    """(x__leaf_nodes__mutmut_3, 5: lists not walked)"""
    with pytest.raises(ConfigError, match=r"^a\.1 has no value \(\?\?\?\): give it one, e\.g\. a\.1=<value>$"):
        V.resolved(OmegaConf.create({"a": [1, "???"]}))


def test_interpolation_references_of_resolvers_and_nested_keys():
    """(x_interpolation_references__mutmut_15: a colon in oc.select's default taken for the resolver's; 19, 26: any
    resolver's first argument read as a key; 27: a key made only of a nested interpolation matching every key; 28:
    "X" stripped from keys)"""
    (url,) = V.interpolation_references("${oc.select:a.b,'http://x'}")
    assert url.fullmatch("a.b")
    assert V.interpolation_references("${oc.env:KDRL_X}") == []
    (nested,) = V.interpolation_references("${${a}}")  # the key a's value names: only `a` is known to be read
    assert nested.fullmatch("a") and not nested.fullmatch("b")
    (x,) = V.interpolation_references("${X}")
    assert x.fullmatch("X") and x.fullmatch("X.y")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"dataset.steps": 0}, "dataset.steps must be an integer >= 1, got 0"),
        ({"dataset.steps": 1}, None),
        ({"dataset.epsilon": 1.5}, "dataset.epsilon must be in [0.0, 1.0], got 1.5"),
        ({"dataset.epsilon": 1.0}, None),
        ({"teacher.checkpoint": " "}, "teacher.checkpoint must be null or a non-empty string, got ' '"),
    ],
)
def test_kdrl_data_refuses_a_dataset_it_cannot_record(changes, message):
    """(x_validate_data__mutmut_8, 14-17: the steps' rule given no config, a misspelt key or 2 for 1; 25-29: the
    epsilon's rule likewise, or 2.0 for 1.0; 35, 36: the teacher file's rule)"""
    assert _refusal_of("data", changes) == message


HYBRID = {  # conf/loss/hybrid.yaml, resolved
    "loss.td": {"_target_": "kdrl.td.TDTerm", "gamma": 0.99, "td_loss": "huber", "double_dqn": True},
    "loss.distill_weight": {"_target_": "kdrl.losses.LambdaSchedule", "kind": "linear", "value": 1.0, "end": 0.0,
                            "decay_steps": 20000},
}  # fmt: skip
CONV = {"channels": [4], "kernels": [3], "strides": [1]}
SKIP = object()  # (a rule row) no accepted value to check
OPT = "in (0.0, 10.0]"
UNIT = "in [0.0, 1.0]"
INT0, INT1 = "an integer >= 0", "an integer >= 1"
BOOL, TEXT, BLOCK = "true or false", "a non-empty string", "a mapping ({name: value, ...})"
# (app, context, key, a value refused, the rule the refusal states, a value accepted at the rule's edge): every
# key-value rule the validators state, refused just past its edge ("<key> must be <rule>, got <value>") and
# accepted on it, in the debug=fast config of the app that reads it (context: other keys set first).
RULES = [
    # the root keys every app shares (_run_keys)
    ("train", {}, "budget", "laptop", "one of cpu, gpu, paper", "paper"),
    ("train", {}, "seed", -1, INT0, 0),
    ("train", {}, "torch_threads", 0, INT1, 1),
    ("train", {}, "log_interval", 0, INT1, 1),
    ("train", {}, "resume", "yes", BOOL, False),
    ("train", {}, "skip_completed", 1, BOOL, False),
    ("train", {}, "eval.freq", 0, INT1, 1),
    ("train", {}, "eval.episodes", 0, INT1, 1),
    ("train", {"eval.reference_episodes": 1}, "eval.final_episodes", 0, INT1, 1),
    ("train", {}, "eval.reference_episodes", 0, INT1, 3),
    ("train", {}, "eval.seed", -1, INT0, 0),
    ("train", {}, "eval.final_seed", -1, INT0, 0),
    ("train", {}, "eval.final_policy", "first", "one of best, last", "last"),
    ("train", {}, "eval.epsilon", 1.01, UNIT, 1.0),
    ("train", {}, "eval.epsilon", -0.01, UNIT, 0.0),
    ("train", {}, "eval.stop_at_return", math.nan, "null or a number", None),
    ("train", {}, "eval.stop_at_return", "high", "null or a number", -1.5),
    ("train", {}, "checkpoint.keep_last", 0, INT1, 1),
    ("train", {}, "logger.csv", "no", BOOL, False),
    ("train", {}, "logger.tensorboard", 0, BOOL, True),
    ("train", {}, "logger.wandb", "onlin", "one of offline, online, disabled", "online"),
    ("train", {}, "wandb.project", " ", TEXT, "p"),
    ("train", {}, "wandb.tags", "a", "null or a list of strings", None),
    ("train", {}, "wandb.tags", [1], "null or a list of strings", ["a"]),
    ("train", {}, "trainer", 3, BLOCK, {}),
    ("train", {}, "trainer.enable_progress_bar", "no", BOOL, True),
    # the env (_env) and the recipe's family (_recipe_fits_env)
    ("train", {}, "env.id", "", TEXT, SKIP),
    ("train", {}, "env.num_envs", 0, INT1, 1),
    ("train", {}, "env.vectorization", "ray", "one of sync, async, envpool", "async"),
    ("train", {}, "env.actor", "thread", "one of inline, process, None", None),
    ("train", {}, "env.kwargs", 3, BLOCK, SKIP),
    (
        "train",
        {},
        "env.perturbations",
        [{"physics": {}}],
        "a list of {name: ..., physics/obs_noise/kwargs: ...} entries",
        None,
    ),
    (
        "train",
        {},
        "env.perturbations",
        "long_pole",
        "a list of {name: ..., physics/obs_noise/kwargs: ...} entries",
        [{"name": "p"}],
    ),
    ("train", {}, "env_family", "mujoco", "one of gym, minatar, atari", SKIP),
    ("train", {}, "recipe_for", 3, "null or " + BLOCK, None),
    ("train", {}, "recipe_for.name", "", TEXT, SKIP),
    (
        "train",
        {},
        "recipe_for.families",
        [],
        "a non-empty list of env families (gym, minatar, atari)",
        ["atari", "gym"],
    ),
    (
        "train",
        {},
        "recipe_for.families",
        ["gym", "mujoco"],
        "a non-empty list of env families (gym, minatar, atari)",
        SKIP,
    ),
    # the teacher's DQN block (_dqn_block, _exploration, _optimizer)
    ("train", {}, "algo.total_timesteps", 0, INT1, SKIP),
    ("train", {}, "algo.buffer_size", 0, INT1, SKIP),
    ("train", {"algo.learning_starts": 0}, "algo.batch_size", 0, INT1, 1),
    ("train", {}, "algo.train_freq", 0, INT1, 1),
    ("train", {}, "algo.gradient_steps", 0, INT1, 1),
    ("train", {}, "algo.target_update_interval", 0, INT1, 1),
    ("train", {}, "algo.learning_starts", -1, INT0, 0),
    ("train", {}, "algo.n_step", 0, INT1, 1),
    ("train", {}, "algo.gamma", 1.01, UNIT, 1.0),
    ("train", {}, "algo.gamma", -0.01, UNIT, 0.0),
    ("train", {}, "algo.tau", 0.0, "in (0.0, 1.0]", 1e-3),
    ("train", {}, "algo.tau", 1.01, "in (0.0, 1.0]", 1.0),
    ("train", {}, "algo.td_loss", "l1", "one of huber, mse", "mse"),
    ("train", {}, "algo.double_dqn", "y", BOOL, False),
    ("train", {}, "algo.reward_clip", "n", BOOL, True),
    ("train", {}, "algo.max_grad_norm", 0, "null or a number > 0", None),
    ("train", {}, "algo.max_grad_norm", math.inf, "null or a number > 0", 1e-6),
    ("train", {}, "algo.replay", "per", "one of auto, standard, frame_stack", "standard"),
    ("train", {}, "algo.exploration.eps_start", 1.5, UNIT, 1.0),
    ("train", {}, "algo.exploration.eps_end", -0.1, UNIT, 0.0),
    ("train", {}, "algo.exploration.decay_steps", -1, INT0, 0),
    ("train", {}, "algo.exploration.delay_steps", -1, INT0, 0),
    ("train", {}, "algo.optimizer.lr", 0, OPT, 10.0),
    ("train", {}, "algo.optimizer.lr", 10.5, OPT, 1e-9),
    ("train", {}, "algo.optimizer.name", "lion", "one of adam, adamw, rmsprop, sgd", "sgd"),
    ("train", {}, "algo.optimizer.eps", 0, "null or a number > 0", 1e-8),
    ("train", {}, "algo.optimizer.alpha", 1.5, "null or " + UNIT, 1.0),
    ("train", {}, "algo.optimizer.momentum", -0.1, "null or " + UNIT, None),
    ("train", {}, "algo.optimizer.weight_decay", 1.5, "null or " + UNIT, 0.0),
    ("train", {}, "algo.optimizer.centered", "y", "null or true or false", None),
    ("train", {}, "algo.optimizer.fused", "y", BOOL, False),
    # the teacher's net (_net)
    ("train", {}, "net._target_", " ", TEXT, SKIP),
    ("train", {}, "net.width", 0, INT1, 1),
    ("train", {}, "net.depth", 0, INT1, 1),
    ("train", {}, "net.dueling", "y", BOOL, True),
    ("train", {}, "net.hidden", [], "null or a non-empty list of integers >= 1", [1]),
    ("train", {}, "net.hidden", [0], "null or a non-empty list of integers >= 1", None),
    ("train", {"net.kernels": [3], "net.strides": [1]}, "net.channels", [], "a non-empty list of integers >= 1", [4]),
    ("train", {"net.channels": [4]}, "net.kernels", None, "a non-empty list of integers >= 1", SKIP),
    ("train", {}, "net.width_mult", 0, "a number > 0", 0.25),
    ("train", {}, "net.obs_scale", -1.0, "a number > 0", 1 / 255),
    # kdrl-distill's student run (validate_distill)
    ("distill", {}, "distill.total_timesteps", 0, INT1, SKIP),
    ("distill", {}, "distill.buffer_size", 0, INT1, SKIP),
    ("distill", {"distill.learning_starts": 0}, "distill.batch_size", 0, INT1, 1),
    ("distill", {}, "distill.train_freq", 0, INT1, 1),
    ("distill", {}, "distill.gradient_steps", 0, INT1, 1),
    ("distill", {}, "distill.learning_starts", -1, INT0, 0),
    ("distill", {}, "distill.n_step", 0, INT1, 1),
    ("distill", {}, "distill.target_update_interval", 0, INT1, 1),
    ("distill", {}, "distill.gamma", 1.01, UNIT, 1.0),
    ("distill", {}, "distill.gamma", -0.01, UNIT, 0.0),
    ("distill", {}, "distill.tau", 0.0, "in (0.0, 1.0]", 1.0),
    ("distill", {}, "distill.td_loss", "l1", "one of huber, mse", "mse"),
    ("distill", {}, "distill.double_dqn", "y", BOOL, False),
    ("distill", {}, "distill.reward_clip", "n", BOOL, True),
    ("distill", {}, "distill.max_grad_norm", 0, "null or a number > 0", None),
    ("distill", {}, "distill.replay", "per", "one of auto, standard, frame_stack", "standard"),
    ("distill", {}, "distill.optimizer.lr", 0, OPT, 10.0),
    ("distill", {}, "distill.pretrain.teacher_steps", -1, INT0, 0),
    ("distill", {}, "distill.pretrain.updates", -1, INT0, 0),
    ("distill", {}, "distill.pretrain.epsilon", 1.5, UNIT, 1.0),
    ("distill", {}, "distill.pretrain.epsilon", -0.5, UNIT, 0.0),
    ("distill", {}, "distill.prune.amount", 1.0, "in [0, 1)", 0.0),
    ("distill", {}, "distill.prune.at", -0.1, "in [0, 1)", 0.99),
    ("distill", {}, "distill.quantize.at", "half", "in [0, 1)", 0.0),
    ("distill", {}, "distill.quantize.int8", "y", BOOL, True),
    ("distill", {}, "baseline", "teacher", "one of None, scratch", "scratch"),
    ("distill", {}, "student.width", 0, "null or " + INT1, 1),
    ("distill", {}, "student.depth", 0, "null or " + INT1, None),
    ("distill", {}, "student.hidden", [0], "null or a non-empty list of integers >= 1", [1]),
    ("distill", {"student.size": "rusu_7"}, "student_sizes.rusu_7", 3, BLOCK, {}),
    ("distill", {"student.size": "rusu_7"}, "student_sizes.rusu_7.width", 0, INT1, 1),
    ("distill", {}, "teacher.checkpoint", "", "null or " + TEXT, "t.pt"),
    ("distill", {}, "teacher.seed", -1, INT0, 0),
    ("distill", {}, "teacher.seed_from_student", "y", BOOL, True),
    ("distill", {}, "teacher.overrides", [1], "a list of strings", ["algo.gamma=0.9"]),
    ("distill", {}, "teacher.cache_dir", "", TEXT, "c"),
    ("distill", {}, "teacher.trust_code", "y", BOOL, True),
    ("distill", {}, "control", "both", "one of teacher, student, mixed", "mixed"),
    ("distill", {}, "distill.dataset", " ", "null or a path", "d.npz"),
    ("distill", {}, "loss.name", "", TEXT, "n"),
    ("distill", {}, "loss.kind", "l1", "one of mse, kl, ce, nll", "nll"),
    ("distill", {}, "loss.temperature", 0, "in (0.0, inf]", math.inf),
    ("distill", {}, "loss.student_temperature", 0, "null or in (0.0, inf]", 1e-9),
    ("distill", {}, "loss.tau_squared", "y", BOOL, False),
    ("distill", {}, "loss.feature_weight", -1, "a number >= 0", 0),
    ("distill", {}, "loss.feature_weight", math.inf, "a number >= 0", None),
    ("distill", {"loss.distill_weight": HYBRID["loss.distill_weight"]}, "loss.td", 3, "null or " + BLOCK, SKIP),
    ("distill", {"loss.td": HYBRID["loss.td"]}, "loss.distill_weight", 3, "null or " + BLOCK, SKIP),
    ("distill", HYBRID, "loss.distill_weight.kind", "cosine", "one of constant, linear, qdagger", "qdagger"),
    ("distill", HYBRID, "loss.distill_weight.value", 1.5, UNIT, 0.0),
    ("distill", HYBRID, "loss.distill_weight.end", -0.5, UNIT, 1.0),
    ("distill", HYBRID, "loss.distill_weight.decay_steps", -1, INT0, 0),
    ("distill", HYBRID, "loss.td.gamma", 1.5, UNIT, 1.0),
    ("distill", HYBRID, "loss.td.td_loss", "l1", "one of huber, mse", "mse"),
    ("distill", HYBRID, "loss.td.double_dqn", "y", BOOL, False),
    ("distill", {}, "distill.exploration.eps_start", 1.5, UNIT, 1.0),
    ("distill", {}, "distill.exploration.decay_steps", -1, INT0, 0),
    ("distill", {}, "distill.mixed.beta_start", 1.5, UNIT, 1.0),
    ("distill", {}, "distill.mixed.beta_end", -0.5, UNIT, 0.0),
    ("distill", {}, "distill.mixed.decay_steps", -1, INT0, 0),
    ("distill", {}, "eval.generalisation_episodes", 0, INT1, 1),
    ("distill", {}, "eval.agreement_states", 0, INT1, 1),
    # kdrl-multitask (validate_multitask)
    ("multitask", {}, "tasks", [], "a non-empty list of distinct env presets", ["cartpole"]),
    ("multitask", {}, "tasks", ["cartpole", "cartpole"], "a non-empty list of distinct env presets", SKIP),
    ("multitask", {}, "tasks", ["cartpole", 3], "a non-empty list of distinct env presets", SKIP),
    ("multitask", {}, "mode", "both", "one of distill, joint_dqn", "joint_dqn"),
    ("multitask", {}, "teacher.checkpoints", 5, "null or " + BLOCK, {"cartpole": "a.pt", "acrobot": None}),
    (
        "multitask",
        {"teacher.checkpoints": {"acrobot": None}},
        "teacher.checkpoints.acrobot",
        "",
        "null or " + TEXT,
        "a.pt",
    ),
    ("multitask", {}, "teacher.seed", -1, INT0, 0),
    ("multitask", {}, "teacher.overrides", [1], "a list of strings", ["a=1"]),
    ("multitask", {}, "teacher.cache_dir", "", TEXT, "c"),
    ("multitask", {}, "teacher.trust_code", "no", BOOL, True),
    ("multitask", {}, "student.conv", 3, "null or " + BLOCK, SKIP),
    ("multitask", {}, "student.width", 0, INT1, 1),
    ("multitask", {}, "student.depth", 0, INT1, 1),
    ("multitask", {"student.conv": CONV}, "student.depth", -1, INT0, 0),
    ("multitask", {"student.conv": CONV}, "student.conv.kernels", [0], "a non-empty list of integers >= 1", [1]),
    (
        "multitask",
        {},
        "student.conv",
        {**CONV, "channels": [4, 4]},
        "{channels, kernels, strides}: non-empty lists of equal length",
        SKIP,
    ),
    ("multitask", {}, "student.adapter", "conv", "one of linear, pad", "pad"),
    ("multitask", {}, "student.obs_scale", 0, "a number > 0", 1e-3),
    ("multitask", {}, "multitask.steps_per_task", 0, INT1, SKIP),
    ("multitask", {}, "multitask.buffer_size", 0, INT1, SKIP),
    ("multitask", {}, "multitask.batch_size", 0, INT1, 1),
    ("multitask", {}, "multitask.train_freq", 0, INT1, 1),
    ("multitask", {}, "multitask.gradient_steps", 0, INT1, 1),
    ("multitask", {}, "multitask.learning_starts", -1, INT0, 0),
    ("multitask", {}, "multitask.buffer_size", 31, ">= multitask.batch_size (32)", 32),
    ("multitask", {}, "multitask.num_envs", 0, "null or an integer >= 1", 1),
    ("multitask", {}, "multitask.update", "x", "one of interleave, sum", "sum"),
    ("multitask", {}, "multitask.max_grad_norm", 0, "null or a number > 0", None),
    ("multitask", {}, "multitask.replay", "prioritized", "one of auto, standard, frame_stack", "standard"),
    ("multitask", {}, "multitask.reward_clip", 1, BOOL, True),
    ("multitask", {}, "multitask.optimizer.lr", 0, OPT, 10.0),
    ("multitask", {}, "distill.exploration.eps_start", 2, UNIT, 0.0),
    ("multitask", {"mode": "joint_dqn"}, "dqn.gamma", 1.5, UNIT, 1.0),
    ("multitask", {}, "loss.temperature", 0, "in (0.0, inf]", 1.0),
]


@pytest.mark.parametrize(
    ("app", "context", "key", "refused", "rule", "accepted"), RULES, ids=[f"{r[0]}:{r[2]}={r[3]!r}" for r in RULES]
)
def test_every_rule_refuses_a_value_past_its_edge_in_one_line_and_accepts_the_edge(
    app, context, key, refused, rule, accepted
):
    """Each key's rule, as each app states it: a misspelt key, a wrong edge, a closed bound opened or a message that
    does not say which key and why makes one of these fail (the validation room, run whole)."""
    assert _refusal_of(app, {**context, key: refused}) == f"{key} must be {rule}, got {refused!r}"
    if accepted is not SKIP:
        assert _refusal_of(app, {**context, key: accepted}) is None


NO_UPDATE = "leave no update within {b}.total_timesteps ({t}): lower them or raise the budget"
SMALL = "the replay must hold at least one batch of distinct transitions"
# (app, changes, the refusal or None): the rules that read two keys or more, refused and accepted at their edges
JOINT = [
    ("train", {"eval.reference_episodes": 2}, "eval.reference_episodes (2) must be >= eval.final_episodes (3): the "
     "teacher reference covers the students' final held-out episodes"),
    ("train", {"eval.reference_episodes": 3}, None),
    ("train", {"algo.buffer_size": 63}, f"algo.buffer_size (63) is smaller than one batch (algo.batch_size = 64): {SMALL}"),
    ("train", {"algo.buffer_size": 64}, None),
    ("train", {"algo.learning_starts": 3000},
     "algo.learning_starts (3000) and algo.batch_size (64) " + NO_UPDATE.format(b="algo", t=3000)),
    ("train", {"algo.learning_starts": 2999}, None),
    ("train", {"algo.learning_starts": 0, "algo.batch_size": 3000},
     "algo.learning_starts (0) and algo.batch_size (3000) " + NO_UPDATE.format(b="algo", t=3000)),
    ("train", {"algo.learning_starts": 0, "algo.batch_size": 2999}, None),
    ("train", {"recipe_for": {"name": "minatar_fast", "families": ["minatar", "atari"]}},
     "recipe=minatar_fast is made for minatar and atari envs, but the env (CartPole-v1) is a gym env: recipes for gym "
     "envs: acrobot, cartpole, lunarlander (or leave recipe= out: each env picks its own)"),
    ("train", {"recipe_for": {"name": "any", "families": ["minatar", "gym"]}}, None),
    ("train", {"net.channels": None, "net.kernels": None, "net.strides": None}, None),  # null: no conv stack
    ("train", {"net.channels": [4, 4], "net.kernels": [3], "net.strides": [1]},
     "net.channels must be as long as net.kernels and net.strides, got [[4, 4], [3], [1]]"),
    ("distill", {"distill.buffer_size": 127},
     f"distill.buffer_size (127) is smaller than one batch (distill.batch_size = 128): {SMALL}"),
    ("distill", {"distill.buffer_size": 128}, None),
    ("distill", {"distill.learning_starts": 1200},
     "distill.learning_starts (1200) and distill.batch_size (128) " + NO_UPDATE.format(b="distill", t=1200)),
    ("distill", {"distill.learning_starts": 1199}, None),
    ("distill", {"distill.prune.amount": 0.5, "baseline": "scratch"},
     "distill.prune prunes a distilled student: not for baseline=scratch"),
    ("distill", {"distill.prune.amount": 0.5}, None),
    ("distill", {"distill.quantize.int8": True, "baseline": "scratch"},
     "distill.quantize fine-tunes a distilled student on int8 weights: not for baseline=scratch"),
    ("distill", {"distill.pretrain.updates": 10},
     "distill.pretrain.updates needs teacher data: set distill.pretrain.teacher_steps > 0"),
    ("distill", {"distill.pretrain.updates": 10, "distill.pretrain.teacher_steps": 1}, None),
    ("distill", {"distill.pretrain.updates": 10, "distill.pretrain.teacher_steps": 100, "baseline": "scratch"},
     "distill.pretrain is QDagger's offline phase on teacher data: not for baseline=scratch"),
    ("distill", {"distill.pretrain.teacher_steps": 100, "baseline": "scratch"}, None),  # no offline updates: no phase
    ("distill", {"distill.dataset": "d.npz", "distill.pretrain.updates": 10, "distill.pretrain.teacher_steps": 100},
     "distill.dataset and distill.pretrain (QDagger's own teacher data) do not combine"),
    ("distill", {"distill.dataset": "d.npz", "distill.pretrain.updates": 1, "distill.pretrain.teacher_steps": 1},
     "distill.dataset and distill.pretrain (QDagger's own teacher data) do not combine"),
    ("distill", {"student.size": "rusu_7", "student_sizes": DROP},
     "student.size must be null or one of the recipe's student_sizes: none defined, got 'rusu_7'"),
    ("distill", {"student.size": "rusu_7", "student_sizes.rusu_7": {"width": 64, "channels": [4]}}, None),
    ("distill", {"student.size": "rusu_7", "student_sizes": {}},
     "student.size must be null or one of the recipe's student_sizes: none defined, got 'rusu_7'"),
    ("distill", {"loss.td": HYBRID["loss.td"]}, "loss.td and loss.distill_weight go together (a hybrid loss: L_TD + "
     "lambda * L_distill): set both (loss=hybrid) or neither"),
    ("distill", HYBRID, None),
    ("multitask", {"teacher.checkpoints": {"pong": "x.pt", "cartpole": "a.pt", "atari": None}},
     "teacher.checkpoints must be keyed by task names ['cartpole', 'acrobot'], got ['atari', 'pong']"),
    ("multitask", {"loss.feature_weight": 0.5},
     "loss must be a plain distillation loss (hybrid and feature losses are single-task only), got 'kl'"),
    ("multitask", HYBRID,
     "loss must be a plain distillation loss (hybrid and feature losses are single-task only), got 'kl'"),
    ("multitask", {"loss.feature_weight": None}, None),
    ("multitask", {"mode": "joint_dqn", "loss.feature_weight": 0.5}, None),  # a joint DQN has no distillation loss
]  # fmt: skip


@pytest.mark.parametrize(("app", "changes", "message"), JOINT, ids=[f"{r[0]}:{r[1]}"[:60] for r in JOINT])
def test_every_rule_across_keys_refuses_past_its_edge_and_accepts_the_edge(app, changes, message):
    assert _refusal_of(app, changes) == message


def test_unknown_tasks_are_refused_naming_them_and_the_presets():
    """(x_validate_multitask__mutmut_36, 49, 50: the unknown tasks or the presets' list misshown)"""
    message = _refusal_of("multitask", {"tasks": ["cartpole", "nope", "zz"]})
    assert message.startswith("tasks must be env presets (conf/env: acrobot, atari_breakout, ")
    assert ", cartpole, lunarlander, " in message and message.endswith("), got ['nope', 'zz']")


def test_an_on_demand_teachers_replay_is_refused_where_the_students_fits(monkeypatch):
    """(x_validate_distill__mutmut_457, 458: the on-demand teacher's replay checked on no config or block)"""
    memory(monkeypatch, _replay_need(10_000, 1200))  # the student's replay fits exactly
    assert _refusal_of("distill", {"algo.buffer_size": 1_000_000}).startswith(
        "algo.buffer_size=1,000,000 needs a standard replay of "
    )
    assert _refusal_of("distill", {"algo.buffer_size": 1_000_000, "teacher.checkpoint": "t.pt"}) is None


def _stacked(monkeypatch):
    """Every env probed as Atari's: 4 stacked 84x84 uint8 frames (no emulator started)."""
    from types import SimpleNamespace

    monkeypatch.setattr(V, "_spec_of", lambda env: SimpleNamespace(obs_shape=(4, 84, 84), obs_dtype="uint8"))


def test_a_multitask_frame_stack_replay_is_counted_at_the_runs_num_envs(monkeypatch):
    """(x_validate_multitask__mutmut_392: every task's replay counted at one env) a frame-stack replay keeps a few
    frames per env beyond its capacity, so 3 envs need more than 1: exactly the need at 3 fits, a byte less not."""
    _stacked(monkeypatch)
    need = 2 * 2 * replay_nbytes("frame_stack", 2000, (4, 84, 84), "uint8", 3)  # 2 tasks, each with its copy
    assert need > 2 * 2 * replay_nbytes("frame_stack", 2000, (4, 84, 84), "uint8", 1)
    changes = {"tasks": ["atari_breakout", "atari_pong"], "multitask.num_envs": 3}
    memory(monkeypatch, need)
    assert _refusal_of("multitask", changes) is None
    memory(monkeypatch, need - 1)
    assert _refusal_of("multitask", changes).startswith("multitask.buffer_size=2,000 needs 2 frame_stack replays")


def test_a_scratch_baselines_replay_is_counted_at_the_student_budget(monkeypatch):
    """(x_validate_distill__mutmut_476, 480: the scratch baseline's replay counted full) the algo block's 5,000 rows,
    of which the student budget's 1,200 env steps fill 1,200: exactly that fits."""
    memory(monkeypatch, _replay_need(5000, 1200))
    assert _refusal_of("distill", {"baseline": "scratch", "teacher.checkpoint": "t.pt"}) is None


def test_a_students_replay_holds_qdaggers_teacher_steps_too(monkeypatch):
    """(x_validate_distill__mutmut_483-496: the offline phase's teacher steps not added to the student's budget, or
    subtracted) distill.pretrain.teacher_steps=1,000 go into the student's replay before its 1,200 env steps."""
    changes = {"distill.pretrain.teacher_steps": 1000, "teacher.checkpoint": "t.pt"}
    memory(monkeypatch, _replay_need(10_000, 2200))
    assert _refusal_of("distill", changes) is None
    memory(monkeypatch, _replay_need(10_000, 2200) - 1)
    assert _refusal_of("distill", changes).startswith("distill.buffer_size=10,000 needs")


def test_the_available_memory_is_meminfos_in_bytes_or_the_pages_or_none(tmp_path, monkeypatch):
    """(x_available_memory__mutmut_13: kB read as 1,025 bytes; 35: min() of nothing, a ValueError where nothing can
    be read) MemAvailable is in kB; without /proc/meminfo the available pages count; with neither, None."""
    import os

    real_path = V.Path
    (tmp_path / "proc").mkdir()
    monkeypatch.setattr(V, "Path", lambda p: real_path(str(tmp_path) + str(p)))
    monkeypatch.setattr(V, "_cgroup_memory_limit", lambda: None)
    (tmp_path / "proc" / "meminfo").write_text("MemTotal:  4000 kB\nMemAvailable:  1000 kB\n")
    assert V.available_memory() == (1_024_000, "MemAvailable in /proc/meminfo")
    (tmp_path / "proc" / "meminfo").unlink()
    monkeypatch.setattr(os, "sysconf", lambda name: {"SC_AVPHYS_PAGES": 3, "SC_PAGE_SIZE": 4096}[name])
    assert V.available_memory() == (3 * 4096, "available physical pages")

    def no_sysconf(name):
        raise OSError(name)

    monkeypatch.setattr(os, "sysconf", no_sysconf)
    assert V.available_memory() is None


def test_a_recipe_for_a_family_no_recipe_fits_says_none(monkeypatch):
    """(x__recipe_fits_env__mutmut_83, 84: "none" misspelt)"""
    monkeypatch.setattr(V, "recipes_for", lambda family: [])
    assert _refusal_of("train", {"recipe_for": {"name": "r", "families": ["atari"]}}) == (
        "recipe=r is made for atari envs, but the env (CartPole-v1) is a gym env: recipes for gym envs: none (or "
        "leave recipe= out: each env picks its own)"
    )


def test_the_replay_check_edges_a_one_row_buffer_one_env_and_a_replay_kind_not_given(monkeypatch):
    """(x__replay_fits__mutmut_10: a replay kind that is not a string checked anyway; 14, 15: a one-row buffer
    skipped; 28, 30, 38: one env, or an unset num_envs, counted as two or a TypeError; 52: ``auto`` resolved without
    the dtype; 94: the largest fitting buffer searched from 1) a frame-stack replay of one env needs exactly its bytes
    twice, filled or not."""
    _stacked(monkeypatch)
    envs = [{"id": "ALE/Pong-v5", "num_envs": 1}]
    need = 2 * replay_nbytes("frame_stack", 1000, (4, 84, 84), "uint8", 1)
    memory(monkeypatch, need)
    V._replay_fits({"algo": {"buffer_size": 1000, "replay": "frame_stack"}}, "algo", envs)
    V._replay_fits({"algo": {"buffer_size": 1000, "replay": "auto"}}, "algo", envs, steps=10)  # stacked: counted whole
    V._replay_fits({"algo": {"buffer_size": 1000, "replay": "frame_stack"}}, "algo", [{**envs[0], "num_envs": None}])
    memory(monkeypatch, 1)
    with pytest.raises(ConfigError) as err:  # not even one row fits: no "about N fit"
        V._replay_fits({"algo": {"buffer_size": 1, "replay": "frame_stack"}}, "algo", envs)
    assert str(err.value).startswith("algo.buffer_size=1 needs a frame_stack replay")
    assert str(err.value).endswith("this machine has (test memory): lower algo.buffer_size")
    V._replay_fits({"algo": {"buffer_size": 1000, "replay": None}}, "algo", envs)  # left to algo.replay's rule


def test_a_standard_replay_its_budget_overfills_is_counted_once_over(monkeypatch):
    """(x__replay_fits__mutmut_84: a checkpoint's copy counted as up to twice the replay) 10x the capacity in env
    steps fills the replay once: the replay and one copy."""
    envs = [{"id": "CartPole-v1", "num_envs": 1}]
    memory(monkeypatch, 2 * replay_nbytes("standard", 1000, (4,), "float32", 1))
    V._replay_fits({"algo": {"buffer_size": 1000, "replay": "standard"}}, "algo", envs, steps=10_000)


def test_the_replay_refusal_word_for_word_with_the_largest_buffer_that_fits(monkeypatch):
    """(x__replay_fits__mutmut_106, 108: the search for the largest fitting buffer off by one or skipping; 129, 138:
    the refused size for no kind or one env; 146: "each frame once" misspelt; 163, 172: a fit of 1-9 rows rounded to
    0 or not shown; 174, 188, 197: the frame-stack way out offered for flat observations, sized without the dtype, or
    replacing the smaller-buffer way out)"""
    envs = [{"id": "CartPole-v1", "num_envs": 1}]
    cfg = {"algo": {"buffer_size": 50_000, "replay": "standard"}}
    memory(monkeypatch, 2 * replay_nbytes("standard", 40_000, (4,), "float32", 1))  # exactly 40,000 rows fit
    with pytest.raises(ConfigError) as err:
        V._replay_fits(cfg, "algo", envs)
    assert str(err.value).endswith("this machine has (test memory): lower algo.buffer_size (about 40,000 fit)")

    _stacked(monkeypatch)
    atari = [{"id": "ALE/Pong-v5", "num_envs": 4}]
    std, fs = (replay_nbytes(k, 1000, (4, 84, 84), "uint8", 4) for k in ("standard", "frame_stack"))
    memory(monkeypatch, 2 * replay_nbytes("standard", 7, (4, 84, 84), "uint8", 4))  # 7 rows fit
    with pytest.raises(ConfigError) as err:
        V._replay_fits({"algo": {"buffer_size": 1000, "replay": "standard"}}, "algo", atari)
    assert str(err.value) == (
        f"algo.buffer_size=1,000 needs a standard replay of {V._gb(std)} (uint8 observations (4, 84, 84), obs and "
        f"next_obs), and each checkpoint copies what it holds: {V._gb(2 * std)} in all, more than the "
        f"{V._gb(2 * replay_nbytes('standard', 7, (4, 84, 84), 'uint8', 4))} this machine has (test memory): lower "
        f"algo.buffer_size (about 7 fit), or algo.replay=frame_stack, which stores each frame once ({V._gb(fs)})"
    )
    memory(monkeypatch, 1)
    with pytest.raises(ConfigError) as err:  # 4 envs: a few frames more than one env's (7.2 MB, not 7.1 MB)
        V._replay_fits({"algo": {"buffer_size": 1000, "replay": "frame_stack"}}, "algo", atari)
    assert str(err.value).startswith(f"algo.buffer_size=1,000 needs a frame_stack replay of {V._gb(fs)} (uint8")
    one_env = replay_nbytes("frame_stack", 1000, (4, 84, 84), "uint8", 1)
    assert V._gb(one_env) != V._gb(fs)
    memory(monkeypatch, 2 * replay_nbytes("frame_stack", 1, (4, 84, 84), "uint8", 1))  # 1 row fits
    with pytest.raises(ConfigError) as err:
        V._replay_fits({"algo": {"buffer_size": 1000, "replay": "frame_stack"}}, "algo", [{**atari[0], "num_envs": 1}])
    assert str(err.value).startswith(
        f"algo.buffer_size=1,000 needs a frame_stack replay of {V._gb(one_env)} (uint8 observations (4, 84, 84), each "
        "frame once), and each checkpoint copies what it holds: "
    )
    assert str(err.value).endswith("(test memory): lower algo.buffer_size (about 1 fit)")


def test_an_env_block_without_an_id_has_no_spec():
    """(x__spec_of__mutmut_1: ``and``, a block without an id probed: a KeyError, or an AttributeError for none)"""
    assert V._spec_of(None) is None
    assert V._spec_of({"kwargs": {}}) is None


def test_a_configs_own_budgets_are_the_ones_its_budget_is_checked_against():
    """(x_resolved__mutmut_9-11, 14, 15: the config's budgets not passed on, the default cpu/gpu/paper checked
    instead; x__budgets__mutmut_9: ``or``, a list of budgets read as their names)"""
    cfg = {"budget": "laptop", "budgets": {"laptop": {"teacher": 5}}, "steps": "${budgets.${budget}.teacher}"}
    assert V.resolved(OmegaConf.create(cfg))["steps"] == 5
    with pytest.raises(ConfigError, match=r"^budget must be one of laptop, got 'nope'$"):
        V.resolved(OmegaConf.create({**cfg, "budget": "nope"}))
    assert V._budgets({"budgets": ["laptop"]}) == V.BUDGETS  # not a block of budgets: the defaults


def test_sizes_are_shown_in_gb_from_a_tenth_of_one_and_in_mb_below():
    """(x__gb__mutmut_1-8: the unit's threshold or divisor changed)"""
    assert (V._gb(1e8), V._gb(1e8 - 1)) == ("0.1 GB", "100.0 MB")
    assert (V._gb(1_350_000_000), V._gb(1_350_000)) == ("1.4 GB", "1.4 MB")


def test_a_refused_value_is_shown_whole_up_to_80_characters_then_cut_to_80():
    """(x__shown__mutmut_4-9: the cut's length, its threshold or its ellipsis changed)"""
    assert V._shown("a" * 78) == repr("a" * 78)  # 80 characters with the quotes
    assert V._shown("a" * 79) == "'" + "a" * 76 + "..."


def test_an_env_preset_whose_env_is_not_a_block_is_none(tmp_path, monkeypatch):
    """(x__preset_env__mutmut_14: ``or True``, a preset whose env is a list unpacked: a TypeError)"""
    import kdrl.config

    (tmp_path / "env").mkdir()
    (tmp_path / "env" / "bad.yaml").write_text("env: [1, 2]\n")  # a list: to_container takes it, {**env} not
    monkeypatch.setattr(kdrl.config, "CONF_DIR", str(tmp_path))
    assert V._preset_env("bad", 1) is None
