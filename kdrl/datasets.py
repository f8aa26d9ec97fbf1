"""Teacher datasets: Rusu et al.'s data protocol (2016, section 4).

The teacher plays epsilon-greedily (Rusu: epsilon = 0.05) and every transition is stored with the
teacher's Q-values of its state: ``record_dataset`` writes one compressed ``dataset.npz``, made once
and shared by every student that distils from it (a ``data`` stage of a study, app ``kdrl-data``).

A student with ``distill.dataset`` trains on it instead of on envs it steps itself: the
``DatasetCollector`` hands the recorded vector steps to the student's replay in order, at the same
env-step/update schedule as online collection (kdrl.data.ReplayStream), so a dataset student and an
online teacher-driven student take the same updates on the same number of transitions; only where the
transitions come from differs (one shared recording, not the student's own teacher rollouts). The
teacher still labels each sampled state (kdrl.losses: one implementation of each loss); the stored
Q-values prove that the dataset is this teacher's (``check_teacher``).

Imports go one way: kdrl.collector, kdrl.data -> kdrl.datasets -> kdrl.modules.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdrl.collector import EnvCollector, GreedyFn
from kdrl.data import ReplayStream, StreamConfig, stream_replay
from kdrl.envs import EnvSpec, make_vector_env
from kdrl.errors import KdrlUserError
from kdrl.io import atomic_write
from kdrl.seeding import generator

DATASET_FILE = "dataset.npz"
FORMAT = "kdrl-teacher-dataset-1"
ARRAYS = ("obs", "last_obs", "final_obs", "actions", "rewards", "terminated", "done", "q")


class DatasetError(KdrlUserError, ValueError):
    """A teacher dataset that cannot serve this run (said in one line)."""


@dataclass
class TeacherDataset:
    """``steps`` vector steps of ``num_envs`` sub-envs: ``obs[t]`` (T, N, *obs), the transition's action,
    raw reward, termination and end of episode (T, N), the teacher's Q-values of ``obs[t]`` (T, N, A),
    ``last_obs`` (N, *obs): the observations after the last step, and ``final_obs`` (D, *obs): the true
    last observation of each episode that ended, in (t, i) order (the next row's ``obs`` is already the
    reset one)."""

    obs: np.ndarray
    last_obs: np.ndarray
    final_obs: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    done: np.ndarray
    q: np.ndarray
    meta: dict[str, Any]

    @property
    def num_envs(self) -> int:
        return int(self.actions.shape[1])

    @property
    def env_steps(self) -> int:
        """Transitions held (one per sub-env per vector step)."""
        return int(self.actions.size)

    def next_obs(self, t: int) -> np.ndarray:
        """The true successor observations of vector step ``t``."""
        nxt = self.obs[t + 1] if t + 1 < len(self.obs) else self.last_obs
        ended = np.flatnonzero(self.done[t])
        if len(ended) == 0:
            return nxt
        nxt = nxt.copy()
        first = int(self._final_offsets[t])
        nxt[ended] = self.final_obs[first : first + len(ended)]
        return nxt

    @property
    def _final_offsets(self) -> np.ndarray:
        """Index into ``final_obs`` of vector step t's first ended episode."""
        if getattr(self, "_offsets", None) is None:
            counts = self.done.sum(axis=1)
            self._offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        return self._offsets


class _Recorder:
    """The replay contract's ``add`` (kdrl.replay.Replay), keeping every vector step: what
    EnvCollector writes, recorded instead of sampled."""

    def __init__(self) -> None:
        self.rows: dict[str, list[np.ndarray]] = {k: [] for k in ("obs", "actions", "rewards", "terminated", "done")}
        self.final_obs: list[np.ndarray] = []

    def add(self, obs, actions, rewards, next_obs, terminated, done) -> None:  # noqa: ANN001 (the Replay contract)
        for key, value in zip(self.rows, (obs, actions, rewards, terminated, done)):
            self.rows[key].append(np.array(value, copy=True))
        self.final_obs.extend(np.array(next_obs[i], copy=True) for i in np.flatnonzero(done))

    def end_streams(self) -> None:
        pass


def record_dataset(
    env: Mapping[str, Any],
    spec: EnvSpec,
    teacher: torch.nn.Module,
    steps: int,
    epsilon: float,
    seed: int,
    greedy: GreedyFn,
    progress: Callable[[int], None] | None = None,
) -> TeacherDataset:
    """At least ``steps`` env steps (whole vector steps) of ``greedy`` (the teacher's greedy policy)
    with ``epsilon``-greedy exploration on envs of ``env`` seeded on their own stream (key
    ``dataset``), with the teacher's Q-values of every state."""
    if steps < 1:
        raise DatasetError(f"dataset.steps must be >= 1, got {steps}")
    if not 0.0 <= epsilon <= 1.0:
        raise DatasetError(f"dataset.epsilon must be in [0, 1], got {epsilon}")
    envs = make_vector_env(
        env["id"], int(env["num_envs"]), seed, env.get("kwargs"), env.get("vectorization", "sync"), key=("dataset",)
    )
    recorder = _Recorder()
    try:
        collector = EnvCollector(envs, recorder, greedy, lambda t: epsilon, seed=seed, key=("dataset",))
        while collector.env_steps < steps:
            collector.step()
            if progress is not None:
                progress(collector.env_steps)
        last_obs = np.array(collector.obs, copy=True)
        episodes, returns = collector.episodes, [r for _, r, _ in collector.drain_finished()]
    finally:
        envs.close()
    rows = {k: np.stack(v) for k, v in recorder.rows.items()}
    obs = rows["obs"]
    q = teacher_q_values(teacher, obs.reshape(-1, *obs.shape[2:])).reshape(*obs.shape[:2], -1)
    final = np.stack(recorder.final_obs) if recorder.final_obs else np.zeros((0, *obs.shape[2:]), dtype=obs.dtype)
    meta = {
        "format": FORMAT,
        "env_id": spec.env_id,
        "obs_shape": list(spec.obs_shape),
        "obs_dtype": spec.obs_dtype,
        "n_actions": spec.n_actions,
        "num_envs": int(env["num_envs"]),
        "env_steps": int(rows["actions"].size),
        "epsilon": float(epsilon),
        "seed": int(seed),
        "episodes": int(episodes),
        "episode_returns": [float(r) for r in returns],
    }
    return TeacherDataset(
        obs,
        last_obs,
        final,
        rows["actions"].astype(np.int64),
        rows["rewards"].astype(np.float32),
        rows["terminated"].astype(bool),
        rows["done"].astype(bool),
        q.astype(np.float32),
        meta,
    )


@torch.inference_mode()
def teacher_q_values(teacher: torch.nn.Module, obs: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """The teacher's Q-values of a batch of observations (on its device, in chunks)."""
    device = next(teacher.parameters()).device
    out = [
        teacher(torch.as_tensor(obs[i : i + chunk], dtype=torch.float32, device=device)).float().cpu().numpy()
        for i in range(0, len(obs), chunk)
    ]
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


def save_dataset(path: str | Path, data: TeacherDataset) -> Path:
    """One compressed npz (the meta as a JSON string), written atomically."""
    arrays = {k: getattr(data, k) for k in ARRAYS}

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, meta=np.array(json.dumps(data.meta)), **arrays)

    return atomic_write(path, write)


def load_dataset(path: str | Path) -> TeacherDataset:
    path = Path(path)
    if path.is_dir():
        path = path / DATASET_FILE
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            arrays = {k: z[k] for k in ARRAYS}
    except FileNotFoundError:
        raise DatasetError(f"distill.dataset: no teacher dataset at {path} (kdrl-data writes one)") from None
    except (OSError, ValueError, KeyError) as exc:
        raise DatasetError(
            f"distill.dataset: {path} is not a kdrl teacher dataset ({' '.join(str(exc).split())[:120]})"
        ) from None
    if meta.get("format") != FORMAT:
        raise DatasetError(f"distill.dataset: {path} has format {meta.get('format')!r}, expected {FORMAT!r}")
    return TeacherDataset(**arrays, meta=meta)


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_dataset(data: TeacherDataset, spec: EnvSpec, total_timesteps: int, source: str) -> None:
    """Refuse, in one line, a dataset of another env or one too short for the budget."""
    meta = data.meta
    if meta["env_id"] != spec.env_id or tuple(meta["obs_shape"]) != tuple(spec.obs_shape):
        raise DatasetError(
            f"distill.dataset {source} was recorded on {meta['env_id']} {tuple(meta['obs_shape'])}, "
            f"this run's env is {spec.env_id} {tuple(spec.obs_shape)}"
        )
    if data.env_steps < total_timesteps:
        raise DatasetError(
            f"distill.dataset {source} holds {data.env_steps} env steps, fewer than distill.total_timesteps "
            f"{total_timesteps}: record a longer one (kdrl-data dataset.steps) or lower the budget"
        )


def check_teacher(data: TeacherDataset, teacher: torch.nn.Module, source: str, n: int = 256) -> float:
    """The largest |Q| difference between the teacher and the dataset's stored Q-values on its first
    ``n`` states; a dataset recorded with another teacher is refused."""
    obs = data.obs.reshape(-1, *data.obs.shape[2:])[:n]
    stored = data.q.reshape(-1, data.q.shape[-1])[:n]
    now = teacher_q_values(teacher, obs)
    if now.shape != stored.shape:
        raise DatasetError(
            f"distill.dataset {source}: its Q-values have {stored.shape[-1]} actions, the teacher {now.shape[-1]}"
        )
    diff = float(np.max(np.abs(now - stored))) if len(obs) else 0.0
    scale = max(1.0, float(np.max(np.abs(stored)))) if len(obs) else 1.0
    if diff > 1e-4 * scale:
        raise DatasetError(
            f"distill.dataset {source} was recorded with another teacher: its stored Q-values differ from "
            f"this teacher's by up to {diff:.3g} (give the teacher.checkpoint that recorded it)"
        )
    return diff


class DatasetCollector(EnvCollector):
    """An EnvCollector whose transitions come from a teacher dataset, vector step by vector step,
    in the order they were recorded; counters, episode statistics and reward clipping as online."""

    def __init__(self, data: TeacherDataset, buffer: Any, seed: int = 0, reward_clip: bool = False) -> None:
        # no envs: the attributes EnvCollector's counting and the stream read, set here
        self.envs = None
        self.data = data
        self.buffer = buffer
        self.greedy_fn = None
        self.epsilon_fn: Callable[[int], float] = lambda t: float(data.meta["epsilon"])
        self.num_envs = data.num_envs
        self.n_actions = int(data.meta["n_actions"])
        self.env_id = str(data.meta["env_id"])
        self.rng = generator(seed, "collector")  # unused draws; kept so the stream's resume state has one
        self.env_steps = 0
        self.episodes = 0
        self.epsilon = self.epsilon_fn(0)
        self.reward_clip = bool(reward_clip)
        self._ep_return = np.zeros(self.num_envs)
        self._ep_length = np.zeros(self.num_envs, dtype=np.int64)
        from collections import deque

        self.recent_returns = deque(maxlen=100)
        self.finished = []

    def step(self) -> None:
        t = self.env_steps // self.num_envs
        if t >= len(self.data.actions):
            raise DatasetError(f"the teacher dataset ran out at env step {self.env_steps}")
        d = self.data
        self.record(d.obs[t], d.actions[t], d.rewards[t], d.next_obs(t), d.terminated[t], d.done[t])


def dataset_stream(data: TeacherDataset, spec: EnvSpec, cfg: StreamConfig, seed: int) -> ReplayStream:
    """dataset -> replay -> stream: the student's replay (as kdrl.data.build_stream makes it, for the
    dataset's number of sub-envs) filled from ``data`` at ``cfg``'s update-to-data ratio."""
    buffer = stream_replay(spec, cfg, data.num_envs, seed)
    collector = DatasetCollector(data, buffer, seed=seed, reward_clip=cfg.reward_clip)
    return ReplayStream(
        collector, cfg.batch_size, cfg.learning_starts, cfg.train_freq, cfg.gradient_steps, cfg.total_timesteps
    )
