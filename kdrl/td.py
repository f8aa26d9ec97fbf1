"""Temporal-difference learning: targets, losses, the TD term and the target network (one of each)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kdrl.replay import Transitions

TD_LOSSES = ("huber", "mse")
QFn = Callable[[torch.Tensor], torch.Tensor]  # observations -> Q-values


def td_targets(
    rewards: torch.Tensor,
    terminated: torch.Tensor,
    next_q_target: torch.Tensor,
    gamma: float | torch.Tensor,
    next_q_online: torch.Tensor | None = None,
) -> torch.Tensor:
    """y = r + gamma * (1 - terminated) * Q_target(s', a*).

    a* = argmax Q_target(s') (DQN), or argmax Q_online(s') when ``next_q_online`` is given (Double
    DQN). Truncated steps have ``terminated = 0`` and so bootstrap from the true final observation.
    n-step batches give r as the discounted n-step sum, s' as the state n steps on and ``gamma`` as
    a per-sample gamma^m (m = steps summed, fewer than n where the episode or the replay ended).
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


@dataclass(frozen=True)
class TDTerm:
    """The (Double) DQN TD loss on a minibatch, shared by DQN, hybrid students and joint multi-task DQN.

    ``online`` and ``target`` map observations to Q-values (a task's head for multi-task nets).
    Returns the loss and Q(s, a) of the actions taken (for logging).
    """

    gamma: float = 0.99
    td_loss: str = "huber"
    double_dqn: bool = True

    def __post_init__(self) -> None:
        if self.td_loss not in TD_LOSSES:
            raise ValueError(f"unknown TD loss '{self.td_loss}' (expected {' or '.join(TD_LOSSES)})")

    def __call__(
        self, q: torch.Tensor, batch: Transitions, online: QFn, target: QFn
    ) -> tuple[torch.Tensor, torch.Tensor]:
        q_taken = q.gather(1, batch.actions.unsqueeze(1)).squeeze(1)
        with torch.no_grad():
            next_q_target = target(batch.next_obs)
            next_q_online = online(batch.next_obs) if self.double_dqn else None
            gamma = float(self.gamma) if batch.discounts is None else batch.discounts
            targets = td_targets(batch.rewards, batch.terminated, next_q_target, gamma, next_q_online)
        return td_error_loss(q_taken, targets, self.td_loss), q_taken


class TargetNetwork(nn.Module):
    """A frozen copy of an online net, refreshed every ``interval`` steps of a progress counter.

    The refresh happens at the first update at or after each multiple of ``interval`` (env steps,
    or per-task env steps for multi-task), as target <- tau * online + (1 - tau) * target. The
    schedule's counters travel in the module's state_dict (``get_extra_state``), so a resumed run
    continues the same schedule.
    """

    def __init__(self, online: nn.Module, interval: int, tau: float = 1.0) -> None:
        super().__init__()
        if int(interval) < 1:
            raise ValueError(f"target_update_interval must be >= 1 env step, got {interval}")
        if not 0.0 < float(tau) <= 1.0:
            raise ValueError(f"tau must be in (0, 1], got {tau}")
        self.net = copy.deepcopy(online).requires_grad_(False)
        self.interval, self.tau = int(interval), float(tau)
        self.next_update = self.interval
        self.updates = 0

    def forward(self, *args: Any) -> torch.Tensor:
        return self.net(*args)

    def maybe_update(self, online: nn.Module, progress: int) -> bool:
        if progress < self.next_update:
            return False
        update_target(self.net, online, self.tau)
        self.updates += 1
        self.next_update = (progress // self.interval + 1) * self.interval
        return True

    def get_extra_state(self) -> dict[str, int]:
        return {"next_update": self.next_update, "updates": self.updates}

    def set_extra_state(self, state: dict[str, int]) -> None:
        self.next_update, self.updates = int(state["next_update"]), int(state["updates"])
