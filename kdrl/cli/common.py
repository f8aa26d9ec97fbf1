"""What every Hydra entry point shares: its run dir, one-line errors and a writable-output preflight."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from kdrl.config import CONF_DIR
from kdrl.errors import debugging, report


def is_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.get().mode == RunMode.MULTIRUN


def run_app(prog: str, job: Callable[[DictConfig, Path], dict[str, Any]], cfg: DictConfig) -> float:
    """Run one job in its Hydra run dir and return ``cfg.optimized_metric`` of its results (what a
    sweeper optimises). A single run turns an error into one line on stderr and exit code 2; in a
    multirun the error propagates so Hydra records the failed job and the sweep goes on. Either
    way the job's results.json says status: failed."""
    from hydra.core.hydra_config import HydraConfig

    try:
        results = job(cfg, Path(HydraConfig.get().runtime.output_dir))
    except Exception as exc:
        if debugging() or is_multirun():
            raise
        report(prog, exc)
        sys.exit(2)
    return float(results.get(str(cfg.optimized_metric), float("nan")))


def preflight_output_dirs(prog: str, argv: list[str]) -> None:
    """Fail in one line, before Hydra starts, when an output dir given on the command line cannot
    be created or written."""
    for arg in argv:
        for key in ("hydra.run.dir=", "hydra.sweep.dir="):
            if not arg.startswith(key):
                continue
            path = Path(arg[len(key) :])
            try:
                path.mkdir(parents=True, exist_ok=True)
                probe = path / ".kdrl-write-test"
                probe.write_text("")
                probe.unlink()
            except OSError as exc:
                sys.stderr.write(
                    f"{prog}: error: output dir {path} is not writable: "
                    f"{exc.strerror or exc} (choose another {key[:-1]})\n"
                )
                sys.exit(2)


def hydra_entry(prog: str, config_name: str, job: Callable[[DictConfig, Path], dict[str, Any]]) -> Callable[[], None]:
    """A console-script ``main`` for a Hydra app running ``job``."""

    @hydra.main(config_path=CONF_DIR, config_name=config_name, version_base="1.3")
    def _app(cfg: DictConfig) -> float:
        return run_app(prog, job, cfg)

    def main() -> None:
        preflight_output_dirs(prog, sys.argv[1:])
        _app()

    return main
