"""Every random stream of a run, derived from its one seed through ``numpy.random.SeedSequence``.

Runs used to seed sub-env i with ``seed + i``, so run 0's sub-envs 1-3 replayed the episodes of
run 1's sub-envs 0-2, and a student's behaviour RNG (``seed + 1``) was the next run's collector
RNG. A SeedSequence child per (run seed, purpose) gives streams that are independent across
purposes and across runs: ``seed_sequence(3, "envs")`` and ``seed_sequence(4, "envs")`` share
nothing. Held-out evaluation seeds are deliberately the same for every run (docs/protocol.md).
"""

from __future__ import annotations

import zlib

import numpy as np

Key = str | int


def _word(part: Key) -> int:
    return int(part) if isinstance(part, int) else zlib.crc32(part.encode())


def seed_sequence(seed: int, *key: Key) -> np.random.SeedSequence:
    """The stream of run ``seed`` for the purpose ``key`` (e.g. ``("task", 1, "envs")``)."""
    return np.random.SeedSequence(int(seed), spawn_key=tuple(_word(p) for p in key))


def seed_ints(seed: int, *key: Key, n: int = 1) -> list[int]:
    """``n`` 31-bit seeds for libraries that take an int (gymnasium resets, torch generators)."""
    return [int(x) >> 1 for x in seed_sequence(seed, *key).generate_state(n)]


def generator(seed: int, *key: Key) -> np.random.Generator:
    return np.random.default_rng(seed_sequence(seed, *key))
