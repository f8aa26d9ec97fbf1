"""Preallocated tensor ring buffer: vectorised adds and samples, no per-sample Python loops."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch


class Transitions(NamedTuple):
    """A batch of transitions; ``terminated`` is float (1.0 = no bootstrap)."""

    obs: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    next_obs: torch.Tensor
    terminated: torch.Tensor


class ReplayBuffer:
    """Fixed-capacity FIFO of transitions stored in preallocated tensors.

    ``add`` writes a whole vector-env step at once; ``sample`` draws uniformly with replacement
    from the filled part using the buffer's own generator (reproducible, independent of torch's
    global RNG).
    """

    def __init__(
        self,
        capacity: int,
        obs_shape: tuple[int, ...],
        obs_dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
        seed: int = 0,
    ) -> None:
        if int(capacity) < 1:
            raise ValueError(f"replay capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self.device = torch.device(device)
        shape = (self.capacity, *obs_shape)
        self.obs = torch.zeros(shape, dtype=obs_dtype, device=self.device)
        self.next_obs = torch.zeros(shape, dtype=obs_dtype, device=self.device)
        self.actions = torch.zeros(self.capacity, dtype=torch.int64, device=self.device)
        self.rewards = torch.zeros(self.capacity, dtype=torch.float32, device=self.device)
        self.terminated = torch.zeros(self.capacity, dtype=torch.float32, device=self.device)
        self.pos = 0  # next write index
        self.size = 0
        self._np = None
        if self.device.type == "cpu" and obs_dtype != torch.bfloat16:
            self._np = tuple(t.numpy() for t in (self.obs, self.next_obs, self.actions, self.rewards, self.terminated))
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed)

    def __len__(self) -> int:
        return self.size

    def add(
        self,
        obs: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        next_obs: np.ndarray,
        terminated: np.ndarray,
    ) -> None:
        """Add ``n`` transitions (leading dim n), wrapping around the end of the ring."""
        n = len(actions)
        if n > self.capacity:
            raise ValueError(f"cannot add {n} transitions to a buffer of capacity {self.capacity}")
        idx = (np.arange(n) + self.pos) % self.capacity
        if self._np is not None:  # CPU: write through numpy views of the tensors (no torch op overhead)
            o, no, a, r, d = self._np
            o[idx], no[idx], a[idx], r[idx], d[idx] = obs, next_obs, actions, rewards, terminated
        else:
            t = torch.as_tensor(idx, device=self.device)
            self.obs[t] = torch.as_tensor(obs).to(self.device, self.obs.dtype)
            self.next_obs[t] = torch.as_tensor(next_obs).to(self.device, self.obs.dtype)
            self.actions[t] = torch.as_tensor(actions).to(self.device, torch.int64)
            self.rewards[t] = torch.as_tensor(rewards).to(self.device, torch.float32)
            self.terminated[t] = torch.as_tensor(terminated).to(self.device, torch.float32)
        self.pos = (self.pos + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample_indices(self, batch_size: int) -> torch.Tensor:
        if self.size == 0:
            raise RuntimeError("cannot sample from an empty replay buffer")
        return torch.randint(0, self.size, (batch_size,), generator=self.generator, device=self.device)

    def sample(self, batch_size: int) -> Transitions:
        idx = self.sample_indices(batch_size)
        return Transitions(
            self.obs[idx], self.actions[idx], self.rewards[idx], self.next_obs[idx], self.terminated[idx]
        )

    def sample_stack(self, k: int, batch_size: int) -> Transitions:
        """``k`` independent minibatches at once, each field shaped ``(k, batch_size, ...)``."""
        idx = self.sample_indices(k * batch_size)
        batch = Transitions(self.obs[idx], self.actions[idx], self.rewards[idx], self.next_obs[idx],
                            self.terminated[idx])
        return Transitions(*(t.view(k, batch_size, *t.shape[1:]) for t in batch))

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.obs, self.next_obs, self.actions, self.rewards, self.terminated))

    def state_dict(self) -> dict:
        n = self.size
        return {
            "obs": self.obs[:n].clone(), "next_obs": self.next_obs[:n].clone(), "actions": self.actions[:n].clone(),
            "rewards": self.rewards[:n].clone(), "terminated": self.terminated[:n].clone(),
            "pos": self.pos, "size": self.size, "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        n = int(state["size"])
        for name in ("obs", "next_obs", "actions", "rewards", "terminated"):
            getattr(self, name)[:n] = state[name].to(self.device)
        self.pos, self.size = int(state["pos"]), n
        self.generator.set_state(state["generator"])
