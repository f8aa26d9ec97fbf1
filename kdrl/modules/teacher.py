"""DQNTeacher: DQN (Mnih et al. 2015) with Double-DQN and dueling switches, as a LightningModule.

Each update, on a minibatch from the replay stream:
    y      = r + gamma * (1 - terminated) * Q_target(s', argmax_a Q(s', a))   [Double DQN]
    loss   = Huber(Q(s, a) - y)
and every ``target_update_interval`` env steps: target <- tau*online + (1-tau)*target.
Exploration epsilon decays linearly in *env steps*; the target interval is in *env steps* too.
"""

from __future__ import annotations

import copy
from typing import Any, Callable

import numpy as np
import torch

from kdrl.data import EnvCollector, ReplayStream, greedy_actions
from kdrl.envs import EnvSpec, make_vector_env
from kdrl.modules.base import RLModule
from kdrl.nets import QNetwork, count_params
from kdrl.optim import clip_grad_norm
from kdrl.replay import Transitions, make_replay
from kdrl.schedules import LinearSchedule
from kdrl.td import td_error_loss, td_targets, update_target


class DQNTeacher(RLModule):
    def __init__(
        self,
        q_net: QNetwork,
        spec: EnvSpec,
        env_cfg: dict[str, Any],
        algo: dict[str, Any],
        optimizer: Callable[..., torch.optim.Optimizer],
        seed: int = 0,
        log_interval: int = 250,
    ) -> None:
        super().__init__(log_interval=log_interval)
        self.q_net = q_net
        self.target_net = copy.deepcopy(q_net).requires_grad_(False)
        self.spec = spec
        self.env_cfg = dict(env_cfg)
        self.algo = dict(algo)
        self.optimizer_factory = optimizer
        self._params = list(q_net.parameters())
        self.seed = int(seed)
        self.gamma = float(algo["gamma"])
        self.double_dqn = bool(algo["double_dqn"])
        self.td_loss_kind = str(algo["td_loss"])
        self.max_grad_norm = algo.get("max_grad_norm")
        self.tau = float(algo["tau"])
        self.target_update_interval = int(algo["target_update_interval"])
        self._next_target_update = self.target_update_interval
        self.target_updates = 0
        expl = algo["exploration"]
        self.epsilon = LinearSchedule(float(expl["eps_start"]), float(expl["eps_end"]),
                                      int(expl["decay_steps"]), int(expl.get("delay_steps", 0)))
        if self.target_update_interval < 1:
            raise ValueError(f"algo.target_update_interval must be >= 1 env step, got {self.target_update_interval}")
        if not 0.0 < self.tau <= 1.0:
            raise ValueError(f"algo.tau must be in (0, 1], got {self.tau}")

    @property
    def params(self) -> int:
        return count_params(self.q_net)

    # ---- acting and data ----------------------------------------------------------------------
    def greedy(self, obs: np.ndarray) -> np.ndarray:
        return greedy_actions(self.q_net, obs, self.device)

    def build_stream(self) -> ReplayStream:
        env = self.env_cfg
        envs = make_vector_env(env["id"], int(env["num_envs"]), self.seed, env.get("kwargs"), env.get("vectorization", "sync"))
        buffer = make_replay(str(self.algo.get("replay", "auto")), int(self.algo["buffer_size"]), self.spec.obs_shape,
                             self.spec.obs_dtype, envs.num_envs, seed=self.seed)
        collector = EnvCollector(envs, buffer, self.greedy, self.epsilon, seed=self.seed,
                                 reward_clip=bool(self.algo.get("reward_clip", False)))
        return ReplayStream(collector, int(self.algo["batch_size"]), int(self.algo["learning_starts"]),
                            int(self.algo["train_freq"]), int(self.algo["gradient_steps"]),
                            int(self.algo["total_timesteps"]))

    # ---- learning -----------------------------------------------------------------------------
    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer_factory(self.q_net.parameters())

    def td_loss(self, batch: Transitions) -> tuple[torch.Tensor, torch.Tensor]:
        q = self.q_net(batch.obs)
        q_taken = q.gather(1, batch.actions.unsqueeze(1)).squeeze(1)
        with torch.no_grad():
            next_q_target = self.target_net(batch.next_obs)
            next_q_online = self.q_net(batch.next_obs) if self.double_dqn else None
            targets = td_targets(batch.rewards, batch.terminated, next_q_target, self.gamma, next_q_online)
        return td_error_loss(q_taken, targets, self.td_loss_kind), q_taken.detach().mean()

    def maybe_update_target(self) -> bool:
        """Target update at the first gradient step at or after each multiple of the interval."""
        if self.env_steps < self._next_target_update:
            return False
        update_target(self.target_net, self.q_net, self.tau)
        self.target_updates += 1
        self._next_target_update = (self.env_steps // self.target_update_interval + 1) * self.target_update_interval
        return True

    def after_update(self, loss: torch.Tensor, q_mean: torch.Tensor) -> None:
        self.maybe_update_target()
        self.accumulate(td_loss=loss, q_mean=q_mean)

    def sgd_step(self, opt: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        """One optimiser step. Uses the raw torch optimiser: Lightning's optimiser wrapper and
        closure machinery cost ~30% of a small-MLP update and buy nothing for single-device DQN."""
        opt.zero_grad(set_to_none=True)
        if self._trainer is not None:
            self.manual_backward(loss)
        else:  # driven without a Trainer (benchmarks measuring Lightning's overhead)
            loss.backward()
        if self.max_grad_norm:
            clip_grad_norm(self._params, float(self.max_grad_norm))
        opt.step()

    def training_step(self, batch: Transitions, batch_idx: int) -> None:
        """Runs the K updates of one stacked batch (see ReplayStream), one minibatch each."""
        self.run_updates(self.optimizers(use_pl_optimizer=False), batch)

    def run_updates(self, opt: torch.optim.Optimizer, stacked: Transitions) -> None:
        for k in range(stacked.actions.shape[0]):
            minibatch = Transitions(*(t[k] for t in stacked))
            loss, q_mean = self.td_loss(minibatch)
            self.sgd_step(opt, loss)
            self.after_update(loss, q_mean)

    # ---- checkpoint state beyond the nets ---------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["kdrl"] = {"next_target_update": self._next_target_update, "target_updates": self.target_updates}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        state = checkpoint.get("kdrl", {})
        self._next_target_update = int(state.get("next_target_update", self._next_target_update))
        self.target_updates = int(state.get("target_updates", 0))
