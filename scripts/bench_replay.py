"""Replay memory and sampling speed for Atari: FrameStackReplay against full-stack layouts.

    python scripts/bench_replay.py            # 1M transitions (~7.1 GB, about a minute)
    python scripts/bench_replay.py --quick    # 100k transitions, a few seconds

Observations are Atari's (4, 84, 84) uint8 stacks from 8 envs. FrameStackReplay is measured: it is
allocated with ``--capacity`` and filled completely (every frame slot of every env ring written)
with a synthetic frame-stacked stream (random frames from a pool, episodes of ~1000 steps ended
half by termination, half by truncation); its ``nbytes()`` and the growth of this process's resident
memory (VmRSS) are reported. The full-stack layouts are computed from their own classes built tiny:
kdrl's plain ReplayBuffer (obs and next_obs stacks per transition) and stable-baselines3's
ReplayBuffer with ``optimize_memory_usage=True`` (obs stacks only; next_obs is the following row).
GB = 1e9 bytes.

Sampling: median over ``--repeats`` runs of batches per second for ``sample(32)`` and
``sample(256)`` from the full buffer, and, for comparison, from a plain ReplayBuffer of 50k
transitions (2.8 GB; the lean buffer is freed first so the peak stays near 7.5 GB), both through
its ``sample`` and gathered with ``index_select``. One torch thread, as in training.
"""

from __future__ import annotations

import argparse
import gc
import platform
import statistics
import time

import numpy as np
import torch

from kdrl.replay import FrameStackReplay, ReplayBuffer

OBS_SHAPE = (4, 84, 84)
NUM_ENVS = 8
N_ACTIONS = 6
REFERENCE = 1_000_000  # the buffer size
TARGET_GB = 7.5  # the issue: <= 7.5 GB for 1M transitions
FRAME = int(np.prod(OBS_SHAPE[1:]))


def proc_status_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024  # kB
    raise RuntimeError(f"no {field} in /proc/self/status")


class SyntheticAtari:
    """A frame-stacked vector-env stream as EnvCollector hands it to ``add`` (SAME_STEP autoreset:
    obs after an episode end is a fresh reset stack, padded by repeating its first frame)."""

    def __init__(self, num_envs: int, seed: int = 0, mean_episode: int = 1000, pool: int = 256) -> None:
        self.rng = np.random.default_rng(seed)
        self.n, self.k, self.mean_episode = num_envs, OBS_SHAPE[0], mean_episode
        self.pool = self.rng.integers(0, 256, (pool, *OBS_SHAPE[1:]), dtype=np.uint8)
        self.cur = np.repeat(self.rng.integers(0, pool, (num_envs, 1)), self.k, axis=1)  # frame ids of obs
        self.remaining = self.rng.geometric(1 / mean_episode, num_envs)
        self.episodes = 0
        self._chunk, self._i = None, 0

    def _refill(self, steps: int = 4096) -> None:
        r, n = self.rng, self.n
        self._chunk = (
            r.integers(0, len(self.pool), (steps, n)),
            r.integers(0, N_ACTIONS, (steps, n)),
            r.normal(size=(steps, n)).astype(np.float32),
            r.random((steps, n)) < 0.5,
        )
        self._i = 0

    def step(self):
        if self._chunk is None or self._i == len(self._chunk[0]):
            self._refill()
        new, actions, rewards, coin = (c[self._i] for c in self._chunk)
        self._i += 1
        ids = np.concatenate([self.cur, new[:, None]], axis=1)
        stacks = self.pool[ids]  # (n, k + 1, 84, 84)
        self.remaining -= 1
        done = self.remaining <= 0
        terminated = done & coin
        self.cur = ids[:, 1:]
        for i in np.flatnonzero(done):
            self.cur[i] = self.rng.integers(len(self.pool))
            self.remaining[i] = self.rng.geometric(1 / self.mean_episode)
            self.episodes += 1
        return stacks[:, :-1], actions, rewards, stacks[:, 1:], terminated, done


def held_transitions(buf: FrameStackReplay) -> int:
    """Transitions the buffer can return now (its sampling range, valid slots only)."""
    total = 0
    for e in range(buf.num_envs):
        lo, hi = max(int(buf.head[e]) - buf.slots + buf.k, 0), int(buf.head[e]) - 1
        if hi > lo:
            total += int(buf._v[e, np.arange(lo, hi) % buf.slots].sum())
    return total


def batches_per_s(sample, batch: int, repeats: int, min_s: float) -> float:
    sample(batch)  # warm-up
    rates = []
    for _ in range(repeats):
        n, t0 = 0, time.perf_counter()
        while (dt := time.perf_counter() - t0) < min_s:
            sample(batch)
            n += 1
        rates.append(n / dt)
    return statistics.median(rates)


def sb3_bytes_per_transition() -> tuple[float, str]:
    """stable-baselines3 ReplayBuffer(optimize_memory_usage=True), measured on a tiny instance."""
    try:
        import gymnasium as gym
        from stable_baselines3.common.buffers import ReplayBuffer as SB3Replay
    except ImportError:  # its layout: obs stack, int64 action, float32 reward, done, timeout
        return float(np.prod(OBS_SHAPE) + 8 + 4 + 4 + 4), "computed from SB3's layout (not installed)"
    rows = 8
    buf = SB3Replay(
        rows * NUM_ENVS,
        gym.spaces.Box(0, 255, OBS_SHAPE, np.uint8),
        gym.spaces.Discrete(N_ACTIONS),
        device="cpu",
        n_envs=NUM_ENVS,
        optimize_memory_usage=True,
        handle_timeout_termination=False,
    )
    arrays = [buf.observations, buf.actions, buf.rewards, buf.dones, buf.timeouts]
    assert getattr(buf, "next_observations", None) is None
    return sum(a.nbytes for a in arrays) / (rows * NUM_ENVS), "computed: SB3 2.x class built with 64 slots"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--capacity", type=float, default=1e6, help="FrameStackReplay capacity (default 1e6)")
    ap.add_argument("--quick", action="store_true", help="capacity 100k (fast check)")
    ap.add_argument("--plain-capacity", type=int, default=50_000, help="plain ReplayBuffer for the speed comparison")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--min-seconds", type=float, default=0.3, help="per throughput repeat")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    capacity = 100_000 if args.quick else int(args.capacity)
    torch.set_num_threads(1)

    # ---- FrameStackReplay: allocate, fill every slot, measure -----------------------------------
    rss0 = proc_status_bytes("VmRSS")
    t0 = time.perf_counter()
    lean = FrameStackReplay(capacity, OBS_SHAPE, NUM_ENVS, seed=args.seed)
    t_alloc = time.perf_counter() - t0
    stream = SyntheticAtari(NUM_ENVS, seed=args.seed)
    t0, steps = time.perf_counter(), 0
    while lean.added < capacity or (lean.head < lean.slots).any():
        lean.add(*stream.step())
        steps += 1
    t_fill = time.perf_counter() - t0
    rss_growth = proc_status_bytes("VmRSS") - rss0
    lean_bytes = lean.nbytes()
    held, slots = held_transitions(lean), lean.slots
    lean_rates = {b: batches_per_s(lean.sample, b, args.repeats, args.min_seconds) for b in (32, 256)}
    check = lean.sample(256)  # the stacks a sampler builds are consistent shifted windows
    assert torch.equal(check.obs[:, 1:], check.next_obs[:, :-1]) and check.obs.shape == (256, *OBS_SHAPE)
    del lean, check
    gc.collect()

    # ---- plain ReplayBuffer of 50k, for the sampling comparison ----------------------------------
    plain = ReplayBuffer(args.plain_capacity, OBS_SHAPE, obs_dtype=torch.uint8, seed=args.seed)
    small = SyntheticAtari(NUM_ENVS, seed=args.seed + 1)
    for _ in range(-(-args.plain_capacity // NUM_ENVS)):
        plain.add(*small.step())
    plain_rates = {b: batches_per_s(plain.sample, b, args.repeats, args.min_seconds) for b in (32, 256)}

    def index_select_sample(batch: int):  # the same gather with index_select instead of tensor[idx]
        idx = plain.sample_indices(batch)
        return (
            plain.obs.index_select(0, idx),
            plain.actions.index_select(0, idx),
            plain.rewards.index_select(0, idx),
            plain.next_obs.index_select(0, idx),
            plain.terminated.index_select(0, idx),
        )

    select_rates = {b: batches_per_s(index_select_sample, b, args.repeats, args.min_seconds) for b in (32, 256)}
    plain_per = plain.nbytes() / plain.capacity
    plain = None  # free the 50k buffer before the layouts below (the sampler above holds the name, not the buffer)
    gc.collect()

    # ---- layouts computed from their classes ----------------------------------------------------
    assert plain_per == ReplayBuffer(8, OBS_SHAPE, obs_dtype=torch.uint8).nbytes() / 8
    sb3_per, sb3_how = sb3_bytes_per_transition()
    lean_per = lean_bytes / capacity
    gb = 1e9

    print(f"## Replay memory for Atari: obs {OBS_SHAPE} uint8, {NUM_ENVS} envs\n")
    print(
        f"FrameStackReplay capacity {capacity:,}: {steps:,} vector steps ({steps * NUM_ENVS:,} transitions, "
        f"{stream.episodes} episodes) to fill every slot of the {NUM_ENVS} rings of {slots:,} frames"
        f"; it now holds {held:,} sampleable transitions. Allocation {t_alloc:.1f} s, fill {t_fill:.1f} s "
        f"({steps * NUM_ENVS / t_fill:,.0f} transitions/s).\n"
    )
    print(f"| layout | bytes / transition | GB at capacity {capacity:,} | GB for 1M | how |")
    print("|---|---:|---:|---:|---|")
    print(
        f"| FrameStackReplay (kdrl) | {lean_per:,.1f} | {lean_bytes / gb:.3f} (RSS growth {rss_growth / gb:.3f}) | "
        f"{lean_per * REFERENCE / gb:.3f} | measured: allocated and filled; nbytes() and VmRSS growth |"
    )
    print(
        f"| ReplayBuffer (kdrl, obs + next_obs stacks) | {plain_per:,.0f} | {plain_per * capacity / gb:.2f} | "
        f"{plain_per * REFERENCE / gb:.2f} | computed from its layout (not allocated) |"
    )
    print(
        f"| SB3 ReplayBuffer, optimize_memory_usage | {sb3_per:,.0f} | {sb3_per * capacity / gb:.2f} | "
        f"{sb3_per * REFERENCE / gb:.2f} | {sb3_how} |"
    )
    print(
        f"| floor: one 84x84 frame per transition | {FRAME:,} | {FRAME * capacity / gb:.3f} | "
        f"{FRAME * REFERENCE / gb:.3f} | |"
    )
    ok = lean_per * REFERENCE / gb <= TARGET_GB
    print(
        f"\nTarget (issue): <= {TARGET_GB} GB for 1M transitions -> FrameStackReplay "
        f"{lean_per * REFERENCE / gb:.3f} GB: {'met' if ok else 'NOT met'}; "
        f"{plain_per / lean_per:.2f}x smaller than obs+next_obs stacks, {sb3_per / lean_per:.2f}x smaller than SB3's "
        f"optimize_memory_usage.\n"
    )

    print(f"## Sampling throughput (batches/s, median of {args.repeats} x {args.min_seconds} s, 1 torch thread)\n")
    print("| buffer | transitions | batch 32 | batch 256 |")
    print("|---|---:|---:|---:|")
    print(f"| FrameStackReplay | {capacity:,} | {lean_rates[32]:,.0f} | {lean_rates[256]:,.0f} |")
    print(f"| ReplayBuffer (plain) | {args.plain_capacity:,} | {plain_rates[32]:,.0f} | {plain_rates[256]:,.0f} |")
    print(
        f"| same plain tensors, gathered with index_select | {args.plain_capacity:,} | {select_rates[32]:,.0f} | "
        f"{select_rates[256]:,.0f} |"
    )
    print(
        "\n(ReplayBuffer.sample gathers with ``tensor[idx]``, which on CPU is far slower for (4, 84, 84) uint8 rows "
        "than ``index_select``; the last row shows the same buffer gathered that way.)"
    )
    print(
        f"\nPeak RSS {proc_status_bytes('VmHWM') / gb:.2f} GB; {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}, numpy {np.__version__}"
    )


if __name__ == "__main__":
    main()
