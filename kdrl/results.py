"""The per-run results file (results.json): the contract the table tools read."""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
from pathlib import Path
from typing import Any

from kdrl.io import atomic_write_json

RESULTS_FILE = "results.json"
_PACKAGES = ("kdrl", "torch", "pytorch-lightning", "hydra-core", "omegaconf", "gymnasium", "numpy", "wandb")


def package_versions() -> dict[str, str]:
    out = {}
    for name in _PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "absent"
    out["python"] = platform.python_version()
    return out


def git_sha() -> str | None:
    try:
        res = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return res.stdout.strip() or None if res.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def write_results(run_dir: str | Path, fields: dict[str, Any]) -> Path:
    body = dict(fields)
    body.setdefault("git_sha", git_sha())
    body.setdefault("versions", package_versions())
    body.setdefault("host", platform.node())
    return atomic_write_json(Path(run_dir) / RESULTS_FILE, body)
