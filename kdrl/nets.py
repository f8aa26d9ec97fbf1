"""Q-networks. A student is the same family as its teacher at another width/depth.

Every stack of layers (an MLP's hidden layers, a ConvNet's convs and FC layers, a multi-task
net's trunk) is built by ``linear_stack`` and ``conv_stack``, so the families differ only in how
they wire those blocks, never in how a layer is made.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules import module as _torch_module  # the global forward hooks (_hooked)

if TYPE_CHECKING:  # annotation only: nets stays a torch-only leaf (kdrl.envs imports gymnasium)
    from kdrl.envs import EnvSpec

ADAPTERS = ("linear", "pad")


# ---- blocks ---------------------------------------------------------------------------------------
def linear_stack(in_dim: int, sizes: Sequence[int]) -> list[nn.Module]:
    """Linear(in, size) + ReLU per size, each layer taking the previous one's output."""
    layers: list[nn.Module] = []
    for size in sizes:
        layers += [nn.Linear(in_dim, int(size)), nn.ReLU()]
        in_dim = int(size)
    return layers


def conv_stack(in_ch: int, channels: Sequence[int], kernels: Sequence[int], strides: Sequence[int]) -> list[nn.Module]:
    """Conv2d + ReLU per (channels, kernel, stride), each layer taking the previous one's output."""
    layers: list[nn.Module] = []
    for ch, k, st in zip(channels, kernels, strides):
        layers += [nn.Conv2d(in_ch, int(ch), int(k), int(st)), nn.ReLU()]
        in_ch = int(ch)
    return layers


def flat_dim(layers: nn.Module, in_shape: Sequence[int]) -> int:
    """Width of ``layers``' (flattened) output for one input of ``in_shape``: conv output sizes
    depend on kernel and stride arithmetic that a dry run gets right without restating it."""
    with torch.no_grad():
        return int(layers(torch.zeros(1, *in_shape)).shape[1])


def _hooked(net: nn.Module) -> bool:
    """Whether any forward hook (global, or on ``net`` or a submodule, e.g. a pruning mask) would
    run if ``net`` were called module by module: the direct-maths fast paths must not skip it."""
    if _torch_module._global_forward_hooks or _torch_module._global_forward_pre_hooks:
        return True
    modules = net.__dict__.get("_module_list")  # a plain attribute: not part of the state_dict
    if modules is None:
        modules = net.__dict__["_module_list"] = list(net.modules())
    for m in modules:
        if m._forward_hooks or m._forward_pre_hooks:
            return True
    return False


# ---- single-task nets -----------------------------------------------------------------------------
class QNetwork(nn.Module):
    """Base: ``forward(obs) -> q`` and ``features(obs) -> last hidden layer`` (for hint losses)."""

    feature_dim: int

    def features(self, obs: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def head(self, h: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(obs))

    def greedy(self, obs: torch.Tensor) -> torch.Tensor:
        """argmax_a Q(obs, a); subclasses may take a faster path for acting (no autograd)."""
        return self(obs).argmax(dim=1)


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
    """``depth`` hidden layers of ``width`` units with ReLU, then a linear (or dueling) Q head.

    ``hidden`` (a list of layer sizes, e.g. [120, 84]) overrides width/depth for uneven stacks.
    """

    def __init__(
        self,
        obs_shape: tuple[int, ...],
        n_actions: int,
        width: int = 256,
        depth: int = 2,
        dueling: bool = False,
        hidden: list[int] | None = None,
    ) -> None:
        super().__init__()
        sizes = [int(h) for h in hidden] if hidden else [int(width)] * int(depth)
        if not sizes:
            raise ValueError(f"net.depth must be >= 1, got {depth}")
        if min(sizes) < 1:
            raise ValueError(f"net.width must be >= 1, got {min(sizes)}")
        self.body = nn.Sequential(nn.Flatten(), *linear_stack(int(math.prod(obs_shape)), sizes))
        self.feature_dim = sizes[-1]
        self.q_head = DuelingHead(self.feature_dim, n_actions) if dueling else nn.Linear(self.feature_dim, n_actions)
        self.__dict__["_hidden"] = [m for m in self.body if isinstance(m, nn.Linear)]  # not a submodule list

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        if not obs.is_floating_point():  # pixels or grids stored as uint8 (MinAtar, Atari): flattened as floats
            obs = obs.float()
        if not _hooked(self):
            # the body's maths without nn.Module dispatch (~30 us of a 90 us batch-128 forward)
            x = obs.flatten(1)
            for layer in self._hidden:
                x = F.relu(F.linear(x, layer.weight, layer.bias))
            return x
        return self.body(obs)

    def head(self, h: torch.Tensor) -> torch.Tensor:
        if isinstance(self.q_head, nn.Linear) and not _hooked(self):
            return F.linear(h, self.q_head.weight, self.q_head.bias)
        return self.q_head(h)

    def numpy_greedy(self, obs: np.ndarray) -> np.ndarray | None:
        """argmax_a Q(obs, a) computed in numpy on views of the CPU weights, or None where that is
        not this net's forward (dueling head, hooks such as pruning masks, weights not float32 on
        the CPU). A batch-1 action costs ~8 us this way against ~40 us through torch's dispatcher,
        which is most of the single-env acting loop. Agreement with ``forward`` is tested."""
        if _hooked(self):  # forward hooks anywhere (the net, a layer, global) run only through torch
            return None
        layers = self._numpy_layers()
        if layers is None:
            return None
        x = np.asarray(obs, dtype=np.float32).reshape(len(obs), -1)
        for weight, bias in layers[:-1]:
            x = x @ weight.T
            x += bias
            np.maximum(x, 0.0, out=x)
        weight, bias = layers[-1]
        return (x @ weight.T + bias).argmax(axis=1)

    def _numpy_layers(self) -> list[tuple[np.ndarray, np.ndarray]] | None:
        cached = self.__dict__.get("_np_cache")  # plain attributes: state_dict is unchanged
        if cached is not None:
            linears, params, key, views = cached
            # an optimiser that re-points .data or .to(device) moves the weights, a pruning
            # hook replaces them: the views are then rebuilt (or refused)
            if tuple(p.data_ptr() for p in params) == key:  # hooks: checked by numpy_greedy
                return views
        if not isinstance(self.q_head, nn.Linear):  # a dueling head: argmax through torch
            return None
        linears = [m for m in self.body if isinstance(m, nn.Linear)] + [self.q_head]
        ok = all(
            isinstance(m, nn.Linear)
            and m.bias is not None
            and isinstance(m.weight, nn.Parameter)
            and m.weight.device.type == "cpu"
            and m.weight.dtype == torch.float32
            for m in linears
        )
        params = [t for m in linears for t in (m.weight, m.bias)]
        views = [(m.weight.detach().numpy(), m.bias.detach().numpy()) for m in linears] if ok else None
        self.__dict__["_np_cache"] = (linears, params, tuple(p.data_ptr() for p in params), views)
        return views

    def greedy(self, obs: torch.Tensor) -> torch.Tensor:
        # Acting runs once per vector-env step on a handful of observations, where nn.Module
        # dispatch costs more than the maths: chain addmm/relu_ on the raw parameters instead
        # (~2x faster at batch 8). Same numbers as forward(); tested in tests/test_nets.py. A net
        # with forward hooks (on itself, a layer, or global) acts through the module call instead.
        if isinstance(self.q_head, DuelingHead) or torch.is_grad_enabled() or _hooked(self):
            return super().greedy(obs)
        x = obs.reshape(obs.shape[0], -1)
        linears = [m for m in self.body if isinstance(m, nn.Linear)] + [self.q_head]
        for i, layer in enumerate(linears):
            x = torch.addmm(layer.bias, x, layer.weight.t())
            if i < len(linears) - 1:
                x = x.relu_()
        return x.argmax(dim=1)


class ConvNet(QNetwork):
    """Conv layers (ReLU) -> flatten -> FC layers (ReLU) -> linear (or dueling) Q head.

    Defaults are the Nature DQN (Mnih et al. 2015): 32-64-64 filters (8x8/4, 4x4/2, 3x3/1) and 512
    units, Rusu et al.'s teacher. MinAtar's net (Young & Tian 2019) is ``channels=[16],
    kernels=[3], strides=[1], hidden=[128]``. ``width_mult`` scales every layer (students at a
    uniform fraction of the teacher's width); explicit ``channels``/``hidden`` give the
    non-uniform Rusu students. Observations arrive as stored (uint8 pixels or 0/1 grids) and are
    converted here, times ``obs_scale`` (1/255 for pixels), so replay never holds floats.
    """

    def __init__(
        self,
        obs_shape: tuple[int, ...],
        n_actions: int,
        channels: list[int] = (32, 64, 64),
        kernels: list[int] = (8, 4, 3),
        strides: list[int] = (4, 2, 1),
        hidden: list[int] | None = (512,),
        width_mult: float = 1.0,
        obs_scale: float = 1.0,
        dueling: bool = False,
    ) -> None:
        super().__init__()
        if len(obs_shape) != 3:
            raise ValueError(f"ConvNet needs (C, H, W) observations, got shape {tuple(obs_shape)}")
        if not (len(channels) == len(kernels) == len(strides)) or not channels:
            raise ValueError(
                f"net.channels/kernels/strides must be non-empty and of equal length, got "
                f"{list(channels)}/{list(kernels)}/{list(strides)}"
            )
        scale = lambda n: max(1, int(round(int(n) * float(width_mult))))  # noqa: E731
        self.obs_scale = float(obs_scale)
        self.conv = nn.Sequential(
            *conv_stack(int(obs_shape[0]), [scale(c) for c in channels], kernels, strides), nn.Flatten()
        )
        sizes = [scale(h) for h in hidden or []]
        conv_dim = flat_dim(self.conv, obs_shape)
        self.fc = nn.Sequential(*linear_stack(conv_dim, sizes))
        self.feature_dim = sizes[-1] if sizes else conv_dim
        self.q_head = DuelingHead(self.feature_dim, n_actions) if dueling else nn.Linear(self.feature_dim, n_actions)

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs.float()
        if self.obs_scale != 1.0:
            x = x * self.obs_scale
        return self.fc(self.conv(x))

    def head(self, h: torch.Tensor) -> torch.Tensor:
        return self.q_head(h)


def count_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


# ---- the multi-task net (Rusu et al. 2016, §4) ----------------------------------------------------
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

    def __init__(
        self,
        obs_shapes: Sequence[Sequence[int]],
        n_actions: Sequence[int],
        width: int = 256,
        depth: int = 2,
        adapter: str = "linear",
        conv: dict[str, Sequence[int]] | None = None,
        obs_scale: float = 1.0,
    ) -> None:
        super().__init__()
        if len(obs_shapes) != len(n_actions) or not obs_shapes:
            raise ValueError(
                f"need one observation shape and one action count per task, got {len(obs_shapes)} and {len(n_actions)}"
            )
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

    def _input_layer(self, task: int) -> nn.Linear | nn.Conv2d:
        """The first layer (its ReLU is applied in ``features``, so the state_dict keys stay
        ``inputs.<i>.weight``): Linear(d, width), or the first conv of ``conv``."""
        shape = self.pad_shape if self.pad_shape is not None else self.obs_shapes[task]
        extra = self.n_tasks if self.pad_shape is not None else 0  # the one-hot task id
        if self.conv_cfg is None:
            return nn.Linear(math.prod(shape) + extra, self.width)
        if len(shape) != 3:
            raise ValueError(f"student.conv needs (C, H, W) observations, got shape {shape}")
        c = self.conv_cfg
        return nn.Conv2d(shape[0] + extra, c["channels"][0], c["kernels"][0], c["strides"][0])

    def _trunk(self) -> nn.Sequential:
        """The shared layers after the input layer: the remaining convs and a flatten (conv), then
        the hidden linear layers."""
        if self.conv_cfg is None:
            return nn.Sequential(*linear_stack(self.width, [self.width] * (self.depth - 1)))
        c = self.conv_cfg
        convs = [*conv_stack(c["channels"][0], c["channels"][1:], c["kernels"][1:], c["strides"][1:]), nn.Flatten()]
        # The flattened conv output size (the same for every task: checked in features), measured
        # through a fresh input layer. Its initialisation draws from the torch RNG between the
        # convs and the linear layers, as it always has: a seed keeps giving the same net.
        probe = self._input_layer(0)
        grid = (self.pad_shape or self.obs_shapes[0])[1:]
        conv_dim = flat_dim(nn.Sequential(probe, *convs), (probe.in_channels, *grid))
        return nn.Sequential(*convs, *linear_stack(conv_dim, [self.width] * self.depth))

    def prepare(self, obs: torch.Tensor, task: int) -> torch.Tensor:
        """Observations as the input layer takes them: float, scaled, padded and task-tagged (pad)."""
        x = obs.float()
        if self.obs_scale != 1.0:
            x = x * self.obs_scale
        if self.pad_shape is None:
            return x if self.conv_cfg is not None else x.reshape(x.shape[0], -1)
        widths = [w for have, want in zip(reversed(x.shape[1:]), reversed(self.pad_shape)) for w in (0, want - have)]
        x = F.pad(x, widths)
        tag_shape = (
            (x.shape[0], self.n_tasks, *x.shape[2:]) if self.conv_cfg is not None else (x.shape[0], self.n_tasks)
        )
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
        return {
            "width": self.width,
            "depth": self.depth,
            "adapter": self.adapter,
            "conv": self.conv_cfg,
            "obs_scale": self.obs_scale,
        }


def build_multitask_net(net_cfg: dict[str, Any], specs: Sequence[EnvSpec]) -> MultiTaskQNetwork:
    return MultiTaskQNetwork(
        [s.obs_shape for s in specs],
        [s.n_actions for s in specs],
        int(net_cfg["width"]),
        int(net_cfg["depth"]),
        str(net_cfg.get("adapter", "linear")),
        net_cfg.get("conv"),
        float(net_cfg.get("obs_scale", 1.0)),
    )


def task_params(net: MultiTaskQNetwork, task: int) -> int:
    """Parameters one task's forward uses (its input layer, the trunk, its head)."""
    first = net.inputs[task if net.adapter == "linear" else 0]
    return sum(count_params(m) for m in (first, net.trunk, net.heads[task]))


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
