"""Property-based fuzzing of kdrl's Hydra configs (hypothesis): every leaf key of every app's
composed config and every config-group choice, with generators that follow each key's type and
domain.

The property, for one example (0-3 config-group choices and 0-3 mutated keys of one app): what the
CLI does before it builds any env, teacher or trainer, run in-process in the same order (the
override check of ``kdrl.cli.common``, Hydra's composition, the run-dir check of the CLI's Hydra
callback, then ``kdrl.runs.job.run_job`` up to ``job.build``: the resolved config, ``validate()``,
the job's ``fields()``, the results.json of ``recorded_job``) either

* passes, with no results.json marked ``ok``; or
* refuses the overrides as the CLI would: with one of Hydra's compact errors (unknown group option,
  key not in the config, malformed override: printed without a traceback, exit code 1), or with a
  ``KdrlUserError`` whose one-line report (``kdrl.errors.one_line``, exit code 2) names the key, a
  block above it, or a key it feeds through an interpolation.

Anything else (TypeError, KeyError, AttributeError, an OmegaConf resolution error, ...) is a crash:
an error the user would get from deep code instead of a line that says what to fix.

``tests/test_fuzz_config.py`` runs a bounded, derandomized number of examples in ``make test``;
``python tests/fuzz_config.py`` (the long mode, ``main`` at the end of this file) runs as many as
asked and, with ``--run``, runs the real CLI at debug size on a sample of the examples that pass
validation (exit code, one-line stderr, results.json).
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import math
import os
import random
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple
from unittest import mock

from hypothesis import strategies as st
from omegaconf import DictConfig, ListConfig, OmegaConf

from kdrl.cli.common import check_group_overrides, check_run_dir
from kdrl.validate import interpolation_references

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
APPS = ("train", "distill", "multitask")
PROGS = {"train": "kdrl-train", "distill": "kdrl-distill", "multitask": "kdrl-multitask"}

# the keys under `hydra.` are Hydra's (launchers, sweepers, run dirs), not the app's: not mutated. The
# groups that set them (launcher=, hparams_search=) are drawn like any other.
NOT_DRAWN_KEYS = ("hydra",)

# ---- the domains of string keys (matched on the key's last components) ----------------------------
ENV_NAMES = tuple(sorted(p.stem for p in (CONF / "env").glob("*.yaml")))
LOSS_NAMES = tuple(sorted(p.stem for p in (CONF / "loss").glob("*.yaml")))
ENV_IDS = (
    "CartPole-v1",
    "Acrobot-v1",
    "LunarLander-v3",
    "MinAtar/Breakout-v1",
    "ALE/Pong-v5",
    "CartPol-v1",
    "Pendulum-v1",
    "MountainCarContinuous-v0",
)
CHOICES: dict[str, tuple[Any, ...]] = {
    "budget": ("cpu", "gpu", "paper"),
    "vectorization": ("sync", "async", "envpool"),
    "actor": ("inline", "process"),
    "td_loss": ("huber", "mse"),
    "replay": ("auto", "standard", "frame_stack"),
    "optimizer.name": ("adam", "adamw", "rmsprop", "sgd"),
    "final_policy": ("best", "last"),
    "control": ("teacher", "student", "mixed"),
    "baseline": ("scratch",),
    "loss.kind": ("mse", "kl", "ce", "nll"),
    "loss.name": LOSS_NAMES,
    "mode": ("distill", "joint_dqn"),
    "update": ("interleave", "sum"),
    "adapter": ("linear", "pad"),
    "student.size": ("full", "rusu_25", "rusu_7", "rusu_4"),
    "logger.wandb": ("offline", "online", "disabled"),
    "accelerator": ("auto", "cpu", "gpu"),
    "precision": ("32-true", "16-mixed", "bf16-mixed", "64-true", 32),
    "env.id": ENV_IDS,
    "distill_weight.kind": ("constant", "linear", "qdagger"),
    "_target_": ("kdrl.nets.MLP", "kdrl.nets.ConvNet", "kdrl.losses.StudentLoss", "kdrl.td.TDTerm", "os.system"),
    "task": ("teacher", "distill", "multitask"),
    "optimized_metric": ("normalized_score", "eval_return_mean"),
    "tasks": ENV_NAMES,  # list elements
}
JUNK_STRINGS = ("", " ", "junk", "None", "1e3", "-1", "0x10", "${oc.env:KDRL_NO_SUCH_VAR}", "ünï", "a" * 300)
SAFE_STR = re.compile(r"[A-Za-z_/][\w\-./]*")
KEYWORDS = {"null", "true", "false", "nan", "inf", "none"}


def choices_for(key: str) -> tuple[Any, ...]:
    for suffix, options in CHOICES.items():
        if key == suffix or key.endswith("." + suffix):
            return options
    return ()


# ---- rendering values as command-line overrides ---------------------------------------------------
def render(value: Any) -> str:
    """A Python value as Hydra's override grammar spells it (what a user would type)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(render(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{render(v)}" for k, v in value.items()) + "}"
    s = str(value)
    if SAFE_STR.fullmatch(s) and s.lower() not in KEYWORDS:
        return s
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


class Raw(str):
    """An override value written as is (unparsable on purpose, or an interpolation)."""


def override(key: str, value: Any) -> str:
    return f"{key}={value if isinstance(value, Raw) else render(value)}"


# ---- value strategies by type and domain -----------------------------------------------------------
INT_EDGES = (0, 1, -1, 2, 3, 7, 2**31 - 1, 2**31, 2**32, 2**63 - 1, 2**63, -(2**63), 10**30)
FLOAT_EDGES = (0.0, -0.0, 1.0, 0.5, -0.5, -1.0, 1e-300, 5e-324, 1e-8, 1e308, math.inf, -math.inf, math.nan, 0.999)
RAW_JUNK = (
    Raw("[1,"),
    Raw("${"),
    Raw("'unterminated"),
    Raw("${algo.gamma}"),
    Raw("${no.such.key}"),
    Raw("???"),
    Raw("a=b"),
    Raw("1,2"),
    Raw("{a:"),
)


def ints(default: int | None) -> st.SearchStrategy[int]:
    near = [] if default is None else [default, default + 1, default - 1, 2 * default, default // 2, -default]
    return st.one_of(
        st.sampled_from(INT_EDGES + tuple(near)),
        st.integers(-10, 10),
        st.integers(-(10**6), 10**6),
        st.integers(min_value=-(2**70), max_value=2**70),
    )


def floats(default: float | None) -> st.SearchStrategy[float]:
    near = [] if default is None else [default, -default, 2 * default, default / 2]
    return st.one_of(
        st.sampled_from(FLOAT_EDGES + tuple(near)),
        st.floats(-2.0, 2.0),
        st.floats(allow_nan=True, allow_infinity=True),
    )


def junk() -> st.SearchStrategy[Any]:
    """Values of another type than the key's."""
    return st.one_of(
        st.sampled_from((None, True, False, 0, -1, 1.5, math.nan, "junk", "", [], {}, [1, 2], {"a": 1})),
        st.sampled_from(JUNK_STRINGS),
        st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=12),
        st.sampled_from(RAW_JUNK),
    )


def scalars() -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), st.booleans(), ints(None), floats(None), st.sampled_from(JUNK_STRINGS))


def values_for(key: str, default: Any) -> st.SearchStrategy[Any]:
    """Values for ``key`` whose composed value is ``default``: mostly of its type and domain (edges
    included), sometimes of another type, null, or text that does not parse."""
    options = choices_for(key)
    if isinstance(default, bool):
        typed: st.SearchStrategy[Any] = st.booleans()
    elif isinstance(default, int):
        typed = ints(default)
    elif isinstance(default, float):
        typed = floats(default)
    elif isinstance(default, str):
        typed = st.sampled_from(options) if options else st.sampled_from(JUNK_STRINGS + (default,))
        typed = st.one_of(typed, st.sampled_from(JUNK_STRINGS))
    elif isinstance(default, list):
        elements = st.sampled_from(options) if options else scalars()
        typed = st.one_of(
            st.lists(elements, max_size=4),
            st.lists(st.one_of(elements, junk()), max_size=3),
            st.just(list(default)),
            st.lists(st.lists(scalars(), max_size=2), max_size=2),
        )
    elif isinstance(default, dict):
        typed = st.one_of(
            st.dictionaries(st.sampled_from(("a", "width", "channels", "x1")), scalars(), max_size=2),
            st.just({}),
        )
    else:  # null by default: anything a user might put there
        typed = st.one_of(
            st.sampled_from(options) if options else st.nothing(),
            ints(None),
            floats(None),
            st.lists(scalars(), max_size=3),
            st.dictionaries(st.sampled_from(("a", "width", "cartpole", "acrobot")), scalars(), max_size=2),
            st.sampled_from(JUNK_STRINGS),
        )
    return st.one_of(typed, typed, typed, st.none(), junk())


# ---- the apps' config spaces -----------------------------------------------------------------------
def leaves(cfg: DictConfig, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, its value: resolved when it can be, else the raw interpolation) for every leaf;
    a list or an empty dict is a leaf."""
    for key in cfg:
        path = f"{prefix}{key}"
        if path in NOT_DRAWN_KEYS:
            continue
        node = cfg._get_node(key)
        if isinstance(node, DictConfig) and not node._is_none() and not node._is_interpolation() and len(node):
            yield from leaves(node, path + ".")
            continue
        try:
            value = OmegaConf.to_container(cfg[key], resolve=True) if OmegaConf.is_config(cfg[key]) else cfg[key]
        except Exception:
            value = node._value()
        yield path, value


def interpolations(cfg: DictConfig, prefix: str = "") -> dict[str, str]:
    """dotted key -> its interpolation string, for every interpolated node."""
    out: dict[str, str] = {}
    for key in cfg:
        path = f"{prefix}{key}"
        node = cfg._get_node(key)
        if node._is_interpolation():
            out[path] = str(node._value())
        elif isinstance(node, DictConfig) and not node._is_none():
            out.update(interpolations(node, path + "."))
        elif isinstance(node, ListConfig) and not node._is_none():
            for i in range(len(node)):
                child = node._get_node(i)
                if child._is_interpolation():
                    out[f"{path}.{i}"] = str(child._value())
    return out


def group_options(group: str) -> tuple[str, ...]:
    folder = CONF / group.split("@")[0]
    return tuple(sorted(p.stem for p in folder.glob("*.yaml")))


class Case(NamedTuple):
    """One example: an app, its config-group overrides and its (key, value) mutations."""

    app: str
    groups: list[str]
    mutations: list[tuple[str, Any]]


@dataclass
class Outcome:
    """One example's overrides and what the validation path made of them."""

    app: str
    groups: list[str]
    overrides: list[str]
    keys: list[str]
    kind: str  # passed | hydra (rejected by Hydra) | rejected (KdrlUserError) | crash
    message: str = ""
    detail: str = ""  # a crash's traceback tail
    mutations: list[tuple[str, Any]] = field(default_factory=list)

    @property
    def argv(self) -> list[str]:
        return [*self.groups, *self.overrides]


@dataclass
class Stats:
    examples: Counter = field(default_factory=Counter)
    kinds: Counter = field(default_factory=Counter)
    keys: dict[str, set[str]] = field(default_factory=dict)
    groups: dict[str, set[str]] = field(default_factory=dict)
    crashes: list[Outcome] = field(default_factory=list)
    passed: dict[str, list[Outcome]] = field(default_factory=dict)

    def add(self, o: Outcome) -> None:
        self.examples[o.app] += 1
        self.kinds[o.app, o.kind] += 1
        self.keys.setdefault(o.app, set()).update(o.keys)
        self.groups.setdefault(o.app, set()).update(o.groups)
        if o.kind == "crash":
            self.crashes.append(o)
        elif o.kind == "passed":
            self.passed.setdefault(o.app, []).append(o)


class Fuzzer:
    """Composes each app's config once per set of config-group choices (Hydra, cached), applies the
    leaf overrides to a copy exactly as Hydra's ConfigLoaderImpl does after composing, and runs the
    validation path in-process. Use as a context manager (it owns Hydra's global state)."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, tuple[str, ...]], DictConfig | BaseException] = {}
        self._leaves: dict[tuple[str, tuple[str, ...]], dict[str, Any]] = {}
        self._tmp: tempfile.TemporaryDirectory | None = None
        self.compositions = 0
        self.stats = Stats()
        self.all_keys: dict[str, set[str]] = {}
        self.run_dirs: dict[str, str] = {}

    def __enter__(self) -> Fuzzer:
        from hydra import initialize_config_dir
        from hydra.core.global_hydra import GlobalHydra

        from kdrl.config import CONF_DIR

        GlobalHydra.instance().clear()
        self._init = initialize_config_dir(CONF_DIR, version_base="1.3")
        self._init.__enter__()
        # OmegaConf parses an interpolation string each time it resolves it (a third of the time of an
        # example): memoise the parser, a pure function of its arguments, while fuzzing
        import omegaconf.base

        self._parse = mock.patch.object(
            omegaconf.base, "parse", functools.lru_cache(maxsize=4096)(omegaconf.base.parse)
        )
        self._parse.__enter__()
        self._tmp = tempfile.TemporaryDirectory(prefix="kdrl-fuzz-")
        self.groups = {app: self._groups(app) for app in APPS}
        return self

    def __exit__(self, *exc: Any) -> None:
        self._parse.__exit__(*exc)
        self._init.__exit__(*exc)
        if self._tmp is not None:
            self._tmp.cleanup()

    def _groups(self, app: str) -> dict[str, tuple[str, ...]]:
        """The app's config groups and their options; notes its run-dir template on the way."""
        from hydra import compose

        hydra_cfg = compose(app, return_hydra_config=True).hydra
        self.run_dirs[app] = str(hydra_cfg.run._get_node("dir")._value())
        return {g: group_options(g) for g in hydra_cfg.runtime.choices if not g.startswith("hydra/")}

    # -- composition --
    def base(self, app: str, groups: tuple[str, ...]) -> DictConfig | BaseException:
        """The app's config with these group choices (or the error composing it), cached."""
        key = (app, groups)
        if key not in self._cache:
            from hydra import compose

            self.compositions += 1
            try:
                cfg = compose(app, overrides=list(groups))
                self._leaves[key] = dict(leaves(cfg))
                self.all_keys.setdefault(app, set()).update(self._leaves[key])
                self._cache[key] = cfg
            except Exception as exc:
                self._cache[key] = exc
        return self._cache[key]

    def leaves(self, app: str, groups: tuple[str, ...]) -> dict[str, Any]:
        """{dotted key: composed value} of the app's config with these group choices (composable)."""
        self.base(app, groups)
        return self._leaves[app, groups]

    def compose(self, app: str, groups: list[str], overrides: list[str]) -> DictConfig:
        """What ``hydra.compose(app, groups + overrides)`` gives, from the cached composition."""
        from hydra._internal.config_loader_impl import ConfigLoaderImpl
        from hydra.core.override_parser.overrides_parser import OverridesParser

        base = self.base(app, tuple(groups))
        if isinstance(base, BaseException):
            raise base
        parsed = OverridesParser.create().parse_overrides(overrides)
        cfg = copy.deepcopy(base)
        ConfigLoaderImpl._apply_overrides_to_config(parsed, cfg)
        return cfg

    # -- the validation path --
    def job(self, app: str, cfg: DictConfig, out: Path) -> Any:
        if app == "train":
            from kdrl.runs.teacher import TeacherJob

            return TeacherJob(cfg, out)
        if app == "distill":
            from kdrl.runs.distill import DistillJob

            return DistillJob(cfg, out, choices={})
        from kdrl.runs.multitask import MultiTaskJob

        return MultiTaskJob(cfg, out, choices={})

    def validation_path(self, app: str, cfg: DictConfig) -> dict[str, Any]:
        """kdrl.runs.job.run_job up to ``job.build``, in the same order (a fresh run dir: no completed
        results to reuse); returns the body results.json would get."""
        from kdrl.runs.job import Job, recorded_job, validate_job
        from kdrl.validate import resolved

        assert self._tmp is not None
        out = Path(self._tmp.name)
        written: dict[str, Any] = {}

        def write_results(run_dir: str | Path, result: Any) -> None:  # kept in memory: no file, no fsync
            written.update(json.loads(json.dumps(result.to_dict(), default=str)))

        job = self.job(app, cfg, out)
        config = resolved(cfg)
        fields = {**Job.fields(job), "config": config}
        with mock.patch("kdrl.results.write_results", write_results), recorded_job(out, fields):
            validate_job(job, fields)
        return written

    def run(self, app: str, groups: list[str], mutations: list[tuple[str, Any]]) -> Outcome:
        overrides = [override(k, v) for k, v in mutations]
        keys = [k for k, _ in mutations]
        o = Outcome(app, groups, overrides, keys, "passed", mutations=list(mutations))
        try:
            check_group_overrides(o.argv)  # the CLI's check before Hydra starts
        except Exception as exc:
            return self._judge(o, exc, None)
        try:
            cfg = self.compose(app, groups, overrides)
        except Exception as exc:
            return self._judge_hydra(o, exc)
        try:
            check_run_dir(cfg, self.run_dirs[app])  # the CLI's callback, before Hydra creates the run dir
            body = self.validation_path(app, cfg)
        except Exception as exc:
            return self._judge(o, exc, cfg)
        if body.get("status") == "ok":
            return self._crash(o, "results.json says ok before the job ran")
        return o

    # -- judging --
    def _judge_hydra(self, o: Outcome, exc: BaseException) -> Outcome:
        from hydra.errors import CompactHydraException

        o.message = " ".join(str(exc).split())
        if isinstance(exc, CompactHydraException):
            o.kind = "hydra"
            return o
        return self._crash(o, f"{type(exc).__name__} while composing: {o.message}", exc)

    def _judge(self, o: Outcome, exc: BaseException, cfg: DictConfig | None) -> Outcome:
        from kdrl.errors import KdrlUserError, one_line, root_cause

        line = one_line(exc)
        o.message = line
        if not isinstance(root_cause(exc), KdrlUserError):
            return self._crash(o, line, exc)
        if "\n" in line:
            return self._crash(o, "the report is not one line", exc)
        if not names_a_key(line, [*o.keys, *(g.split("=")[0] for g in o.groups)], cfg, bool(o.groups)):
            return self._crash(o, f"the report names none of {o.keys}: {line}", exc)
        o.kind = "rejected"
        return o

    def _crash(self, o: Outcome, message: str, exc: BaseException | None = None) -> Outcome:
        o.kind, o.message = "crash", message
        if exc is not None:
            o.detail = "".join(traceback.format_exception(exc)[-4:])
        return o


def names_a_key(line: str, keys: list[str], cfg: DictConfig | None, groups_changed: bool) -> bool:
    """Whether ``line`` names a mutated key, one of its parents, or a key it feeds through an
    interpolation (``distill.gamma: ${algo.gamma}``). With group choices drawn, any key of the config
    counts (a preset's own values can be what is refused)."""
    refs = {k: interpolation_references(v) for k, v in interpolations(cfg).items()} if cfg is not None else {}
    names = set()
    for key in keys:
        parts = key.split(".")
        names.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
        names.update(k for k, pats in refs.items() if any(p.fullmatch(key) for p in pats))
    if cfg is not None and (groups_changed or not keys):
        names.update(k for k, _ in leaves(cfg))
        names.update(str(k) for k in cfg)
    return any(re.search(rf"(?<![\w.]){re.escape(n)}(?![\w])", line) for n in names)


# ---- hypothesis: one example -----------------------------------------------------------------------
@st.composite
def example(draw: Callable, fz: Fuzzer, app: str, max_groups: int = 1, max_keys: int = 3) -> Case:
    """Draw group choices, then 1-3 leaf keys of the resulting config and their values; run it."""
    groups = fz.groups[app]
    n_groups = draw(st.integers(0, max_groups)) if max_groups else 0
    picked = draw(st.lists(st.sampled_from(sorted(groups)), min_size=n_groups, max_size=n_groups, unique=True))
    chosen = []
    for g in picked:
        options = st.sampled_from(groups[g]) if groups[g] else st.none()
        chosen.append(override(g, draw(st.one_of(options, options, options, st.sampled_from((None, "nope")), junk()))))
    composable = not isinstance(fz.base(app, tuple(chosen)), BaseException)
    keyvals = fz.leaves(app, tuple(chosen) if composable else ())  # else: mutate the default config's keys
    n_keys = draw(st.integers(1 if not chosen else 0, max_keys))
    keys = draw(st.lists(st.sampled_from(sorted(keyvals)), min_size=n_keys, max_size=n_keys, unique=True))
    mutations = [(k, draw(values_for(k, keyvals[k]), label=k)) for k in keys]
    return Case(app, chosen, mutations)


# ---- the per-key sweep: every key gets values of each kind, whatever hypothesis happened to draw -----
def sweep_values(key: str, default: Any) -> list[Any]:
    """Values for one key: null, the wrong type, its domain's edges, an interpolation to nowhere."""
    if isinstance(default, bool):
        typed: list[Any] = [2, "yes", not default]
    elif isinstance(default, int):
        typed = [-1, 0, 2**63, 1.5, True]
    elif isinstance(default, float):
        typed = [math.nan, math.inf, -1.0, 0.0, 1e308]
    elif isinstance(default, str):
        typed = [0, "", " ", *choices_for(key)[:2]]
    elif isinstance(default, list):
        typed = [[], [[1]], 5, [None]]
    elif isinstance(default, dict):
        typed = [5, [1], {"a": None}]
    else:
        typed = [0, -1, [], {"a": 1}, "junk", math.nan]
    return [None, "junk", *typed, Raw("${no.such.key}"), Raw("???")]


def sweep(
    fz: Fuzzer, app: str, groups: tuple[str, ...] = (), per_key: int | None = 1, skip: set[str] | None = None
) -> int:
    """Mutate every key of ``app``'s config with these group choices, one key at a time: ``per_key``
    of its sweep values (cycling through them across keys, so each kind is met), or all with None.
    Returns the number of examples run."""
    n = 0
    for i, (key, default) in enumerate(sorted(fz.leaves(app, groups).items())):
        if skip is not None and key in skip:
            continue
        values = sweep_values(key, default)
        chosen = values if per_key is None else [values[(i + j) % len(values)] for j in range(per_key)]
        for value in chosen:
            fz.stats.add(fz.run(app, list(groups), [(key, value)]))
            n += 1
    return n


def sweep_all(fz: Fuzzer, app: str, per_key: int | None = None) -> int:
    """``sweep`` over the app's default config, then over each single config-group choice for the
    keys only that choice brings (a conv net's channels, a hybrid loss's td, ...)."""
    seen: set[str] = set()
    n = 0
    for groups in [(), *((f"{g}={o}",) for g, options in sorted(fz.groups[app].items()) for o in options)]:
        if isinstance(fz.base(app, groups), BaseException):
            continue
        n += sweep(fz, app, groups, per_key, skip=seen)
        seen.update(fz.leaves(app, groups))
    return n


def compose_agrees(fz: Fuzzer, app: str, groups: list[str], overrides: list[str]) -> str | None:
    """None when the cached composition (``Fuzzer.compose``) gives what Hydra's own compose gives for
    the same overrides (the same config, or both a Hydra error); else what differs."""
    from hydra import compose
    from hydra.errors import CompactHydraException

    def outcome(fn: Callable[[], DictConfig]) -> str:
        try:
            return OmegaConf.to_yaml(fn())
        except CompactHydraException:
            return "<hydra error>"
        except Exception as exc:
            return f"<{type(exc).__name__}>"

    try:
        check_group_overrides([*groups, *overrides])
    except Exception:
        return None  # the CLI stops before Hydra composes anything
    real = outcome(lambda: compose(app, overrides=[*groups, *overrides]))
    cached = outcome(lambda: fz.compose(app, groups, overrides))
    if real == cached:
        return None
    return f"{PROGS[app]} {' '.join([*groups, *overrides])}: hydra {real[:300]!r} != cached {cached[:300]!r}"


def describe(o: Outcome) -> str:
    return f"{PROGS[o.app]} {' '.join(o.argv)}\n  -> {o.kind}: {o.message}\n{o.detail}"


def coverage_table(stats: Stats, fz: Fuzzer, extra: dict[str, dict[str, int]] | None = None) -> str:
    cols = ["app", "examples", "keys covered", "groups", "hydra-rejected", "rejected", "passed", "crashes"]
    extra_cols = sorted({c for row in (extra or {}).values() for c in row})
    rows = [cols + extra_cols]
    for app in APPS:
        n = stats.examples[app]
        if not n:
            continue
        total = len(fz.all_keys.get(app, ()))
        row = [
            app,
            str(n),
            f"{len(stats.keys.get(app, ()) & fz.all_keys.get(app, set()))}/{total}",
            str(len(stats.groups.get(app, ()))),
            str(stats.kinds[app, "hydra"]),
            str(stats.kinds[app, "rejected"]),
            str(stats.kinds[app, "passed"]),
            str(stats.kinds[app, "crash"]),
        ]
        rows.append(row + [str((extra or {}).get(app, {}).get(c, 0)) for c in extra_cols])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows)


def fuzz(
    fz: Fuzzer,
    app: str,
    examples: int,
    *,
    max_groups: int = 1,
    max_keys: int = 3,
    seed: int | None = None,
    strict: bool = False,
    on_outcome: Callable[[Outcome], None] | None = None,
) -> None:
    """Run ``examples`` hypothesis examples of ``app`` (derandomized unless ``seed`` is given). Every
    outcome goes to ``fz.stats``; ``strict`` fails on the first crash (hypothesis then shrinks it to
    a minimal set of overrides), else every crash is collected."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hyp_seed

    phases = [Phase.explicit, Phase.generate] + ([Phase.shrink] if strict else [])

    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=seed is None,
        database=None,
        phases=phases,
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    @given(example(fz, app, max_groups, max_keys))
    def prop(case: Case) -> None:
        o = fz.run(*case)
        fz.stats.add(o)
        if on_outcome is not None:
            on_outcome(o)
        if strict:
            assert o.kind != "crash", describe(o)

    if seed is not None:
        prop = hyp_seed(seed)(prop)
    prop()


# ---- the long mode: python tests/fuzz_config.py ------------------------------------------------
LONG_MODE = """Fuzz every key of every kdrl app's config (the long mode of tests/test_fuzz_config.py).

    python tests/fuzz_config.py                           # ~2 min: 300 examples per app + the key sweep
    python tests/fuzz_config.py --examples 5000 --seed 1  # longer, another seed
    python tests/fuzz_config.py --run --runs 20           # + the real CLI at debug size on 20 of them

In-process (the fuzzer above): each example's overrides are composed and run through the
validation path; it must pass, or be refused by Hydra's compact errors or in one kdrl line naming
the key. With ``--run``, a sample of the examples that pass validation (with ``debug=fast``) run
the real CLI in a subprocess with a timeout: exit 0 with results.json status ok, or a non-zero
exit with exactly one ``<prog>: error:`` line, no traceback and no results.json marked ok.

Prints, per app: examples run, distinct keys covered, group choices drawn, rejected by Hydra, rejected
by kdrl's validation, passed, crashes (property violations); with --run, the CLI's outcomes. Exit
code 1 when any crash was found.
"""
MEMORY_LIMIT = 12 * 2**30  # a CLI run that tries to allocate a huge replay fails instead of swapping the box


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=LONG_MODE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--examples", type=int, default=300, help="hypothesis examples per app (default 300)")
    p.add_argument("--apps", default=",".join(APPS), help="comma-separated (default: all)")
    p.add_argument("--groups", type=int, default=2, help="config-group choices per example, at most (default 2)")
    p.add_argument("--keys", type=int, default=3, help="mutated keys per example, at most (default 3)")
    p.add_argument("--seed", type=int, default=None, help="hypothesis seed (default: derandomized, as in make test)")
    p.add_argument(
        "--sweep",
        choices=("all", "one", "none"),
        default="all",
        help="per-key sweep: every sweep value of every key (all), one per key (one), or none",
    )
    p.add_argument("--check-compose", type=int, default=30, help="examples per app checked against Hydra's compose")
    p.add_argument("--run", action="store_true", help="also run the real CLI on a sample of the passing examples")
    p.add_argument("--runs", type=int, default=20, help="CLI runs with --run (default 20, spread over the apps)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per CLI run (default 120)")
    return p.parse_args()


# ---- the real CLI -----------------------------------------------------------------------------------
def cli_argv(o: Outcome) -> list[str]:
    groups = [g for g in o.groups if not g.startswith("debug=")]
    return ["debug=fast", *groups, *o.overrides]


def limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    os.setsid()


def run_cli(o: Outcome, cache: Path, timeout: float) -> tuple[str, str]:
    """(verdict, detail): ok | refused (one kdrl line, a kdrl message) | late (one line, but an error
    from deep code: validation could have said it) | timeout | crash (the invariant broken)."""
    prog = PROGS[o.app]
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("KDRL_DEBUG", "HYDRA_FULL_ERROR")},
        "KDRL_CACHE": str(cache),
        "WANDB_MODE": "disabled",
        "KDRL_NO_PROGRESS": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHONWARNINGS": "ignore",
    }
    with tempfile.TemporaryDirectory(prefix="kdrl-fuzz-run-") as cwd:
        proc = subprocess.Popen(
            [sys.executable, "-m", f"kdrl.cli.{o.app}", *cli_argv(o)],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=limit_memory,
        )
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            return "timeout", f"over {timeout:.0f} s"
        results = [json.loads(p.read_text()) for p in Path(cwd).rglob("results.json")]
    statuses = [r.get("status") for r in results]
    errors = [line for line in err.splitlines() if line.startswith(f"{prog}: error:")]
    if "Traceback" in out + err:
        return "crash", "a traceback: " + (err.strip().splitlines() or ["?"])[-1][:300]
    if proc.returncode == 0:  # one results.json, or one per job of a sweep (hparams_search=...)
        if not statuses or any(s != "ok" for s in statuses):
            return "crash", f"exit 0 but results.json statuses {statuses[:5]}"
        return "ok", "" if len(statuses) == 1 else f"{len(statuses)} jobs"
    if proc.returncode < 0:
        return "crash", f"killed by signal {-proc.returncode}"
    if "ok" in statuses:
        return "crash", f"exit {proc.returncode} with a results.json marked ok"
    if len(errors) != 1:
        return "crash", f"exit {proc.returncode} with {len(errors)} error lines: {err.strip()[-300:]!r}"
    message = errors[0][len(prog) + len(": error: ") :]
    head = message.split(":")[0]
    late = head.isidentifier() and head[0].isupper() and (head.endswith("Error") or head.endswith("Exception"))
    return ("late" if late else "refused"), message[:300]


def main() -> int:
    args = parse_args()
    apps = [a for a in args.apps.split(",") if a]
    t0 = time.perf_counter()
    compose_mismatches: list[str] = []
    with Fuzzer() as fz:
        for app in apps:
            t = time.perf_counter()
            sampled: list[Outcome] = []

            def keep(o: Outcome, sampled: list[Outcome] = sampled) -> None:
                if len(sampled) < args.check_compose:
                    sampled.append(o)

            n_sweep = 0
            if args.sweep != "none":
                n_sweep = sweep_all(fz, app, per_key=None if args.sweep == "all" else 1)
            fuzz(
                fz,
                app,
                args.examples,
                max_groups=args.groups,
                max_keys=args.keys,
                seed=args.seed,
                on_outcome=keep,
            )
            for o in sampled:
                diff = compose_agrees(fz, app, o.groups, o.overrides)
                if diff:
                    compose_mismatches.append(diff)
            print(
                f"{app}: {fz.stats.examples[app]} examples ({n_sweep} in the key sweep) in "
                f"{time.perf_counter() - t:.0f} s, {len(sampled)} checked against Hydra's compose",
                flush=True,
            )

        cli: dict[str, Counter] = {app: Counter() for app in apps}
        cli_notes: list[str] = []
        if args.run:
            rng = random.Random(args.seed or 0)
            cache = Path(tempfile.mkdtemp(prefix="kdrl-fuzz-cache-"))
            per_app = max(1, args.runs // len(apps))
            for app in apps:
                # the CLI adds debug=fast: keep the examples that still pass validation with it
                candidates = [
                    o for o in fz.stats.passed.get(app, []) if not any(g.startswith("debug=") for g in o.groups)
                ]
                pool = [o for o in candidates if fz.run(app, ["debug=fast", *o.groups], o.mutations).kind == "passed"]
                for o in rng.sample(pool, min(per_app, len(pool))):
                    t = time.perf_counter()
                    verdict, detail = run_cli(o, cache, args.timeout)
                    cli[app][verdict] += 1
                    cli[app]["runs"] += 1
                    line = f"{PROGS[app]} {' '.join(cli_argv(o))}"
                    print(f"  [{verdict:<7} {time.perf_counter() - t:5.0f} s] {line[:160]}  {detail[:200]}", flush=True)
                    if verdict in ("crash", "late"):
                        cli_notes.append(f"{verdict}: {line}\n    {detail}")

        extra = {app: {f"cli {k}": v for k, v in cli[app].items()} for app in apps} if args.run else None
        print()
        print(coverage_table(fz.stats, fz, extra))
        total_keys = sum(len(fz.all_keys.get(app, ())) for app in apps)
        covered = sum(len(fz.stats.keys.get(app, set()) & fz.all_keys.get(app, set())) for app in apps)
        print(
            f"\n{sum(fz.stats.examples.values())} examples, {covered}/{total_keys} (app, key) pairs covered, "
            f"{fz.compositions} Hydra compositions, {time.perf_counter() - t0:.0f} s"
        )
        if compose_mismatches:
            print(f"\n{len(compose_mismatches)} cached compositions differ from Hydra's:")
            print("\n".join(compose_mismatches[:20]))
        crashes = fz.stats.crashes
        if crashes:
            sites: dict[str, list[Outcome]] = {}
            for o in crashes:
                sites.setdefault(crash_site(o), []).append(o)
            print(f"\n{len(crashes)} crash(es) in the validation path, at {len(sites)} distinct site(s):")
            for site, found in sorted(sites.items(), key=lambda kv: -len(kv[1])):
                o = min(found, key=lambda o: len(" ".join(o.argv)))
                print(
                    f"- {len(found)} x {site}\n  e.g. {PROGS[o.app]} {' '.join(o.argv)[:200]}\n  -> {o.message[:200]}"
                )
        if cli_notes:
            print("\nCLI runs that broke the invariant (crash) or failed late, after validation (late):")
            print("\n".join(cli_notes))
        bad = crashes or compose_mismatches or any(c["crash"] for c in cli.values())
        return 1 if bad else 0


def crash_site(o: Outcome) -> str:
    """Where a crash comes from: its error type and the last frame of its traceback."""
    frames = re.findall(r'File "([^"]+)", line (\d+)', o.detail)
    where = f"{Path(frames[-1][0]).name}:{frames[-1][1]}" if frames else "-"
    return f"{o.message.split(':')[0][:60]} at {where}"


if __name__ == "__main__":
    sys.exit(main())
