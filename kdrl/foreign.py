"""Teachers trained outside kdrl: Stable-Baselines3 / RL Zoo DQN zips (and hub-style folders),
CleanRL ``.cleanrl_model`` files, and TorchScript modules.

SB3's and CleanRL's Q-networks are, layer for layer, kdrl nets: an MLP of Linear+ReLU layers, or
the Nature CNN (conv 32-64-64, 512 units) with pixels divided by 255 inside. They are rebuilt as
kdrl's own ``MLP``/``ConvNet`` with their weights copied key by key, so a foreign teacher acts,
labels states, exposes features and names its student family like a kdrl teacher. The
architecture is read from the file (the state dict's shapes and SB3's ``data`` JSON), never
assumed. A TorchScript module is opaque: it is wrapped as is (features = its input), so feature
distillation needs a kdrl, SB3 or CleanRL teacher. It is also a program (its code runs when it is
loaded), so it loads only with ``teacher.trust_code=true``; every other format loads weights only.

Observation conventions (checked against the env's shape; see README "Bring your own teacher"):
SB3 Atari = AtariWrapper + VecFrameStack(4) + VecTransposeImage -> (4, 84, 84) uint8, /255 in the
policy; CleanRL dqn_atari = gymnasium AtariPreprocessing + FrameStack(4) -> (4, 84, 84), /255 in
its forward; kdrl's Atari envs give (4, 84, 84) uint8 too. The frames can still differ (v4 vs v5
ids, sticky actions, episodic life, no-op starts): the distillation job evaluates every foreign
teacher in kdrl's env first and warns when it falls far below what its files report or does not
beat random (the wrapper-mismatch trap).
"""

from __future__ import annotations

import io
import json
import math
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdrl.io import POLICY_FORMAT, CheckpointError, file_problem, load_error_reason
from kdrl.nets import QNetwork

FORMATS = ("kdrl", "sb3", "cleanrl", "torchscript")
NATURE = {"channels": [32, 64, 64], "kernels": [8, 4, 3], "strides": [4, 2, 1]}
PIXEL_SCALE = 1.0 / 255.0
# RL Zoo's tuned SB3 DQN settings for CartPole-v1 (rl-baselines3-zoo hyperparams/dqn.yml): the
# SB3 teacher of scripts/bench_foreign_teachers.py and SB3's side of scripts/bench_cartpole.py.
RL_ZOO_DQN_CARTPOLE = dict(
    learning_rate=2.3e-3,
    batch_size=64,
    buffer_size=100_000,
    learning_starts=1000,
    gamma=0.99,
    target_update_interval=10,
    train_freq=256,
    gradient_steps=128,
    exploration_fraction=0.16,
    exploration_final_eps=0.04,
    policy_kwargs=dict(net_arch=[256, 256]),
)


@dataclass
class ForeignTeacher:
    """A teacher read from another tool's file: the kdrl net config it was rebuilt as (None for
    TorchScript), its weights under kdrl's key names, and what its files say about it."""

    format: str
    net_cfg: dict[str, Any] | None
    state_dict: dict[str, torch.Tensor] | None
    obs_shape: tuple[int, ...] | None  # what the file says it was trained on (None: not recorded)
    n_actions: int | None
    reported_return: float | None = None  # the return its files report (an RL Zoo / hub results.json)
    source: str = ""  # the file the weights came from
    module: nn.Module | None = None  # TorchScript only
    notes: list[str] = field(default_factory=list)


# ---- detection ------------------------------------------------------------------------------------
def detect_format(path: str | Path) -> str:
    """kdrl | sb3 | cleanrl | torchscript, from the file's contents (a folder: an RL Zoo / hub
    layout holding one SB3 zip)."""
    path = Path(path)
    if path.is_dir():
        sb3_zip(path)  # raises when the folder holds none
        return "sb3"
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    problem = file_problem(path)  # empty, truncated, a checksum mismatch, JSON or text
    if problem is not None:
        raise CheckpointError(
            f"cannot load checkpoint {path} as a kdrl, SB3, CleanRL or TorchScript teacher: {problem}"
        )
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
        if "policy.pth" in names and "data" in names:
            return "sb3"
        if any("/code/" in n for n in names) and any(n.endswith("constants.pkl") for n in names):
            return "torchscript"
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"cannot load checkpoint {path} safely as a kdrl, SB3, CleanRL or TorchScript teacher "
            f"({load_error_reason(exc)})"
        ) from exc
    if isinstance(obj, Mapping) and obj.get("format") == POLICY_FORMAT:
        return "kdrl"
    if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return "cleanrl"
    raise CheckpointError(f"{path}: not a kdrl, SB3, CleanRL or TorchScript teacher file")


class UntrustedCodeError(CheckpointError):
    """A teacher file that is a program (TorchScript) given without the opt-in to run it."""


def load_foreign(path: str | Path, trust_code: bool = False) -> ForeignTeacher:
    """A foreign teacher. SB3, CleanRL and hub-folder files load weights only (no code from the file
    runs); a TorchScript file is a program, loaded only with ``trust_code`` (teacher.trust_code=true)."""
    kind = detect_format(path)
    if kind == "sb3":
        return load_sb3(path)
    if kind == "cleanrl":
        return load_cleanrl(path)
    if kind == "torchscript":
        if not trust_code:
            raise UntrustedCodeError(
                f"{path} is a TorchScript teacher: loading it runs code from the file (TorchScript is a program, "
                "not weights), so it is refused by default; give teacher.trust_code=true if you trust where it "
                "came from"
            )
        return load_torchscript(path)
    raise CheckpointError(f"{path} is a kdrl policy file: load it with kdrl.io.load_policy")


# ---- Stable-Baselines3 / RL Zoo ---------------------------------------------------------------------
def sb3_zip(folder: Path) -> Path:
    """The one SB3 model zip of an RL Zoo run folder or a hub-style model folder."""
    zips = [p for p in sorted(folder.glob("*.zip")) if detect_zip_is_sb3(p)]
    if not zips:  # a kdrl run dir given for its policy file: name the file to give
        policies = [folder / n for n in ("teacher.pt", "student.pt") if (folder / n).is_file()]
        if policies:
            raise CheckpointError(
                f"{folder} is a kdrl run dir, not a policy file: give its {policies[0].name} ({policies[0]})"
            )
    if len(zips) != 1:
        found = ", ".join(p.name for p in zips) or "none"
        raise CheckpointError(f"{folder}: expected exactly one SB3 model .zip, found {found}")
    return zips[0]


def detect_zip_is_sb3(path: Path) -> bool:
    try:
        names = zipfile.ZipFile(path).namelist()
    except zipfile.BadZipFile:
        return False
    return "policy.pth" in names and "data" in names


def reported_return(folder: Path) -> float | None:
    """``mean_reward`` of a hub-style results.json (huggingface_sb3, RL Zoo's push_to_hub)."""
    f = folder / "results.json"
    try:
        value = json.loads(f.read_text()).get("mean_reward")
    except (OSError, ValueError, AttributeError):
        return None
    return float(value) if isinstance(value, (int, float)) else None


def _activation(policy_kwargs: Mapping[str, Any]) -> None:
    act = str(policy_kwargs.get("activation_fn", "ReLU"))
    if "ReLU" not in act:
        raise CheckpointError(f"SB3 policy uses activation {act}: kdrl rebuilds ReLU nets only")


def _linear_layers(sd: Mapping[str, torch.Tensor], prefix: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(weight, bias) of the Linear layers under ``prefix`` (``prefix.N.weight``), in order."""
    idx = sorted(int(m.group(1)) for k in sd if (m := re.fullmatch(re.escape(prefix) + r"\.(\d+)\.weight", k)))
    return [(sd[f"{prefix}.{i}.weight"], sd[f"{prefix}.{i}.bias"]) for i in idx]


def load_sb3(path: str | Path) -> ForeignTeacher:
    path = Path(path)
    folder = path if path.is_dir() else None
    model = sb3_zip(path) if folder else path
    with zipfile.ZipFile(model) as z:
        data = json.loads(z.read("data"))
        sd = torch.load(io.BytesIO(z.read("policy.pth")), map_location="cpu", weights_only=True)
    kwargs = data.get("policy_kwargs") or {}
    _activation(kwargs)
    if kwargs.get("dueling") or any(k.startswith("q_net.advantage") for k in sd):
        raise CheckpointError(f"{model}: a dueling SB3 variant (sb3-contrib?) is not a plain DQN policy")
    obs = data.get("observation_space") or {}
    obs_shape = tuple(int(s) for s in obs.get("_shape") or []) or None
    n_actions = int(data["action_space"]["n"]) if "n" in (data.get("action_space") or {}) else None
    q = _linear_layers(sd, "q_net.q_net")
    if not q:
        raise CheckpointError(f"{model}: no q_net.q_net layers: not an SB3 DQN policy")
    out: dict[str, torch.Tensor] = {}
    if "q_net.features_extractor.cnn.0.weight" in sd:
        convs = _linear_layers(sd, "q_net.features_extractor.cnn")
        fcs = _linear_layers(sd, "q_net.features_extractor.linear") + q[:-1]
        pixels = obs.get("dtype") == "uint8" and kwargs.get("normalize_images", True)
        net_cfg = conv_cfg(convs, [w.shape[0] for w, _ in fcs], PIXEL_SCALE if pixels else 1.0)
        out.update(conv_weights(convs, fcs, q[-1]))
    elif any(k.startswith("q_net.features_extractor.") for k in sd):
        raise CheckpointError(f"{model}: a custom SB3 features extractor: kdrl rebuilds FlattenExtractor and NatureCNN")
    else:
        net_cfg = {"_target_": "kdrl.nets.MLP", "hidden": [w.shape[0] for w, _ in q[:-1]], "dueling": False}
        out.update(mlp_weights(q[:-1], q[-1]))
    if obs_shape is None or n_actions is None:
        raise CheckpointError(f"{model}: its data does not record the observation shape and action count")
    notes = [f"SB3 {data.get('policy_class', {}).get('__module__', 'dqn')}, trained {data.get('num_timesteps')} steps"]
    ret = reported_return(folder) if folder else None
    return ForeignTeacher("sb3", net_cfg, out, obs_shape, n_actions, ret, str(model), notes=notes)


# ---- CleanRL --------------------------------------------------------------------------------------------
def load_cleanrl(path: str | Path) -> ForeignTeacher:
    """CleanRL's ``torch.save(q_network.state_dict())``: dqn.py's ``network`` = Linear 120 / 84 MLP,
    dqn_atari.py's = Nature CNN (conv at 0, 2, 4; Linear at 7, 9) with x / 255 in forward."""
    sd = torch.load(path, map_location="cpu", weights_only=True)
    if not all(k.startswith("network.") for k in sd):
        raise CheckpointError(f"{path}: not a CleanRL DQN state dict (keys must start with 'network.')")
    layers = _linear_layers(sd, "network")
    convs = [(w, b) for w, b in layers if w.dim() == 4]
    fcs = [(w, b) for w, b in layers if w.dim() == 2]
    if convs:
        c = convs[0][0].shape[1]
        net_cfg = conv_cfg(convs, [w.shape[0] for w, _ in fcs[:-1]], PIXEL_SCALE)
        shape: tuple[int, ...] | None = (int(c), 84, 84)  # dqn_atari's WarpFrame size
        out = conv_weights(convs, fcs[:-1], fcs[-1])
    else:
        net_cfg = {"_target_": "kdrl.nets.MLP", "hidden": [w.shape[0] for w, _ in fcs[:-1]], "dueling": False}
        shape = (int(fcs[0][0].shape[1]),)
        out = mlp_weights(fcs[:-1], fcs[-1])
    return ForeignTeacher("cleanrl", net_cfg, out, shape, int(fcs[-1][0].shape[0]), None, str(path))


# ---- TorchScript ----------------------------------------------------------------------------------------
class ScriptedQNetwork(QNetwork):
    """A TorchScript module that maps (float32) observations to Q-values, as a kdrl teacher. Its
    features are its input: it has no hidden layer kdrl can see."""

    def __init__(self, module: nn.Module, obs_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.module = module
        self.feature_dim = int(math.prod(obs_shape))
        self.obs_shape = tuple(obs_shape)

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        return obs.float()

    def head(self, h: torch.Tensor) -> torch.Tensor:
        return self.module(h)


def load_torchscript(path: str | Path) -> ForeignTeacher:
    try:
        module = torch.jit.load(str(path), map_location="cpu").eval()
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot load it as TorchScript ({type(exc).__name__})") from exc
    return ForeignTeacher("torchscript", None, None, None, None, None, str(path), module=module)


# ---- weights into kdrl's nets ------------------------------------------------------------------------
Layer = tuple[torch.Tensor, torch.Tensor]


def conv_cfg(convs: list[Layer], hidden: list[int], obs_scale: float) -> dict[str, Any]:
    kernels = [int(w.shape[-1]) for w, _ in convs]
    channels = [int(w.shape[0]) for w, _ in convs]
    if kernels != NATURE["kernels"][: len(kernels)] or len(kernels) != 3:
        raise CheckpointError(f"conv kernels {kernels}: kdrl rebuilds the Nature CNN (8, 4, 3) only")
    return {
        "_target_": "kdrl.nets.ConvNet",
        "channels": channels,
        "kernels": kernels,
        "strides": NATURE["strides"],
        "hidden": hidden,
        "width_mult": 1.0,
        "obs_scale": obs_scale,
        "dueling": False,
    }


def mlp_weights(hidden: list[Layer], head: Layer) -> dict[str, torch.Tensor]:
    """kdrl.nets.MLP's keys: body = [Flatten, Linear, ReLU, ...], q_head."""
    out = {}
    for i, (w, b) in enumerate(hidden):
        out[f"body.{1 + 2 * i}.weight"], out[f"body.{1 + 2 * i}.bias"] = w, b
    out["q_head.weight"], out["q_head.bias"] = head
    return out


def conv_weights(convs: list[Layer], fcs: list[Layer], head: Layer) -> dict[str, torch.Tensor]:
    """kdrl.nets.ConvNet's keys: conv = [Conv, ReLU, ...], fc = [Linear, ReLU, ...], q_head."""
    out = {}
    for i, (w, b) in enumerate(convs):
        out[f"conv.{2 * i}.weight"], out[f"conv.{2 * i}.bias"] = w, b
    for i, (w, b) in enumerate(fcs):
        out[f"fc.{2 * i}.weight"], out[f"fc.{2 * i}.bias"] = w, b
    out["q_head.weight"], out["q_head.bias"] = head
    return out
