"""Multi-task Q-learning (Rusu et al. 2016, §4): one network, a shared trunk, one Q head per task.

Two LightningModules train the same ``MultiTaskQNetwork``:

* ``MultiTaskDistill``: n frozen single-task teachers -> one student. Each task has its own vector
  env, replay buffer and collector, filled by *its teacher* acting epsilon-greedily (eps = 0.05,
  the paper's teacher-driven data). Every update round takes one minibatch from each task's replay
  and either steps the optimiser once per task batch, in turn (``update=interleave``, the paper's
  per-task batches), or once on the sum of the per-task losses (``update=sum``).
* ``JointMultiTaskDQN``: the baseline: the same net trained from scratch with the DQN TD loss on all
  tasks at once (each task's collector acts with the net's own head for that task), at the same
  per-task env-step budget.

Counters (``steps_per_task``, ``learning_starts``, ``train_freq``, eps decay, target interval) are
*per-task* env steps, so a setting means what it means in a single-task run; ``env_steps`` is
the total over tasks.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import IterableDataset

from kdrl.data import EnvCollector, GreedyFn, ReplayStream, StreamConfig, build_stream, greedy_actions
from kdrl.envs import EnvSpec
from kdrl.losses import StudentLoss
from kdrl.modules.base import RLModule
from kdrl.modules.dqn import exploration_schedule, td_term
from kdrl.optim import OptimizerFactory
from kdrl.replay import Transitions
from kdrl.schedules import LinearSchedule
from kdrl.td import TargetNetwork

ADAPTERS = ("linear", "pad")
UPDATES = ("interleave", "sum")
MODES = ("distill", "joint_dqn")


# ---- the network ----------------------------------------------------------------------------------
class MultiTaskQNetwork(nn.Module):
    """Input layer (per task, or shared on padded input) -> shared trunk -> one linear Q head per
    task with its own action count.

    Without ``conv`` (flat observations): ``depth`` hidden layers of ``width`` units, the input
    layer included, so ``width=256, depth=2`` has the shape of one 256-256 teacher with per-task
    input and output layers. With ``conv`` (``{channels, kernels, strides}``, for (C, H, W) grids
    such as MinAtar's): conv layers, the first being the input layer, then ``depth`` hidden layers
    of ``width`` (MinAtar's DQN is ``channels=[16], kernels=[3], strides=[1]``, width 128, depth 1).

    Input layer (``adapter``):

    * ``linear`` (default): task i's observation goes through its own first layer (Linear(d_i,
      width), or Conv2d(C_i, ...)) into the shared trunk. CartPole's 4 numbers and Acrobot's 6
      mean unrelated things; zero-padding them into one input layer would push unrelated
      quantities through the same weights and leave the trunk to work out which task it is
      looking at from the values alone. A per-task first layer costs only d_i * width
      parameters and maps every task into one feature space: the flat-input analogue of the
      paper, whose games all shared one input space (84x84x4 frames) and had per-game output
      "controllers" only.
    * ``pad``: every observation zero-padded, dimension by dimension, to the largest shape (for
      flat vectors: at the end; for (C, H, W) grids: extra channels, so the grids stay aligned),
      plus a one-hot task id (an extra input, or constant planes for convs) without which a padded
      CartPole state and an Acrobot state could coincide; one shared first layer. Every weight but
      the heads is shared: Rusu et al.'s multi-task net, for tasks whose observations share a
      layout (MinAtar games: the same 10x10 grid with 4 to 10 channels).
    """

    def __init__(self, obs_shapes: Sequence[Sequence[int]], n_actions: Sequence[int], width: int = 256,
                 depth: int = 2, adapter: str = "linear", conv: dict[str, Sequence[int]] | None = None,
                 obs_scale: float = 1.0) -> None:
        super().__init__()
        if len(obs_shapes) != len(n_actions) or not obs_shapes:
            raise ValueError(f"need one observation shape and one action count per task, got "
                             f"{len(obs_shapes)} and {len(n_actions)}")
        if adapter not in ADAPTERS:
            raise ValueError(f"unknown adapter '{adapter}' (expected one of {', '.join(ADAPTERS)})")
        if int(width) < 1 or int(depth) < (0 if conv else 1):
            raise ValueError(f"student width must be >= 1 and depth >= {0 if conv else 1}, got {width} and {depth}")
        self.obs_shapes = [tuple(int(d) for d in s) for s in obs_shapes]
        self.n_actions = [int(n) for n in n_actions]
        self.width, self.depth, self.adapter = int(width), int(depth), adapter
        self.conv_cfg = {k: [int(v) for v in conv[k]] for k in ("channels", "kernels", "strides")} if conv else None
        self.obs_scale = float(obs_scale)
        self.pad_shape = self._pad_shape() if adapter == "pad" else None
        if self.conv_cfg is not None and len({s[1:] for s in self.obs_shapes}) != 1:
            raise ValueError(f"student.conv needs every task's (C, H, W) grid to share H and W, got {self.obs_shapes}")
        self.inputs = nn.ModuleList(self._input_layer(i) for i in range(self.n_tasks if adapter == "linear" else 1))
        self.trunk = self._trunk()
        with torch.no_grad():
            self.feature_dim = int(self.features(torch.zeros(1, *self.obs_shapes[0]), 0).shape[1])
        self.heads = nn.ModuleList(nn.Linear(self.feature_dim, n) for n in self.n_actions)

    @property
    def n_tasks(self) -> int:
        return len(self.n_actions)

    def _pad_shape(self) -> tuple[int, ...]:
        ranks = {len(s) for s in self.obs_shapes}
        if len(ranks) != 1:
            raise ValueError(f"adapter=pad needs observations of one rank, got shapes {self.obs_shapes}")
        return tuple(max(dims) for dims in zip(*self.obs_shapes))

    def _input_layer(self, task: int) -> nn.Module:
        shape = self.pad_shape if self.pad_shape is not None else self.obs_shapes[task]
        extra = self.n_tasks if self.pad_shape is not None else 0  # the one-hot task id
        if self.conv_cfg is None:
            return nn.Linear(math.prod(shape) + extra, self.width)
        if len(shape) != 3:
            raise ValueError(f"student.conv needs (C, H, W) observations, got shape {shape}")
        c = self.conv_cfg
        return nn.Conv2d(shape[0] + extra, c["channels"][0], c["kernels"][0], c["strides"][0])

    def _trunk(self) -> nn.Sequential:
        layers: list[nn.Module] = []
        if self.conv_cfg is not None:
            c = self.conv_cfg
            for i in range(1, len(c["channels"])):
                layers += [nn.Conv2d(c["channels"][i - 1], c["channels"][i], c["kernels"][i], c["strides"][i]), nn.ReLU()]
            layers.append(nn.Flatten())
            shape = self.pad_shape or self.obs_shapes[0]
            with torch.no_grad():  # the flattened conv output size (the same for every task: checked in features)
                first = self._input_layer(0)
                in_dim = int(nn.Sequential(first, *layers)(torch.zeros(1, first.in_channels, *shape[1:])).shape[1])
            n_fc = self.depth
        else:
            in_dim, n_fc = self.width, self.depth - 1
        for _ in range(n_fc):
            layers += [nn.Linear(in_dim, self.width), nn.ReLU()]
            in_dim = self.width
        return nn.Sequential(*layers)

    def prepare(self, obs: torch.Tensor, task: int) -> torch.Tensor:
        """Observations as the input layer takes them: float, scaled, padded and task-tagged (pad)."""
        x = obs.float()
        if self.obs_scale != 1.0:
            x = x * self.obs_scale
        if self.pad_shape is None:
            return x if self.conv_cfg is not None else x.reshape(x.shape[0], -1)
        widths = [w for have, want in zip(reversed(x.shape[1:]), reversed(self.pad_shape)) for w in (0, want - have)]
        x = F.pad(x, widths)
        tag_shape = (x.shape[0], self.n_tasks, *x.shape[2:]) if self.conv_cfg is not None else (x.shape[0], self.n_tasks)
        tag = x.new_zeros(tag_shape)
        tag[:, task] = 1.0
        if self.conv_cfg is None:
            x = x.reshape(x.shape[0], -1)
        return torch.cat([x, tag], dim=1)

    def features(self, obs: torch.Tensor, task: int) -> torch.Tensor:
        layer = self.inputs[task if self.adapter == "linear" else 0]
        return self.trunk(torch.relu(layer(self.prepare(obs, task))))

    def forward(self, obs: torch.Tensor, task: int) -> torch.Tensor:
        return self.heads[task](self.features(obs, task))

    def config(self) -> dict[str, Any]:
        """What ``build_multitask_net`` needs (besides the task shapes) to rebuild this net."""
        return {"width": self.width, "depth": self.depth, "adapter": self.adapter, "conv": self.conv_cfg,
                "obs_scale": self.obs_scale}


def build_multitask_net(net_cfg: dict[str, Any], specs: Sequence[EnvSpec]) -> MultiTaskQNetwork:
    return MultiTaskQNetwork([s.obs_shape for s in specs], [s.n_actions for s in specs], int(net_cfg["width"]),
                             int(net_cfg["depth"]), str(net_cfg.get("adapter", "linear")), net_cfg.get("conv"),
                             float(net_cfg.get("obs_scale", 1.0)))


def task_params(net: MultiTaskQNetwork, task: int) -> int:
    """Parameters one task's forward uses (its input layer, the trunk, its head)."""
    first = net.inputs[task if net.adapter == "linear" else 0]
    return sum(p.numel() for m in (first, net.trunk, net.heads[task]) for p in m.parameters())


class TaskView(nn.Module):
    """One task's slice of a multi-task net as a single-task Q-network (``forward(obs) -> q``), so
    ``greedy_actions``, ``evaluate_policy`` and the collectors take it like any kdrl Q-network."""

    def __init__(self, net: MultiTaskQNetwork, task: int) -> None:
        super().__init__()
        self.net, self.task = net, int(task)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs, self.task)

    def greedy(self, obs: torch.Tensor) -> torch.Tensor:
        return self(obs).argmax(dim=1)


# ---- data: one replay stream per task, consumed in lockstep -------------------------------------
class CollectorGroup:
    """The per-task collectors seen as one (what RLModule's logging and the progress bar read).

    Episode returns are not pooled across tasks (a CartPole and an Acrobot return do not average);
    the module logs them per task and the group reports none.
    """

    def __init__(self, collectors: Sequence[EnvCollector]) -> None:
        self.collectors = list(collectors)
        self.recent_returns: deque[float] = deque(maxlen=1)

    @property
    def env_steps(self) -> int:
        return sum(c.env_steps for c in self.collectors)

    @property
    def episodes(self) -> int:
        return sum(c.episodes for c in self.collectors)

    @property
    def epsilon(self) -> float:
        return float(np.mean([c.epsilon for c in self.collectors]))


class MultiTaskStream(IterableDataset):
    """Yields a tuple with one stacked batch per task (each ``(K, B, ...)``, see ``ReplayStream``).

    Each task keeps its own ``ReplayStream`` (its own replay and env-to-update ratio); the tasks are
    advanced in turn, one round each, so every update round sees every task. Iteration ends when
    the first task's env-step budget is spent (all tasks share the budget, so they end together).
    """

    def __init__(self, streams: Sequence[ReplayStream]) -> None:
        super().__init__()
        self.streams = list(streams)
        self.collector = CollectorGroup([s.collector for s in self.streams])
        self.total_timesteps = sum(s.total_timesteps for s in self.streams)

    @property
    def grad_steps(self) -> int:
        """Per-task minibatches handed out so far, summed over tasks."""
        return sum(s.grad_steps for s in self.streams)

    def state_dict(self) -> dict[str, Any]:
        return {"tasks": [s.state_dict() for s in self.streams]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for s, t in zip(self.streams, state["tasks"]):
            s.load_state_dict(t)

    def __iter__(self) -> Iterator[tuple[Transitions, ...]]:
        iters = [iter(s) for s in self.streams]
        while True:
            batches: list[Transitions] = []
            for it in iters:
                batch = next(it, None)
                if batch is None:
                    for s, b in zip(self.streams, batches):  # undo the batches of this cut round
                        s.grad_steps -= int(b.actions.shape[0])
                    return
                batches.append(batch)
            yield tuple(batches)


@dataclass(frozen=True)
class TaskEnv:
    """What a module needs to build one task's envs: its name, shapes and env config."""

    name: str
    spec: EnvSpec
    env: dict[str, Any]  # id, num_envs, kwargs, vectorization (an env preset's `env` block)


# ---- the shared learner ----------------------------------------------------------------------------
class MultiTaskModule(RLModule):
    """Per-task collectors and replays, lockstep update rounds, per-task metrics and resume state.

    Subclasses define ``behaviour_of(task)`` (who acts) and ``task_loss(task, batch)``; exploration
    and the target schedule count *per-task* env steps.
    """

    def __init__(self, net: MultiTaskQNetwork, tasks: Sequence[TaskEnv], data: dict[str, Any],
                 optimizer: OptimizerFactory, exploration: LinearSchedule, update: str = "interleave", seed: int = 0,
                 log_interval: int = 250) -> None:
        if update not in UPDATES:
            raise ValueError(f"unknown update '{update}' (expected one of {', '.join(UPDATES)})")
        if len(tasks) != net.n_tasks:
            raise ValueError(f"the net has {net.n_tasks} heads but {len(tasks)} tasks were given")
        super().__init__(net, None, None, StreamConfig.from_dict(data, total_key="steps_per_task"), optimizer,
                         exploration, seed, log_interval, data.get("max_grad_norm"))
        self.tasks = list(tasks)
        self.names = [t.name for t in self.tasks]
        self.views = [TaskView(net, i) for i in range(net.n_tasks)]  # a plain list: not registered twice
        self.update = update

    # ---- acting and data ----------------------------------------------------------------------
    @property
    def collectors(self) -> list[EnvCollector]:
        return self.stream.collector.collectors

    @property
    def task_env_steps(self) -> int:
        """Env steps of the task that has taken fewest (the per-task progress counter)."""
        return min(c.env_steps for c in self.collectors)

    def target_progress(self) -> int:
        return self.task_env_steps

    def greedy_fn(self, task: int) -> GreedyFn:
        return lambda obs: greedy_actions(self.views[task], obs, self.device)

    def behaviour_of(self, task: int) -> GreedyFn:  # pragma: no cover - abstract
        raise NotImplementedError

    def build_stream(self) -> MultiTaskStream:
        assert self.data is not None
        # distinct env, replay and exploration seeds per task
        return MultiTaskStream([build_stream(t.env, t.spec, self.data, self.behaviour_of(i), self.exploration,
                                             self.seed + 10_000 * i) for i, t in enumerate(self.tasks)])

    # ---- learning -----------------------------------------------------------------------------
    def task_loss(self, task: int, batch: Transitions) -> dict[str, torch.Tensor]:  # pragma: no cover
        raise NotImplementedError

    def run_round(self, opt: torch.optim.Optimizer, due: list[tuple[int, Transitions]]) -> None:
        """One update round: a minibatch from each task whose stack still has one."""
        outs: dict[int, dict[str, torch.Tensor]] = {}
        if self.update == "interleave":
            for task, batch in due:  # the paper: per-task batches, one step each, tasks in turn
                outs[task] = self.task_loss(task, batch)
                self.sgd_step(opt, outs[task]["loss"])
        else:
            outs = {task: self.task_loss(task, batch) for task, batch in due}
            self.sgd_step(opt, torch.stack([o["loss"] for o in outs.values()]).sum())
        metrics = {f"{self.names[t]}/{k}": v for t, o in outs.items() for k, v in o.items() if k != "loss"}
        metrics["loss"] = torch.stack([o["loss"] for o in outs.values()]).mean()
        self.accumulate(**metrics)  # one accumulation per round: per-task means stay per-task

    def training_step(self, batch: Sequence[Transitions], batch_idx: int) -> None:
        opt = self.optimizers(use_pl_optimizer=False)
        rounds = max(int(b.actions.shape[0]) for b in batch)
        for k in range(rounds):
            due = [(i, Transitions(*(t[k] for t in b))) for i, b in enumerate(batch) if k < b.actions.shape[0]]
            self.run_round(opt, due)

    # ---- logging: per-task episodes (a CartPole and an Acrobot return do not average) ----------
    def episode_metrics(self) -> dict[str, float]:
        per_task: dict[str, float] = {}
        for name, c in zip(self.names, self.collectors):
            finished = c.drain_finished()
            if finished:
                per_task[f"train/{name}/episodic_return"] = float(np.mean([r for _, r, _ in finished]))
            per_task[f"train/{name}/env_steps"] = c.env_steps
        per_task["train/optimizer_steps"] = self.optimizer_steps
        return per_task


class MultiTaskDistill(MultiTaskModule):
    """n frozen teachers -> one multi-task student; each task's data comes from its teacher acting."""

    def __init__(self, net: MultiTaskQNetwork, teachers: Sequence[nn.Module], tasks: Sequence[TaskEnv],
                 data: dict[str, Any], loss: StudentLoss, exploration: dict[str, Any], optimizer: OptimizerFactory,
                 update: str = "interleave", seed: int = 0, log_interval: int = 250) -> None:
        super().__init__(net, tasks, data, optimizer, exploration_schedule(exploration), update, seed, log_interval)
        if len(teachers) != len(tasks):
            raise ValueError(f"need one teacher per task, got {len(teachers)} for {len(tasks)} tasks")
        self.teachers = nn.ModuleList(t.requires_grad_(False).eval() for t in teachers)
        self.distill_loss = loss.distill

    def behaviour_of(self, task: int) -> GreedyFn:
        return lambda obs: greedy_actions(self.teachers[task], obs, self.device)

    def task_loss(self, task: int, batch: Transitions) -> dict[str, torch.Tensor]:
        q_s = self.q_net(batch.obs, task)
        with torch.no_grad():
            q_t = self.teachers[task](batch.obs)
        loss = self.distill_loss(q_s, q_t)
        with torch.no_grad():
            agreement = (q_s.argmax(1) == q_t.argmax(1)).float().mean()
        return {"loss": loss, "distill_loss": loss, "agreement": agreement}


class JointMultiTaskDQN(MultiTaskModule):
    """The multi-task net trained with (Double) DQN on every task at once, its own heads acting."""

    def __init__(self, net: MultiTaskQNetwork, tasks: Sequence[TaskEnv], data: dict[str, Any], dqn: dict[str, Any],
                 optimizer: OptimizerFactory, update: str = "interleave", seed: int = 0,
                 log_interval: int = 250) -> None:
        super().__init__(net, tasks, data, optimizer, exploration_schedule(dqn["exploration"]), update, seed,
                         log_interval)
        self.td = td_term(dqn)
        self.target = TargetNetwork(net, int(dqn["target_update_interval"]), float(dqn["tau"]))

    def behaviour_of(self, task: int) -> GreedyFn:
        return self.greedy_fn(task)

    def task_loss(self, task: int, batch: Transitions) -> dict[str, torch.Tensor]:
        assert self.target is not None
        target = self.target
        loss, q_taken = self.td(self.q_net(batch.obs, task), batch, lambda x: self.q_net(x, task),
                                lambda x: target(x, task))
        return {"loss": loss, "td_loss": loss, "q_mean": q_taken.detach().mean()}
