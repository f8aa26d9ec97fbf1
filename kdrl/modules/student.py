"""DistillStudent: a smaller Q-network learns from a frozen DQN teacher (Rusu et al. 2016).

Each update, on a replay minibatch of states s visited by the acting policy:
    q_T = teacher(s) (frozen)      q_S = student(s)
    L   = L_distill(q_S, q_T) [+ w_hint * ||W h_S - h_T||^2]
    hybrid: L = L_TD(student, own target net) + lambda * L      (lambda constant/linear/QDagger)
Who acts (``control``): the teacher (Rusu et al.), the student (teacher labels the states the
student visits; DAgger-like, Czarnecki et al. 2019) or a mix (teacher with probability beta).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from kdrl.data import StreamConfig, greedy_actions
from kdrl.envs import EnvSpec
from kdrl.losses import StudentLoss, hint_loss
from kdrl.modules.base import RLModule
from kdrl.modules.dqn import exploration_schedule
from kdrl.nets import QNetwork
from kdrl.optim import OptimizerFactory
from kdrl.replay import Transitions
from kdrl.schedules import LinearSchedule
from kdrl.seeding import generator
from kdrl.td import TargetNetwork

CONTROLS = ("teacher", "student", "mixed")


def student_stream(distill: dict[str, Any], loss: StudentLoss) -> StreamConfig:
    """The student's data; n-step returns only where a TD term uses them (hybrid losses)."""
    data = StreamConfig.from_dict(distill)
    return data if loss.hybrid else dataclasses.replace(data, n_step=1)


class DistillStudent(RLModule):
    def __init__(
        self,
        student: QNetwork,
        teacher: QNetwork,
        spec: EnvSpec,
        env_cfg: dict[str, Any],
        distill: dict[str, Any],
        loss: StudentLoss,
        control: str,
        optimizer: OptimizerFactory,
        seed: int = 0,
        log_interval: int = 250,
    ) -> None:
        if control not in CONTROLS:
            raise ValueError(f"unknown control '{control}' (expected one of {', '.join(CONTROLS)})")
        super().__init__(
            student,
            spec,
            env_cfg,
            student_stream(distill, loss),
            optimizer,
            exploration_schedule(distill["exploration"]),
            seed,
            log_interval,
            distill.get("max_grad_norm"),
        )
        self.teacher = teacher.requires_grad_(False).eval()
        self.objective, self.control = loss, control
        self.projection = torch.nn.Linear(student.feature_dim, teacher.feature_dim) if loss.feature_weight > 0 else None
        if loss.hybrid:
            self.target = TargetNetwork(student, int(distill["target_update_interval"]), float(distill.get("tau", 1.0)))
        mix = distill.get("mixed") or {}
        self.beta = LinearSchedule(
            float(mix.get("beta_start", 1.0)), float(mix.get("beta_end", 0.0)), int(mix.get("decay_steps", 0))
        )
        self._rng = generator(seed, "control")  # who acts under control=mixed
        self.teacher_acted = 0

    def frozen(self) -> list[torch.nn.Module]:
        return [self.teacher]

    # ---- acting -------------------------------------------------------------------------------
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

    # ---- learning -----------------------------------------------------------------------------
    def loss(self, batch: Transitions) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        h_s = self.q_net.features(batch.obs)
        q_s = self.q_net.head(h_s)
        with torch.no_grad():
            h_t = self.teacher.features(batch.obs)
            q_t = self.teacher.head(h_t)
        obj = self.objective
        out = {"distill_loss": obj.distill(q_s, q_t)}
        total = out["distill_loss"]
        if self.projection is not None:
            out["hint_loss"] = hint_loss(h_s, h_t, self.projection)
            total = total + obj.feature_weight * out["hint_loss"]
        if obj.hybrid:
            out["td_loss"], _ = obj.td(q_s, batch, self.q_net, self.target)
            lam = obj.distill_weight(self.env_steps)
            out["lambda"] = torch.tensor(lam)
            total = out["td_loss"] + lam * total
        with torch.no_grad():
            out["agreement"] = (q_s.argmax(1) == q_t.argmax(1)).float().mean()
        out["loss"] = total
        return total, out

    def on_greedy_evaluation(self, student_return: float, teacher_return: float, random_return: float) -> None:
        if self.objective.hybrid:
            self.objective.distill_weight.observe(student_return, teacher_return, random_return)

    # ---- logging and resuming -------------------------------------------------------------------
    def flush_metrics(self) -> None:
        if self.control != "student":
            self.log_env_metrics(
                {
                    "train/teacher_action_fraction": self.teacher_acted / max(self.env_steps, 1),
                    "train/beta": self.beta(self.env_steps) if self.control == "mixed" else 1.0,
                }
            )
        super().flush_metrics()

    def extra_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"teacher_acted": self.teacher_acted, "control_rng": self._rng.bit_generator.state}
        if self.objective.hybrid:
            state["distill_weight"] = self.objective.distill_weight.state_dict()
        return state

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.teacher_acted = int(state.get("teacher_acted", 0))
        if "control_rng" in state:
            self._rng.bit_generator.state = state["control_rng"]
        if self.objective.hybrid and "distill_weight" in state:
            self.objective.distill_weight.load_state_dict(state["distill_weight"])
