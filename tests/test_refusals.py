"""Every boundary value the validation claims to refuse is refused, and the boundary itself is not
(issue 29: ``distill.batch_size=0`` was accepted and only an unrelated message change caught it).

The claims are read off kdrl.validate itself: its per-key checks (``_int_at_least``, ``_in_range``,
``_positive``, ...) are recorded while it validates each app's default config, so a check added
there is tested here without a new line. For each recorded check the values just outside its rule
must raise a ConfigError naming the key, and the values on its edge must not raise that key's
per-key message. The rules written inline (``_check``) and the cross-key rules are listed by hand
below, as are the constructors' own refusals.
"""

from __future__ import annotations

import copy
import inspect
import math
from collections.abc import Callable
from typing import Any

import pytest

import kdrl.validate as V
from kdrl.validate import ConfigError
from tests.helpers import compose_cfg

CHECKERS = ("_int_at_least", "_in_range", "_positive", "_one_of", "_bool", "_text", "_block", "_int_list", "_str_list")
VALIDATORS: dict[str, Callable] = {
    "train": V.validate_common,
    "distill": V.validate_distill,
    "multitask": V.validate_multitask,
}
# defaults that leave some checks' keys absent are composed with those keys present too
BASES = {
    "train": [[]],
    "distill": [[], ["loss=hybrid"], ["student.size=rusu_25"]],
    "multitask": [[], ["mode=joint_dqn"], ["student.conv={channels:[4],kernels:[3],strides:[1]}"]],
}


def _config(app: str, overrides: list[str]) -> dict[str, Any]:
    return V.resolved(compose_cfg(app, overrides))


def _claims(app: str, cfg: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(checker, key, its other arguments) for every per-key check ``app``'s validator runs on ``cfg``."""
    calls: list[tuple[str, str, dict[str, Any]]] = []
    with pytest.MonkeyPatch.context() as mp:
        for name in CHECKERS:
            real = getattr(V, name)
            sig = inspect.signature(real)

            def spy(*args, _real=real, _sig=sig, _name=name, **kwargs):
                bound = _sig.bind(*args, **kwargs)
                bound.apply_defaults()
                params = dict(bound.arguments)
                params.pop("c")
                calls.append((_name, params.pop("key"), params))
                return _real(*args, **kwargs)

            mp.setattr(V, name, spy)
        VALIDATORS[app](copy.deepcopy(cfg))
    return calls


def _all_claims() -> list[tuple[str, list[str], str, str, dict[str, Any]]]:
    out, seen = [], set()
    for app, bases in BASES.items():
        for overrides in bases:
            for checker, key, params in _claims(app, _config(app, overrides)):
                ident = (app, checker, key)
                if ident not in seen:
                    seen.add(ident)
                    out.append((app, overrides, checker, key, params))
    return out


CLAIMS = _all_claims()


def _set(cfg: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    cfg = copy.deepcopy(cfg)
    node = cfg
    *parents, last = key.split(".")
    for part in parents:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[last] = value
    return cfg


def outside(checker: str, p: dict[str, Any]) -> list[Any]:
    """Values just outside a check's rule (and of the wrong type)."""
    none = [] if p.get("nullable") else [None]
    if checker == "_int_at_least":
        low = p["low"]
        return [low - 1, low - 100, low + 0.5, float(low), True, "1", *none]
    if checker == "_in_range":
        low, high = p["low"], p["high"]
        bad = [low - 1e-9, low - 1, float("nan"), "0.5", True, *none]
        if p["low_open"]:
            bad.append(low)
        if math.isfinite(high):
            bad += [high + 1e-9, high + 1]
        return bad
    if checker == "_positive":
        return [0, 0.0, -1e-9, -1, float("inf"), float("nan"), True, "1", *none]
    if checker == "_one_of":
        return ["no-such-option", True, 1.5, [], *([] if None in p["options"] else [None])]
    if checker == "_bool":
        return [1, 0, "true", *none]
    if checker == "_text":
        return ["", "   ", 3, *none]
    if checker == "_block":
        return ["x", [1], 3, *none]
    if checker == "_int_list":
        low = p["low"]
        return [[], [low - 1], [low, low - 1], [1.5], "1", 1, *none]
    if checker == "_str_list":
        return ["a", [1], *none]
    raise AssertionError(checker)


def on_edge(checker: str, p: dict[str, Any]) -> list[Any]:
    """Values on the edge of a check's rule, which it must let through."""
    none = [None] if p.get("nullable") else []
    if checker == "_int_at_least":
        return [p["low"], p["low"] + 1, *none]
    if checker == "_in_range":
        low, high = p["low"], p["high"]
        edge = [] if p["low_open"] else [low]
        edge += [high] if math.isfinite(high) else [1e9]
        if p["low_open"]:
            edge.append(low + 1e-9)
        return [*edge, *none]
    if checker == "_positive":
        return [1e-9, 1e9, *none]
    if checker == "_one_of":
        return list(p["options"])
    if checker == "_bool":
        return [True, False, *none]
    if checker == "_text":
        return ["x", *none]
    if checker == "_block":
        return [{}, *none]
    if checker == "_int_list":
        return [[p["low"]], [p["low"], p["low"] + 3], *none]
    if checker == "_str_list":
        return [[], ["a"], *none]
    raise AssertionError(checker)


_BASE_CACHE: dict[tuple[str, tuple[str, ...]], dict[str, Any]] = {}


def _base(app: str, overrides: list[str]) -> dict[str, Any]:
    key = (app, tuple(overrides))
    if key not in _BASE_CACHE:
        _BASE_CACHE[key] = _config(app, overrides)
    return _BASE_CACHE[key]


def test_the_claims_cover_the_validators():
    keys = {(app, key) for app, _, _, key, _ in CLAIMS}
    assert len(keys) >= 150
    for must in (
        ("distill", "distill.batch_size"),
        ("distill", "distill.gradient_steps"),
        ("train", "algo.target_update_interval"),
        ("train", "eval.final_seed"),
        ("distill", "loss.distill_weight.value"),
        ("multitask", "dqn.tau"),
    ):
        assert must in keys, must


def rule_text(checker: str, p: dict[str, Any]) -> str:
    """What a check's message says the value must be (the one-line message is the user's contract)."""
    rule = {
        "_int_at_least": lambda: f"an integer >= {p.get('low')}",
        "_in_range": lambda: f"in {'(' if p.get('low_open') else '['}{p.get('low')}, {p.get('high')}]",
        "_positive": lambda: "a number > 0",
        "_one_of": lambda: "one of " + ", ".join(map(str, p.get("options", ()))),
        "_bool": lambda: "true or false",
        "_text": lambda: "a non-empty string",
        "_block": lambda: "a mapping ({name: value, ...})",
        "_int_list": lambda: f"a non-empty list of integers >= {p.get('low')}",
        "_str_list": lambda: "a list of strings",
    }[checker]()
    return f"null or {rule}" if p.get("nullable") and checker != "_one_of" else rule


def _messages(app: str, key: str) -> set[str]:
    """Every rule text the checks claimed for ``key`` (a key checked twice may be refused by either)."""
    return {rule_text(c, p) for a, _, c, k, p in CLAIMS if a == app and k == key}


@pytest.mark.parametrize(
    "app,overrides,checker,key,params",
    CLAIMS,
    ids=[f"{app}:{key}" + (f"[{','.join(o)}]" if o else "") for app, o, _, key, _ in CLAIMS],
)
def test_values_outside_a_rule_are_refused_naming_the_key(app, overrides, checker, key, params):
    base = _base(app, overrides)
    rules = _messages(app, key)
    for value in outside(checker, params):
        with pytest.raises(ConfigError) as err:
            VALIDATORS[app](_set(base, key, value))
        expected = {f"{key} must be {rule}, got {value!r}" for rule in rules}
        assert str(err.value) in expected, (value, str(err.value), expected)
    for value in on_edge(checker, params):
        try:
            VALIDATORS[app](_set(base, key, value))
        except ConfigError as exc:  # another rule may refuse it (a cross-key one), never this key's own
            assert not str(exc).startswith(f"{key} must be"), (value, str(exc))


def test_a_zero_student_batch_is_refused():
    """The weak catch of the manual study, by name."""
    base = _base("distill", [])
    for value in (0, -1):
        with pytest.raises(ConfigError, match=r"distill\.batch_size must be an integer >= 1, got -?\d"):
            V.validate_distill(_set(base, "distill.batch_size", value))


# ---- rules written inline, and rules between keys ---------------------------------------------------------------------
INLINE = [
    # (app, overrides, {key: value}, message pattern or None when accepted)
    ("train", [], {"eval.stop_at_return": "x"}, r"eval\.stop_at_return must be null or a number"),
    ("train", [], {"eval.stop_at_return": float("nan")}, r"eval\.stop_at_return must be null or a number"),
    ("train", [], {"eval.stop_at_return": None}, None),
    ("train", [], {"eval.stop_at_return": -500}, None),
    ("train", [], {"env.perturbations": [{"nope": 1}]}, r"env\.perturbations must be"),
    ("train", [], {"env.perturbations": "x"}, r"env\.perturbations must be"),
    ("train", [], {"env.perturbations": []}, None),
    ("train", [], {"net.channels": [4, 8], "net.kernels": [3], "net.strides": [1]}, r"net\.channels must be as long"),
    (
        "train",
        [],
        {"algo.buffer_size": 63, "algo.batch_size": 64},
        r"^algo\.buffer_size \(63\) is smaller than one batch \(algo\.batch_size = 64\): the replay must hold at "
        r"least one batch of distinct transitions$",
    ),
    ("train", [], {"algo.buffer_size": 64, "algo.batch_size": 64}, None),
    (
        "train",
        [],
        {"algo.learning_starts": 3000, "algo.total_timesteps": 3000},
        r"algo\.learning_starts \(3000\).*leave no update",
    ),
    ("train", [], {"algo.learning_starts": 2999, "algo.total_timesteps": 3000, "algo.batch_size": 64}, None),
    (
        "train",
        [],
        {"algo.learning_starts": 0, "algo.batch_size": 64, "algo.total_timesteps": 64},
        r"algo\.learning_starts \(0\) and algo\.batch_size \(64\) leave no update",
    ),
    ("distill", [], {"distill.buffer_size": 127, "distill.batch_size": 128}, r"distill\.buffer_size \(127\)"),
    (
        "distill",
        [],
        {"distill.learning_starts": 10_000, "distill.total_timesteps": 10_000},
        r"distill\.learning_starts .* leave no update",
    ),
    ("distill", [], {"distill.prune.amount": 1.0}, r"distill\.prune\.amount must be in \[0, 1\)"),
    ("distill", [], {"distill.prune.amount": -0.01}, r"distill\.prune\.amount must be in \[0, 1\)"),
    ("distill", [], {"distill.prune.amount": 0.0}, None),
    ("distill", [], {"distill.prune.at": 1.0}, r"distill\.prune\.at must be in \[0, 1\)"),
    ("distill", [], {"distill.quantize.at": 1.0}, r"distill\.quantize\.at must be in \[0, 1\)"),
    ("distill", [], {"distill.quantize.at": 0.0}, None),
    ("distill", [], {"distill.prune.amount": 0.5, "baseline": "scratch"}, r"not for baseline=scratch"),
    ("distill", [], {"distill.quantize.int8": True, "baseline": "scratch"}, r"not for baseline=scratch"),
    ("distill", [], {"distill.pretrain.updates": 1, "distill.pretrain.teacher_steps": 0}, r"needs teacher data"),
    (
        "distill",
        [],
        {"distill.pretrain.updates": 1, "distill.pretrain.teacher_steps": 1, "baseline": "scratch"},
        r"not for baseline=scratch",
    ),
    ("distill", [], {"distill.pretrain.updates": 1, "distill.pretrain.teacher_steps": 1}, None),
    (
        "distill",
        [],
        {"env.actor": "process", "control": "teacher"},
        r"env\.actor=process runs only with control=student",
    ),
    ("distill", [], {"env.actor": "process", "control": "mixed"}, r"env\.actor=process runs only with control=student"),
    ("distill", [], {"env.actor": "process", "control": "student"}, None),
    ("distill", [], {"loss.feature_weight": -0.1}, r"loss\.feature_weight must be a number >= 0"),
    ("distill", [], {"loss.feature_weight": float("inf")}, r"loss\.feature_weight must be a number >= 0"),
    ("distill", [], {"loss.feature_weight": 0}, None),
    ("distill", [], {"loss.td": {"gamma": 0.9}}, r"loss\.td and loss\.distill_weight go together"),
    ("distill", [], {"loss.distill_weight": {"kind": "constant"}}, r"loss\.td and loss\.distill_weight go together"),
    ("distill", [], {"student.size": "rusu_1"}, r"student\.size must be null or one of"),
    ("distill", [], {"student.width": None}, None),
    ("multitask", [], {"tasks": []}, r"tasks must be a non-empty list"),
    ("multitask", [], {"tasks": ["cartpole", "cartpole"]}, r"tasks must be a non-empty list of distinct"),
    ("multitask", [], {"tasks": ["cartpole", "nope"]}, r"tasks must be env presets"),
    ("multitask", [], {"teacher.checkpoints": {"pong": "a.pt"}}, r"teacher\.checkpoints must be keyed by task names"),
    ("multitask", [], {"student.width": 0}, r"student\.width must be an integer >= 1"),
    ("multitask", [], {"student.depth": 0}, r"student\.depth must be an integer >= 1"),
    (
        "multitask",
        ["student.conv={channels:[4],kernels:[3],strides:[1]}"],
        {"student.depth": -1},
        r"student\.depth must be an integer >= 0",
    ),
    ("multitask", ["student.conv={channels:[4],kernels:[3],strides:[1]}"], {"student.depth": 0}, None),
    (
        "multitask",
        [],
        {"student.conv": {"channels": [4, 4], "kernels": [3], "strides": [1]}},
        r"student\.conv must be",
    ),
    ("multitask", [], {"multitask.steps_per_task": 0}, r"multitask\.steps_per_task must be an integer >= 1"),
    ("multitask", [], {"multitask.buffer_size": 0}, r"multitask\.buffer_size must be an integer >= 1"),
    ("multitask", [], {"multitask.batch_size": 0}, r"multitask\.batch_size must be an integer >= 1"),
    ("multitask", [], {"multitask.train_freq": 0}, r"multitask\.train_freq must be an integer >= 1"),
    ("multitask", [], {"multitask.gradient_steps": 0}, r"multitask\.gradient_steps must be an integer >= 1"),
    ("multitask", [], {"multitask.steps_per_task": 1.5}, r"multitask\.steps_per_task must be an integer >= 1"),
    ("multitask", [], {"multitask.buffer_size": 31, "multitask.batch_size": 32}, r"multitask\.buffer_size must be >="),
    ("multitask", [], {"multitask.buffer_size": 32, "multitask.batch_size": 32}, None),
    ("multitask", [], {"multitask.num_envs": 0}, r"multitask\.num_envs must be null or an integer >= 1"),
    ("multitask", [], {"multitask.num_envs": 1}, None),
    ("multitask", [], {"loss.feature_weight": 1.0}, r"loss must be a plain distillation loss"),
]


@pytest.mark.parametrize(
    "app,overrides,values,message",
    INLINE,
    ids=[f"{a}:" + ",".join(f"{k}={v!r}" for k, v in vs.items()) for a, _, vs, _ in INLINE],
)
def test_inline_and_cross_key_rules(app, overrides, values, message):
    cfg = _base(app, overrides)
    for key, value in values.items():
        cfg = _set(cfg, key, value)
    if message is None:
        VALIDATORS[app](cfg)
    else:
        with pytest.raises(ConfigError, match=message):
            VALIDATORS[app](cfg)


# ---- the constructors' own refusals (what a library caller meets without the config checks) ----------------------------
def _constructors() -> list[tuple[str, Callable[[], Any], type[Exception] | None, str]]:
    """(case, call, the error it raises or None when it is accepted, the error's message)."""
    import torch

    from kdrl.callbacks import PeriodicEvaluation
    from kdrl.checkpoints import ResumeCheckpoint
    from kdrl.data import ReplayStream
    from kdrl.envs import EnvError, make_vector_env
    from kdrl.losses import DistillLoss, LambdaSchedule, StudentLoss
    from kdrl.modules.components import Pruning, Quantization
    from kdrl.modules.student import OfflinePhase
    from kdrl.optim import build_optimizer
    from kdrl.schedules import LinearSchedule
    from kdrl.td import TargetNetwork, TDTerm, td_error_loss

    net = torch.nn.Linear(2, 2)
    stream = dict(batch_size=1, learning_starts=0, train_freq=1, gradient_steps=1, total_timesteps=1)
    ok = (None, "")
    stream_msg = "batch_size, train_freq, gradient_steps and total_timesteps must all be >= 1"
    cases: list[tuple[str, Callable[[], Any], type[Exception] | None, str]] = []
    for k in stream:
        if k != "learning_starts":
            cases.append(
                (f"ReplayStream {k}=0", lambda k=k: ReplayStream(None, **{**stream, k: 0}), ValueError, stream_msg)
            )
    table: list[tuple[str, Callable[[], Any], tuple[type[Exception] | None, str]]] = [
        ("ReplayStream at 1", lambda: ReplayStream(None, **stream), ok),
        (
            "TargetNetwork interval=0",
            lambda: TargetNetwork(net, 0),
            (ValueError, "target_update_interval must be >= 1 env step, got 0"),
        ),
        ("TargetNetwork interval=1", lambda: TargetNetwork(net, 1), ok),
        ("TargetNetwork tau=0", lambda: TargetNetwork(net, 1, 0.0), (ValueError, "tau must be in (0, 1], got 0.0")),
        ("TargetNetwork tau>1", lambda: TargetNetwork(net, 1, 1.5), (ValueError, "tau must be in (0, 1], got 1.5")),
        ("TargetNetwork tau=1", lambda: TargetNetwork(net, 1, 1.0), ok),
        ("TargetNetwork tau tiny", lambda: TargetNetwork(net, 1, 1e-9), ok),
        (
            "LinearSchedule duration<0",
            lambda: LinearSchedule(1, 0, -1),
            (ValueError, "schedule duration/delay must be >= 0, got -1/0"),
        ),
        (
            "LinearSchedule delay<0",
            lambda: LinearSchedule(1, 0, 0, -1),
            (ValueError, "schedule duration/delay must be >= 0, got 0/-1"),
        ),
        ("LinearSchedule at 0", lambda: LinearSchedule(1, 0, 0, 0), ok),
        (
            "LambdaSchedule kind",
            lambda: LambdaSchedule("cosine"),
            (ValueError, "unknown lambda schedule 'cosine' (expected one of constant, linear, qdagger)"),
        ),
        (
            "LambdaSchedule value>1",
            lambda: LambdaSchedule("linear", 1.5),
            (ValueError, "lambda must be in [0, 1], got 1.5"),
        ),
        (
            "LambdaSchedule value<0",
            lambda: LambdaSchedule("linear", -0.5),
            (ValueError, "lambda must be in [0, 1], got -0.5"),
        ),
        (
            "LambdaSchedule end>1",
            lambda: LambdaSchedule("linear", 1.0, 1.5),
            (ValueError, "lambda end must be in [0, 1], got 1.5"),
        ),
        (
            "LambdaSchedule end<0",
            lambda: LambdaSchedule("linear", 1.0, -0.5),
            (ValueError, "lambda end must be in [0, 1], got -0.5"),
        ),
        ("LambdaSchedule edges", lambda: (LambdaSchedule("linear", 0.0, 1.0), LambdaSchedule("qdagger", 1.0)), ok),
        (
            "DistillLoss name",
            lambda: DistillLoss("l2"),
            (ValueError, "unknown distillation loss 'l2' (expected one of mse, kl, ce, nll)"),
        ),
        (
            "DistillLoss kl tau=0",
            lambda: DistillLoss("kl", 0.0),
            (ValueError, "temperatures must be > 0, got temperature=0.0, student_temperature=None"),
        ),
        (
            "DistillLoss kl tau=0 student tau=1",
            lambda: DistillLoss("kl", 0.0, 1.0),
            (ValueError, "temperatures must be > 0, got temperature=0.0, student_temperature=1.0"),
        ),
        (
            "DistillLoss ce student tau=0",
            lambda: DistillLoss("ce", 1.0, 0.0),
            (ValueError, "temperatures must be > 0, got temperature=1.0, student_temperature=0.0"),
        ),
        ("DistillLoss kl tau tiny", lambda: DistillLoss("kl", 1e-9, 1e-9), ok),
        (
            "StudentLoss td without lambda",
            lambda: StudentLoss("h", "kl", td=TDTerm()),
            (ValueError, "loss 'h': a hybrid loss (td set) needs a distill_weight schedule"),
        ),
        ("TDTerm loss", lambda: TDTerm(td_loss="l1"), (ValueError, "unknown TD loss 'l1' (expected huber or mse)")),
        (
            "td_error_loss kind",
            lambda: td_error_loss(torch.zeros(1), torch.zeros(1), "l1"),
            (ValueError, "unknown TD loss 'l1' (expected 'huber' or 'mse')"),
        ),
        (
            "Pruning amount=1",
            lambda: Pruning(amount=1.0),
            (ValueError, "distill.prune amount and at must be in [0, 1), got 1.0, 0.5"),
        ),
        (
            "Pruning amount<0",
            lambda: Pruning(amount=-0.5),
            (ValueError, "distill.prune amount and at must be in [0, 1), got -0.5, 0.5"),
        ),
        (
            "Pruning at=1",
            lambda: Pruning(at=1.0),
            (ValueError, "distill.prune amount and at must be in [0, 1), got 0.0, 1.0"),
        ),
        ("Pruning at 0", lambda: Pruning(amount=0.0, at=0.0), ok),
        (
            "Quantization at=1",
            lambda: Quantization(at=1.0),
            (ValueError, "distill.quantize.at must be in [0, 1), got 1.0"),
        ),
        (
            "Quantization at<0",
            lambda: Quantization(at=-0.5),
            (ValueError, "distill.quantize.at must be in [0, 1), got -0.5"),
        ),
        (
            "OfflinePhase steps<0",
            lambda: OfflinePhase(teacher_steps=-1),
            (ValueError, "distill.pretrain steps must be >= 0, got -1, 0"),
        ),
        (
            "OfflinePhase updates<0",
            lambda: OfflinePhase(updates=-1),
            (ValueError, "distill.pretrain steps must be >= 0, got 0, -1"),
        ),
        (
            "OfflinePhase updates without data",
            lambda: OfflinePhase(teacher_steps=0, updates=1),
            (ValueError, "distill.pretrain.updates needs teacher data"),
        ),
        ("OfflinePhase at 1", lambda: OfflinePhase(teacher_steps=1, updates=1), ok),
        (
            "PeriodicEvaluation freq=0",
            lambda: PeriodicEvaluation(0, 1, 0, "x", {}),
            (ValueError, "eval.freq and eval.episodes must be >= 1, got 0 and 1"),
        ),
        (
            "PeriodicEvaluation episodes=0",
            lambda: PeriodicEvaluation(1, 0, 0, "x", {}),
            (ValueError, "eval.freq and eval.episodes must be >= 1, got 1 and 0"),
        ),
        ("PeriodicEvaluation at 1", lambda: PeriodicEvaluation(1, 1, 0, "x", {}), ok),
        (
            "ResumeCheckpoint keep_last=0",  # the checkpointing listener of the periodic evaluation
            lambda: ResumeCheckpoint("x", keep_last=0),
            (ValueError, "checkpoint.keep_last must be >= 1, got 0"),
        ),
        ("build_optimizer name", lambda: build_optimizer("adagrad", 1e-3), (ValueError, "unknown optimizer 'adagrad'")),
        (
            "make_vector_env num_envs=0",
            lambda: make_vector_env("CartPole-v1", 0, 0),
            (EnvError, "env.num_envs must be >= 1, got 0"),
        ),
        (
            "make_vector_env vectorization",
            lambda: make_vector_env("CartPole-v1", 1, 0, vectorization="x"),
            (EnvError, "env.vectorization must be 'sync', 'async' or 'envpool', got 'x'"),
        ),
    ]
    cases += [(name, make, err, msg) for name, make, (err, msg) in table]
    return cases


CONSTRUCTORS = _constructors()


@pytest.mark.parametrize("name,make,error,message", CONSTRUCTORS, ids=[c[0] for c in CONSTRUCTORS])
def test_constructor_boundaries(name, make, error, message):
    if error is None:
        make()
    else:
        with pytest.raises(error) as err:
            make()
        assert str(err.value) == message or str(err.value).startswith(message), str(err.value)


def test_unknown_control_and_update_are_refused_by_the_modules():
    """The student's control and the multi-task update mode, checked where they are used too."""
    import kdrl.modules.multitask as mt
    import kdrl.modules.student as st

    assert st.CONTROLS == ("teacher", "student", "mixed") and mt.UPDATES == ("interleave", "sum")
    with pytest.raises(ValueError) as refused:
        st.DistillStudent(None, None, None, {}, {}, None, "both", None)
    assert str(refused.value) == "unknown control 'both' (expected one of teacher, student, mixed)"
    with pytest.raises(ValueError, match="unknown update 'mean'"):
        mt.MultiTaskModule(None, [], {}, None, None, update="mean")
