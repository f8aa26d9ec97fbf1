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
    from tests.helpers import compose_cfg

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
