"""Composing kdrl's Hydra configs from code (inside a running Hydra app or outside one)."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")


def compose_config(config_name: str, overrides: list[str] | None = None) -> DictConfig:
    """``config_name`` from conf/ with ``overrides``; reuses Hydra's global state when an app runs."""
    overrides = list(overrides or [])
    if GlobalHydra.instance().is_initialized():
        return compose(config_name=config_name, overrides=overrides)
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides)
