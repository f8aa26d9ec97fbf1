"""The teacher reference: the denominator of every normalised score, measured once per teacher.

A student's normalised score (S - R) / (T - R) used to divide by its teacher's and a random
policy's means on the student's own 20 final held-out episodes: MinAtar Breakout's teacher scores
13.05 +- 7.36 (std) there, so T carried ~+-12% noise that no interval includes. The reference is
the teacher and a uniform-random policy on ``eval.reference_episodes`` (100) final held-out seeds
``eval.final_seed + i`` (the students' ``eval.final_episodes`` seeds are its first ones: paired),
computed once per teacher file and stored with it:

* a teacher job computes it at the end of training and writes it next to ``teacher.pt``
  (``teacher.pt.reference.json``; a copy goes into the teacher's results.json as ``reference``);
* a student (kdrl-distill, each task of kdrl-multitask) reuses a stored reference whose settings
  match its own (env id and kwargs, episodes, first seed, evaluation epsilon, this module's
  ``REFERENCE_VERSION``) and whose ``teacher_sha256`` is the teacher file's; otherwise (an old cache
  entry, a user's or a foreign teacher file, other settings) it computes it once, under a lock, and
  adds it next to the teacher file, or where that is not writable to the kdrl cache
  (``<cache_dir>/references/<sha256>.json``, keyed by the file's content), so the next student
  reuses it.

A reference file holds ``teacher_sha256``, ``teacher_file`` and a list ``references`` (one per
settings): each with the settings, ``seeds`` (the rule, in words), ``teacher`` and ``random``
(``mean``, ``std`` (ddof=1), ``se`` = std / sqrt(episodes), ``returns``), ``computed_by`` and
``wall_s``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kdrl.evaluation import eval_seeds, evaluate_policy, random_returns
from kdrl.io import atomic_write_json
from kdrl.locks import exclusive_lock

log = logging.getLogger("kdrl.reference")

# Bump when a change to the evaluation code makes stored references something else than a new one.
REFERENCE_VERSION = 1
SUFFIX = ".reference.json"
SETTINGS_KEYS = ("version", "env_id", "episodes", "first_seed", "epsilon", "env_kwargs")

GreedyFn = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class ReferenceSettings:
    """What a reference depends on besides the teacher file: a stored one is reused only when all match."""

    env_id: str
    episodes: int
    first_seed: int
    epsilon: float
    env_kwargs: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, cfg: Any, env_id: str, env_kwargs: dict[str, Any] | None) -> ReferenceSettings:
        """The settings of a job's config (its ``eval`` block) for the env ``env_id`` with ``env_kwargs``."""
        return cls(
            env_id=str(env_id),
            episodes=int(cfg.eval.reference_episodes),
            first_seed=int(cfg.eval.final_seed),
            epsilon=float(cfg.eval.epsilon),
            env_kwargs=dict(env_kwargs or {}),
        )

    @property
    def seeds(self) -> list[int]:
        return eval_seeds(self.first_seed, self.episodes)

    def matches(self, ref: Any) -> bool:
        if not isinstance(ref, dict) or ref.get("version") != REFERENCE_VERSION:
            return False
        same = (
            ref.get("env_id") == self.env_id
            and ref.get("episodes") == self.episodes
            and ref.get("first_seed") == self.first_seed
            and ref.get("epsilon") == self.epsilon
            and _canonical(ref.get("env_kwargs") or {}) == _canonical(self.env_kwargs)
        )
        complete = all(
            isinstance(ref.get(who), dict) and len(ref[who].get("returns") or ()) == self.episodes
            for who in ("teacher", "random")
        )
        return same and complete


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=str)


def return_stats(returns: list[float]) -> dict[str, Any]:
    """mean, std (ddof=1), se = std / sqrt(n) and the returns themselves."""
    x = np.asarray(returns, dtype=float)
    std = float(x.std(ddof=1)) if len(x) > 1 else 0.0
    return {"mean": float(x.mean()), "std": std, "se": std / math.sqrt(len(x)), "returns": x.tolist()}


def compute_reference(greedy_fn: GreedyFn, settings: ReferenceSettings, computed_by: str) -> dict[str, Any]:
    """The teacher (``greedy_fn``, with the evaluation epsilon) and a uniform-random policy on the
    reference seeds ``first_seed + i``, i < episodes."""
    seeds, t0 = settings.seeds, time.perf_counter()
    log.info(
        "teacher reference: the teacher and a random policy on %d held-out episodes (seeds %d..%d), once per teacher",
        settings.episodes,
        seeds[0],
        seeds[-1],
    )
    kwargs = settings.env_kwargs or None
    teacher = evaluate_policy(greedy_fn, settings.env_id, seeds, kwargs, epsilon=settings.epsilon)
    rand = random_returns(settings.env_id, seeds, kwargs)
    return {
        "version": REFERENCE_VERSION,
        **asdict(settings),
        "seeds": f"{settings.first_seed} + i, i < {settings.episodes}",
        "teacher": return_stats(teacher),
        "random": return_stats(rand),
        "computed_by": computed_by,
        "wall_s": time.perf_counter() - t0,
    }


def content_digest(path: str | Path) -> str:
    """sha256 of a teacher file (or of a folder's files, names included: an RL Zoo folder)."""
    path = Path(path)
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for p in files:
        if path.is_dir():
            h.update(str(p.relative_to(path)).encode() + b"\0")
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def sidecar_path(teacher_path: str | Path) -> Path:
    """Where a teacher file's references live: next to it (``teacher.pt.reference.json``)."""
    teacher_path = Path(teacher_path)
    return teacher_path.with_name(teacher_path.name + SUFFIX)


def cached_path(cache_dir: str | Path, digest: str) -> Path:
    """The kdrl cache's place for a teacher file whose own folder is not writable."""
    return Path(cache_dir) / "references" / f"{digest}.json"


def _read(place: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(place.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable teacher reference file %s (%s)", place, " ".join(str(exc).split())[:160])
        return None
    if not isinstance(data, dict) or not isinstance(data.get("references"), list):
        log.warning("ignoring teacher reference file %s: not a kdrl reference file", place)
        return None
    return data


def _lookup(places: list[Path], digest: str, settings: ReferenceSettings) -> dict[str, Any] | None:
    for place in places:
        data = _read(place)
        if data is None or data.get("teacher_sha256") != digest:
            continue  # absent, or the file of another (or an overwritten) teacher
        for ref in data["references"]:
            if settings.matches(ref):
                return {**ref, "stored_at": str(place)}
    return None


def _record(place: Path, digest: str, teacher_path: Path, ref: dict[str, Any]) -> None:
    """Add ``ref`` to ``place`` (replacing one with the same settings; all of them when the file was
    another teacher's). Call under the place's lock."""
    data = _read(place)
    if data is None or data.get("teacher_sha256") != digest:
        data = {"teacher_sha256": digest, "teacher_file": str(teacher_path), "references": []}
    key = {k: _canonical(ref[k]) for k in SETTINGS_KEYS}
    data["references"] = [
        r for r in data["references"] if not isinstance(r, dict) or {k: _canonical(r.get(k)) for k in key} != key
    ]
    data["references"].append({k: v for k, v in ref.items() if k != "stored_at"})
    atomic_write_json(place, data)


def _lock(place: Path):
    return exclusive_lock(place.with_name(place.name + ".lock"))


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".kdrl-probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
        return True
    except OSError:
        return False


def store_reference(teacher_path: str | Path, ref: dict[str, Any]) -> dict[str, Any]:
    """Write a reference a teacher job computed next to its teacher file; returns it with ``stored_at``."""
    teacher_path = Path(teacher_path)
    place = sidecar_path(teacher_path)
    with _lock(place):
        _record(place, content_digest(teacher_path), teacher_path, ref)
    return {**ref, "stored_at": str(place)}


def teacher_reference(
    teacher_path: str | Path, greedy_fn: GreedyFn, settings: ReferenceSettings, cache_dir: str | Path
) -> dict[str, Any]:
    """The reference of the teacher in ``teacher_path`` for ``settings``: a stored one (next to the
    file, or in the kdrl cache under its content hash), else computed now and stored once for every
    later student (next to the file where writable, else in the cache). ``stored_at`` says where."""
    teacher_path = Path(teacher_path)
    digest = content_digest(teacher_path)
    places = [sidecar_path(teacher_path), cached_path(cache_dir, digest)]
    found = _lookup(places, digest, settings)
    if found is None:
        place = next((p for p in places if _writable(p.parent)), None)
        if place is None:
            log.warning("teacher reference: neither %s nor %s is writable; computing it for this job only", *places)
            return compute_reference(greedy_fn, settings, "student") | {"stored_at": None}
        with _lock(place):
            found = _lookup(places, digest, settings)  # another job may have stored it while this one waited
            if found is None:
                found = compute_reference(greedy_fn, settings, "student") | {"stored_at": str(place)}
                try:
                    _record(place, digest, teacher_path, found)
                except OSError as exc:
                    log.warning("teacher reference: could not store it in %s (%s)", place, exc)
                    found["stored_at"] = None
                return found
    log.info(
        "teacher reference from %s: teacher %.3f (se %.3f), random %.3f (se %.3f) on %d episodes",
        found["stored_at"],
        found["teacher"]["mean"],
        found["teacher"]["se"],
        found["random"]["mean"],
        found["random"]["se"],
        found["episodes"],
    )
    return found


def reference_fields(ref: dict[str, Any]) -> dict[str, Any]:
    """The ``teacher_reference`` block of a student's results.json (kdrl.results.TeacherReference)."""
    return {
        "episodes": ref["episodes"],
        "first_seed": ref["first_seed"],
        "epsilon": ref["epsilon"],
        "return_mean": ref["teacher"]["mean"],
        "return_std": ref["teacher"]["std"],
        "return_se": ref["teacher"]["se"],
        "random_mean": ref["random"]["mean"],
        "random_std": ref["random"]["std"],
        "random_se": ref["random"]["se"],
        "stored_at": ref.get("stored_at"),
    }
