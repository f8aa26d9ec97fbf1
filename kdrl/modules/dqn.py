"""DQN (Mnih et al. 2015) with Double-DQN and dueling switches: teachers and scratch baselines.

Each update, on a minibatch from the replay stream:
    y      = r + gamma * (1 - terminated) * Q_target(s', argmax_a Q(s', a))   [Double DQN]
    loss   = Huber(Q(s, a) - y)
and every ``target_update_interval`` env steps: target <- tau*online + (1-tau)*target.
Exploration epsilon decays linearly in *env steps*; the target interval is in *env steps* too.
"""

from __future__ import annotations

from typing import Any

import torch

from kdrl.data import StreamConfig
from kdrl.envs import EnvSpec
from kdrl.modules.base import RLModule
from kdrl.nets import QNetwork
from kdrl.optim import OptimizerFactory
from kdrl.replay import Transitions
from kdrl.schedules import LinearSchedule
from kdrl.td import TargetNetwork, TDTerm


def exploration_schedule(expl: dict[str, Any]) -> LinearSchedule:
    """epsilon from an ``exploration`` config block (env steps)."""
    return LinearSchedule(
        float(expl["eps_start"]), float(expl["eps_end"]), int(expl["decay_steps"]), int(expl.get("delay_steps", 0))
    )


def td_term(algo: dict[str, Any]) -> TDTerm:
    return TDTerm(float(algo["gamma"]), str(algo.get("td_loss", "huber")), bool(algo.get("double_dqn", True)))


class DQN(RLModule):
    """A Q-network learning from its own epsilon-greedy experience with the TD loss."""

    def __init__(
        self,
        q_net: QNetwork,
        spec: EnvSpec,
        env_cfg: dict[str, Any],
        algo: dict[str, Any],
        optimizer: OptimizerFactory,
        seed: int = 0,
        log_interval: int = 250,
    ) -> None:
        super().__init__(
            q_net,
            spec,
            env_cfg,
            StreamConfig.from_dict(algo),
            optimizer,
            exploration_schedule(algo["exploration"]),
            seed,
            log_interval,
            algo.get("max_grad_norm"),
        )
        self.td = td_term(algo)
        self.target = TargetNetwork(q_net, int(algo["target_update_interval"]), float(algo["tau"]))

    def loss(self, batch: Transitions) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        loss, q_taken = self.td(self.q_net(batch.obs), batch, self.q_net, self.target)
        return loss, {"td_loss": loss, "q_mean": q_taken.detach().mean()}
