"""kdrl.locks across real processes: mutual exclusion, stale locks of dead or silent holders broken,
live ones kept, release of our own lock only, a one-line timeout. No flock anywhere (NFS-safe)."""

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from kdrl.errors import KdrlUserError, one_line
from kdrl.locks import LockTimeout, exclusive_lock

ROOT = Path(__file__).resolve().parents[1]

# A child process: optionally poses as another host, then counts, holds or waits under the lock.
CHILD = textwrap.dedent("""
    import json, logging, os, sys, time
    from pathlib import Path
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(name)s %(message)s")
    import kdrl.locks as locks
    a = json.loads(sys.argv[1])
    locks.HOST = a.get("host", locks.HOST)
    lock, stale = Path(a["lock"]), a.get("stale", 600.0)
    if a["mode"] == "count":
        print("READY", flush=True)
        while not Path(a["go"]).exists():
            time.sleep(0.002)
        counter, inside = Path(a["counter"]), Path(a["inside"])
        for _ in range(a["n"]):
            with locks.exclusive_lock(lock, poll_s=0.005, stale_after_s=stale):
                try:
                    os.close(os.open(inside, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                except FileExistsError:
                    print("OVERLAP", flush=True)
                value = int(counter.read_text())
                time.sleep(0.002)
                counter.write_text(str(value + 1))
                inside.unlink(missing_ok=True)
    elif a["mode"] == "hold":
        with locks.exclusive_lock(lock, stale_after_s=stale):
            print("HELD", flush=True)
            time.sleep(600)
    elif a["mode"] == "wait":
        t0 = time.monotonic()
        with locks.exclusive_lock(lock, poll_s=0.05, stale_after_s=stale, timeout_s=a.get("timeout")):
            print("ACQUIRED", round(time.monotonic() - t0, 3), flush=True)
""")


def child(**args) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps(args)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def read_until(proc: subprocess.Popen, marker: str) -> str:
    """The child's output up to and including the first line containing ``marker``."""
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if marker in line:
            return "".join(seen)
    raise AssertionError(f"child exited without printing {marker!r}:\n{''.join(seen)}")


def foreign_lock(path: Path, age_s: float = 0.0, host: str = "other-node") -> None:
    """A lock file as a holder on another host writes it, last heartbeat ``age_s`` ago."""
    holder = {"host": host, "pid": 1, "started": time.time() - age_s, "token": "f" * 32}
    path.write_text(json.dumps(holder))
    os.utime(path, (time.time() - age_s, time.time() - age_s))


def test_processes_never_overlap_under_the_lock_even_racing_to_break_a_stale_one(tmp_path):
    lock, counter, go = tmp_path / "x.lock", tmp_path / "counter", tmp_path / "go"
    counter.write_text("0")
    foreign_lock(lock, age_s=3600)  # a dead holder's lock that every process finds and races to break
    n_procs, n = 4, 25
    procs = [
        child(mode="count", lock=str(lock), counter=str(counter), inside=str(tmp_path / "inside"), go=str(go), n=n)
        for _ in range(n_procs)
    ]
    for p in procs:
        read_until(p, "READY")
    go.touch()  # all start together
    outs = [p.communicate(timeout=60)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert not any("OVERLAP" in o for o in outs), outs
    assert int(counter.read_text()) == n_procs * n  # no lost update
    assert sum(o.count("broke stale lock") for o in outs) == 1  # one breaker won
    assert not lock.exists() and not list(tmp_path.glob("*.removing"))


def test_lock_of_a_sigkilled_holder_is_broken_at_once_by_a_waiting_process(tmp_path):
    lock = tmp_path / "x.lock"
    holder = child(mode="hold", lock=str(lock))
    read_until(holder, "HELD")
    waiter = child(mode="wait", lock=str(lock), timeout=30)
    assert f"pid {holder.pid} on host" in read_until(waiter, "waiting for lock")
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    t0 = time.monotonic()
    out = waiter.communicate(timeout=30)[0]
    assert waiter.returncode == 0, out
    assert time.monotonic() - t0 < 10  # a dead pid on this host: no need to wait for the stale age (600 s)
    assert f"process (pid {holder.pid} on this host) is gone" in out and "ACQUIRED" in out
    assert not lock.exists()


def test_stale_lock_of_another_host_is_broken_after_stale_after_s(tmp_path, caplog):
    caplog.set_level(logging.INFO, "kdrl.locks")
    lock = tmp_path / "x.lock"
    foreign_lock(lock, age_s=700)
    with exclusive_lock(lock, stale_after_s=600, timeout_s=5) as me:  # heartbeat 700 s old: broken at once
        assert json.loads(lock.read_text())["token"] == me["token"]
    assert "heartbeat is 700 s old (stale after 600 s)" in caplog.text and "host other-node" in caplog.text
    foreign_lock(lock, age_s=0)  # fresh: kept until its heartbeat is stale_after_s old
    t0 = time.monotonic()
    with exclusive_lock(lock, poll_s=0.05, stale_after_s=0.5, timeout_s=5):
        waited = time.monotonic() - t0
    assert 0.4 < waited < 4
    assert not lock.exists()


def test_live_holder_on_another_host_keeps_its_lock_while_its_heartbeat_runs(tmp_path):
    lock = tmp_path / "x.lock"
    holder = child(mode="hold", lock=str(lock), host="other-node", stale=1.0)  # heartbeat every 0.25 s
    try:
        read_until(holder, "HELD")
        with pytest.raises(LockTimeout) as err:
            with exclusive_lock(lock, poll_s=0.05, stale_after_s=1.0, timeout_s=2.5):  # 2.5 s > its stale age
                pass
        msg = str(err.value)
        assert "\n" not in msg and str(lock) in msg and f"pid {holder.pid} on host other-node" in msg
        assert json.loads(lock.read_text())["host"] == "other-node"  # not broken
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    t0 = time.monotonic()  # dead, and on "another host": only its silent heartbeat tells
    with exclusive_lock(lock, poll_s=0.05, stale_after_s=1.0, timeout_s=10):
        assert time.monotonic() - t0 < 8


def test_timeout_is_a_one_line_user_error_naming_the_lock_and_its_holder(tmp_path, caplog):
    caplog.set_level(logging.INFO, "kdrl.locks")
    lock = tmp_path / "teachers" / "x.lock"
    lock.parent.mkdir()
    foreign_lock(lock, age_s=0, host="gpu-node-7")
    with pytest.raises(LockTimeout) as err:
        with exclusive_lock(lock, poll_s=0.02, stale_after_s=600, timeout_s=0.3):
            pass
    exc = err.value
    assert isinstance(exc, KdrlUserError) and isinstance(exc, TimeoutError)
    assert one_line(exc) == str(exc) and "\n" not in str(exc)
    assert str(exc).startswith(f"gave up after 0.3 s waiting for lock {lock}, held by pid 1 on host gpu-node-7")
    assert caplog.text.count("waiting for lock") == 1  # once per holder, not per poll
    assert lock.exists()


def test_release_removes_only_our_own_lock(tmp_path, caplog):
    lock = tmp_path / "x.lock"
    with exclusive_lock(lock, stale_after_s=600):
        assert lock.exists()
    assert not lock.exists()
    with exclusive_lock(lock, stale_after_s=600):
        tmp = tmp_path / "other"
        foreign_lock(tmp)  # our lock was broken meanwhile and another process holds it now
        os.replace(tmp, lock)
    assert json.loads(lock.read_text())["host"] == "other-node"  # theirs is left alone
    assert "was broken by another process" in caplog.text


def test_lock_file_without_a_holder_is_stale_only_after_a_grace_period(tmp_path):
    lock = tmp_path / "x.lock"
    lock.touch()  # just created by a holder that has not written it yet (or a legacy flock file)
    with pytest.raises(LockTimeout, match="an unrecorded holder"):
        with exclusive_lock(lock, poll_s=0.02, stale_after_s=600, timeout_s=0.2):
            pass
    os.utime(lock, (time.time() - 3600, time.time() - 3600))  # an old flock-era file: broken at once
    with exclusive_lock(lock, stale_after_s=600, timeout_s=1):
        pass
    assert not lock.exists()
