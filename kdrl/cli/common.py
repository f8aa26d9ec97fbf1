"""What every Hydra entry point shares: its run dir, one-line errors and a writable-output preflight."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from kdrl.config import CONF_DIR
from kdrl.errors import KdrlUserError, debugging, fail, report


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

    from kdrl.search.trial import close_trial, open_trial

    trial = open_trial(cfg)  # a search trial (+search.*): reports to its Optuna study, tells its outcome
    try:
        results = job(cfg, Path(HydraConfig.get().runtime.output_dir))
    except Exception as exc:
        close_trial(trial, None, exc)
        if debugging() or is_multirun():
            raise
        report(prog, exc)
        sys.exit(2)
    close_trial(trial, results)
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


class OverrideError(KdrlUserError, ValueError):
    """A command-line override Hydra would answer with a traceback instead of a message."""


def check_group_overrides(argv: list[str]) -> None:
    """Hydra answers a config group given something other than an option name (``debug=null``,
    ``env=0``, ``logger={a:1}``, ``launcher=[1,2]``) with a traceback: refuse those in one line that
    says what the group takes. Overrides that do not parse are left to Hydra's own compact message."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for arg in argv:
        if arg.startswith("-"):
            continue
        try:
            (o,) = parser.parse_overrides([arg])
        except Exception:
            continue
        group = Path(CONF_DIR) / o.key_or_group
        if not group.is_dir() or o.is_delete() or o.is_sweep_override():
            continue
        value = o.value()
        if isinstance(value, str) or (isinstance(value, list) and value and all(isinstance(v, str) for v in value)):
            continue
        options = ", ".join(sorted(p.stem for p in group.glob("*.yaml")))
        raise OverrideError(
            f"{arg}: config group '{o.key_or_group}' takes an option name ({options}), got {value!r}; "
            f"leave it out for its default, or drop an optional one with ~{o.key_or_group}"
        )


class RunDirError(KdrlUserError, ValueError):
    """A run dir (``hydra.run.dir``, ``hydra.sweep.dir``) that cannot be resolved or created."""


def check_run_dir(cfg: DictConfig, template: str, key: str = "hydra.run.dir") -> str:
    """``template`` (a run dir with interpolations such as ``${env.id}``) resolved against ``cfg``,
    or a RunDirError naming the key that breaks it: Hydra would resolve and create it itself, with a
    traceback for a value that cannot be resolved or a path component the file system refuses."""
    import re

    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        path = str(OmegaConf.create({"dir": template}, parent=cfg).dir)
    except OmegaConfBaseException as exc:
        reason = str(exc).split("\n")[0]
        for ref in re.findall(r"\$\{(?:oc\.select:)?([\w.]+)[,}]", template):
            try:
                OmegaConf.select(cfg, ref, throw_on_missing=True)
            except OmegaConfBaseException:
                raise RunDirError(
                    f"{ref} names the run dir ({key}: {template}) and cannot be resolved: {reason}"
                ) from None
        raise RunDirError(f"{key} ({template}) cannot be resolved: {reason}") from None
    long = [p for p in Path(path).parts if len(p.encode(errors="replace")) > 255]
    if long:
        raise RunDirError(
            f"{key} resolves to a path with a name over 255 bytes ({long[0][:40]}...): shorten the value it "
            f"comes from ({template}), or give {key}=<dir>"
        )
    return path


def run_dir_callback() -> Any:
    """A Hydra callback (conf/common.yaml: hydra.callbacks) that checks the run or sweep dir before
    Hydra resolves and creates it, so a value that breaks it is one line and exit code 2, not
    Hydra's traceback. (Hydra turns a callback's exception into a warning: this one exits.)"""
    from hydra.experimental.callback import Callback

    class RunDirCheck(Callback):
        def _check(self, config: DictConfig, key: str) -> None:
            if debugging():
                return  # KDRL_DEBUG=1: Hydra's own traceback
            prog = f"kdrl-{config.hydra.job.config_name}"
            template = str(config.hydra[key.split(".")[1]]._get_node("dir")._value())
            try:
                path = Path(check_run_dir(config, template, key))
            except RunDirError as exc:
                fail(prog, exc)
            try:
                path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                fail(prog, RunDirError(f"{key} {path} cannot be created: {exc.strerror or exc}"))

        def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
            self._check(config, "hydra.run.dir")

        def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
            self._check(config, "hydra.sweep.dir")

    return RunDirCheck()


def register_search_sweeper() -> None:
    """Register kdrl's sweeper (hydra/sweeper=kdrl_optuna) with Hydra by hand: Hydra discovers plugins by
    walking the hydra_plugins namespace, which an editable install's import hook hides from it (an
    installed wheel is discovered either way)."""
    from hydra.core.plugins import Plugins

    from hydra_plugins.kdrl_search.kdrl_optuna_sweeper import KdrlOptunaSweeper

    Plugins.instance().register(KdrlOptunaSweeper)


def hydra_entry(prog: str, config_name: str, job: Callable[[DictConfig, Path], dict[str, Any]]) -> Callable[[], None]:
    """A console-script ``main`` for a Hydra app running ``job``."""

    @hydra.main(config_path=CONF_DIR, config_name=config_name, version_base="1.3")
    def _app(cfg: DictConfig) -> float:
        return run_app(prog, job, cfg)

    def main() -> None:
        register_search_sweeper()
        preflight_output_dirs(prog, sys.argv[1:])
        try:
            check_group_overrides(sys.argv[1:])
        except OverrideError as exc:
            fail(prog, exc)
        _app()

    return main
