"""Recording spies for the wiring tests (tests/test_wiring.py): what a real run fed to its
evaluations, to the RNG factory (kdrl.seeding) and to its schedules, with who fed it.

Every spy calls through to the real function, so the run is the run it would be without it. The
spies patch the names where they are looked up (``kdrl.runs.distill.evaluate_policy``, ...), so a
consumer that bypassed them (a new call site) shows up as a missing call in the tests' counts.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch

import kdrl.seeding
from kdrl.losses import LambdaSchedule
from kdrl.schedules import LinearSchedule
from kdrl.td import TargetNetwork

KDRL = Path(kdrl.seeding.__file__).resolve().parent
SEEDING = Path(kdrl.seeding.__file__).resolve()


def _unmutated_name(qualname: str) -> str:
    """A function's own qualified name, also when mutmut runs a copy of it: ``C.xǁCǁf__mutmut_orig``
    (or ``__mutmut_12``) is ``C.f``, and ``x_f__mutmut_3`` is ``f``."""
    head, _, last = qualname.rpartition(".")
    if "__mutmut_" in last:
        last = last.split("__mutmut_")[0]
        last = last.split("ǁ")[-1] if "ǁ" in last else last.removeprefix("x_")
    return f"{head}.{last}" if head else last


def _inside_the_factory(filename: str) -> bool:
    """kdrl/seeding.py itself, or the trampolines mutation testing wraps its functions in (mutmut)."""
    path = Path(filename).resolve()
    return path == SEEDING or "mutmut" in path.parts


@dataclass
class EvalCall:
    """One call of an evaluation function: in which phase of the job, which function, whose policy."""

    phase: str  # build | fit | final (set by the recording job around Job.build / fit / Job.finish)
    fn: str  # evaluate_policy | random_returns | rollout_states
    site: str  # the module whose name was called (kdrl.callbacks, kdrl.runs.distill, ...)
    who: Any  # the net (or module) whose greedy policy played; None for the random policy
    env_id: str
    seeds: list[int]
    epsilon: float | None = None
    wrappers: int = 0
    kwargs: dict | None = None


@dataclass
class StreamCall:
    """One stream of run ``seed`` derived by ``kdrl.seeding`` and the consumer that asked for it."""

    seed: int
    key: tuple
    consumer: str  # file:qualname of the first frame outside kdrl/seeding.py
    owner: int | None  # id() of that frame's ``self`` (two collectors are two consumers)


@dataclass
class ScheduleCall:
    """A schedule evaluated at counter ``t``; ``truth`` is the caller's own counters at that moment."""

    t: int
    truth: dict[str, int]


@dataclass
class Recording:
    phase: str = "setup"
    evals: list[EvalCall] = field(default_factory=list)
    streams: list[StreamCall] = field(default_factory=list)
    schedules: dict[str, list[ScheduleCall]] = field(default_factory=dict)
    target: list[dict[str, Any]] = field(default_factory=list)
    lambda_observed: list[tuple[float, float, float]] = field(default_factory=list)
    optimizers: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def calls(self, **match: Any) -> list[EvalCall]:
        return [c for c in self.evals if all(getattr(c, k) == v for k, v in match.items())]

    def sched(self, name: str) -> list[ScheduleCall]:
        return self.schedules.setdefault(name, [])


class Tagged:
    """A greedy function that remembers its net (``greedy_of`` returns anonymous lambdas)."""

    def __init__(self, fn: Callable, net: Any) -> None:
        self.fn, self.net = fn, net

    def __call__(self, obs):
        return self.fn(obs)


def who_plays(fn: Any) -> Any:
    if isinstance(fn, Tagged):
        return fn.net
    return getattr(fn, "__self__", fn)  # a bound method: its module


def _caller(depth: int) -> Any:
    """The ``self`` of the frame ``depth`` levels above the spy (None when it has none)."""
    frame = sys._getframe(depth + 1)
    return frame.f_locals.get("self")


def counters(obj: Any) -> dict[str, int]:
    """The counters a schedule could be fed, read off whoever called it."""
    out: dict[str, int] = {"owner": id(obj)}
    for name in ("env_steps", "task_env_steps", "optimizer_steps", "num_envs"):
        try:
            value = getattr(obj, name)
        except Exception:  # a module before its stream is built
            continue
        if isinstance(value, int):
            out[name] = value
    stream = obj.__dict__.get("stream") if hasattr(obj, "__dict__") else None
    if stream is not None:
        out["grad_steps"] = int(stream.grad_steps)
    return out


def _recording_schedule(rec: Recording, name: str):
    class RecordingSchedule(LinearSchedule):
        def __call__(self, t: int) -> float:
            rec.sched(name).append(ScheduleCall(int(t), counters(_caller(1))))
            return super().__call__(t)

    RecordingSchedule.__name__ = f"Recording{name.title()}Schedule"
    return RecordingSchedule


@contextmanager
def recording(mp: pytest.MonkeyPatch) -> Iterator[Recording]:
    """Patch every evaluation call site, the RNG factory and the schedules for one run."""
    import kdrl.callbacks
    import kdrl.modules.dqn
    import kdrl.modules.student
    import kdrl.runs.distill
    import kdrl.runs.multitask
    import kdrl.runs.teacher

    rec = Recording()

    def evaluate_spy(site: str, real: Callable) -> Callable:
        def spy(greedy_fn, env_id, seeds, kwargs=None, wrappers=(), epsilon=0.0, rng_seed=0):
            rec.evals.append(
                EvalCall(
                    rec.phase,
                    "evaluate_policy",
                    site,
                    who_plays(greedy_fn),
                    env_id,
                    [int(s) for s in seeds],
                    float(epsilon),
                    len(wrappers),
                    dict(kwargs or {}),
                )
            )
            return real(greedy_fn, env_id, seeds, kwargs, wrappers, epsilon=epsilon, rng_seed=rng_seed)

        return spy

    def random_spy(site: str, real: Callable) -> Callable:
        def spy(env_id, seeds, kwargs=None):
            rec.evals.append(
                EvalCall(rec.phase, "random_returns", site, None, env_id, [int(s) for s in seeds], None, 0, kwargs)
            )
            return real(env_id, seeds, kwargs)

        return spy

    def rollout_spy(site: str, real: Callable) -> Callable:
        def spy(greedy_fn, env_id, seeds, max_states, kwargs=None):
            rec.evals.append(
                EvalCall(rec.phase, "rollout_states", site, who_plays(greedy_fn), env_id, [int(s) for s in seeds], None)
            )
            return real(greedy_fn, env_id, seeds, max_states, kwargs)

        return spy

    for mod in (kdrl.callbacks, kdrl.runs.teacher, kdrl.runs.distill, kdrl.runs.multitask):
        site = mod.__name__
        mp.setattr(mod, "evaluate_policy", evaluate_spy(site, mod.evaluate_policy))
        if hasattr(mod, "random_returns"):
            mp.setattr(mod, "random_returns", random_spy(site, mod.random_returns))
        if hasattr(mod, "rollout_states"):
            mp.setattr(mod, "rollout_states", rollout_spy(site, mod.rollout_states))
    for mod in (kdrl.runs.distill, kdrl.runs.multitask):
        real_greedy_of = mod.greedy_of
        mp.setattr(mod, "greedy_of", lambda net, real=real_greedy_of: Tagged(real(net), net))

    # the RNG factory: generator and seed_ints both derive through kdrl.seeding.seed_sequence
    real_seq = kdrl.seeding.seed_sequence

    def seq_spy(seed, *key):
        frame = sys._getframe(1)
        while frame is not None and _inside_the_factory(frame.f_code.co_filename):
            frame = frame.f_back
        assert frame is not None
        path = Path(frame.f_code.co_filename).resolve()
        where = str(path.relative_to(KDRL.parent)) if path.is_relative_to(KDRL.parent) else path.name
        owner = frame.f_locals.get("self")
        rec.streams.append(
            StreamCall(
                int(seed),
                tuple(key),
                f"{where}:{_unmutated_name(frame.f_code.co_qualname)}",
                None if owner is None else id(owner),
            )
        )
        return real_seq(seed, *key)

    mp.setattr(kdrl.seeding, "seed_sequence", seq_spy)

    # schedules: exploration (every module builds it with kdrl.modules.dqn.exploration_schedule)
    # and the mixed control's beta (kdrl.modules.student); lambda; the target network's counter
    mp.setattr(kdrl.modules.dqn, "LinearSchedule", _recording_schedule(rec, "epsilon"))
    mp.setattr(kdrl.modules.student, "LinearSchedule", _recording_schedule(rec, "beta"))
    real_lambda, real_observe = LambdaSchedule.__call__, LambdaSchedule.observe

    def lambda_spy(self, env_steps):
        rec.sched("lambda").append(ScheduleCall(int(env_steps), counters(_caller(1))))
        return real_lambda(self, env_steps)

    def observe_spy(self, student_return, teacher_return, random_return):
        rec.lambda_observed.append((float(student_return), float(teacher_return), float(random_return)))
        return real_observe(self, student_return, teacher_return, random_return)

    mp.setattr(LambdaSchedule, "__call__", lambda_spy)
    mp.setattr(LambdaSchedule, "observe", observe_spy)
    real_maybe = TargetNetwork.maybe_update

    def maybe_update_spy(self, online, progress):
        module = _caller(1)
        before = [p.detach().clone() for p in self.net.parameters()]
        synced = real_maybe(self, online, progress)
        changed = any(not torch.equal(b, p) for b, p in zip(before, self.net.parameters()))
        offline = getattr(module, "_offline_start", None) is not None  # QDagger's offline phase is running
        rec.target.append(
            {
                "progress": int(progress),
                "synced": bool(synced),
                "changed": changed,
                "offline": offline,
                "interval": self.interval,
                **counters(module),
            }
        )
        return synced

    mp.setattr(TargetNetwork, "maybe_update", maybe_update_spy)

    for mod in (kdrl.runs.teacher, kdrl.runs.distill, kdrl.runs.multitask):
        real_build = mod.build_optimizer

        def build_spy(*args, real=real_build, site=mod.__name__, **kwargs):
            rec.optimizers.append((site, dict(kwargs)))
            return real(*args, **kwargs)

        mp.setattr(mod, "build_optimizer", build_spy)
    yield rec


def recorded_job(job_cls: type, rec: Recording) -> type:
    """``job_cls`` with the job's phases marked on ``rec`` and its module kept (``job.module``)."""

    class RecordedJob(job_cls):
        def build(self, fields):
            rec.phase = "build"
            module, evaluation = super().build(fields)
            self.module, self.evaluation = module, evaluation
            rec.phase = "fit"
            return module, evaluation

        def finish(self, module, evaluation, chosen):
            rec.phase = "final"
            try:
                return super().finish(module, evaluation, chosen)
            finally:
                rec.phase = "done"

    RecordedJob.__name__ = f"Recorded{job_cls.__name__}"
    return RecordedJob
