"""An exclusive lock between processes and hosts that holds on NFS and Lustre (no ``flock``).

``fcntl.flock`` is a no-op or unreliable on many NFS/Lustre home directories, exactly where a SLURM
sweep keeps its shared cache. This lock is a file created with ``O_CREAT | O_EXCL`` (atomic on
local disks, NFSv3+ and Lustre) that records its holder as JSON: host, pid, process start time,
when it was taken and a random token. While held, a daemon thread refreshes the file's mtime (the
heartbeat) every ``stale_after_s / 4`` seconds; release removes the file only if it still holds
our token.

A waiter polls and breaks a lock it finds stale:

* same host, holder process gone (or a zombie, or its pid reused by a newer process): at once;
* any host, heartbeat older than ``stale_after_s`` (default 600 s, ``KDRL_LOCK_STALE_S``): the
  holder died on another node, or hung so long it is treated as dead. Keep it well above NFS
  attribute caching (``acregmax``, 60 s by default) plus clock skew between nodes;
* a file that records no holder (a legacy ``flock`` lock file of an older kdrl, or a process killed
  between creating and writing it) once it is older than a short grace period.

Breaking is race-safe: the breaker re-reads the file, renames it to a unique name (of two breakers
only one rename succeeds) and checks that what it moved is the very file it judged stale (same
token, inode and mtime); if not (a new holder took the lock in between) it links it back. A holder
whose lock was broken anyway (suspended past the stale age) logs an error from its heartbeat.
"""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdrl.errors import KdrlUserError

log = logging.getLogger("kdrl.locks")

HOST = socket.gethostname()
DEFAULT_STALE_AFTER_S = 600.0
# A lock file without a readable holder younger than this may be one being written right now.
NO_HOLDER_GRACE_S = 30.0


class LockTimeout(KdrlUserError, TimeoutError):
    """Gave up waiting for a lock that another live process holds (a one-line message)."""


def default_stale_after_s() -> float:
    """``KDRL_LOCK_STALE_S`` if set, else 600 s."""
    return float(os.environ.get("KDRL_LOCK_STALE_S", DEFAULT_STALE_AFTER_S))


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks since boot) of a local process, from /proc (Linux); None
    where there is no /proc or no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()  # after "pid (comm) "; comm may hold spaces
    return (fields[0], fields[19]) if len(fields) > 19 else None


def _process_gone(pid: int, proc_start: str | None) -> bool:
    """Whether local process ``pid`` (started at ``proc_start`` ticks, when known) no longer runs."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # exists, owned by another user
        pass
    stat = _proc_stat(pid)
    if stat is None:
        return False
    state, started = stat
    return state in ("Z", "X") or (proc_start is not None and started != proc_start)


@dataclass(frozen=True)
class Seen:
    """One read of a lock file: its holder (None when unreadable or empty) and its inode and mtime."""

    holder: dict[str, Any] | None
    ino: int
    mtime_ns: int

    @property
    def token(self) -> str | None:
        return self.holder.get("token") if self.holder else None

    @property
    def identity(self) -> tuple[str | None, int, int]:
        return self.token, self.ino, self.mtime_ns

    @property
    def age_s(self) -> float:
        return time.time() - self.mtime_ns / 1e9

    def describe(self) -> str:
        if self.holder is None:
            return f"an unrecorded holder (empty or unreadable file, last touched {self.age_s:.0f} s ago)"
        h = self.holder
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(h.get("started", 0))))
        return f"pid {h.get('pid')} on host {h.get('host')} since {since} (heartbeat {self.age_s:.0f} s ago)"


def _read(path: Path) -> Seen | None:
    """The lock file's holder and stat, from one open file (so both describe the same inode);
    None when there is no such file."""
    try:
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())
            raw = fh.read()
    except FileNotFoundError:
        return None
    try:
        holder = json.loads(raw)
        holder = holder if isinstance(holder, dict) and "token" in holder else None
    except ValueError:
        holder = None
    return Seen(holder, st.st_ino, st.st_mtime_ns)


def _stale_reason(seen: Seen, stale_after_s: float) -> str | None:
    """Why the lock ``seen`` is stale, or None when its holder may be alive."""
    h = seen.holder
    if h is None:
        if seen.age_s > min(stale_after_s, NO_HOLDER_GRACE_S):
            return "it records no holder (a legacy lock file, or its creator was killed while writing it)"
        return None
    if h.get("host") == HOST and isinstance(h.get("pid"), int) and _process_gone(h["pid"], h.get("proc_start")):
        return f"its process (pid {h['pid']} on this host) is gone"
    if seen.age_s > stale_after_s:
        return f"its heartbeat is {seen.age_s:.0f} s old (stale after {stale_after_s:g} s)"
    return None


def _remove_if_same(path: Path, same: Callable[[Seen], bool]) -> bool:
    """Remove ``path`` if it is still the file ``same(seen)`` accepts; race-safe between processes.

    The file is renamed to a unique name first (one of several racing removers wins), then checked:
    if another process replaced it in between, the moved file is linked back (it is a live lock)."""
    aside = path.with_name(f"{path.name}.{HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}.removing")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return False
    moved = _read(aside)
    if moved is None or same(moved):
        aside.unlink(missing_ok=True)
        return True
    try:  # we moved a newer holder's lock: put it back (same inode, so its heartbeat still reaches it)
        os.link(aside, path)
    except FileExistsError:
        log.error("lock %s: moved a live lock aside by a race and could not restore it (a third took it)", path)
    except OSError:  # no hard links on this filesystem
        os.rename(aside, path)
    aside.unlink(missing_ok=True)
    return False


def _break(path: Path, seen: Seen, reason: str) -> bool:
    """Remove the stale lock ``seen`` unless it changed since (a heartbeat, a new holder)."""
    again = _read(path)  # re-check just before breaking
    if again is None or again.identity != seen.identity:
        return False
    # after the rename only the token and inode are compared: a rename may touch the times
    if not _remove_if_same(path, lambda moved: (moved.token, moved.ino) == (seen.token, seen.ino)):
        return False
    log.warning("broke stale lock %s of %s: %s", path, seen.describe(), reason)
    return True


def _try_create(path: Path, holder: dict[str, Any]) -> int | None:
    """Create the lock file holding ``holder``; its open fd, or None when the file exists."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return None
    try:
        data = json.dumps(holder).encode()
        while data:
            data = data[os.write(fd, data) :]
        os.fsync(fd)  # on NFS: on the server before a waiter on another node reads it
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    return fd


class _Heartbeat(threading.Thread):
    """Refreshes the held lock file's mtime every ``interval_s`` and notices a lock taken from us."""

    def __init__(self, path: Path, fd: int, token: str, interval_s: float) -> None:
        super().__init__(name=f"kdrl-lock-heartbeat:{path.name}", daemon=True)
        self.path, self.fd, self.token, self.interval_s = path, fd, token, interval_s
        self.stopped = threading.Event()
        self.lost = False

    def ours(self) -> bool:
        seen = _read(self.path)
        return seen is not None and seen.token == self.token

    def run(self) -> None:
        while not self.stopped.wait(self.interval_s):
            try:  # through the fd: touches our own inode even if the path were replaced
                os.utime(self.fd if os.utime in os.supports_fd else self.path)
            except OSError as exc:
                log.warning("lock %s: heartbeat failed (%s)", self.path, exc)
            if self.lost or self.ours():
                continue
            time.sleep(0.1)  # look again: a breaker that lost a race may be putting it back right now
            if not self.ours():
                self.lost = True
                log.error("lock %s was broken by another process while this one held it (stale heartbeat?)", self.path)


@contextmanager
def exclusive_lock(
    path: str | Path,
    *,
    poll_s: float = 1.0,
    stale_after_s: float | None = None,
    timeout_s: float | None = None,
) -> Iterator[dict[str, Any]]:
    """Hold the lock file ``path`` for the body of the ``with`` (yields what the file records).

    ``poll_s``: how often a waiter looks again (with jitter). ``stale_after_s``: heartbeat age after
    which a holder counts as dead (default ``KDRL_LOCK_STALE_S`` or 600 s). ``timeout_s``: raise
    LockTimeout after waiting that long for a live holder (None: wait as long as it lives)."""
    path = Path(path)
    stale = default_stale_after_s() if stale_after_s is None else float(stale_after_s)
    if stale <= 0 or poll_s <= 0:
        raise ValueError(f"lock {path}: stale_after_s and poll_s must be > 0, got {stale} and {poll_s}")
    path.parent.mkdir(parents=True, exist_ok=True)
    holder = {
        "host": HOST,
        "pid": os.getpid(),
        "proc_start": (_proc_stat(os.getpid()) or (None, None))[1],
        "started": time.time(),
        "token": uuid.uuid4().hex,
    }
    deadline = None if timeout_s is None else time.monotonic() + float(timeout_s)
    logged: set[str | None] = set()
    while (fd := _try_create(path, holder)) is None:
        seen = _read(path)
        if seen is None:  # released in between: try again at once
            continue
        reason = _stale_reason(seen, stale)
        if reason is not None and _break(path, seen, reason):
            continue  # (a break lost to another breaker, or to a heartbeat, waits a poll like any other)
        if seen.token not in logged:
            logged.add(seen.token)
            log.info("waiting for lock %s, held by %s", path, seen.describe())
        if deadline is not None and time.monotonic() >= deadline:
            raise LockTimeout(
                f"gave up after {timeout_s:g} s waiting for lock {path}, held by {seen.describe()} "
                "(if that process is gone for good, delete the file)"
            )
        pause = poll_s * random.uniform(0.5, 1.5)
        time.sleep(pause if deadline is None else max(0.0, min(pause, deadline - time.monotonic())))
    heartbeat = _Heartbeat(path, fd, holder["token"], stale / 4)
    heartbeat.start()
    try:
        yield dict(holder)
    finally:
        heartbeat.stopped.set()
        heartbeat.join()
        os.close(fd)
        seen = _read(path)
        mine = seen is not None and seen.token == holder["token"]
        if not (mine and _remove_if_same(path, lambda moved: moved.token == holder["token"])) and not heartbeat.lost:
            log.error("lock %s was broken by another process while this one held it; left it as it is", path)


def live_holder(path: str | Path, stale_after_s: float | None = None) -> dict[str, Any] | None:
    """Who holds the lock file ``path`` now (its recorded holder), or None: no such file, or its holder
    is gone (same host: the process ended; any host: no heartbeat for ``stale_after_s``)."""
    seen = _read(Path(path))
    if seen is None or seen.holder is None:
        return None
    stale = default_stale_after_s() if stale_after_s is None else float(stale_after_s)
    return None if _stale_reason(seen, stale) is not None else dict(seen.holder)
