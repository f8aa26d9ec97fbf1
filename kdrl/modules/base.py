"""The RL module template: what every kdrl LightningModule shares (as SB3's OffPolicyAlgorithm).

``RLModule`` owns the env-backed replay stream (built once, from one ``StreamConfig``), the update
loop (K minibatches per Lightning step, one optimiser step each: manual backward, clipping), the
target network schedule, resume state for all of it, and env-step logging. An algorithm overrides
only ``loss`` (what it minimises) and ``behaviour`` (who acts).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader

from kdrl.collector import EnvCollector, greedy_actions
from kdrl.data import ReplayStream, StreamConfig, build_stream
from kdrl.envs import EnvSpec
from kdrl.nets import count_params
from kdrl.optim import OptimizerFactory, clip_grad_norm
from kdrl.replay import Transitions
from kdrl.td import TargetNetwork


def global_rng_state() -> dict[str, Any]:
    """torch, Python and numpy global RNG states in a weights_only-loadable form."""
    np_state = np.random.get_state()
    return {
        "torch_rng": torch.get_rng_state(),
        "python_rng": random.getstate(),
        "numpy_rng": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
    }


def set_global_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch_rng"])
    py = state["python_rng"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    nps = state["numpy_rng"]
    np.random.set_state((nps[0], nps[1].numpy().astype(np.uint32), *nps[2:]))


class NonFiniteLossError(FloatingPointError):
    """A loss or parameter became NaN/inf; training stops and the last good checkpoint stays."""


class RLModule(pl.LightningModule):
    """Collect -> replay -> K updates per Lightning step -> target sync, logged against env steps.

    Subclasses implement ``loss(batch) -> (loss, metrics)`` and may override ``behaviour`` (the
    greedy actor; epsilon is added by the collector), ``extra_state``/``load_extra_state`` (their
    own counters, for resuming) and ``episode_metrics``. A subclass with a target network assigns
    ``self.target = TargetNetwork(...)``; it is refreshed after every optimiser step on the
    schedule of ``target_progress()``. Metrics are accumulated as detached tensors and flushed
    every ``log_interval`` gradient steps, so the hot loop never syncs or formats strings.
    """

    collector: EnvCollector
    stream: ReplayStream

    def __init__(
        self,
        q_net: nn.Module,
        spec: EnvSpec | None,
        env_cfg: dict[str, Any] | None,
        data: StreamConfig | None,
        optimizer: OptimizerFactory,
        exploration: Callable[[int], float],
        seed: int = 0,
        log_interval: int = 250,
        max_grad_norm: float | None = None,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.q_net = q_net
        self.target: TargetNetwork | None = None
        self.spec, self.env_cfg, self.data = spec, dict(env_cfg or {}), data
        self.optimizer_factory = optimizer
        self.exploration = exploration
        self.seed = int(seed)
        self.max_grad_norm = max_grad_norm
        self.optimizer_steps = 0
        self.log_interval = int(log_interval)
        self._trainable: list[nn.Parameter] | None = None
        self._sums: dict[str, torch.Tensor] = {}
        self._count = 0
        self._t_last = time.perf_counter()
        self._env_steps_last = 0
        self.sps = 0.0
        self._stream_built = False
        self.step_seconds = 0.1  # longest Lightning step (progress bar, signals and stops stay responsive)

    @property
    def params(self) -> int:
        return count_params(self.q_net)

    # ---- acting and data ----------------------------------------------------------------------
    def greedy(self, obs: np.ndarray) -> np.ndarray:
        return greedy_actions(self.q_net, obs, self.device)

    def behaviour(self, obs: np.ndarray) -> np.ndarray:
        """Greedy actions of whoever acts (the module's own net unless overridden)."""
        return self.greedy(obs)

    def acting_nets(self) -> list[nn.Module]:
        """The trained nets ``behaviour`` acts with (an actor process refreshes their weights
        every round, see kdrl.actor)."""
        return [self.q_net]

    def build_stream(self) -> ReplayStream:
        assert self.spec is not None and self.data is not None
        return build_stream(
            self.env_cfg,
            self.spec,
            self.data,
            self.behaviour,
            self.exploration,
            self.seed,
            acting_nets=self.acting_nets,
        )

    def teardown(self, stage: str) -> None:
        close = getattr(self.__dict__.get("collector"), "close", None)
        if close is not None:  # an actor process (kdrl.actor) ends with the fit, whatever ended it
            close()

    def setup(self, stage: str) -> None:
        if not self._stream_built:
            self.stream = self.build_stream()
            self.collector = self.stream.collector
            self._stream_built = True

    def train_dataloader(self) -> DataLoader:
        # batch_size=None: the stream yields whole batches; workers would copy the env and buffer.
        return DataLoader(
            self.stream,
            batch_size=None,
            num_workers=0,
            pin_memory=torch.cuda.is_available() and self.device.type == "cuda",
        )

    @property
    def env_steps(self) -> int:
        return self.collector.env_steps

    def frozen(self) -> list[nn.Module]:
        """Networks that must stay in eval mode (teachers), whatever mode the module is put in."""
        return []

    def train(self, mode: bool = True) -> RLModule:
        # evaluation callbacks switch the module to eval and back; a frozen teacher must not follow
        super().train(mode)
        for net in self.frozen():
            net.eval()
        return self

    # ---- learning -----------------------------------------------------------------------------
    def loss(self, batch: Transitions) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:  # pragma: no cover
        """The scalar to minimise on one minibatch and the metrics to log."""
        raise NotImplementedError

    @property
    def trainable(self) -> list[nn.Parameter]:
        if self._trainable is None:
            self._trainable = [p for p in self.parameters() if p.requires_grad]
        return self._trainable

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer_factory(self.trainable)

    def sgd_step(self, opt: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        """One optimiser step, then the target schedule. Uses the raw torch optimiser: Lightning's
        optimiser wrapper and closure machinery cost ~30% of a small-MLP update and buy nothing
        for single-device DQN."""
        opt.zero_grad(set_to_none=True)
        if self._plain_backward():
            loss.backward()
        else:
            self.manual_backward(loss)
        if self.max_grad_norm:
            clip_grad_norm(self.trainable, float(self.max_grad_norm))
        opt.step()
        self.after_optimizer_step()
        self.optimizer_steps += 1
        if self.target is not None:
            self.target.maybe_update(self.q_net, self.target_progress())

    def after_optimizer_step(self) -> None:
        """Constraints on the weights (pruning masks, int8 rounding), before the target net copies them."""

    def _plain_backward(self) -> bool:
        """Call ``loss.backward()`` directly unless the precision plugin changes the backward (a
        loss scaler for fp16): ``manual_backward`` runs two callback hooks per update, a tenth of a
        small-MLP update. kdrl's callbacks do not use them; a user callback that needs
        ``on_before_backward`` would need ``trainer.precision=16-mixed``-style plugins anyway."""
        if self._trainer is None:  # driven without a Trainer (benchmarks measuring Lightning's overhead)
            return True
        cached = self.__dict__.get("_plain_backward_cached")
        if cached is None:
            from pytorch_lightning.plugins.precision import Precision

            kind = type(self.trainer.precision_plugin)
            cached = (
                getattr(self.trainer.precision_plugin, "scaler", None) is None
                and kind.backward is Precision.backward
                and kind.pre_backward is Precision.pre_backward
            )
            self.__dict__["_plain_backward_cached"] = cached
        return cached

    def target_progress(self) -> int:
        """The counter the target schedule follows (env steps)."""
        return self.env_steps

    def run_updates(self, opt: torch.optim.Optimizer, stacked: Transitions) -> None:
        """The K updates of one stacked batch (see ReplayStream), one minibatch each."""
        for k in range(stacked.actions.shape[0]):
            loss, metrics = self.loss(stacked.at(k))
            self.sgd_step(opt, loss)
            self.accumulate(**metrics)

    def training_step(self, dataloader_iter: Iterator[Any]) -> None:
        """Pull stream items and learn from each, until a callback is due or ``step_seconds`` pass.

        The module draws its items from its own iterator over ``self.stream`` (the same
        IterableDataset ``train_dataloader`` serves; Lightning's ``dataloader_iter`` is taken and
        left alone). The stream collects a round exactly when its updates are due: with
        ``training_step(batch)`` Lightning prefetched, collection ran a round ahead of the updates
        and evaluations landed a round late. One Lightning step spans many rounds: it ends right
        after the round at which a callback is due (``PeriodicEvaluation.due``), so every
        evaluation, checkpoint and early stop happens at the env step it would with one round per
        step, while Lightning's per-step machinery and its DataLoader/fetcher wrappers (together
        ~0.3 ms a round, a quarter of the CartPole loop) are paid a few times a second. When the
        env-step budget is spent the step asks the Trainer to stop.
        """
        opt = self.optimizers(use_pl_optimizer=False)
        watchers = [cb for cb in self.trainer.callbacks if hasattr(cb, "due")] if self._trainer is not None else []
        items = self.__dict__.get("_items")
        if items is None:  # a plain attribute (not module state); the stream's state lives on it
            items = self.__dict__["_items"] = iter(self.stream)
        deadline = time.perf_counter() + self.step_seconds
        while True:
            batch = next(items, None)
            if batch is None:  # budget spent (Lightning's manual loop swallows StopIteration)
                self.trainer.should_stop = True
                return
            if self.device.type != "cpu":
                batch = self.transfer_batch_to_device(batch, self.device, 0)
            self.learn(opt, batch)
            if time.perf_counter() >= deadline or any(cb.due(self) for cb in watchers):
                return

    def learn(self, opt: torch.optim.Optimizer, batch: Any) -> None:
        """The updates of one stream item (a stacked batch, see ReplayStream)."""
        self.run_updates(opt, batch)

    # ---- what the periodic evaluation asks of the module (kdrl.callbacks, kdrl.checkpoints) -----
    @property
    def evaluate_at_start(self) -> bool:
        """Evaluate once before the first env step (a student after QDagger's offline phase)."""
        return False

    def on_greedy_evaluation(self, student_return: float, teacher_return: float, random_return: float) -> None:
        """A periodic evaluation's mean return with the reference's (teacher, random policy) on the same
        seeds; called only where the normalised score is usable (QDagger's lambda follows it)."""

    @property
    def selection_phase(self) -> int:
        """The best policy is chosen among the checkpoints of the latest phase only (a student's
        pruning or int8 point starts a new one)."""
        return 0

    def may_stop_early(self) -> bool:
        """Whether ``eval.stop_at_return`` may end the run now (a student waits for its compression point)."""
        return True

    # ---- resuming: everything beyond the nets and the optimiser ---------------------------------
    def extra_state(self) -> dict[str, Any]:
        """A subclass's own counters and RNGs (tensors and plain values), for resuming."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Counters, the replay and every RNG, as tensors and plain Python values so the checkpoint
        loads with ``weights_only=True`` (the target schedule is in the state_dict). The envs are
        saved mid-episode where their kind allows it (kdrl.envs.vector_env_state), and the resumed
        run is the one never stopped; others are reset (the episodes in progress are dropped)."""
        checkpoint["kdrl_stream"] = {**self.stream.state_dict(), **global_rng_state()}
        checkpoint["kdrl"] = {"optimizer_steps": self.optimizer_steps, **self.extra_state()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("kdrl_stream")
        if state is None:
            return
        self.setup("fit")
        self.stream.load_state_dict(state)
        set_global_rng_state(state)
        extra = dict(checkpoint.get("kdrl") or {})
        self.optimizer_steps = int(extra.pop("optimizer_steps", 0))
        self.load_extra_state(extra)
        self._env_steps_last = self.env_steps
        self.resumed_from_env_steps = self.env_steps

    # ---- logging ----------------------------------------------------------------------------
    def accumulate(self, **metrics: torch.Tensor) -> None:
        for k, v in metrics.items():
            v = v.detach()
            self._sums[k] = self._sums[k] + v if k in self._sums else v.clone()
        self._count += 1
        if self._count >= self.log_interval:
            self.flush_metrics()

    def log_env_metrics(self, metrics: dict[str, Any]) -> None:
        """Send metrics to every logger with env steps as the step (the x-axis RL papers use)."""
        if self._trainer is None:  # driven without a Trainer: nothing to log to
            return
        metrics = {k: float(v) for k, v in metrics.items()}
        metrics["env_steps"] = float(self.env_steps)
        for logger in self.trainer.loggers:
            logger.log_metrics(metrics, step=self.env_steps)
            if isinstance(logger, pl.loggers.CSVLogger):
                logger.save()  # append to metrics.csv now: a killed run keeps its curves

    def episode_metrics(self) -> dict[str, float]:
        """Returns and lengths of the episodes finished since the last flush."""
        finished = self.collector.drain_finished()
        if not finished:
            return {}
        return {
            "train/episodic_return": float(np.mean([r for _, r, _ in finished])),
            "train/episodic_length": float(np.mean([n for _, _, n in finished])),
        }

    def flush_metrics(self) -> None:
        now = time.perf_counter()
        dt = now - self._t_last
        if dt > 0:
            self.sps = (self.env_steps - self._env_steps_last) / dt
        self._t_last, self._env_steps_last = now, self.env_steps
        out: dict[str, float] = {f"train/{k}": (v / max(self._count, 1)).item() for k, v in self._sums.items()}
        bad = [k for k, v in out.items() if not np.isfinite(v)]
        if bad:
            raise NonFiniteLossError(
                f"non-finite {', '.join(b.split('/')[-1] for b in bad)} at env step {self.env_steps}, "
                f"gradient step {self.stream.grad_steps}; stopped, the last good checkpoint is kept "
                "(try a lower learning rate or gradient clipping)"
            )
        self._sums, self._count = {}, 0
        out.update(self.episode_metrics())
        out["train/epsilon"] = self.collector.epsilon
        out["train/sps"] = self.sps
        if hasattr(self.collector, "wait_s"):  # an actor process: seconds the learner waited for it
            out["train/actor_wait_s"] = self.collector.wait_s
        out["train/episodes"] = self.collector.episodes
        out["train/grad_steps"] = self.stream.grad_steps
        self.log_env_metrics(out)
