"""Atomic file writes and weights-only policy checkpoints (single-task and multi-task).

Every file another process may read (results.json, checkpoints, exported policies) is written to
a temporary file in the same directory and renamed into place, so a kill never leaves a half file
that a later run would trust.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from kdrl.errors import KdrlUserError

if TYPE_CHECKING:  # annotation only: io stays light for the table tools (kdrl.envs imports gymnasium)
    from kdrl.envs import EnvSpec

POLICY_FORMAT = "kdrl-qnet/1"
MULTITASK_FORMAT = "kdrl-multitask/1"


class CheckpointError(KdrlUserError, ValueError):
    """A checkpoint that is missing, unreadable, unsafe or does not fit the requested env."""


def atomic_write(path: str | Path, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` then rename the temporary file onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def remove_interrupted_writes(directory: str | Path) -> list[Path]:
    """Delete the temporary files of atomic writes that a killed process never renamed (SIGKILL skips
    the cleanup in ``atomic_write``). Only for a directory no other live process writes to."""
    stale = [p for p in Path(directory).glob(".*.tmp") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2, default=str)
            f.flush()
            os.fsync(f.fileno())

    return atomic_write(path, write)


def atomic_torch_save(path: str | Path, obj: Any) -> Path:
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def cpu_weights(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state_dict detached and on the CPU: what a weights-only policy file holds, loadable on
    any device."""
    return {k: v.detach().cpu() for k, v in net.state_dict().items()}


def save_policy(
    path: str | Path,
    net: torch.nn.Module,
    net_cfg: dict,
    env_id: str,
    obs_shape: tuple[int, ...],
    n_actions: int,
    extra: dict | None = None,
) -> Path:
    """A self-describing, weights-only checkpoint of a Q-network (what students load)."""
    payload = {
        "format": POLICY_FORMAT,
        "env_id": env_id,
        "obs_shape": list(obs_shape),
        "n_actions": int(n_actions),
        "net": net_cfg,
        "state_dict": cpu_weights(net),
        "extra": extra or {},
    }
    return atomic_torch_save(path, payload)


def load_checkpoint_file(path: str | Path) -> dict:
    """torch.load with ``weights_only=True``: a pickled object that would run code is refused."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated files, foreign pickles, non-checkpoints
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"cannot load checkpoint {path} safely (weights_only): {first}") from exc
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} is not a kdrl checkpoint (got {type(obj).__name__})")
    return obj


def load_policy(
    path: str | Path, env_id: str | None = None, obs_shape: tuple[int, ...] | None = None, n_actions: int | None = None
) -> dict:
    """Load a policy checkpoint and check it fits the env it will be used on."""
    obj = load_checkpoint_file(path)
    if obj.get("format") != POLICY_FORMAT:
        raise CheckpointError(f"{path} is not a kdrl policy checkpoint (format={obj.get('format')!r})")
    if env_id is not None and obj["env_id"] != env_id:
        raise CheckpointError(f"checkpoint {path} was trained on '{obj['env_id']}', not '{env_id}'")
    if obs_shape is not None and tuple(obj["obs_shape"]) != tuple(obs_shape):
        raise CheckpointError(
            f"checkpoint {path} expects observations of shape {tuple(obj['obs_shape'])}, env gives {tuple(obs_shape)}"
        )
    if n_actions is not None and int(obj["n_actions"]) != int(n_actions):
        raise CheckpointError(f"checkpoint {path} has {obj['n_actions']} actions, env has {n_actions}")
    return obj


def save_multitask_policy(
    path: str | Path,
    net: torch.nn.Module,
    net_cfg: dict[str, Any],
    names: Sequence[str],
    specs: Sequence[EnvSpec],
    extra: dict[str, Any] | None = None,
) -> Path:
    """A self-describing, weights-only checkpoint of a multi-task net: its config and, per task, the
    name, env id and shapes the heads were trained for."""
    payload = {
        "format": MULTITASK_FORMAT,
        "net": dict(net_cfg),
        "tasks": [
            {"name": n, "env_id": s.env_id, "obs_shape": list(s.obs_shape), "n_actions": int(s.n_actions)}
            for n, s in zip(names, specs)
        ],
        "state_dict": cpu_weights(net),
        "extra": extra or {},
    }
    return atomic_torch_save(path, payload)


def load_multitask_policy(path: str | Path, env_ids: Sequence[str] | None = None) -> dict[str, Any]:
    """Load (weights_only) a multi-task policy file, checked against the tasks' env ids in order."""
    obj = load_checkpoint_file(path)
    if obj.get("format") != MULTITASK_FORMAT:
        raise CheckpointError(f"{path} is not a kdrl multi-task policy (format={obj.get('format')!r})")
    if env_ids is not None and [t["env_id"] for t in obj["tasks"]] != list(env_ids):
        raise CheckpointError(f"{path} was trained on {[t['env_id'] for t in obj['tasks']]}, not {list(env_ids)}")
    return obj
