"""Config checks with one-line, actionable messages, run before anything is built.

Hydra already rejects unknown config groups, unknown keys and malformed overrides with its own
messages; this catches values that are well-typed but meaningless (a zero temperature, a width of
0, lambda outside [0, 1], ...), so a typo fails in a second instead of after a teacher is trained.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from kdrl.errors import KdrlUserError
from kdrl.losses import LOSSES, LambdaSchedule


class ConfigError(KdrlUserError, ValueError):
    """A config value that cannot work; the message names the key and what would."""


def _num(cfg: DictConfig, key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        if node is None or part not in node:
            return None
        node = node[part]
    return node


def _check(cond: bool, key: str, rule: str, value: Any) -> None:
    if not cond:
        raise ConfigError(f"{key} must be {rule}, got {value!r}")


def _int_at_least(cfg: DictConfig, key: str, low: int) -> None:
    v = _num(cfg, key)
    if v is None:
        return
    _check(isinstance(v, int) and not isinstance(v, bool) and v >= low, key, f"an integer >= {low}", v)


def _in_range(cfg: DictConfig, key: str, low: float, high: float, low_open: bool = False) -> None:
    v = _num(cfg, key)
    if v is None:
        return
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and (v > low if low_open else v >= low) and v <= high
    _check(ok, key, f"in {'(' if low_open else '['}{low}, {high}]", v)


def _one_of(cfg: DictConfig, key: str, options: tuple) -> None:
    v = _num(cfg, key)
    if v is None and None in options:
        return
    _check(v in options, key, "one of " + ", ".join(map(str, options)), v)


def validate_common(cfg: DictConfig) -> None:
    _one_of(cfg, "budget", ("cpu", "gpu", "paper"))
    _int_at_least(cfg, "seed", 0)
    _int_at_least(cfg, "torch_threads", 1)
    _int_at_least(cfg, "env.num_envs", 1)
    _one_of(cfg, "env.vectorization", ("sync", "async", "envpool"))
    _one_of(cfg, "env.actor", ("inline", "process", None))
    for key in (
        "total_timesteps",
        "buffer_size",
        "batch_size",
        "train_freq",
        "gradient_steps",
        "target_update_interval",
    ):
        _int_at_least(cfg, f"algo.{key}", 1)
    _int_at_least(cfg, "algo.learning_starts", 0)
    _int_at_least(cfg, "algo.n_step", 1)
    _in_range(cfg, "algo.gamma", 0.0, 1.0)
    _in_range(cfg, "algo.tau", 0.0, 1.0, low_open=True)
    _one_of(cfg, "algo.td_loss", ("huber", "mse"))
    for key in ("eps_start", "eps_end"):
        _in_range(cfg, f"algo.exploration.{key}", 0.0, 1.0)
    _in_range(cfg, "algo.optimizer.lr", 0.0, 10.0, low_open=True)
    _one_of(cfg, "algo.optimizer.name", ("adam", "adamw", "rmsprop", "sgd"))
    for key in ("width", "depth"):
        _int_at_least(cfg, f"net.{key}", 1)
    for key in ("freq", "episodes", "final_episodes"):
        _int_at_least(cfg, f"eval.{key}", 1)
    _one_of(cfg, "eval.final_policy", ("best", "last"))
    _in_range(cfg, "eval.epsilon", 0.0, 1.0)
    _makes_updates(cfg, "algo")


def _makes_updates(cfg: DictConfig, block: str) -> None:
    """A run whose first update would come after its budget ends trains nothing, and a replay that
    cannot hold one batch samples the same few transitions over and over: refuse both."""
    capacity, batch_size = _num(cfg, f"{block}.buffer_size"), _num(cfg, f"{block}.batch_size")
    if isinstance(capacity, int) and isinstance(batch_size, int) and capacity < batch_size:
        raise ConfigError(
            f"{block}.buffer_size ({capacity}) is smaller than one batch ({block}.batch_size = {batch_size}): "
            "the replay must hold at least one batch of distinct transitions"
        )
    total, starts, batch = (_num(cfg, f"{block}.{k}") for k in ("total_timesteps", "learning_starts", "batch_size"))
    if None in (total, starts, batch):
        return
    first = max(int(starts), int(batch))  # updates start once learning_starts and one batch are collected
    if first >= int(total):
        raise ConfigError(
            f"{block}.learning_starts ({starts}) and {block}.batch_size ({batch}) leave no update within "
            f"{block}.total_timesteps ({total}): lower them or raise the budget"
        )


def validate_distill(cfg: DictConfig) -> None:
    validate_common(cfg)
    _makes_updates(cfg, "distill")
    _int_at_least(cfg, "distill.n_step", 1)
    for key in ("teacher_steps", "updates"):
        _int_at_least(cfg, f"distill.pretrain.{key}", 0)
    _in_range(cfg, "distill.pretrain.epsilon", 0.0, 1.0)
    for key in ("amount", "at"):
        v = _num(cfg, f"distill.prune.{key}")
        _check(v is None or (isinstance(v, (int, float)) and 0.0 <= v < 1.0), f"distill.prune.{key}", "in [0, 1)", v)
    if (_num(cfg, "distill.prune.amount") or 0) > 0 and _num(cfg, "baseline") == "scratch":
        raise ConfigError("distill.prune prunes a distilled student: not for baseline=scratch")
    if (_num(cfg, "distill.pretrain.updates") or 0) > 0:
        if (_num(cfg, "distill.pretrain.teacher_steps") or 0) <= 0:
            raise ConfigError("distill.pretrain.updates needs teacher data: set distill.pretrain.teacher_steps > 0")
        if _num(cfg, "baseline") == "scratch":
            raise ConfigError("distill.pretrain is QDagger's offline phase on teacher data: not for baseline=scratch")
    for key in ("width", "depth"):
        _int_at_least(cfg, f"student.{key}", 1)
    _one_of(cfg, "control", ("teacher", "student", "mixed"))
    if _num(cfg, "env.actor") == "process" and _num(cfg, "control") != "student":
        # the teacher's and the mixed policy's acting keep counters (and an RNG) in the learner
        raise ConfigError(
            f"env.actor=process runs only with control=student, got control={_num(cfg, 'control')!r} "
            "(use env.actor=inline)"
        )
    _one_of(cfg, "baseline", (None, "scratch"))
    _one_of(cfg, "loss.kind", LOSSES)
    _in_range(cfg, "loss.temperature", 0.0, float("inf"), low_open=True)
    if _num(cfg, "loss.student_temperature") is not None:
        _in_range(cfg, "loss.student_temperature", 0.0, float("inf"), low_open=True)
    if _num(cfg, "loss.feature_weight") is not None:
        _in_range(cfg, "loss.feature_weight", 0.0, float("inf"))
    if _num(cfg, "loss.distill_weight") is not None:  # hybrid losses
        _one_of(cfg, "loss.distill_weight.kind", LambdaSchedule.KINDS)
        _in_range(cfg, "loss.distill_weight.value", 0.0, 1.0)
        _in_range(cfg, "loss.distill_weight.end", 0.0, 1.0)
    for key in ("total_timesteps", "buffer_size", "batch_size", "train_freq", "gradient_steps"):
        _int_at_least(cfg, f"distill.{key}", 1)
    for key in ("eps_start", "eps_end"):
        _in_range(cfg, f"distill.exploration.{key}", 0.0, 1.0)
    for key in ("beta_start", "beta_end"):
        _in_range(cfg, f"distill.mixed.{key}", 0.0, 1.0)
    _in_range(cfg, "distill.optimizer.lr", 0.0, 10.0, low_open=True)
