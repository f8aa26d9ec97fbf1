"""Config checks with one-line, actionable messages, run before anything is built.

Hydra already rejects unknown config groups, unknown keys and malformed overrides with its own
messages; this catches values that are well-typed but meaningless (a zero temperature, a width of
0, lambda outside [0, 1], ...), so a typo fails in a second instead of after a teacher is trained.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from kdrl.errors import KdrlUserError
from kdrl.losses import LOSSES, LambdaSchedule

BUDGETS = ("cpu", "gpu", "paper")
Config = Mapping[str, Any]  # a config as validated: resolved, plain dicts and lists


class ConfigError(KdrlUserError, ValueError):
    """A config value that cannot work; the message names the key and what would."""


# ---- resolving --------------------------------------------------------------------------------------
def _leaf_nodes(node: Any, prefix: str = "") -> Any:
    """(dotted key, node) for every leaf node under ``node``, interpolations unresolved."""
    keys = (
        range(len(node)) if isinstance(node, ListConfig) else list(node.keys()) if isinstance(node, DictConfig) else []
    )
    for k in keys:
        child = node._get_node(k)
        path = f"{prefix}{k}"
        if isinstance(child, (DictConfig, ListConfig)) and not child._is_interpolation() and not child._is_none():
            yield from _leaf_nodes(child, path + ".")
        else:
            yield path, child


def interpolation_references(raw: str) -> list[re.Pattern]:
    """The keys an interpolation reads, as patterns matching them and the keys under them:
    ``${budgets.${budget}.student}`` reads ``budget`` and ``budgets.<any>.student``; of
    ``${oc.select:student.size,w${student.width}}`` the first argument and ``student.width``."""
    pats, s = [], raw
    while (m := re.search(r"\$\{([^${}]*)\}", s)) is not None:
        ref = m.group(1)
        if ":" in ref:  # a resolver: oc.select's first argument is a key, the others read none
            name, _, args = ref.partition(":")
            ref = args.split(",")[0] if name == "oc.select" else ""
        if ref.strip("\0. "):
            pats.append(re.compile("[^.]+".join(re.escape(p) for p in ref.strip().split("\0")) + r"(\..+)?"))
        s = s[: m.start()] + "\0" + s[m.end() :]
    return pats


def _unresolvable(cfg: DictConfig, exc: OmegaConfBaseException) -> ConfigError:
    """An OmegaConf error met while resolving the config, as a ConfigError naming the key at its
    root: ``distill.gamma: ${algo.gamma}`` fails because of ``algo.gamma=${no.such.key}``, so the
    message names algo.gamma."""
    failing: list[tuple[str, str, str]] = []  # (key, as written, why)
    for key, node in _leaf_nodes(cfg):
        raw = node._value()
        if node._is_missing() and not node._is_interpolation():
            return ConfigError(f"{key} has no value (???): give it one, e.g. {key}=<value>")
        if node._is_interpolation():
            try:
                OmegaConf.select(cfg, key, throw_on_missing=True)
            except OmegaConfBaseException as e:
                failing.append((key, str(raw), str(e).split("\n")[0]))
    for key, raw, why in failing:
        refs = interpolation_references(raw)
        if not any(r.fullmatch(k) for r in refs for k, _, _ in failing if k != key):
            return ConfigError(f"{key} = {raw} cannot be resolved: {why}")
    key = getattr(exc, "full_key", None) or "the config"
    return ConfigError(f"{key} cannot be resolved: {str(exc).splitlines()[0]}")


def resolved(cfg: DictConfig | Config) -> dict[str, Any]:
    """The config as plain dicts and lists with every interpolation resolved. One that cannot be (an
    interpolation to a key that does not exist, an unset ``???``, a budget the recipe lacks) is a
    ConfigError naming the key, instead of OmegaConf's error from wherever the value is first read."""
    if not isinstance(cfg, DictConfig):
        return dict(cfg)
    if "budget" in cfg:  # selects the recipe's budgets.<budget> block: say so before resolving it
        try:
            raw = {"budget": cfg.budget, "budgets": OmegaConf.to_container(cfg.budgets) if "budgets" in cfg else None}
        except OmegaConfBaseException as exc:
            raise _unresolvable(cfg, exc) from exc
        _one_of(raw, "budget", _budgets(raw))
    try:
        out = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as exc:
        raise _unresolvable(cfg, exc) from exc
    assert isinstance(out, dict)
    return out


# ---- checks on the resolved config --------------------------------------------------------------------
def _budgets(c: Config) -> tuple[str, ...]:
    block = c.get("budgets")
    return tuple(str(k) for k in block) if isinstance(block, Mapping) and block else BUDGETS


_ABSENT: Any = object()  # a key this app's config does not have (checks skip it; a null is checked)


def _get(c: Config, key: str) -> Any:
    """The value at ``key``, or _ABSENT where it or a block on the way is not in the config; a block
    replaced by something else than a mapping is a ConfigError naming it."""
    node: Any = c
    parts = key.split(".")
    for i, part in enumerate(parts):
        if node is None:
            return _ABSENT
        if not isinstance(node, Mapping):
            where = ".".join(parts[:i])
            raise ConfigError(f"{where} must be a config block (a mapping with {part}, ...), got {_shown(node)}")
        if part not in node:
            return _ABSENT
        node = node[part]
    return node


def _num(c: Config, key: str) -> Any:
    """The value at ``key``, None where the config does not have it."""
    v = _get(c, key)
    return None if v is _ABSENT else v


def _check(cond: bool, key: str, rule: str, value: Any) -> None:
    if not cond:
        raise ConfigError(f"{key} must be {rule}, got {_shown(value)}")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _skip(v: Any, nullable: bool) -> bool:
    return v is _ABSENT or (nullable and v is None)


def _null_or(nullable: bool, rule: str) -> str:
    return f"null or {rule}" if nullable else rule


def _int_at_least(c: Config, key: str, low: int, nullable: bool = False) -> None:
    v = _get(c, key)
    if not _skip(v, nullable):
        _check(_is_int(v) and v >= low, key, _null_or(nullable, f"an integer >= {low}"), v)


def _in_range(c: Config, key: str, low: float, high: float, low_open: bool = False, nullable: bool = False) -> None:
    v = _get(c, key)
    if _skip(v, nullable):
        return
    ok = _is_num(v) and (v > low if low_open else v >= low) and v <= high
    _check(ok, key, _null_or(nullable, f"in {'(' if low_open else '['}{low}, {high}]"), v)


def _positive(c: Config, key: str, nullable: bool = False) -> None:
    """A finite number > 0 (or null, where null means off or a library default)."""
    v = _get(c, key)
    if not _skip(v, nullable):
        _check(_is_num(v) and 0 < v < math.inf, key, _null_or(nullable, "a number > 0"), v)


def _one_of(c: Config, key: str, options: tuple) -> None:
    v = _get(c, key)
    if v is _ABSENT or (v is None and None in options):
        return
    ok = isinstance(v, (str, int, float)) and not isinstance(v, bool) and v in options
    _check(ok, key, "one of " + ", ".join(map(str, options)), v)


def _bool(c: Config, key: str, nullable: bool = False) -> None:
    v = _get(c, key)
    if not _skip(v, nullable):
        _check(isinstance(v, bool), key, _null_or(nullable, "true or false"), v)


def _text(c: Config, key: str, nullable: bool = False) -> None:
    v = _get(c, key)
    if not _skip(v, nullable):
        _check(isinstance(v, str) and v.strip() != "", key, _null_or(nullable, "a non-empty string"), v)


def _block(c: Config, key: str, nullable: bool = False) -> None:
    """A mapping (a config block such as env.kwargs)."""
    v = _get(c, key)
    if not _skip(v, nullable):
        _check(isinstance(v, Mapping), key, _null_or(nullable, "a mapping ({name: value, ...})"), v)


def _int_list(c: Config, key: str, low: int = 1, nullable: bool = False) -> None:
    v = _get(c, key)
    if not _skip(v, nullable):
        ok = isinstance(v, list) and len(v) > 0 and all(_is_int(x) and x >= low for x in v)
        _check(ok, key, _null_or(nullable, f"a non-empty list of integers >= {low}"), v)


def _str_list(c: Config, key: str, nullable: bool = False) -> None:
    v = _get(c, key)
    if not _skip(v, nullable):
        ok = isinstance(v, list) and all(isinstance(x, str) for x in v)
        _check(ok, key, _null_or(nullable, "a list of strings"), v)


def _env_presets() -> tuple[str, ...]:
    from kdrl.config import CONF_DIR

    return tuple(sorted(p.stem for p in (Path(CONF_DIR) / "env").glob("*.yaml")))


def _run_keys(cfg: Config) -> None:
    """The root keys every app shares (conf/common.yaml), its eval, checkpoint, logger and trainer."""
    _one_of(cfg, "budget", _budgets(cfg))
    _int_at_least(cfg, "seed", 0)
    _int_at_least(cfg, "torch_threads", 1)
    _int_at_least(cfg, "log_interval", 1)
    for key in ("resume", "skip_completed"):
        _bool(cfg, key)
    for key in ("freq", "episodes", "final_episodes", "reference_episodes"):
        _int_at_least(cfg, f"eval.{key}", 1)
    final, ref = _num(cfg, "eval.final_episodes"), _num(cfg, "eval.reference_episodes")
    if _is_int(final) and _is_int(ref) and ref < final:
        raise ConfigError(
            f"eval.reference_episodes ({ref}) must be >= eval.final_episodes ({final}): the teacher reference "
            "covers the students' final held-out episodes"
        )
    for key in ("seed", "final_seed"):
        _int_at_least(cfg, f"eval.{key}", 0)
    _one_of(cfg, "eval.final_policy", ("best", "last"))
    _in_range(cfg, "eval.epsilon", 0.0, 1.0)
    stop = _num(cfg, "eval.stop_at_return")
    _check(stop is None or (_is_num(stop) and not math.isnan(stop)), "eval.stop_at_return", "null or a number", stop)
    _int_at_least(cfg, "checkpoint.keep_last", 1)
    for key in ("csv", "tensorboard"):
        _bool(cfg, f"logger.{key}")
    _one_of(cfg, "logger.wandb", ("offline", "online", "disabled"))
    _text(cfg, "wandb.project")
    _str_list(cfg, "wandb.tags", nullable=True)
    _block(cfg, "trainer")
    _bool(cfg, "trainer.enable_progress_bar")


def _dqn_block(cfg: Config, block: str) -> None:
    """A DQN block (conf/algo/dqn.yaml): the teacher's ``algo``, multi-task's ``dqn``."""
    for key in ("total_timesteps", "buffer_size", "batch_size", "train_freq", "gradient_steps"):
        _int_at_least(cfg, f"{block}.{key}", 1)
    _int_at_least(cfg, f"{block}.target_update_interval", 1)
    _int_at_least(cfg, f"{block}.learning_starts", 0)
    _int_at_least(cfg, f"{block}.n_step", 1)
    _in_range(cfg, f"{block}.gamma", 0.0, 1.0)
    _in_range(cfg, f"{block}.tau", 0.0, 1.0, low_open=True)
    _one_of(cfg, f"{block}.td_loss", ("huber", "mse"))
    for key in ("double_dqn", "reward_clip"):
        _bool(cfg, f"{block}.{key}")
    _positive(cfg, f"{block}.max_grad_norm", nullable=True)  # null: no clipping
    _one_of(cfg, f"{block}.replay", ("auto", "standard", "frame_stack"))
    _exploration(cfg, f"{block}.exploration")
    _optimizer(cfg, f"{block}.optimizer")


def _exploration(cfg: Config, block: str) -> None:
    for key in ("eps_start", "eps_end"):
        _in_range(cfg, f"{block}.{key}", 0.0, 1.0)
    for key in ("decay_steps", "delay_steps"):
        _int_at_least(cfg, f"{block}.{key}", 0)


def _optimizer(cfg: Config, block: str) -> None:
    _in_range(cfg, f"{block}.lr", 0.0, 10.0, low_open=True)
    _one_of(cfg, f"{block}.name", ("adam", "adamw", "rmsprop", "sgd"))
    _positive(cfg, f"{block}.eps", nullable=True)  # null: the optimizer's default
    # extra optimizer arguments some recipes give (minatar: centred RMSprop); null drops one
    for key in ("alpha", "momentum"):
        _in_range(cfg, f"{block}.{key}", 0.0, 1.0, nullable=True)
    _in_range(cfg, f"{block}.weight_decay", 0.0, 1.0, nullable=True)
    _bool(cfg, f"{block}.centered", nullable=True)  # null: dropped (recipe minatar_fast undoes minatar's)
    _bool(cfg, f"{block}.fused")


def _net(cfg: Config, block: str, partial: bool = False) -> None:
    """A net block (conf/net): MLP sizes, or ConvNet's conv stack; ``partial``: a recipe's student
    size, which overrides some of the teacher net's keys."""
    if not partial:
        _text(cfg, f"{block}._target_")
    for key in ("width", "depth"):
        _int_at_least(cfg, f"{block}.{key}", 1)
    _bool(cfg, f"{block}.dueling")
    _int_list(cfg, f"{block}.hidden", nullable=True)  # null: width x depth
    conv = {k: _num(cfg, f"{block}.{k}") for k in ("channels", "kernels", "strides")}
    for key, v in conv.items():
        if v is not None or (not partial and any(x is not None for x in conv.values())):
            _int_list(cfg, f"{block}.{key}")
    if not partial and any(v is not None for v in conv.values()):
        _check(
            len({len(v) for v in conv.values()}) == 1,
            f"{block}.channels",
            f"as long as {block}.kernels and {block}.strides",
            list(conv.values()),
        )
    for key in ("width_mult", "obs_scale"):
        _positive(cfg, f"{block}.{key}")


def _env(cfg: Config) -> None:
    _text(cfg, "env.id")
    _int_at_least(cfg, "env.num_envs", 1)
    _one_of(cfg, "env.vectorization", ("sync", "async", "envpool"))
    _one_of(cfg, "env.actor", ("inline", "process", None))
    _block(cfg, "env.kwargs")
    perts = _num(cfg, "env.perturbations")
    ok = perts is None or (
        isinstance(perts, list) and all(isinstance(p, Mapping) and isinstance(p.get("name"), str) for p in perts)
    )
    _check(ok, "env.perturbations", "a list of {name: ..., physics/obs_noise/kwargs: ...} entries", perts)


# what kdrl.envs.env_family tells apart: flat observation vectors (classic control, Box2D), MinAtar's
# (C, 10, 10) grids, Atari's stacked 84x84 frames. Each conf/env/*.yaml declares its env_family, each
# conf/recipe/*.yaml the families it is tuned for (recipe_for.families).
ENV_FAMILIES = ("gym", "minatar", "atari")


def _recipe_fits_env(cfg: Config) -> None:
    """A recipe made for another env family (recipe=minatar_fast env=cartpole) is refused here, in
    one line naming both and the recipes that fit, instead of when its net meets the observations."""
    _one_of(cfg, "env_family", ENV_FAMILIES)
    _block(cfg, "recipe_for", nullable=True)
    recipe = _num(cfg, "recipe_for")
    if recipe is not None:
        _text(cfg, "recipe_for.name")
        fams = _num(cfg, "recipe_for.families")
        ok = isinstance(fams, list) and len(fams) > 0 and all(isinstance(f, str) and f in ENV_FAMILIES for f in fams)
        _check(ok, "recipe_for.families", "a non-empty list of env families (" + ", ".join(ENV_FAMILIES) + ")", fams)
    family = _num(cfg, "env_family")
    if recipe is None or family is None or family in recipe["families"]:
        return
    fitting = ", ".join(recipes_for(family)) or "none"
    raise ConfigError(
        f"recipe={recipe['name']} is made for {' and '.join(recipe['families'])} envs, but the env "
        f"({_num(cfg, 'env.id')}) is a {family} env: recipes for {family} envs: {fitting} (or leave recipe= out: "
        "each env picks its own)"
    )


def recipes_for(family: str) -> list[str]:
    """The conf/recipe/*.yaml names whose recipe_for.families include ``family``."""
    from kdrl.config import CONF_DIR

    names = []
    for path in sorted((Path(CONF_DIR) / "recipe").glob("*.yaml")):
        try:
            fams = OmegaConf.load(path).get("recipe_for", {}).get("families") or []
        except Exception:
            continue
        if family in fams:
            names.append(path.stem)
    return names


def validate_common(cfg: DictConfig | Config, teacher_replay: bool = True) -> None:
    """kdrl-train's config (and the keys kdrl-distill shares with it: the teacher's algo, net, env).
    ``teacher_replay``: the algo block's replay is built (not for a distillation from a given teacher)."""
    cfg = resolved(cfg)
    _run_keys(cfg)
    _env(cfg)
    _recipe_fits_env(cfg)
    _dqn_block(cfg, "algo")
    _net(cfg, "net")
    _makes_updates(cfg, "algo")
    if teacher_replay:
        _replay_fits(cfg, "algo", [_get(cfg, "env")], _num(cfg, "algo.total_timesteps"))


# ---- a replay that cannot fit in memory ------------------------------------------------------------
def available_memory() -> tuple[int, str] | None:
    """The memory this machine has for a run, and where the figure comes from: MemAvailable in
    /proc/meminfo (os.sysconf's available pages where there is none), capped by the memory cgroup's
    limit (a SLURM job's --mem, a container's limit). None when neither can be read."""
    found: list[tuple[int, str]] = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append((int(line.split()[1]) * 1024, "MemAvailable in /proc/meminfo"))
    except (OSError, ValueError, IndexError):
        pass
    if not found:
        import os

        try:
            found.append((os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "available physical pages"))
        except (OSError, ValueError, AttributeError):
            pass
    limit = _cgroup_memory_limit()
    if limit is not None:
        found.append((limit, "the memory cgroup's limit (a SLURM --mem, a container limit)"))
    return min(found) if found else None


def _cgroup_memory_limit() -> int | None:
    """The tightest memory limit of this process's cgroup and its parents (v1 or v2), None when unset."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    limits = []
    for line in lines:
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if controllers == "":
            base, name = Path("/sys/fs/cgroup"), "memory.max"
        elif "memory" in controllers.split(","):
            base, name = Path("/sys/fs/cgroup/memory"), "memory.limit_in_bytes"
        else:
            continue
        here = base / path.strip().lstrip("/")
        for d in {base, here, *[p for p in here.parents if base in (p, *p.parents)]}:
            try:
                text = (d / name).read_text().strip()
            except OSError:
                continue
            if text.isdigit() and int(text) < 2**60:  # "max" / 2^63-ish: no limit
                limits.append(int(text))
    return min(limits) if limits else None


def _gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def _spec_of(env: Any) -> Any:
    """The env's spec (shapes, dtype) from one env made and closed; None when it cannot be made
    (building the run reports that in its own words)."""
    if not isinstance(env, Mapping) or not isinstance(env.get("id"), str):
        return None
    from kdrl.envs import probe_spec

    key = (env["id"], repr(sorted((env.get("kwargs") or {}).items())))
    if key not in _SPECS:
        try:
            _SPECS[key] = probe_spec({"id": env["id"], "kwargs": dict(env.get("kwargs") or {})})
        except Exception:
            _SPECS[key] = None
    return _SPECS[key]


_SPECS: dict[tuple[str, str], Any] = {}


def _replay_fits(cfg: Config, block: str, envs: list[Any], steps: Any = None) -> None:
    """Refuse, before anything is built, a replay (one per env in ``envs``: multi-task keeps one per
    task) that the machine's memory cannot hold with the copy each checkpoint makes of its contents;
    say its size, the memory there is and the way out: a smaller buffer, or for stacked frames kept
    whole in a standard replay, the frame-stack replay that stores each frame once. ``steps``: the
    env steps written into each replay (None: it fills)."""
    from kdrl.replay import replay_kind, replay_nbytes, stacked_frames

    capacity, kind = _num(cfg, f"{block}.buffer_size"), _num(cfg, f"{block}.replay")
    if not _is_int(capacity) or capacity < 1 or not isinstance(kind, str):
        return
    specs = [_spec_of(env) for env in envs]
    if not specs or any(spec is None for spec in specs):
        return
    num_envs = [max(1, env.get("num_envs") if _is_int(env.get("num_envs")) else 1) for env in envs]

    def need(cap: int) -> int:
        """The replays plus a checkpoint's copy: the filled part of a standard one, all of a frame-stack one."""
        out = 0
        for spec, n in zip(specs, num_envs, strict=True):
            whole = replay_kind(kind, spec.obs_shape, spec.obs_dtype) == "frame_stack" or not _is_int(steps)
            out += int(
                replay_nbytes(kind, cap, spec.obs_shape, spec.obs_dtype, n)
                * (1 + (1 if whole else min(1, steps / cap)))
            )
        return out

    memory = available_memory()
    if memory is None or need(capacity) <= memory[0]:
        return
    avail, source = memory
    lo, hi = 0, capacity  # the largest buffer that fits
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if need(mid) <= avail else (lo, mid - 1)
    spec = specs[0]
    resolved_kind = replay_kind(kind, spec.obs_shape, spec.obs_dtype)
    zipped = list(zip(specs, num_envs, strict=True))
    size = sum(replay_nbytes(kind, capacity, s.obs_shape, s.obs_dtype, n) for s, n in zipped)
    if len(specs) > 1:
        what = f"{len(specs)} {resolved_kind} replays, one per task, of {_gb(size)} together"
    else:
        stored = "each frame once" if resolved_kind == "frame_stack" else "obs and next_obs"
        what = (
            f"a {resolved_kind} replay of {_gb(size)} ({spec.obs_dtype} observations {tuple(spec.obs_shape)}, {stored})"
        )
    scale = 10 ** max(0, len(str(lo)) - 2)
    fit = lo // scale * scale  # two significant digits, rounded down
    ways = f"lower {block}.buffer_size (about {fit:,} fit)" if fit >= 1 else f"lower {block}.buffer_size"
    if resolved_kind == "standard" and all(stacked_frames(s.obs_shape, s.obs_dtype) for s in specs):
        frames = sum(replay_nbytes("frame_stack", capacity, s.obs_shape, s.obs_dtype, n) for s, n in zipped)
        ways += f", or {block}.replay=frame_stack, which stores each frame once ({_gb(frames)})"
    raise ConfigError(
        f"{block}.buffer_size={capacity:,} needs {what}, and each checkpoint copies what it holds: {_gb(need(capacity))} "
        f"in all, more than the {_gb(avail)} this machine has ({source}): {ways}"
    )


def _makes_updates(cfg: Config, block: str) -> None:
    """A run whose first update would come after its budget ends trains nothing, and a replay that
    cannot hold one batch samples the same few transitions over and over: refuse both (on values
    the per-key checks have passed)."""
    capacity, batch_size = _num(cfg, f"{block}.buffer_size"), _num(cfg, f"{block}.batch_size")
    if _is_int(capacity) and _is_int(batch_size) and capacity < batch_size:
        raise ConfigError(
            f"{block}.buffer_size ({capacity}) is smaller than one batch ({block}.batch_size = {batch_size}): "
            "the replay must hold at least one batch of distinct transitions"
        )
    total, starts, batch = (_num(cfg, f"{block}.{k}") for k in ("total_timesteps", "learning_starts", "batch_size"))
    if not all(_is_int(v) for v in (total, starts, batch)):
        return
    first = max(starts, batch)  # updates start once learning_starts and one batch are collected
    if first >= total:
        raise ConfigError(
            f"{block}.learning_starts ({starts}) and {block}.batch_size ({batch}) leave no update within "
            f"{block}.total_timesteps ({total}): lower them or raise the budget"
        )


def validate_distill(cfg: DictConfig | Config) -> None:
    """kdrl-distill's config: the teacher's keys (validate_common), the student's, the loss."""
    cfg = resolved(cfg)
    scratch = _num(cfg, "baseline") == "scratch"  # plain DQN with the algo block's replay; `control` is not used
    validate_common(cfg, teacher_replay=False)
    for key in ("total_timesteps", "buffer_size", "batch_size", "train_freq", "gradient_steps"):
        _int_at_least(cfg, f"distill.{key}", 1)
    _int_at_least(cfg, "distill.learning_starts", 0)
    _makes_updates(cfg, "distill")
    # the hybrid losses' TD settings (the teacher's algo by default)
    _int_at_least(cfg, "distill.n_step", 1)
    _int_at_least(cfg, "distill.target_update_interval", 1)
    _in_range(cfg, "distill.gamma", 0.0, 1.0)
    _in_range(cfg, "distill.tau", 0.0, 1.0, low_open=True)
    _one_of(cfg, "distill.td_loss", ("huber", "mse"))
    for key in ("double_dqn", "reward_clip"):
        _bool(cfg, f"distill.{key}")
    _positive(cfg, "distill.max_grad_norm", nullable=True)
    _one_of(cfg, "distill.replay", ("auto", "standard", "frame_stack"))
    _optimizer(cfg, "distill.optimizer")
    for key in ("teacher_steps", "updates"):
        _int_at_least(cfg, f"distill.pretrain.{key}", 0)
    _in_range(cfg, "distill.pretrain.epsilon", 0.0, 1.0)
    for key in ("distill.prune.amount", "distill.prune.at", "distill.quantize.at"):
        v = _get(cfg, key)
        _check(v is _ABSENT or (_is_num(v) and 0.0 <= v < 1.0), key, "in [0, 1)", v)
    _bool(cfg, "distill.quantize.int8")
    _one_of(cfg, "baseline", (None, "scratch"))
    if (_num(cfg, "distill.prune.amount") or 0) > 0 and _num(cfg, "baseline") == "scratch":
        raise ConfigError("distill.prune prunes a distilled student: not for baseline=scratch")
    if _get(cfg, "distill.quantize.int8") is True and _num(cfg, "baseline") == "scratch":
        raise ConfigError("distill.quantize fine-tunes a distilled student on int8 weights: not for baseline=scratch")
    if (_num(cfg, "distill.pretrain.updates") or 0) > 0:
        if (_num(cfg, "distill.pretrain.teacher_steps") or 0) <= 0:
            raise ConfigError("distill.pretrain.updates needs teacher data: set distill.pretrain.teacher_steps > 0")
        if _num(cfg, "baseline") == "scratch":
            raise ConfigError("distill.pretrain is QDagger's offline phase on teacher data: not for baseline=scratch")
    _student(cfg)
    _teacher(cfg)
    _one_of(cfg, "control", ("teacher", "student", "mixed"))
    dataset = _get(cfg, "distill.dataset")
    if dataset is not _ABSENT and dataset is not None:
        _check(isinstance(dataset, str) and dataset.strip() != "", "distill.dataset", "null or a path", dataset)
        if scratch:
            raise ConfigError("distill.dataset is a teacher's play to distil from: not for baseline=scratch")
        if _num(cfg, "control") != "teacher":
            raise ConfigError(
                f"distill.dataset is the teacher's play: control must be teacher, got control={_num(cfg, 'control')!r}"
            )
        if (_num(cfg, "distill.pretrain.updates") or 0) > 0:
            raise ConfigError("distill.dataset and distill.pretrain (QDagger's own teacher data) do not combine")
    if _num(cfg, "env.actor") == "process" and _num(cfg, "control") != "student" and not scratch:
        # the teacher's and the mixed policy's acting keep counters (and an RNG) in the learner
        raise ConfigError(
            f"env.actor=process runs only with control=student, got control={_num(cfg, 'control')!r} "
            "(use env.actor=inline)"
        )
    _loss(cfg)
    _exploration(cfg, "distill.exploration")
    for key in ("beta_start", "beta_end"):
        _in_range(cfg, f"distill.mixed.{key}", 0.0, 1.0)
    _int_at_least(cfg, "distill.mixed.decay_steps", 0)
    for key in ("generalisation_episodes", "agreement_states"):
        _int_at_least(cfg, f"eval.{key}", 1)
    # the replays it builds, one after the other: an on-demand teacher's (a given teacher.checkpoint
    # needs none) and the student's, or the scratch baseline's (the algo block's, at the student budget)
    env, student_steps = _get(cfg, "env"), _num(cfg, "distill.total_timesteps")
    if _num(cfg, "teacher.checkpoint") is None:
        _replay_fits(cfg, "algo", [env], _num(cfg, "algo.total_timesteps"))
    if scratch:
        _replay_fits(cfg, "algo", [env], student_steps)
    else:
        pretrain = _num(cfg, "distill.pretrain.teacher_steps")
        steps = student_steps + pretrain if _is_int(student_steps) and _is_int(pretrain) else student_steps
        _replay_fits(cfg, "distill", [env], steps)


def validate_data(cfg: DictConfig | Config) -> None:
    """kdrl-data's config: the env and the teacher's keys (validate_common), the dataset's size and epsilon,
    and a teacher file to play."""
    cfg = resolved(cfg)
    validate_common(cfg, teacher_replay=False)
    _int_at_least(cfg, "dataset.steps", 1)
    _in_range(cfg, "dataset.epsilon", 0.0, 1.0)
    _text(cfg, "teacher.checkpoint", nullable=True)
    _bool(cfg, "teacher.trust_code")
    if _num(cfg, "teacher.checkpoint") is None:
        raise ConfigError("kdrl-data needs the teacher that plays: set teacher.checkpoint=<a teacher.pt>")


def _student(cfg: Config) -> None:
    """The student's sizes: a named size from the recipe's student_sizes, or width/depth/hidden."""
    size = _num(cfg, "student.size")
    sizes = _num(cfg, "student_sizes")
    known = tuple(str(k) for k in sizes) if isinstance(sizes, Mapping) else ()
    if size is not None:
        _check(
            isinstance(size, str) and size in known,
            "student.size",
            "null or one of the recipe's student_sizes: " + (", ".join(known) or "none defined"),
            size,
        )
        _block(cfg, f"student_sizes.{size}")
        _net(cfg, f"student_sizes.{size}", partial=True)
    for key in ("width", "depth"):  # null: the teacher's (or the named size's)
        _int_at_least(cfg, f"student.{key}", 1, nullable=True)
    _int_list(cfg, "student.hidden", nullable=True)


def _teacher(cfg: Config) -> None:
    _text(cfg, "teacher.checkpoint", nullable=True)
    _int_at_least(cfg, "teacher.seed", 0)
    _bool(cfg, "teacher.seed_from_student")
    _str_list(cfg, "teacher.overrides")
    _text(cfg, "teacher.cache_dir")
    _bool(cfg, "teacher.trust_code")


def _loss(cfg: Config) -> None:
    """A loss block (conf/base/loss.yaml; hybrid losses add ``td`` and ``distill_weight``)."""
    _text(cfg, "loss.name")
    _one_of(cfg, "loss.kind", LOSSES)
    _in_range(cfg, "loss.temperature", 0.0, float("inf"), low_open=True)
    _in_range(cfg, "loss.student_temperature", 0.0, float("inf"), low_open=True, nullable=True)  # null: tau
    _bool(cfg, "loss.tau_squared")
    weight = _get(cfg, "loss.feature_weight")
    if not _skip(weight, nullable=True):  # null: off (StudentLoss reads it as 0)
        _check(_is_num(weight) and 0 <= weight < math.inf, "loss.feature_weight", "a number >= 0", weight)
    td, weight = _num(cfg, "loss.td"), _num(cfg, "loss.distill_weight")
    _block(cfg, "loss.td", nullable=True)
    _block(cfg, "loss.distill_weight", nullable=True)
    if (td is None) != (weight is None):
        raise ConfigError(
            "loss.td and loss.distill_weight go together (a hybrid loss: L_TD + lambda * L_distill): "
            "set both (loss=hybrid) or neither"
        )
    if weight is not None:  # hybrid losses
        _one_of(cfg, "loss.distill_weight.kind", LambdaSchedule.KINDS)
        _in_range(cfg, "loss.distill_weight.value", 0.0, 1.0)
        _in_range(cfg, "loss.distill_weight.end", 0.0, 1.0)
        _int_at_least(cfg, "loss.distill_weight.decay_steps", 0)
        _in_range(cfg, "loss.td.gamma", 0.0, 1.0)
        _one_of(cfg, "loss.td.td_loss", ("huber", "mse"))
        _bool(cfg, "loss.td.double_dqn")


def validate_multitask(cfg: DictConfig | Config) -> None:
    """kdrl-multitask's config: values that are well-typed but cannot work, in one line, before any
    teacher is trained."""
    from kdrl.modules.multitask import MODES, UPDATES
    from kdrl.nets import ADAPTERS

    cfg = resolved(cfg)
    _run_keys(cfg)
    tasks = _num(cfg, "tasks")
    presets = _env_presets()
    _check(
        isinstance(tasks, list)
        and len(tasks) >= 1
        and all(isinstance(t, str) for t in tasks)
        and len(set(tasks)) == len(tasks),
        "tasks",
        "a non-empty list of distinct env presets",
        tasks,
    )
    unknown = [t for t in tasks if t not in presets]
    _check(not unknown, "tasks", "env presets (conf/env: " + ", ".join(presets) + ")", unknown)
    _one_of(cfg, "mode", MODES)
    ckpts = _num(cfg, "teacher.checkpoints")
    _block(cfg, "teacher.checkpoints", nullable=True)
    if ckpts is not None:
        unknown = sorted(str(k) for k in ckpts if k not in tasks)
        _check(not unknown, "teacher.checkpoints", f"keyed by task names {list(tasks)}", unknown)
        for name in ckpts:
            _text(cfg, f"teacher.checkpoints.{name}", nullable=True)  # null: the cached teacher
    _int_at_least(cfg, "teacher.seed", 0)
    _str_list(cfg, "teacher.overrides")
    _text(cfg, "teacher.cache_dir")
    _bool(cfg, "teacher.trust_code")
    conv = _num(cfg, "student.conv")
    _block(cfg, "student.conv", nullable=True)
    for key, low in (("width", 1), ("depth", 0 if conv else 1)):
        v = _num(cfg, f"student.{key}")
        _check(_is_int(v) and v >= low, f"student.{key}", f"an integer >= {low}", v)
    if conv:
        for key in ("channels", "kernels", "strides"):
            _int_list(cfg, f"student.conv.{key}")
        _check(
            len({len(conv.get(k) or []) for k in ("channels", "kernels", "strides")}) == 1,
            "student.conv",
            "{channels, kernels, strides}: non-empty lists of equal length",
            conv,
        )
    _one_of(cfg, "student.adapter", ADAPTERS)
    _positive(cfg, "student.obs_scale")
    for key in ("steps_per_task", "buffer_size", "batch_size", "train_freq", "gradient_steps"):
        v = _num(cfg, f"multitask.{key}")
        _check(_is_int(v) and v >= 1, f"multitask.{key}", "an integer >= 1", v)
    _int_at_least(cfg, "multitask.learning_starts", 0)
    buffer_size, batch_size = _num(cfg, "multitask.buffer_size"), _num(cfg, "multitask.batch_size")
    _check(buffer_size >= batch_size, "multitask.buffer_size", f">= multitask.batch_size ({batch_size})", buffer_size)
    num_envs = _num(cfg, "multitask.num_envs")
    _check(
        num_envs is None or (_is_int(num_envs) and num_envs >= 1),
        "multitask.num_envs",
        "null or an integer >= 1",
        num_envs,
    )
    _one_of(cfg, "multitask.update", UPDATES)
    _positive(cfg, "multitask.max_grad_norm", nullable=True)
    _one_of(cfg, "multitask.replay", ("auto", "standard", "frame_stack"))
    _bool(cfg, "multitask.reward_clip")
    _optimizer(cfg, "multitask.optimizer")
    _exploration(cfg, "distill.exploration")
    if _num(cfg, "mode") == "joint_dqn":
        _dqn_block(cfg, "dqn")
    else:
        _loss(cfg)
        _check(
            not _num(cfg, "loss.td") and not _num(cfg, "loss.feature_weight"),
            "loss",
            "a plain distillation loss (hybrid and feature losses are single-task only)",
            _num(cfg, "loss.name"),
        )
    # one replay per task, multitask.buffer_size each, in the task's env as its conf/env preset has it
    envs = [_preset_env(name, num_envs) for name in tasks]
    _replay_fits(cfg, "multitask", envs, _num(cfg, "multitask.steps_per_task"))


def _preset_env(name: str, num_envs: Any) -> dict[str, Any] | None:
    """The env block (id, kwargs, num_envs) of conf/env/<name>.yaml."""
    from kdrl.config import CONF_DIR

    try:
        env = OmegaConf.to_container(OmegaConf.load(Path(CONF_DIR) / "env" / f"{name}.yaml").env, resolve=True)
    except Exception:
        return None
    return {**env, "num_envs": num_envs if _is_int(num_envs) else 1} if isinstance(env, dict) else None
