"""An actor process: the envs step on the second core while the learner updates on the first.

``ActorCollector`` is an ``EnvCollector`` whose envs live in a forked child process. The learner
(the parent) keeps everything that decides what is learned: the exploration RNG and its draws,
the replay buffer, the counters and the episode statistics. Per round, it

1. copies the acting net's weights into a shared snapshot and draws this round's exploration;
2. tells the child to step ``k`` vector steps (``launch``); the child acts greedily with the
   snapshot where the draws say exploit, steps the envs and writes the transitions into shared
   staging arrays;
3. runs its own updates meanwhile, then ``join``s: the staged transitions go into replay through
   the same ``record`` as the in-process collector.

So with ``ReplayStream``'s pipelining, round k+1 is collected while the updates of round k run,
and its actions come from the net *before* those updates: the only difference from the
in-process loop is this one-round policy lag (for CleanRL's CartPole setting, one update of lag
per 10 env steps). Nothing depends on thread timing: a run is reproducible from its seed.

Python threads cannot overlap the two (the GIL: a collector thread made the CartPole loop 0.7x,
measured); a process can. Only modules whose acting has no state of its own use it (DQN
teachers, scratch baselines, student-driven students); ``acting_nets`` names the nets whose
weights the child refreshes each round.
"""

from __future__ import annotations

import logging
import mmap
import multiprocessing as mp
import os
import signal
import struct
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from kdrl.collector import EnvCollector, EnvStepError, GreedyFn, epsilon_greedy
from kdrl.envs import transition_next_obs
from kdrl.replay import Replay, ReplayBuffer
from kdrl.resources import set_threads
from kdrl.seeding import Key

log = logging.getLogger(__name__)
_STEP, _STOP = 1, 2
_TRANSITION_FIELDS = ("obs", "actions", "rewards", "next_obs", "terminated", "done")  # EnvCollector.record's order


def shared_array(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """A zeroed numpy array in anonymous shared memory (seen by processes forked after it)."""
    dtype = np.dtype(dtype)
    nbytes = max(int(np.prod(shape)) * dtype.itemsize, 1)
    return np.frombuffer(mmap.mmap(-1, nbytes), dtype=dtype, count=int(np.prod(shape))).reshape(shape)


# signals that tell the *job* something (Ctrl-C; SLURM's time-limit/requeue notice: submitit's
# USR2, sent with --signal=USR2@90 to every process of the job step, Lightning's USR1): the parent
# acts on them; the actor child ignores them, it ends when the parent stops or kills it
_PARENTS_NOTICES = frozenset({signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2})
_SYNCHRONOUS = frozenset({signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGILL, signal.SIGABRT, signal.SIGTRAP})


def child_signal_plan() -> dict[signal.Signals, signal.Handlers]:
    """What an actor child does with the signals the parent (this process) handles in Python.

    A forked child inherits the parent's Python signal handlers: submitit's USR2 handler (which
    checkpoints the job, runs ``scontrol requeue`` and exits) and its SIGTERM/SIGCONT bypass,
    Lightning's SIGTERM notifier (installed for every fit). Run in the child, the first would
    requeue the job a second time, and the SIGTERM handlers kept the child alive through a
    SIGTERM (multiprocessing's ``terminate``). So the child ignores the job's notices
    (``_PARENTS_NOTICES``) and takes the default action (SIGTERM: exit) for every other signal
    the parent handles in Python."""
    plan: dict[signal.Signals, signal.Handlers] = {sig: signal.SIG_IGN for sig in _PARENTS_NOTICES}
    for sig in signal.valid_signals():
        if sig in plan or sig in _SYNCHRONOUS or sig in (signal.SIGKILL, signal.SIGSTOP):
            continue
        try:
            handler = signal.getsignal(sig)
        except (OSError, ValueError):
            continue
        if callable(handler):
            plan[signal.Signals(sig)] = signal.SIG_DFL
    return plan


def pin_plan() -> tuple[int, int] | None:
    """(learner CPU, actor CPU) when this process may use two or more CPUs, else None.

    Pinned, because Linux wakes a process on its waker's CPU (wake-affine): unpinned, the actor
    woken by each round's launch often ran on the learner's core and preempted it while the other
    core idled (measured: the pipelined CartPole loop no faster than the in-process one).
    ``KDRL_NO_PIN=1`` leaves placement to the OS (for shared nodes with their own binding).
    """
    if os.environ.get("KDRL_NO_PIN") or not hasattr(os, "sched_getaffinity"):
        return None
    cpus = sorted(os.sched_getaffinity(0))
    return (cpus[0], cpus[1]) if len(cpus) >= 2 else None


class ActorCollector(EnvCollector):
    """An ``EnvCollector`` whose envs step in a child process, ``max_round`` vector steps at most
    per round. ``step()`` still works (launch one step and join it), so anything that drives an
    ``EnvCollector`` drives this one."""

    def __init__(
        self,
        envs: gym.vector.VectorEnv,
        buffer: Replay,
        greedy_fn: GreedyFn,
        epsilon_fn: Callable[[int], float],
        acting_nets: Callable[[], Sequence[nn.Module]],
        max_round: int,
        seed: int = 0,
        reward_clip: bool = False,
        key: tuple[Key, ...] = (),
    ) -> None:
        super().__init__(envs, buffer, greedy_fn, epsilon_fn, seed=seed, reward_clip=reward_clip, key=key)
        self.acting_nets = acting_nets
        self.max_round = max(int(max_round), 1)
        self.pending = 0  # vector steps launched and not yet joined
        self.wait_s = 0.0  # time the learner spent waiting for the actor (it is the bottleneck when this grows)
        self.in_process = False  # set when the acting net is not on the CPU (a GPU run)
        self._proc: mp.process.BaseProcess | None = None
        self._conn: Any = None
        self._staged: dict[str, np.ndarray] = {}
        self._weights: list[torch.Tensor] = []
        self._rng_before_round: dict[str, Any] = self.rng.bit_generator.state

    def env_state(self) -> None:
        """None: the envs step in the child, mid-round; a resume resets them."""
        return None

    # ---- the parent's side ------------------------------------------------------------------
    def _params(self) -> list[torch.Tensor]:
        params = self.__dict__.get("_param_list")
        if params is None:  # fixed once the round trips start (the nets are built and placed)
            params = self.__dict__["_param_list"] = [p for net in self.acting_nets() for p in net.parameters()]
        return params

    def start(self) -> None:
        """Allocate the shared arrays and fork the child (after the nets are built and on CPU)."""
        if self._proc is not None or self.in_process:
            return
        params = self._params()
        if not self._acting_on_cpu():
            # a forked child cannot use the parent's CUDA context: step in-process, as env.actor=inline
            # does (a launched round is stepped when it is joined, after the updates: no lookahead)
            log.warning(
                "env.actor=process: the acting net is on %s; the envs step in-process, as env.actor=inline",
                params[0].device,
            )
            self.in_process = True
            return
        r, n = self.max_round, self.num_envs
        obs_shape = self.envs.single_observation_space.shape
        obs_dtype = self.envs.single_observation_space.dtype
        self._staged = {
            "obs": shared_array((r, n, *obs_shape), obs_dtype),
            "next_obs": shared_array((r, n, *obs_shape), obs_dtype),
            "actions": shared_array((r, n), np.int64),
            "rewards": shared_array((r, n), np.float64),
            "terminated": shared_array((r, n), np.bool_),
            "done": shared_array((r, n), np.bool_),
            "explore": shared_array((r, n), np.bool_),
            "has_draws": shared_array((r,), np.bool_),
            "random_actions": shared_array((r, n), np.int64),
        }
        flat = torch.from_numpy(shared_array((sum(p.numel() for p in params),), np.float32))
        self._weights, offset = [], 0
        for p in params:
            self._weights.append(flat[offset : offset + p.numel()].view_as(p))
            offset += p.numel()
        parent_conn, child_conn = mp.Pipe()
        self._cpus = pin_plan()
        self._signal_plan = child_signal_plan()
        self._proc = mp.get_context("fork").Process(target=self._child_main, args=(child_conn,), daemon=True)
        # the planned signals wait (blocked) until the child has its own dispositions: none of them
        # can reach the parent's handlers in the child between the fork and _child_main
        self._signal_mask = signal.pthread_sigmask(signal.SIG_BLOCK, set(self._signal_plan))
        try:
            self._proc.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, self._signal_mask)
        child_conn.close()
        self._conn = parent_conn
        if self._cpus is not None:
            self._saved_affinity = os.sched_getaffinity(0)
            os.sched_setaffinity(0, {self._cpus[0]})

    def _acting_on_cpu(self) -> bool:
        return all(p.device.type == "cpu" for p in self._params())

    def launch(self, k: int) -> None:
        """Start ``k`` vector steps in the child, acting with the weights as they are now.

        In-process (the acting net is on a GPU) nothing steps yet: the round is stepped by
        ``join``, with the weights as they are then (after the updates the stream runs meanwhile),
        so collection is never ahead of learning, as with the in-process collector."""
        self.start()
        if self.pending:
            raise RuntimeError("a round is already in flight; join it first")
        k = int(k)
        if not 0 < k <= self.max_round:
            raise ValueError(f"a round is 1..{self.max_round} vector steps, got {k}")
        if self.in_process:
            self.pending = k
            return
        with torch.no_grad():
            torch._foreach_copy_(self._weights, [p.detach() for p in self._params()])
        self._rng_before_round = self.rng.bit_generator.state  # the committed state, for checkpoints
        st, steps = self._staged, self.env_steps
        for j in range(k):  # the parent's RNG makes every exploration draw, as in-process
            self.env_steps = steps + j * self.num_envs
            explore, random_actions = self.exploration()
            st["has_draws"][j] = explore is not None and len(random_actions) > 0
            if st["has_draws"][j]:
                st["explore"][j] = explore
                st["random_actions"][j, : len(random_actions)] = random_actions
        self.env_steps = steps
        try:
            self._conn.send_bytes(struct.pack("ii", _STEP, k))
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise self._died() from exc
        self.pending = k

    def _died(self) -> EnvStepError:
        assert self._proc is not None
        self._proc.join(timeout=1)
        code = self._proc.exitcode  # e.g. -15: SIGTERM, which the child does not catch (child_signal_plan)
        how = f" ({signal.Signals(-code).name})" if code is not None and code < 0 else ""
        return EnvStepError(f"env '{self.env_id}': the actor process died{how} at env step {self.env_steps}")

    def join(self) -> None:
        """Wait for the round in flight and record its transitions (a no-op when none is)."""
        if not self.pending:
            return
        k, self.pending = self.pending, 0
        if self.in_process:  # the launched round steps now, with the current weights (see launch)
            for _ in range(k):
                EnvCollector.step(self)
            return
        t0 = time.perf_counter()
        try:
            reply = self._conn.recv_bytes()
            self.wait_s += time.perf_counter() - t0
        except EOFError as exc:
            raise self._died() from exc
        if reply != b"ok":
            raise EnvStepError(f"env '{self.env_id}' raised at env step {self.env_steps}: {reply.decode()}")
        st = self._staged
        if isinstance(self.buffer, ReplayBuffer):  # the round's rows in one write (no frame stacks to keep in order)
            rows = k * self.num_envs
            flat = {name: st[name][:k].reshape(rows, *st[name].shape[2:]) for name in _TRANSITION_FIELDS}
            stored = np.sign(flat["rewards"]) if self.reward_clip else flat["rewards"]
            self.buffer.add(flat["obs"], flat["actions"], stored, flat["next_obs"], flat["terminated"], flat["done"])
            self.count_round(st["rewards"][:k], st["done"][:k])
        else:
            for j in range(k):
                self.record(*(st[name][j] for name in _TRANSITION_FIELDS))

    def step(self) -> None:
        self.launch(1)
        self.join()

    def committed_rng_state(self) -> dict[str, Any]:
        """The exploration RNG's state as of the last joined round: a round in flight has made its
        draws already, but its transitions are not the run's until it is joined. A checkpoint taken
        now (at an evaluation) is the run as it stands at this env step, exactly the in-process
        collector's state there, and the round in flight is not forced in: a run that stops here
        (early stop) ends at this env step, as an in-process run does."""
        if self.pending and not self.in_process:  # in-process, a launched round has drawn nothing yet
            return self._rng_before_round
        return self.rng.bit_generator.state

    def close(self) -> None:
        if self._proc is None:
            self.pending = 0  # (in-process) a launched round is dropped, as the child's would be
            return
        try:
            self.pending = 0
            self._conn.send_bytes(struct.pack("ii", _STOP, 0))
        except (BrokenPipeError, OSError):
            pass
        self._proc.join(timeout=5)
        if self._proc.is_alive():
            self._proc.kill()
        self._proc, self._conn = None, None
        saved = self.__dict__.pop("_saved_affinity", None)
        if saved is not None:
            os.sched_setaffinity(0, saved)

    def __del__(self) -> None:
        proc = getattr(self, "_proc", None)
        if proc is not None and proc.is_alive():
            proc.kill()

    # ---- the child's side --------------------------------------------------------------------
    def _child_main(self, conn: Any) -> None:
        for sig, disposition in self._signal_plan.items():  # the job's signals are the parent's to handle
            signal.signal(sig, disposition)
        signal.pthread_sigmask(signal.SIG_SETMASK, self._signal_mask)
        if self._cpus is not None:
            os.sched_setaffinity(0, {self._cpus[1]})
        set_threads(1)
        params = self._params()
        st, obs = self._staged, self.obs
        while True:
            try:
                cmd, k = struct.unpack("ii", conn.recv_bytes())
            except EOFError:
                break
            if cmd == _STOP:
                break
            try:
                with torch.no_grad():
                    torch._foreach_copy_(params, self._weights)
                for j in range(k):
                    explore = st["explore"][j] if st["has_draws"][j] else None
                    n_random = int(np.count_nonzero(explore)) if explore is not None else 0
                    actions = epsilon_greedy(obs, explore, st["random_actions"][j, :n_random], self.greedy_fn)
                    next_obs, rewards, terminated, truncated, infos = self.envs.step(actions)
                    done = terminated | truncated
                    st["obs"][j] = obs
                    st["next_obs"][j] = transition_next_obs(next_obs, infos, done)
                    st["actions"][j], st["rewards"][j] = actions, rewards
                    st["terminated"][j], st["done"][j] = terminated, done
                    obs = next_obs
                conn.send_bytes(b"ok")
            except Exception as exc:  # noqa: BLE001 - reported to the parent in one line
                traceback.print_exc()
                conn.send_bytes(repr(exc).encode())
        conn.close()
        os._exit(0)  # no atexit handlers or finalisers of the parent's objects in the child
