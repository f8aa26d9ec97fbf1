"""DistillStudent: a smaller Q-network learns from a frozen DQN teacher (Rusu et al. 2016).

Each update, on a replay minibatch of states s visited by the acting policy:
    q_T = teacher(s) (frozen)      q_S = student(s)
    L   = L_distill(q_S, q_T) [+ w_hint * ||W h_S - h_T||^2]
    hybrid: L = L_TD(student, own target net) + lambda * L      (lambda constant/linear/QDagger)
Who acts (``control``): the teacher (Rusu et al.), the student (teacher labels the states the
student visits; DAgger-like, Czarnecki et al. 2019) or a mix (teacher with probability beta).
"""

from __future__ import annotations

import copy
from typing import Any, Callable

import numpy as np
import torch

from kdrl.data import EnvCollector, ReplayStream, greedy_actions
from kdrl.envs import EnvSpec, make_vector_env
from kdrl.losses import DistillLoss, LambdaSchedule, hint_loss
from kdrl.modules.base import RLModule
from kdrl.nets import QNetwork, count_params
from kdrl.optim import clip_grad_norm
from kdrl.replay import Transitions, make_replay
from kdrl.schedules import LinearSchedule
from kdrl.td import td_error_loss, td_targets, update_target

CONTROLS = ("teacher", "student", "mixed")


class DistillStudent(RLModule):
    def __init__(
        self,
        student: QNetwork,
        teacher: QNetwork,
        spec: EnvSpec,
        env_cfg: dict[str, Any],
        distill: dict[str, Any],
        loss: dict[str, Any],
        control: str,
        optimizer: Callable[..., torch.optim.Optimizer],
        seed: int = 0,
        log_interval: int = 250,
    ) -> None:
        super().__init__(log_interval=log_interval)
        if control not in CONTROLS:
            raise ValueError(f"unknown control '{control}' (expected one of {', '.join(CONTROLS)})")
        self.q_net = student
        self.teacher = teacher.requires_grad_(False).eval()
        self.spec, self.env_cfg, self.distill, self.control = spec, dict(env_cfg), dict(distill), control
        self.seed = int(seed)
        self.optimizer_factory = optimizer
        self.max_grad_norm = distill.get("max_grad_norm")
        self.distill_loss = DistillLoss(loss["distill"], float(loss.get("temperature", 1.0)),
                                        loss.get("student_temperature"), bool(loss.get("tau_squared", True)))
        self.feature_weight = float(loss.get("feature_weight", 0.0) or 0.0)
        self.projection = torch.nn.Linear(student.feature_dim, teacher.feature_dim) if self.feature_weight > 0 else None
        self.hybrid = bool(loss.get("hybrid", False))
        lam = loss.get("lambda") or {}
        self.lam = LambdaSchedule(lam.get("schedule", "constant"), float(lam.get("value", 1.0)),
                                  float(lam.get("end", 0.0)), int(lam.get("decay_steps", 0)))
        if self.hybrid:
            self.target_net = copy.deepcopy(student).requires_grad_(False)
            self.gamma = float(distill["gamma"])
            self.target_update_interval = int(distill["target_update_interval"])
            self._next_target_update = self.target_update_interval
        eps = distill["exploration"]
        self.epsilon = LinearSchedule(float(eps["eps_start"]), float(eps["eps_end"]), int(eps["decay_steps"]))
        mix = distill.get("mixed") or {}
        self.beta = LinearSchedule(float(mix.get("beta_start", 1.0)), float(mix.get("beta_end", 0.0)),
                                   int(mix.get("decay_steps", 0)))
        self._params = [p for p in self.parameters() if p.requires_grad]
        self._rng = np.random.default_rng(seed + 1)
        self.teacher_acted = 0

    @property
    def params(self) -> int:
        return count_params(self.q_net)

    # ---- acting and data ----------------------------------------------------------------------
    def greedy(self, obs: np.ndarray) -> np.ndarray:
        return greedy_actions(self.q_net, obs, self.device)

    def teacher_greedy(self, obs: np.ndarray) -> np.ndarray:
        return greedy_actions(self.teacher, obs, self.device)

    def behaviour(self, obs: np.ndarray) -> np.ndarray:
        """Greedy actions of whoever controls the env at this step (epsilon is added by the collector)."""
        if self.control == "teacher":
            self.teacher_acted += len(obs)
            return self.teacher_greedy(obs)
        if self.control == "student":
            return self.greedy(obs)
        use_teacher = self._rng.random(len(obs)) < self.beta(self.env_steps)
        self.teacher_acted += int(use_teacher.sum())
        actions = self.greedy(obs)
        if use_teacher.any():
            actions[use_teacher] = self.teacher_greedy(obs[use_teacher])
        return actions

    def build_stream(self) -> ReplayStream:
        env, d = self.env_cfg, self.distill
        envs = make_vector_env(env["id"], int(env["num_envs"]), self.seed, env.get("kwargs"), env.get("vectorization", "sync"))
        buffer = make_replay(str(d.get("replay", "auto")), int(d["buffer_size"]), self.spec.obs_shape,
                             self.spec.obs_dtype, envs.num_envs, seed=self.seed)
        collector = EnvCollector(envs, buffer, self.behaviour, self.epsilon, seed=self.seed,
                                 reward_clip=bool(d.get("reward_clip", False)))
        return ReplayStream(collector, int(d["batch_size"]), int(d["learning_starts"]), int(d["train_freq"]),
                            int(d["gradient_steps"]), int(d["total_timesteps"]))

    # ---- learning -----------------------------------------------------------------------------
    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer_factory(self._params)

    def losses(self, batch: Transitions) -> dict[str, torch.Tensor]:
        h_s = self.q_net.features(batch.obs)
        q_s = self.q_net.head(h_s)
        with torch.no_grad():
            h_t = self.teacher.features(batch.obs)
            q_t = self.teacher.head(h_t)
        out = {"distill_loss": self.distill_loss(q_s, q_t)}
        total = out["distill_loss"]
        if self.projection is not None:
            out["hint_loss"] = hint_loss(h_s, h_t, self.projection)
            total = total + self.feature_weight * out["hint_loss"]
        if self.hybrid:
            q_taken = q_s.gather(1, batch.actions.unsqueeze(1)).squeeze(1)
            with torch.no_grad():
                targets = td_targets(batch.rewards, batch.terminated, self.target_net(batch.next_obs), self.gamma,
                                     self.q_net(batch.next_obs))
            out["td_loss"] = td_error_loss(q_taken, targets)
            lam = self.lam(self.env_steps)
            out["lambda"] = torch.tensor(lam)
            total = out["td_loss"] + lam * total
        with torch.no_grad():
            out["agreement"] = (q_s.argmax(1) == q_t.argmax(1)).float().mean()
        out["loss"] = total
        return out

    def run_updates(self, opt: torch.optim.Optimizer, stacked: Transitions) -> None:
        for k in range(stacked.actions.shape[0]):
            out = self.losses(Transitions(*(t[k] for t in stacked)))
            opt.zero_grad(set_to_none=True)
            if self._trainer is not None:
                self.manual_backward(out["loss"])
            else:
                out["loss"].backward()
            if self.max_grad_norm:
                clip_grad_norm(self._params, float(self.max_grad_norm))
            opt.step()
            if self.hybrid and self.env_steps >= self._next_target_update:
                update_target(self.target_net, self.q_net, 1.0)
                self._next_target_update = (self.env_steps // self.target_update_interval + 1) * self.target_update_interval
            self.accumulate(**out)

    def training_step(self, batch: Transitions, batch_idx: int) -> None:
        self.run_updates(self.optimizers(use_pl_optimizer=False), batch)

    def flush_metrics(self) -> None:
        if self.control != "student":
            self.log_env_metrics({"train/teacher_action_fraction": self.teacher_acted / max(self.env_steps, 1),
                                  "train/beta": self.beta(self.env_steps) if self.control == "mixed" else 1.0})
        super().flush_metrics()

    def on_greedy_evaluation(self, student_return: float, teacher_return: float) -> None:
        self.lam.observe(student_return, teacher_return)
