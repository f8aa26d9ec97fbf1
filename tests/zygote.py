"""Run kdrl's console apps in forked children of one warm process: tests of what an app says and
exits with (the bad-input catalogue) pay ~0.3 s a run instead of ~5 s of importing torch, Lightning
and Hydra.

The warm process (one per pytest worker, started on first use) imports only third-party libraries,
never kdrl, and runs nothing. Each request forks a child that takes the request's environment,
working directory and argv, sends fds 1 and 2 to files, and runs ``python -m kdrl.cli.<app>`` as
``__main__`` (runpy): kdrl's modules, Hydra's global state and the exit code are the child's own, as
in a fresh interpreter. Tests of processes themselves (signals, kills, clusters) keep subprocess."""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WARM = ("torch", "pytorch_lightning", "hydra", "omegaconf", "gymnasium", "numpy", "pandas", "scipy.stats")


def serve() -> None:
    """The warm process: one JSON request per stdin line, one JSON reply per stdout line."""
    import importlib
    import signal
    import time

    for name in WARM:
        importlib.import_module(name)
    proto = os.fdopen(os.dup(1), "w", buffering=1)  # replies; nothing else may write to that pipe
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    for line in sys.stdin:
        req = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            run_child(req)  # never returns
        deadline = time.monotonic() + req["timeout"]
        status = None
        while status is None:
            done, st = os.waitpid(pid, os.WNOHANG)
            if done:
                status = st
            elif time.monotonic() > deadline:
                os.killpg(pid, signal.SIGKILL)
                status = os.waitpid(pid, 0)[1]
                req["timed_out"] = True
            else:
                time.sleep(0.02)
        code = os.waitstatus_to_exitcode(status)
        proto.write(json.dumps({"returncode": code, "timed_out": bool(req.get("timed_out"))}) + "\n")


def run_child(req: dict) -> None:
    import atexit as child_atexit
    import runpy
    import traceback

    code = 1
    try:
        os.setpgid(0, 0)  # a timeout kills the run and whatever it started
        os.environ.clear()
        os.environ.update(req["env"])
        os.chdir(req["cwd"])
        for fd, path in ((1, req["stdout"]), (2, req["stderr"])):
            os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        sys.argv = ["-m", *req["args"]]
        try:
            runpy.run_module(f"kdrl.cli.{req['app']}", run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as exc:
            if exc.code is None:
                code = 0
            elif isinstance(exc.code, int):
                code = exc.code
            else:  # sys.exit("message"): printed, status 1, as the interpreter does
                print(exc.code, file=sys.stderr)
                code = 1
        except BaseException:
            traceback.print_exc()
            code = 1
        child_atexit._run_exitfuncs()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


class Zygote:
    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.lock = threading.Lock()

    def start(self) -> subprocess.Popen:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", "import tests.zygote as z; z.serve()"],
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                env={
                    **os.environ,
                    "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
                },
            )
            atexit.register(self.stop)
        return self.proc

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)

    def run(
        self, app: str, args: list[str], env: dict | None, cwd: Path, timeout: float
    ) -> subprocess.CompletedProcess:
        with self.lock, tempfile.TemporaryDirectory(prefix="kdrl-zygote-") as tmp:
            out, err = Path(tmp) / "stdout", Path(tmp) / "stderr"
            req = {
                "app": app, "args": [str(a) for a in args], "env": dict(os.environ if env is None else env),
                "cwd": str(cwd), "stdout": str(out), "stderr": str(err), "timeout": timeout,
            }  # fmt: skip
            proc = self.start()
            proc.stdin.write(json.dumps(req) + "\n")
            proc.stdin.flush()
            reply = json.loads(proc.stdout.readline())
            if reply["timed_out"]:
                raise subprocess.TimeoutExpired([app, *args], timeout)
            return subprocess.CompletedProcess(
                [app, *args], reply["returncode"], out.read_text(errors="replace"), err.read_text(errors="replace")
            )


_ZYGOTE = Zygote()


def run_app(
    app: str, args: list[str], env: dict | None = None, cwd: Path = ROOT, timeout: float = 300
) -> subprocess.CompletedProcess:
    """``python -m kdrl.cli.<app> *args`` in a forked child of the warm process: returncode, stdout,
    stderr as subprocess.run(capture_output=True, text=True) gives them."""
    return _ZYGOTE.run(app, args, env, cwd, timeout)
