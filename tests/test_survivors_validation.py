"""The validation room's sampled mutation survivors (docs/mutation.md, issue 29): refusal messages of
the rule helpers and of the recipe/env check, the replay-memory refusal (its sizes, its boundary, the
frame-stack alternative), where the memory figure comes from, the env-spec cache, interpolation
references and unresolvable budgets, and kdrl-data's teacher check."""

from __future__ import annotations

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
    ],
)  # fmt: skip
def test_the_memory_cgroups_limit_is_read_from_v2_and_v1_hierarchies(
    tmp_path, monkeypatch, proc_self_cgroup, files, limit
):
    """(x__cgroup_memory_limit__mutmut_8: the line split on spaces; 18: v2 lines not recognised; 22, 33, 36: the
    hierarchy or the file misnamed; 43: the parents between the root and the job's cgroup skipped; 50: ``2 * 60``
    for ``2**60``, every real limit ignored) on a file tree made by hand under tmp_path."""
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
