"""What every Hydra entry point shares: its run dir, one-line errors and a writable-output preflight."""

from __future__ import annotations

import difflib
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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
    ``env=0``, ``logger={a:1}``, ``launcher=[1,2]``) with a traceback, and an option it does not have
    (``trainer=tpu``) with a dozen lines: refuse those in one line that says what the group takes.
    Overrides that do not parse, and sweeps, are left to Hydra's own compact message."""
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
        options = ", ".join(sorted(p.stem for p in group.glob("*.yaml")))
        if isinstance(value, str):
            try:
                exists = (group / f"{value}.yaml").is_file() or (group / value).is_dir()
            except OSError:  # e.g. a name longer than the file system allows: no such option either
                exists = False
            if not exists:
                # Hydra's answer is a dozen lines (options, the config search path); this is one
                close = difflib.get_close_matches(value, [p.stem for p in group.glob("*.yaml")], n=1)
                hint = f"; did you mean {o.key_or_group}={close[0]}?" if close else ""
                raise OverrideError(
                    f"{arg}: Could not find '{o.key_or_group}/{value}' (config group '{o.key_or_group}' options: "
                    f"{options}){hint}"
                )
            continue
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            continue
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


def check_resume_early(prog: str, config: DictConfig, path: Path) -> None:
    """A run dir holding another config's unfinished run, refused before Hydra writes its .hydra/
    files and log there (kdrl.runs.job.check_resumable; run_job checks again, for multirun jobs and
    callers outside Hydra). Anything else that goes wrong here is left to the job to report."""
    if not (path / "checkpoints").is_dir():
        return
    import copy

    from omegaconf import open_dict, read_write

    from kdrl.runs.job import ResumeConflict, check_resumable

    task_cfg = copy.deepcopy(config)
    with read_write(task_cfg), open_dict(task_cfg):
        del task_cfg["hydra"]
    try:
        check_resumable(task_cfg, path)
    except ResumeConflict as exc:
        fail(prog, exc)
    except Exception:
        return


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
            if key == "hydra.run.dir":
                check_resume_early(prog, config, path)

        def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
            self._check(config, "hydra.run.dir")

        def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
            self._check(config, "hydra.sweep.dir")

    return RunDirCheck()


class LauncherError(KdrlUserError, RuntimeError):
    """A multirun launcher that could not run the sweep: a submission refused, a cluster out of reach."""


# what to try next, by launcher (conf/launcher)
LAUNCHER_HINTS = {
    "slurm": "check the cluster (sinfo), or run the sweep on this machine with launcher=joblib",
    "ray": "check the Ray cluster (KDRL_RAY_ADDRESS, ray status), or run the sweep on this machine with launcher=joblib",
}


def launcher_failure(exc: BaseException) -> LauncherError | None:
    """``exc`` as a one-line LauncherError naming the launcher and the cause when it escaped a Hydra
    launcher's ``launch`` (submitit's FailedJobError from sbatch, Ray's connection errors, a joblib
    worker that died, ...); None for anything else (config errors, a job's own failure)."""
    from hydra.plugins.launcher import Launcher

    tb = exc.__traceback__
    while tb is not None and not isinstance(tb.tb_frame.f_locals.get("self"), Launcher):
        tb = tb.tb_next
    if tb is None:
        return None
    launcher = tb.tb_frame.f_locals["self"]
    try:  # the sweep's config, which the launcher was set up with
        choices = launcher.config.hydra.runtime.choices
        name = choices.get("launcher") or choices.get("hydra/launcher")
    except Exception:
        name = None
    name = name or type(launcher).__name__
    cause = " ".join(str(exc).split()) or type(exc).__name__
    cause = f"{type(exc).__name__}: {cause[:300]}{'...' if len(cause) > 300 else ''}"
    hint = LAUNCHER_HINTS.get(name, "run it on this machine with launcher=joblib, or without -m")
    return LauncherError(f"launcher={name} could not run the sweep ({cause}); {hint}")


def misspelt_group(exc: BaseException) -> OverrideError | None:
    """Hydra's "Could not override 'envs'" for a root key that does not exist but is close to a
    config group's name, as one line naming the group (Hydra suggests ``+envs=...``, which adds
    the typo as a new key); None for anything else."""
    if type(exc).__name__ != "ConfigCompositionException":
        return None
    m = re.match(r"Could not override '([^'.]+)'\.", str(exc))
    if m is None:
        return None
    key = m.group(1)
    groups = sorted(p.name for p in Path(CONF_DIR).iterdir() if p.is_dir() and p.name != "base")
    close = difflib.get_close_matches(key, groups, n=1)
    if not close:
        return None
    value = next((a.split("=", 1)[1] for a in sys.argv[1:] if a.split("=", 1)[0] == key), "<option>")
    return OverrideError(
        f"{key}={value}: there is no config group or key '{key}'; did you mean {close[0]}={value}? "
        f"(config groups: {', '.join(groups)})"
    )


@contextmanager
def hydra_errors_in_one_line(prog: str) -> Iterator[None]:
    """A launcher that fails to run a sweep (sbatch refused, no Ray cluster) is one line naming it and
    the cause, and a misspelt config group (``envs=cartpole``) one line naming the group meant, both
    with exit code 2, instead of Hydra's traceback or its advice to add the key (``+envs=...``):
    Hydra prints and exits inside ``run_and_report`` (hydra._internal.utils), so the function it runs
    is wrapped for the call. KDRL_DEBUG=1, or a Hydra without that function, leaves Hydra's report."""
    import hydra._internal.utils as hydra_utils

    original = getattr(hydra_utils, "run_and_report", None)
    if original is None or debugging():
        yield
        return

    def run_and_report(func: Callable[[], Any]) -> Any:
        def guarded() -> Any:
            try:
                return func()
            except Exception as exc:
                failure = launcher_failure(exc) or misspelt_group(exc)
                if failure is None:
                    raise
                fail(prog, failure)  # SystemExit: run_and_report lets it through

        return original(guarded)

    hydra_utils.run_and_report = run_and_report
    try:
        yield
    finally:
        hydra_utils.run_and_report = original


def register_search_sweeper() -> None:
    """Register kdrl's sweepers (hydra/sweeper=kdrl_optuna, and kdrl-study's kdrl_listed) with Hydra by hand: Hydra discovers plugins by
    walking the hydra_plugins namespace, which an editable install's import hook hides from it (an
    installed wheel is discovered either way)."""
    from hydra.core.plugins import Plugins

    from hydra_plugins.kdrl_search.kdrl_optuna_sweeper import KdrlOptunaSweeper
    from hydra_plugins.kdrl_sweeper.listed_sweeper import ListedSweeper  # its import stores its config too

    Plugins.instance().register(KdrlOptunaSweeper)
    Plugins.instance().register(ListedSweeper)


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
        with hydra_errors_in_one_line(prog):
            _app()

    return main
