"""Teachers for distillation: from a checkpoint, or trained on demand and cached.

An on-demand teacher is keyed by a hash of what determines it (env, net, algo, eval protocol and
seed). Jobs asking for the same teacher take an exclusive file lock on its cache entry, so in a
parallel sweep it is trained exactly once and never read half-written (files are also written
atomically and ``teacher.pt`` appears last).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from kdrl.config import CONF_DIR, compose_config
from kdrl.io import load_policy

log = logging.getLogger("kdrl.teachers")


# Bump when a change to training code or the policy-file schema makes cached teachers incompatible or
# no longer what the same config would train (2: SeedSequence seeds, no Lightning prefetch).
TEACHER_CACHE_VERSION = 2
# What defines a teacher besides its seed: the sections a student's config shares with it.
TEACHER_SECTIONS = ("env", "net", "algo")


def teacher_key(tcfg: Any) -> str:
    body = OmegaConf.to_container(tcfg, resolve=True)
    ident = {k: body[k] for k in TEACHER_SECTIONS}
    ident["env"] = {k: v for k, v in ident["env"].items() if k != "perturbations"}  # evaluation only
    ident.update(eval=body["eval"], seed=body["seed"], version=TEACHER_CACHE_VERSION)
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:12]


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


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
    """``key=value`` overrides turning ``base``'s teacher sections into ``cfg``'s (leaf by leaf)."""

    def leaves(node: Any, prefix: str) -> dict[str, Any]:
        if isinstance(node, dict):
            return {k: v for key, sub in node.items() for k, v in leaves(sub, f"{prefix}.{key}").items()}
        return {prefix: node}

    out = []
    for section in TEACHER_SECTIONS:
        want = leaves(OmegaConf.to_container(cfg[section], resolve=True), section)
        have = leaves(OmegaConf.to_container(base[section], resolve=True), section)
        for key, value in want.items():
            if key.startswith("env.perturbations") or have.get(key, object()) == value:
                continue
            out.append(f"{key if key in have else '+' + key}={json.dumps(value)}")
    return out


def teacher_config(env: str, seed: int, overrides: list[str]) -> Any:
    return compose_config(
        "train", [f"env={env}", f"seed={seed}", "logger=csv", "trainer.enable_progress_bar=false", *overrides]
    )


def obtain_teacher(env: str, seed: int, overrides: list[str], cache_dir: str | Path) -> tuple[Path, dict]:
    """Path to a cached teacher.pt for this teacher config (training it if absent) and its results.
    ``env`` is a conf/env name; ``overrides`` are kdrl-train's (teacher_overrides)."""
    from kdrl.runs.teacher import train_teacher

    tcfg = teacher_config(env, seed, overrides)
    entry = Path(cache_dir) / "teachers" / f"{tcfg.env.id}-s{seed}-{teacher_key(tcfg)}"
    ckpt, results = entry / "teacher.pt", entry / "results.json"
    with file_lock(entry.with_suffix(".lock")):
        if ckpt.is_file() and results.is_file() and json.loads(results.read_text()).get("status") == "ok":
            log.info("reusing cached teacher %s", entry)
        else:
            log.info("training teacher %s (not cached yet)", entry)
            train_teacher(tcfg, entry)
    return ckpt, json.loads(results.read_text())


def load_teacher_net(path: str | Path, env_id: str, obs_shape: tuple[int, ...], n_actions: int):
    """Rebuild a teacher network from a weights-only policy checkpoint, checked against the env."""
    from hydra.utils import instantiate

    state = load_policy(path, env_id, obs_shape, n_actions)
    net = instantiate(state["net"], obs_shape=tuple(obs_shape), n_actions=int(n_actions))
    net.load_state_dict(state["state_dict"])
    return net.eval(), state
