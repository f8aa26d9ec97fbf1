"""Composing kdrl's Hydra configs from code (inside a running Hydra app or outside one)."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig


def _conf_dir() -> Path:
    """The Hydra config dir: the repo's top-level conf/ ships inside the package as kdrl/conf
    (pyproject.toml maps kdrl.conf to conf/). An installed wheel has kdrl/conf next to this file;
    a source checkout or an editable install (`pip install -e .`) has no kdrl/conf and uses conf/
    itself, so edits there take effect without reinstalling."""
    pkg = Path(__file__).resolve().parent
    packaged = pkg / "conf"
    return packaged if packaged.is_dir() else pkg.parent / "conf"


CONF_DIR = str(_conf_dir())  # absolute; the Hydra apps pass it as @hydra.main(config_path=...)


def compose_config(config_name: str, overrides: list[str] | None = None) -> DictConfig:
    """``config_name`` from conf/ with ``overrides``; reuses Hydra's global state when an app runs."""
    overrides = list(overrides or [])
    if GlobalHydra.instance().is_initialized():
        return compose(config_name=config_name, overrides=overrides)
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides)
