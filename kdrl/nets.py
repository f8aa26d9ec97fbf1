"""Q-networks. A student is the same family as its teacher at another width/depth."""

from __future__ import annotations

import math

import torch
from torch import nn


class QNetwork(nn.Module):
    """Base: ``forward(obs) -> q`` and ``features(obs) -> last hidden layer`` (for hint losses)."""

    feature_dim: int

    def features(self, obs: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def head(self, h: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(obs))


class DuelingHead(nn.Module):
    """Q = V + A - mean(A) (Wang et al. 2016)."""

    def __init__(self, in_dim: int, n_actions: int) -> None:
        super().__init__()
        self.value = nn.Linear(in_dim, 1)
        self.advantage = nn.Linear(in_dim, n_actions)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        adv = self.advantage(h)
        return self.value(h) + adv - adv.mean(dim=1, keepdim=True)


class MLP(QNetwork):
    """``depth`` hidden layers of ``width`` units with ReLU, then a linear (or dueling) Q head."""

    def __init__(
        self, obs_shape: tuple[int, ...], n_actions: int, width: int = 256, depth: int = 2, dueling: bool = False
    ) -> None:
        super().__init__()
        if int(width) < 1:
            raise ValueError(f"net.width must be >= 1, got {width}")
        if int(depth) < 1:
            raise ValueError(f"net.depth must be >= 1, got {depth}")
        in_dim = int(math.prod(obs_shape))
        layers: list[nn.Module] = [nn.Flatten()]
        for _ in range(depth):
            layers += [nn.Linear(in_dim, width), nn.ReLU()]
            in_dim = width
        self.body = nn.Sequential(*layers)
        self.q_head = DuelingHead(width, n_actions) if dueling else nn.Linear(width, n_actions)
        self.feature_dim = width

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        return self.body(obs)

    def head(self, h: torch.Tensor) -> torch.Tensor:
        return self.q_head(h)


def count_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())
