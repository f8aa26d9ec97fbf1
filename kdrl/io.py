"""Atomic file writes and weights-only policy checkpoints (single-task and multi-task).

Every file another process may read (results.json, checkpoints, exported policies) is written to
a temporary file in the same directory, flushed to disk and renamed into place, so a kill, a crash
or a full disk never leaves a half file that a later run would trust: the file it replaces stays
whole. A full disk is one line (``DiskFullError``) naming the file.

Reading, a torch file is checked before it is unpickled (``file_problem``: empty, truncated, a
checksum mismatch, JSON or text, a directory), so a damaged file is named with what is wrong with it.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
import time
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from kdrl.errors import KdrlUserError

if TYPE_CHECKING:  # annotation only: io stays light for the table tools (kdrl.envs imports gymnasium)
    from kdrl.envs import EnvSpec

POLICY_FORMAT = "kdrl-qnet/1"
MULTITASK_FORMAT = "kdrl-multitask/1"
# A run's full Lightning checkpoints (in <run dir>/checkpoints): the newest, and while the run is
# unfinished the one it replaced, so a damaged newest one still leaves a checkpoint to resume from.
LAST_CHECKPOINT = "last.ckpt"
PREVIOUS_CHECKPOINT = "prev.ckpt"


class CheckpointError(KdrlUserError, ValueError):
    """A checkpoint that is missing, unreadable, unsafe or does not fit the requested env."""


DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)})


class DiskFullError(KdrlUserError, OSError):
    """A write that ran out of disk space (or quota). The file it would have replaced is kept whole
    and its temporary file removed; the original OSError is the ``__cause__``."""

    def __init__(self, path: str | Path, code: int = errno.ENOSPC) -> None:
        what = "disk quota exceeded" if code == getattr(errno, "EDQUOT", None) else "no space left on device"
        self.message = (
            f"{what} writing {path} (the previous file, if any, is kept): "
            "free space there or write elsewhere (hydra.run.dir=..., --out ...)"
        )
        super().__init__(code, self.message, str(path))

    def __reduce__(self) -> tuple[Any, ...]:
        # pickled by OSError's args (code, message, path) it would not rebuild: a job that hit a full disk
        # in a joblib/loky worker then reached kdrl-study as "BrokenProcessPool: A result has failed to
        # un-serialize" instead of this message
        return type(self), (self.filename, self.errno)

    def __str__(self) -> str:
        return self.message


def disk_full_cause(exc: BaseException, directory: Path | None = None) -> BaseException | None:
    """The OSError ENOSPC/EDQUOT that ``exc`` is or was raised from, or None: not a full disk. A
    writer that reports a failed write in its own words (torch's C++ zip writer given a path says
    ``unexpected pos``) counts as a full disk too, ``exc`` itself the cause, when ``directory``
    has no free block left."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in DISK_FULL_ERRNOS:
            return e
        e = e.__cause__ or e.__context__
    if directory is not None and isinstance(exc, Exception):
        try:
            if os.statvfs(directory).f_bavail == 0:
                return exc
        except (OSError, AttributeError):  # no statvfs (Windows), a vanished dir
            pass
    return None


def raise_if_disk_full(exc: BaseException, path: str | Path, directory: Path | None = None) -> None:
    """Raise DiskFullError for ``path`` (from the original OSError) when ``exc`` is a full disk."""
    if isinstance(exc, DiskFullError):
        return
    cause = disk_full_cause(exc, directory)
    if cause is not None:
        code = cause.errno if isinstance(cause, OSError) and cause.errno in DISK_FULL_ERRNOS else errno.ENOSPC
        raise DiskFullError(path, code) from cause


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def _fsync(path: str | Path, directory: bool = False) -> None:
    """Flush ``path``'s data (or a directory's entries) to disk: a crash right after the rename then
    cannot leave an empty or partial file under the new name. A directory that cannot be opened
    for fsync (some filesystems) is skipped."""
    try:
        fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    except OSError:
        if directory:
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not directory:
            raise
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[str], None], keep_previous: str | Path | None = None) -> Path:
    """Call ``write(tmp_path)``, flush the temporary file to disk and rename it onto ``path``.

    On any error the temporary file is removed and ``path`` is untouched; a full disk raises
    ``DiskFullError`` naming ``path``. ``keep_previous``: the file ``path`` held is kept under this
    name (a hard link, no copy), so a reader has a fallback if the new one is later damaged. The
    old ``keep_previous`` is removed before writing: at most two full copies exist at any time."""
    path = Path(path)
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if keep_previous is not None:
            Path(keep_previous).unlink(missing_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp's 0600 would hide results from the rest of a group
        write(tmp)
        _fsync(tmp)
        if keep_previous is not None and path.is_file():
            _keep(path, Path(keep_previous))
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            raise_if_disk_full(exc, path, path.parent)  # checked before the temp file frees its space
        finally:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
        raise
    _fsync(path.parent, directory=True)
    return path


def _keep(path: Path, previous: Path) -> None:
    try:
        os.link(path, previous)
    except OSError:  # no hard links here (some network and FAT filesystems): move it instead
        os.replace(path, previous)


def remove_interrupted_writes(directory: str | Path) -> list[Path]:
    """Delete the temporary files of atomic writes that a killed process never renamed (SIGKILL skips
    the cleanup in ``atomic_write``). Only for a directory no other live process writes to."""
    stale = [p for p in Path(directory).glob(".*.tmp") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def set_aside(path: Path) -> Path:
    """Rename a damaged file to ``<name>.corrupt`` (kept for a post-mortem, never read again)."""
    aside = path.with_name(path.name + ".corrupt")
    if aside.is_dir() or path.is_dir():
        aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
    os.replace(path, aside)
    return aside


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2, default=str)
            f.flush()
            os.fsync(f.fileno())

    return atomic_write(path, write)


def torch_save_file(obj: Any, path: str | Path) -> None:
    """torch.save through a Python file object: a failed write raises the OSError (ENOSPC, EIO, ...)
    itself, where torch's own writer given a path reports only ``unexpected pos``."""
    with open(path, "wb") as f:
        torch.save(obj, f)


def atomic_torch_save(path: str | Path, obj: Any) -> Path:
    return atomic_write(path, lambda tmp: torch_save_file(obj, tmp))


def own_cpu_copy(t: torch.Tensor) -> torch.Tensor:
    """``t`` detached, on the CPU and in a storage of its own bytes only. A parameter may be a view
    of a larger buffer (kdrl.optim's flat optimisers put every trained weight, a student's feature
    projection included, in one flat buffer), and ``torch.save`` of a view writes its whole storage."""
    t = t.detach().cpu()
    if t.untyped_storage().nbytes() == t.numel() * t.element_size() and t.is_contiguous():
        return t  # already its own storage: no copy
    return t.clone(memory_format=torch.contiguous_format)


def cpu_weights(net: torch.nn.Module) -> dict[str, Any]:
    """The state_dict detached, on the CPU and holding only the weights' own bytes: what a
    weights-only policy file holds, loadable on any device."""
    return {k: own_cpu_copy(v) if isinstance(v, torch.Tensor) else v for k, v in net.state_dict().items()}


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


def _looks_like_text(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3:  # not just a character cut at the end of the sample
            return False
        text = head[: exc.start].decode("utf-8")
    return bool(text) and all(c.isprintable() or c in "\t\r\n" for c in text)


def file_problem(path: str | Path) -> str | None:
    """What makes ``path`` unusable as a torch file, found without unpickling it (None: it looks
    whole). A zip archive (torch's format, Lightning checkpoints, TorchScript, SB3) has its central
    directory and every member's CRC checked: a truncated or bit-flipped file is caught here, where
    torch.load would fail obscurely or, for a flipped weight, load it silently."""
    path = Path(path)
    if path.is_dir():
        return "it is a directory, not a file"
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(64)
    except FileNotFoundError:
        return "it is missing"
    except OSError as exc:
        return f"it cannot be read ({exc.strerror or exc})"
    if size == 0:
        return "it is empty (0 bytes): an interrupted write or copy?"
    if head.startswith(b"PK"):
        try:
            with zipfile.ZipFile(path) as z:
                bad = z.testzip()
        except (zipfile.BadZipFile, EOFError, OSError, ValueError):
            return f"it is truncated or corrupt ({size:,} bytes, not a complete zip archive): an interrupted write or copy?"
        except Exception as exc:  # zlib.error, NotImplementedError (an unknown compression), ...
            return f"it is corrupt ({type(exc).__name__}: {' '.join(str(exc).split())[:120]})"
        return f"it is corrupt (checksum mismatch in {bad})" if bad is not None else None
    if head[:1] == b"\x80":  # a plain pickle: torch's legacy format, checked by torch.load
        return None
    if path.suffix == ".onnx":
        return "it is an ONNX model, not a kdrl checkpoint (give the .pt policy file it was exported from)"
    if head.lstrip()[:1] in (b"{", b"["):
        return "it is a JSON file, not a torch checkpoint"
    if _looks_like_text(head):
        return "it is a text file, not a torch checkpoint"
    return f"it is not a torch checkpoint (unknown format, starts with {head[:8]!r})"


def is_torchscript(path: str | Path) -> bool:
    """A TorchScript archive (torch.jit.save): a zip with code/ and constants.pkl."""
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return False
    return any("/code/" in n for n in names) and any(n.endswith("constants.pkl") for n in names)


def load_error_reason(exc: BaseException) -> str:
    """One line for a torch.load failure, without torch's advice to retry with weights_only=False."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if lines and "Weights only load failed" in lines[0]:
        detail = [
            line
            for line in lines[1:]
            if not line.startswith(("Check the documentation", "Please file an issue", "You can use"))
        ]
        why = detail[0] if detail else "an object outside tensors, numbers, strings and containers"
        return f"it holds objects a weights-only load refuses: {why}"
    return lines[0] if lines else type(exc).__name__


def torch_load_checked(path: str | Path) -> Any:
    """``torch.load(weights_only=True)`` of a file checked first by ``file_problem``; either way a
    bad file is a one-line CheckpointError naming it and what is wrong."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    problem = file_problem(path)
    if problem is not None:
        raise CheckpointError(f"cannot load checkpoint {path}: {problem}")
    if is_torchscript(path):
        raise CheckpointError(
            f"cannot load checkpoint {path}: it is a TorchScript export, not a kdrl policy file "
            "(give the .pt policy it was exported from)"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # foreign pickles, a zip that is not torch's
        raise CheckpointError(f"cannot load checkpoint {path} safely (weights_only): {load_error_reason(exc)}") from exc


def load_checkpoint_file(path: str | Path) -> dict:
    """torch.load with ``weights_only=True``: a pickled object that would run code is refused."""
    obj = torch_load_checked(path)
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
