"""A full disk (ENOSPC) while kdrl writes a checkpoint, results.json or an export: the file it
would have replaced survives whole, no temporary file is left, and the error is one actionable
line naming the file. Simulated with a fault-injecting writer, and on a real small tmpfs when the
tests run as root (CI does)."""

from __future__ import annotations

import builtins
import errno
import json
import logging
import os
import shutil
import subprocess
import sys
import uuid
from fnmatch import fnmatch
from pathlib import Path

import pytest
import torch

from kdrl.errors import KdrlUserError, one_line
from kdrl.io import DiskFullError, atomic_write, atomic_write_json, save_policy
from kdrl.nets import MLP

ROOT = Path(__file__).resolve().parents[1]


class _Filling:
    """A file on a disk that fills up after ``room`` more bytes: that much is written, then ENOSPC."""

    def __init__(self, f, room: int, code: int) -> None:
        self._f, self._room, self._code = f, room, code

    def write(self, data):
        if len(data) > self._room:
            self._f.write(data[: self._room])
            self._room = 0
            raise OSError(self._code, os.strerror(self._code))
        self._room -= len(data)
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


class FullDisk:
    """Fault injection at the lowest write kdrl's atomic writes use (``open`` in kdrl.io, then the
    file object's ``write``; torch.save and json.dump both go through it): the ``nth`` and later
    files opened for writing whose name matches ``pattern`` run out of space after ``room`` bytes."""

    def __init__(self, monkeypatch, pattern: str, nth: int = 1, room: int = 4096, code: int = errno.ENOSPC) -> None:
        self.pattern, self.nth, self.room, self.code, self.seen = pattern, nth, room, code, 0
        self._open = builtins.open
        monkeypatch.setattr(builtins, "open", self.open)

    def open(self, file, mode="r", *args, **kwargs):
        f = self._open(file, mode, *args, **kwargs)
        if isinstance(file, str | os.PathLike) and any(c in mode for c in "wax"):
            if fnmatch(Path(file).name, self.pattern):
                self.seen += 1
                if self.seen >= self.nth:
                    return _Filling(f, self.room, self.code)
        return f


def assert_disk_full(exc: BaseException, path: Path, what: str = "no space left on device") -> None:
    assert type(exc).__name__ == "DiskFullError", f"{type(exc).__name__}: {exc}"
    assert isinstance(exc, OSError) and isinstance(exc, KdrlUserError)
    assert isinstance(exc.__cause__, OSError) and exc.__cause__.errno in (errno.ENOSPC, errno.EDQUOT)
    msg = one_line(exc)
    assert msg == str(exc) and "\n" not in msg  # kdrl's own error: the message alone, one line
    assert msg.startswith(f"{what} writing {path} ") and "free space" in msg, msg


def no_temp_files(d: Path) -> bool:
    return not [p for p in d.rglob("*.tmp")] and not [p for p in d.rglob(".kdrl-export-*")]


# ---- atomic writes -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "code,what", [(errno.ENOSPC, "no space left on device"), (errno.EDQUOT, "disk quota exceeded")]
)
def test_atomic_write_keeps_the_old_file_and_says_so_in_one_line(tmp_path, code, what):
    target = tmp_path / "data.bin"
    target.write_bytes(b"the previous, whole file")

    def half_then_full(tmp):
        with open(tmp, "wb") as f:
            f.write(b"half of the new")
            raise OSError(code, os.strerror(code))

    with pytest.raises(OSError) as exc:
        atomic_write(target, half_then_full)
    assert_disk_full(exc.value, target, what)
    assert exc.value.errno == code and exc.value.filename == str(target)
    assert target.read_bytes() == b"the previous, whole file"
    assert no_temp_files(tmp_path)


def test_results_json_write_on_a_full_disk_keeps_the_previous_results(tmp_path, monkeypatch):
    from kdrl.results import RunResult, write_results

    body = {"kind": "teacher", "status": "failed", "env_id": "CartPole-v1", "seed": 0, "run_dir": str(tmp_path)}
    write_results(tmp_path, RunResult.from_dict(body))
    before = (tmp_path / "results.json").read_text()
    FullDisk(monkeypatch, ".results.json.*.tmp", room=50)
    with pytest.raises(OSError) as exc:
        write_results(tmp_path, RunResult.from_dict({**body, "status": "ok"}))
    assert_disk_full(exc.value, tmp_path / "results.json")
    assert (tmp_path / "results.json").read_text() == before and json.loads(before)["status"] == "failed"
    assert no_temp_files(tmp_path)


def test_policy_save_on_a_full_disk_keeps_the_previous_policy(tmp_path, monkeypatch):
    cfg = {"_target_": "kdrl.nets.MLP", "width": 16, "depth": 1, "dueling": False, "hidden": None}
    path = tmp_path / "best_policy.pt"
    save_policy(path, MLP((4,), 2, 16, 1), cfg, "CartPole-v1", (4,), 2)
    before = path.read_bytes()
    FullDisk(monkeypatch, ".best_policy.pt.*.tmp", room=700)
    with pytest.raises(OSError) as exc:
        save_policy(path, MLP((4,), 2, 16, 1), cfg, "CartPole-v1", (4,), 2)
    assert_disk_full(exc.value, path)
    assert path.read_bytes() == before and no_temp_files(tmp_path)


def test_a_failed_job_whose_results_cannot_be_written_still_reports_its_own_error(tmp_path, monkeypatch, caplog):
    """The disk that stopped a checkpoint is still full for results.json: the user is told about the
    checkpoint (the cause), and the results write failing is a warning, not a second error."""
    from kdrl.runs.job import recorded_job

    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    FullDisk(monkeypatch, "*.tmp", room=10)
    fields = {"kind": "teacher", "status": "failed", "env_id": "CartPole-v1", "seed": 0, "run_dir": str(tmp_path)}
    with caplog.at_level(logging.WARNING, logger="kdrl"), pytest.raises(OSError) as exc:
        with recorded_job(tmp_path, fields):
            atomic_write_json(ckpt, {"x": list(range(100))})
    assert_disk_full(exc.value, ckpt)
    assert [r.getMessage() for r in caplog.records if "could not record the failure" in r.getMessage()]
    assert not (tmp_path / "results.json").exists() and no_temp_files(tmp_path)


# ---- the error on its way back from a worker --------------------------------------------------------------
def _fill_the_disk(path: str) -> None:
    raise DiskFullError(path)


def test_a_full_disk_in_a_joblib_worker_reaches_the_parent_as_its_own_line(tmp_path):
    """kdrl-study's joblib launcher runs jobs in loky workers and pickles each job's outcome back,
    its exception included. DiskFullError did not rebuild from its pickle, so a study that filled
    its disk was told only "BrokenProcessPool: A result has failed to un-serialize" and lost the
    rest of its stage."""
    import joblib

    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    with pytest.raises(DiskFullError) as exc:
        joblib.Parallel(n_jobs=2, backend="loky")(joblib.delayed(_fill_the_disk)(str(ckpt)) for _ in range(2))
    msg = one_line(exc.value)
    assert msg.startswith(f"no space left on device writing {ckpt} ") and "free space" in msg, msg
    assert exc.value.errno == errno.ENOSPC and exc.value.filename == str(ckpt)


# ---- a training run --------------------------------------------------------------------------------------
def test_checkpoint_write_on_a_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    """The second last.ckpt write runs out of space half way: the run fails with one line naming
    last.ckpt, results.json says failed, the first checkpoint is whole and the rerun resumes from it."""
    from kdrl.runs.teacher import train_teacher
    from tests.helpers import compose_cfg

    cfg = compose_cfg("train", ["debug=fast", "algo.total_timesteps=1800", "eval.freq=600"])
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    disk = FullDisk(monkeypatch, ".last.ckpt.*.tmp", nth=2, room=64 * 1024)
    with pytest.raises(OSError) as exc:
        train_teacher(cfg, tmp_path)
    assert disk.seen == 2
    assert_disk_full(exc.value, ckpt)
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["status"] == "failed" and "no space left on device" in res["error"]
    assert no_temp_files(tmp_path)
    from kdrl.io import file_problem

    assert file_problem(ckpt) is None
    state = torch.load(ckpt, weights_only=True)  # whole and loadable: the first evaluation's
    assert len(state["callbacks"]["GreedyEvaluation"]["history"]) == 1
    monkeypatch.undo()
    again = train_teacher(cfg, tmp_path)
    assert again["status"] == "ok" and again["env_steps"] == 1800
    assert 600 <= again["resumed_from_env_steps"] < 1200


# ---- a real full filesystem (root only) ------------------------------------------------------------------
@pytest.fixture
def tmpfs(tmp_path):
    """Mount a small tmpfs; yields a function (size in bytes -> mount point). Unmounted afterwards."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root")
    mounted: list[Path] = []

    def mount(size: int) -> Path:
        point = tmp_path / f"tmpfs-{uuid.uuid4().hex[:6]}"
        point.mkdir()
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)], capture_output=True, text=True
        )
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", str(point)], check=False)


def test_kdrl_train_on_a_full_tmpfs_fails_in_one_line_and_keeps_the_previous_checkpoint(tmpfs):
    """CartPole with debug=fast: a 1.2 MB last.ckpt and two 0.27 MB policy files per evaluation. On a
    2.5 MB filesystem the first evaluation's files fit and the second checkpoint does not."""
    run_dir = tmpfs(2_500_000) / "run"
    env = {k: v for k, v in os.environ.items() if k not in ("KDRL_DEBUG", "HYDRA_FULL_ERROR")}
    cmd = ["-m", "kdrl.cli.train", "debug=fast", "algo.total_timesteps=1800", "eval.freq=600"]
    proc = subprocess.run(
        [sys.executable, *cmd, f"hydra.run.dir={run_dir}"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env=env,
    )
    out = proc.stdout + proc.stderr
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    assert proc.returncode == 2, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("kdrl-train: error: ")]
    assert len(errors) == 1, out[-3000:]
    assert errors[0].startswith(f"kdrl-train: error: no space left on device writing {ckpt} "), errors
    res = json.loads((run_dir / "results.json").read_text())
    assert res["status"] == "failed" and "no space left on device" in res["error"]
    assert ckpt.is_file(), "the run filled the disk before its first checkpoint: tmpfs size needs adjusting"
    from kdrl.io import file_problem

    assert file_problem(ckpt) is None
    assert len(torch.load(ckpt, weights_only=True)["callbacks"]["GreedyEvaluation"]["history"]) == 1
    assert no_temp_files(run_dir)


def test_kdrl_export_to_a_full_tmpfs_fails_in_one_line(tmpfs, tmp_path, capsys):
    """torch.jit.save's C++ writer reports a full disk as 'unexpected pos': still one line naming the file."""
    from kdrl.cli.export import main

    cfg = {"_target_": "kdrl.nets.MLP", "width": 256, "depth": 2, "dueling": False, "hidden": None}
    policy = tmp_path / "student.pt"
    save_policy(policy, MLP((4,), 2, 256, 2), cfg, "CartPole-v1", (4,), 2)
    out = tmpfs(64 * 1024)
    with pytest.raises(SystemExit) as exc:
        main([str(policy), "--out", str(out), "--verify-obs", "16"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"kdrl-export: error: no space left on device writing {out / 'student.torchscript.pt'} ")
    assert list(out.iterdir()) == []


def _kdrl_exception_classes() -> list[type[BaseException]]:
    import importlib
    import inspect
    import pkgutil

    import kdrl

    found = {}
    for info in pkgutil.walk_packages(kdrl.__path__, "kdrl."):
        module = importlib.import_module(info.name)
        for obj in vars(module).values():
            if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == module.__name__:
                found[obj.__qualname__] = obj
    return [found[k] for k in sorted(found)]


def test_every_kdrl_error_survives_the_trip_back_from_a_worker():
    """Any error a job raises crosses a process boundary on joblib, SLURM (submitit) and Ray: each of
    kdrl's own rebuilds from its pickle as the same type with the same one-line message."""
    import pickle
    import signal

    made = {"DiskFullError": lambda c: c("/runs/a/checkpoints/last.ckpt"), "StudyStopped": lambda c: c(signal.SIGTERM)}
    classes = _kdrl_exception_classes()
    assert {"DiskFullError", "StudyStopped", "ConfigError", "KdrlUserError"} <= {c.__name__ for c in classes}
    for cls in classes:
        exc = made.get(cls.__name__, lambda c: c("a message naming /runs/a"))(cls)
        back = pickle.loads(pickle.dumps(exc))
        assert type(back) is cls and str(back) == str(exc), cls.__name__
