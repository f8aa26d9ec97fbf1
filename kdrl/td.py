"""Temporal-difference targets and losses (shared by the teacher and hybrid students)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def td_targets(
    rewards: torch.Tensor,
    terminated: torch.Tensor,
    next_q_target: torch.Tensor,
    gamma: float,
    next_q_online: torch.Tensor | None = None,
) -> torch.Tensor:
    """y = r + gamma * (1 - terminated) * Q_target(s', a*).

    a* = argmax Q_target(s') (DQN), or argmax Q_online(s') when ``next_q_online`` is given (Double
    DQN). Truncated steps have ``terminated = 0`` and so bootstrap from the true final observation.
    """
    if next_q_online is None:
        next_v = next_q_target.max(dim=1).values
    else:
        next_v = next_q_target.gather(1, next_q_online.argmax(dim=1, keepdim=True)).squeeze(1)
    return rewards + gamma * (1.0 - terminated) * next_v


def td_error_loss(q_taken: torch.Tensor, targets: torch.Tensor, kind: str = "huber") -> torch.Tensor:
    if kind == "huber":
        return F.smooth_l1_loss(q_taken, targets)
    if kind == "mse":
        return F.mse_loss(q_taken, targets)
    raise ValueError(f"unknown TD loss '{kind}' (expected 'huber' or 'mse')")


@torch.no_grad()
def update_target(target: torch.nn.Module, online: torch.nn.Module, tau: float) -> None:
    """target <- tau * online + (1 - tau) * target (tau = 1: hard copy)."""
    t_params, o_params = list(target.parameters()), list(online.parameters())
    if tau >= 1.0:
        torch._foreach_copy_(t_params, o_params)
    else:
        torch._foreach_lerp_(t_params, o_params, tau)
