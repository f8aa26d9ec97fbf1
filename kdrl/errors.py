"""One-line error reports for every kdrl command.

Light on purpose (no torch, Lightning or Hydra at import): a deployment tool such as kdrl-export
reports its errors without paying for a training stack it does not use.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import NoReturn

DEBUG_HINT = "(KDRL_DEBUG=1 shows the traceback)"


class KdrlUserError(Exception):
    """Marker for errors whose message alone tells the user what to fix: reported without the type."""


class OutputPathError(KdrlUserError, ValueError):
    """An output path a command cannot write; the message names the option it came from."""


def writable_dir(path: str | Path, flag: str) -> Path:
    """``path`` as a directory this process can write into (created if missing), checked before any
    work is done; else an OutputPathError naming ``flag`` and what is wrong."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputPathError(f"{flag} {path} is a file, not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputPathError(f"{flag} {path} cannot be created: {exc.strerror or exc}") from exc
    if not os.access(path, os.W_OK | os.X_OK):
        raise OutputPathError(f"{flag} {path} is not writable (permission denied)")
    return path


def debugging() -> bool:
    """KDRL_DEBUG=1: let errors propagate, so the traceback is shown."""
    return os.environ.get("KDRL_DEBUG") == "1"


def root_cause(exc: BaseException) -> BaseException:
    """The error under Hydra's InstantiationException wrappers (which only exist once hydra.errors
    is imported, so it is looked up rather than imported here)."""
    wrapper = getattr(sys.modules.get("hydra.errors"), "InstantiationException", None)
    while wrapper is not None and isinstance(exc, wrapper) and exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


def one_line(exc: BaseException) -> str:
    """A single line for the user: the message alone for kdrl's own errors, else ``Type: message``."""
    exc = root_cause(exc)
    msg = " ".join(str(exc).split()) or type(exc).__name__
    return msg if isinstance(exc, KdrlUserError) else f"{type(exc).__name__}: {msg}"


def report(prog: str, exc: BaseException) -> None:
    sys.stderr.write(f"{prog}: error: {one_line(exc)}  {DEBUG_HINT}\n")


def fail(prog: str, exc: BaseException, code: int = 2) -> NoReturn:
    """Report ``exc`` in one line and exit with ``code``: for callers that decided not to re-raise."""
    report(prog, exc)
    sys.exit(code)


def attempt(prog: str, body: Callable[[], object]) -> BaseException | None:
    """Run ``body``; an exception is reported in one line and returned, so a command working through
    several inputs can go on. With KDRL_DEBUG=1 it propagates instead."""
    try:
        body()
    except Exception as exc:
        if debugging():
            raise
        report(prog, exc)
        return exc
    return None


def run_cli(prog: str, body: Callable[[], object], codes: Mapping[type[BaseException], int] | None = None) -> None:
    """Run ``body``; an exception becomes one line on stderr and exit code 2, or the code ``codes``
    gives its class (KDRL_DEBUG=1: it propagates, with its traceback)."""
    exc = attempt(prog, body)
    if exc is not None:
        sys.exit(next((code for cls, code in (codes or {}).items() if isinstance(exc, cls)), 2))
