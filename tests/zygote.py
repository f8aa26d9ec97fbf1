"""Run kdrl's console apps in forked children of one warm process: tests of what an app says and
exits with (the bad-input catalogue) pay ~0.3 s a run instead of ~5 s of importing torch, Lightning
and Hydra.

The warm process (one per pytest worker, started on first use) imports only third-party libraries,
never kdrl, runs nothing and has one Python thread (checked: a fork copies only the forking thread).
Each request forks a child that takes the request's environment, working directory and argv, sends
fds 1 and 2 to files, runs ``python -m kdrl.cli.<app>`` as ``__main__`` (runpy) and exits through
the interpreter's own shutdown (atexit, thread joins, flushes): kdrl's modules, Hydra's global state
and the exit code are the child's own, as in a fresh interpreter.

What a fork cannot give is what the interpreter reads when it starts (``PYTHON*`` variables such as
PYTHONWARNINGS, the locale): a request whose environment differs from the warm process's there runs
in a fresh interpreter instead. Tests of processes themselves (signals, kills, clusters) keep
subprocess."""

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


def read_at_startup(env: dict) -> dict:
    """The variables the interpreter reads before any code runs."""
    return {k: v for k, v in env.items() if k.startswith(("PYTHON", "LC_")) or k in ("LANG", "LANGUAGE")}


def serve() -> None:
    """The warm process: one JSON request per stdin line, one JSON reply per line on its stdout."""
    import importlib
    import signal
    import time

    proto = os.fdopen(os.dup(1), "w", buffering=1)  # replies; nothing else may write to that pipe
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # before the imports: a stray print goes nowhere
    before = dict(os.environ)
    for name in WARM:
        importlib.import_module(name)
    set_by_imports = {k: v for k, v in os.environ.items() if before.get(k) != v}  # e.g. gymnasium's pygame prompt
    # No Python thread but this one (a fork copies only the forking thread, and a lock held by another
    # would stay held). Native threads exist: OpenBLAS's pool (numpy) and one that Lightning's imports
    # start, idle; OpenBLAS re-forms its pool after a fork (pthread_atfork).
    threads = threading.enumerate()
    if len(threads) != 1:
        raise RuntimeError(f"the warm process must have one Python thread to fork safely, has {threads}")
    server, child = os.getpid(), None
    try:
        for line in sys.stdin:
            req = json.loads(line)
            req["env"] = {**set_by_imports, **req["env"]}
            sys.stdout.flush()
            sys.stderr.flush()
            child = os.fork()
            if child == 0:
                run_child(req)  # leaves by SystemExit, through the interpreter's shutdown
            try:
                os.setpgid(child, child)  # also done by the child; whichever runs first
            except OSError:
                pass
            deadline = time.monotonic() + req["timeout"]
            status, timed_out = None, False
            while status is None:
                done, st = os.waitpid(child, os.WNOHANG)
                if done:
                    status = st
                elif time.monotonic() > deadline:
                    kill_group(child, signal.SIGKILL)
                    status, timed_out = os.waitpid(child, 0)[1], True
                else:
                    time.sleep(0.02)
            child = None
            proto.write(json.dumps({"returncode": os.waitstatus_to_exitcode(status), "timed_out": timed_out}) + "\n")
    finally:
        if os.getpid() == server and child is not None:  # the server stopped mid-request: stop its run too
            kill_group(child, signal.SIGKILL)


def kill_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def run_child(req: dict) -> None:
    import runpy
    import traceback

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
    except SystemExit:
        raise  # sys.exit(n) / sys.exit("message"): the interpreter reports it as a fresh one would
    except BaseException:
        traceback.print_exc()
        raise SystemExit(1) from None
    raise SystemExit(0)


class Zygote:
    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.env: dict = {}
        self.lock = threading.Lock()

    def start(self) -> subprocess.Popen:
        if self.proc is None or self.proc.poll() is not None:
            path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
            self.env = {**os.environ, "PYTHONPATH": path}
            self.proc = subprocess.Popen(
                [sys.executable, "-c", "import tests.zygote as z; z.serve()"],
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                env=self.env,
            )
            atexit.register(self.stop)
        return self.proc

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)

    def forget(self) -> None:
        """Drop a warm process whose replies may be out of step (a request interrupted mid-way)."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def run(
        self, app: str, args: list[str], env: dict | None, cwd: Path, timeout: float
    ) -> subprocess.CompletedProcess:
        env = dict(os.environ if env is None else env)
        with self.lock, tempfile.TemporaryDirectory(prefix="kdrl-zygote-") as tmp:
            proc = self.start()
            warm = {k: v for k, v in read_at_startup(self.env).items() if k != "PYTHONPATH"}
            if {k: v for k, v in read_at_startup(env).items() if k != "PYTHONPATH"} != warm:
                return subprocess.run(  # what the interpreter reads at startup differs: a fresh one
                    [sys.executable, "-m", f"kdrl.cli.{app}", *map(str, args)],
                    cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                )  # fmt: skip
            out, err = Path(tmp) / "stdout", Path(tmp) / "stderr"
            req = {
                "app": app, "args": [str(a) for a in args], "env": env, "cwd": str(cwd),
                "stdout": str(out), "stderr": str(err), "timeout": timeout,
            }  # fmt: skip
            try:
                proc.stdin.write(json.dumps(req) + "\n")
                proc.stdin.flush()
                line = proc.stdout.readline()
            except BaseException:
                self.forget()
                raise
            if not line:
                code = proc.wait()
                self.proc = None
                raise RuntimeError(f"the warm process (tests/zygote.py) died with exit code {code}")
            reply = json.loads(line)
            if reply["timed_out"]:
                raise subprocess.TimeoutExpired([app, *args], timeout)
            return subprocess.CompletedProcess(
                [app, *args], reply["returncode"], out.read_text(errors="replace"), err.read_text(errors="replace")
            )


_ZYGOTE = Zygote()


def run_app(
    app: str, args: list[str], env: dict | None = None, cwd: Path = ROOT, timeout: float = 300
) -> subprocess.CompletedProcess:
    """``python -m kdrl.cli.<app> *args`` in a forked child of the warm process (or a fresh interpreter
    where the startup environment differs): returncode, stdout, stderr as subprocess.run gives them."""
    return _ZYGOTE.run(app, args, env, cwd, timeout)
