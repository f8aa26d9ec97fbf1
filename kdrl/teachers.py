"""Teachers for distillation: from a checkpoint, or from the cache of on-demand teachers. This module
only finds and loads teachers; a missing one is trained by its own job (kdrl-train, a kdrl-study
teacher stage, or kdrl-distill's on-demand convenience: the job runner's ``obtain_teacher``).

An on-demand teacher is keyed by a hash of what determines it (env, net, algo, eval protocol and
seed). Jobs asking for the same teacher take an exclusive lock on its cache entry (kdrl.locks: an
``O_EXCL`` lock file with a heartbeat, which holds on NFS and Lustre where ``flock`` does not), so
in a parallel sweep it is trained exactly once and never read half-written (files are also written
atomically and ``teacher.pt`` appears last).

Faults: a job killed while training the teacher leaves a stale lock, which the next job breaks
(at once on the same host, after ``KDRL_LOCK_STALE_S``, 600 s, without a heartbeat from another
host); it then resumes from the entry's last complete checkpoint. An entry whose results.json,
teacher.pt or policy checkpoints are corrupt is not trusted: the broken file is moved aside as
``<name>.corrupt`` (one log line says which and why) and the teacher is trained again.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from kdrl.config import CONF_DIR, compose_config
from kdrl.errors import KdrlUserError
from kdrl.io import CheckpointError, load_policy, remove_interrupted_writes, set_aside
from kdrl.locks import exclusive_lock

log = logging.getLogger("kdrl.teachers")


# Bump when a change to training code or the policy-file schema makes cached teachers incompatible or
# no longer what the same config would train (2: SeedSequence seeds, no Lightning prefetch).
TEACHER_CACHE_VERSION = 2
# What defines a teacher besides its seed: the sections a student's config shares with it.
TEACHER_SECTIONS = ("env", "net", "algo")
# How a job runs, not what its teacher is: a student's choice does not reach its teacher, which is
# trained as its recipe says (``teacher.overrides`` can still set these for the teacher itself, and
# then, as they change its training, e.g. the actor's one-round policy lag, they change its key).
# env.vectorization stays shared: envpool is another implementation of the env.
EXECUTION_SETTINGS = ("env.actor",)


def teacher_key(tcfg: Any) -> str:
    body = OmegaConf.to_container(tcfg, resolve=True)
    ident = {k: body[k] for k in TEACHER_SECTIONS}
    ident["env"] = {k: v for k, v in ident["env"].items() if k != "perturbations"}  # evaluation only
    evaluation = {k: v for k, v in body["eval"].items() if k != "reference_episodes"}  # kdrl.reference's own check
    ident.update(eval=evaluation, seed=body["seed"], version=TEACHER_CACHE_VERSION)
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:12]


def env_choice(env_id: str) -> str:
    """The conf/env file whose ``id`` is ``env_id`` (how a composed config names its env)."""
    for path in sorted(Path(CONF_DIR, "env").glob("*.yaml")):
        if OmegaConf.load(path).get("env", {}).get("id") == env_id:
            return path.stem
    raise ValueError(f"no conf/env/*.yaml has id '{env_id}': give teacher.checkpoint instead")


def teacher_overrides(cfg: Any, choices: dict[str, str | None], env: str | None = None) -> list[str]:
    """kdrl-train overrides for the teacher a job needs: its budget, the recipe and debug preset the
    job was composed with, the job's own changes to the sections it shares with its teacher (``env``,
    ``net``, ``algo``: ``kdrl-distill algo.gamma=0.95`` distils a teacher trained with gamma 0.95,
    not the cached default), then ``teacher.overrides``. ``env``: the conf/env name, when the job's
    config has the teacher's sections (kdrl-distill; multi-task configs do not)."""
    picked = [f"{group}={choices[group]}" for group in ("recipe", "debug") if choices.get(group)]
    common = [f"budget={cfg.budget}", *picked]
    shared = []
    if env is not None and all(section in cfg for section in TEACHER_SECTIONS):
        shared = section_overrides(cfg, teacher_config(env, 0, common))
    return [*common, *shared, *cfg.teacher.overrides]


def section_overrides(cfg: Any, base: Any) -> list[str]:
    """``key=value`` overrides turning ``base``'s teacher sections into ``cfg``'s (leaf by leaf),
    but for evaluation-only perturbations and ``EXECUTION_SETTINGS``."""

    def leaves(node: Any, prefix: str) -> dict[str, Any]:
        if isinstance(node, dict):
            return {k: v for key, sub in node.items() for k, v in leaves(sub, f"{prefix}.{key}").items()}
        return {prefix: node}

    out = []
    for section in TEACHER_SECTIONS:
        want = leaves(OmegaConf.to_container(cfg[section], resolve=True), section)
        have = leaves(OmegaConf.to_container(base[section], resolve=True), section)
        for key, value in want.items():
            if key.startswith("env.perturbations") or key in EXECUTION_SETTINGS or have.get(key, object()) == value:
                continue
            out.append(f"{key if key in have else '+' + key}={json.dumps(value)}")
    return out


def teacher_config(env: str, seed: int, overrides: list[str]) -> Any:
    return compose_config(
        "train", [f"env={env}", f"seed={seed}", "logger=csv", "trainer.enable_progress_bar=false", *overrides]
    )


def cache_entry(tcfg: Any, cache_dir: str | Path) -> Path:
    """The cache dir of the teacher that config ``tcfg`` (kdrl-train's) trains."""
    return Path(cache_dir) / "teachers" / f"{tcfg.env.id}-s{tcfg.seed}-{teacher_key(tcfg)}"


def looks_cached(entry: Path) -> bool:
    """A quick look without the lock (for planning only; ``cached_teacher`` checks under it)."""
    try:
        done = json.loads((entry / "results.json").read_text()).get("status") == "ok"
    except (OSError, ValueError, AttributeError):
        return False
    return done and (entry / "teacher.pt").is_file()


class TeacherNotTrained(KdrlUserError, FileNotFoundError):
    """A job needs a teacher that no file holds yet: a teacher is trained by its own job (kdrl-train,
    a kdrl-study teacher stage, or kdrl-distill's on-demand convenience), never inside a student."""


def cached_teacher(env: str, seed: int, overrides: list[str], cache_dir: str | Path) -> tuple[Path, dict]:
    """Path to the cached teacher.pt of this teacher config and its results: load only (waiting while
    another job holds the entry's lock, e.g. trains it). TeacherNotTrained when the cache lacks it.
    ``env`` is a conf/env name; ``overrides`` are kdrl-train's (teacher_overrides). Training a missing
    one is the job runner's (its ``obtain_teacher``)."""
    tcfg = teacher_config(env, seed, overrides)
    entry = cache_entry(tcfg, cache_dir)
    with exclusive_lock(entry.with_suffix(".lock")):
        if not cached_teacher_ok(entry):
            raise TeacherNotTrained(
                f"no trained teacher for env={env} seed={seed} in the cache ({entry}): train it with "
                f"`kdrl-train env={env} seed={seed} {' '.join(overrides)}` and pass teacher.checkpoint=<its "
                "run dir>/teacher.pt, or run kdrl-distill without teacher.checkpoint (it trains it on demand)"
            )
        log.info("reusing cached teacher %s", entry)
        return entry / "teacher.pt", json.loads((entry / "results.json").read_text())


def cached_teacher_ok(entry: Path) -> bool:
    """Whether cache ``entry`` holds a finished teacher: a results.json with status ok and a
    teacher.pt that loads. Called under the entry's lock. When it does not, the entry is made safe
    to train into: a corrupt results.json or teacher.pt is set aside as ``<name>.corrupt`` with one
    warning line naming it and what is wrong; a results.json that says ok without its teacher.pt is
    removed (the training would skip as done); so are temp files of interrupted writes. Damaged
    policy files in checkpoints/ (which a resumed run's final evaluation reads) set the whole
    directory aside, so the teacher is trained from scratch; a damaged full checkpoint (``*.ckpt``)
    is the job runner's to handle (its ``resume_checkpoint``). What remains is complete files
    only, and the training resumes from its last checkpoint."""

    def discard(path: Path, problem: str) -> None:
        aside = set_aside(path)
        log.warning("teacher cache: %s; moved %s to %s and training the teacher again", problem, path.name, aside.name)

    ckpt, results = entry / "teacher.pt", entry / "results.json"
    res: dict[str, Any] | None = None
    if results.is_file():
        try:
            res = json.loads(results.read_text())
            if not isinstance(res, dict):
                raise ValueError(f"it holds a JSON {type(res).__name__}, not an object")
        except (OSError, ValueError) as exc:
            discard(results, f"{results} is corrupt ({' '.join(str(exc).split())[:160]})")
            res = None
    if ckpt.is_file():
        try:
            load_policy(ckpt)
        except CheckpointError as exc:
            discard(ckpt, " ".join(str(exc).split()))
    if res is not None and res.get("status") == "ok":
        if ckpt.is_file():
            return True
        results.unlink()
    if entry.is_dir():
        remove_interrupted_writes(entry)
        for path in sorted((entry / "checkpoints").glob("*_policy.pt")):
            try:
                load_policy(path)
            except CheckpointError as exc:
                discard(path.parent, " ".join(str(exc).split()))
                break
    return False


def load_teacher_net(
    path: str | Path, env_id: str, obs_shape: tuple[int, ...], n_actions: int, trust_code: bool = False
):
    """Rebuild a teacher network, checked against the env: from a kdrl policy file, or from another
    tool's file (kdrl.foreign: SB3 / RL Zoo, CleanRL, TorchScript). The returned state has
    ``net`` (the kdrl net config it was rebuilt as; None for TorchScript), ``format`` and, for
    foreign files, ``reported_return`` and ``source``. ``trust_code``: a TorchScript file (a
    program) may be loaded."""
    from hydra.utils import instantiate

    from kdrl.foreign import ScriptedQNetwork, detect_format, load_foreign

    fmt = detect_format(path)
    if fmt == "kdrl":
        state = load_policy(path, env_id, obs_shape, n_actions)
        net = instantiate(state["net"], obs_shape=tuple(obs_shape), n_actions=int(n_actions))
        net.load_state_dict(state["state_dict"])
        return net.eval(), {**state, "format": "kdrl"}
    foreign = load_foreign(path, trust_code=trust_code)  # TorchScript runs code: only with teacher.trust_code
    if foreign.obs_shape is not None and tuple(foreign.obs_shape) != tuple(obs_shape):
        raise CheckpointError(
            f"{fmt} teacher {path} takes observations of shape {tuple(foreign.obs_shape)}, env '{env_id}' gives "
            f"{tuple(obs_shape)}: use the env (and frame stack) it was trained on (README: bring your own teacher)"
        )
    if foreign.n_actions is not None and foreign.n_actions != int(n_actions):
        raise CheckpointError(f"{fmt} teacher {path} has {foreign.n_actions} actions, env '{env_id}' has {n_actions}")
    if foreign.module is not None:
        net = ScriptedQNetwork(foreign.module, tuple(obs_shape))
        try:
            with torch.no_grad():
                out = net(torch.zeros(2, *obs_shape))
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(
                f"TorchScript teacher {path} cannot take observations of shape {tuple(obs_shape)} from env "
                f"'{env_id}' ({first})"
            ) from exc
        if tuple(out.shape) != (2, int(n_actions)):
            raise CheckpointError(
                f"TorchScript teacher {path} maps a batch of 2 observations to shape {tuple(out.shape)}, "
                f"not (2, {n_actions}) Q-values"
            )
    else:
        net = instantiate(foreign.net_cfg, obs_shape=tuple(obs_shape), n_actions=int(n_actions))
        net.load_state_dict(foreign.state_dict)
    state = {
        "net": foreign.net_cfg,
        "format": fmt,
        "env_id": env_id,
        "reported_return": foreign.reported_return,
        "source": foreign.source,
    }
    return net.eval(), state


def mismatch_warning(fmt: str, teacher: float, random: float, reported: float | None) -> str | None:
    """One line when a teacher does far worse in kdrl's env than its files report (under half of
    the reported gain over random), or does not beat a random policy: the wrapper-mismatch trap
    (RL-Zoo #80, SB3 #1128). None when neither holds."""
    if reported is not None and reported > random and (teacher - random) < 0.5 * (reported - random):
        return (
            f"the {fmt} teacher returns {teacher:.1f} in kdrl's env, far below the {reported:.1f} its files report "
            f"(random {random:.1f}): its training wrappers probably differ from kdrl's env (frame stack, "
            "preprocessing, sticky actions, episodic life)"
        )
    if teacher <= random:
        return (
            f"the {fmt} teacher returns {teacher:.1f} in kdrl's env, no better than a random policy ({random:.1f}): "
            "check that its training env and wrappers match kdrl's env"
        )
    return None
