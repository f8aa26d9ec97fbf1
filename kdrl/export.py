"""Export a kdrl policy file to TorchScript and ONNX, verified against eager torch.

Both exports take float32 observations of shape ``(batch, *obs_shape)`` (the batch axis is
dynamic) and give Q-values; the TorchScript module also has ``act(obs) -> argmax actions`` and
the ONNX graph a second output ``action``, so a deployment needs no argmax of its own. An export
is written to a temporary directory, checked (same greedy actions, Q within ``tol``, on real
observations of the policy's env) and only then moved into place: a failed check leaves nothing
behind that a deployment could pick up.

``onnx_int8`` is the ONNX graph quantised to int8 with onnxruntime's tools: dynamic quantisation
(int8 weights, activations quantised on the fly) for MLPs, static QDQ quantisation calibrated on
real states of the env (other episodes than the verification's) for conv nets. Its Q-values are
approximations by design, so it is verified by greedy-action agreement with torch (reported; at
least ``min_agreement`` required), not by the fp32 tolerance.

``onnx_int8_weights`` stores only the weights as int8 (symmetric, one scale per output channel,
``DequantizeLinear`` in the graph) and computes in float: about the bytes on disk of ``onnx_int8``
without quantising activations, which is where Q-networks with small action gaps lose return
(docs/quantisation.md).
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import os
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kdrl.errors import KdrlUserError
from kdrl.io import CheckpointError, atomic_write_json, load_policy, raise_if_disk_full

EXPORT_FORMAT = "kdrl-export/1"
FORMATS = ("torchscript", "onnx", "onnx_int8", "onnx_int8_weights")
DEFAULT_FORMATS = ("torchscript", "onnx")
QUANTIZED = ("onnx_int8", "onnx_int8_weights")
MIN_INT8_AGREEMENT = 0.9  # greedy actions an int8 model must share with torch on the verification states
# The legacy (TorchScript-based) ONNX exporter supports opsets up to 20 in torch 2.13; 17 is the
# newest one every onnxruntime >= 1.14 runs, and an MLP or conv net needs nothing newer.
ONNX_OPSET = 17
DEFAULT_TOL = 1e-4
TIE_TOL = 1e-5  # a greedy action may differ across runtimes only where two Q-values are this close
NET_TARGET_PREFIX = "kdrl."  # a weights-only file must not name an arbitrary callable to build


class ExportError(KdrlUserError, RuntimeError):
    """An exported model that does not reproduce the torch policy (refused, nothing written)."""


# ---- loading ----------------------------------------------------------------------------------------
def load_policy_net(path: str | Path) -> tuple[nn.Module, dict]:
    """Any kdrl Q-network from a policy file, built from the file's own ``net`` config.

    The file's env id and shapes are read first and handed to ``load_teacher_net`` (the loader
    distillation uses), so MLPs and future conv nets are rebuilt the same way everywhere.
    """
    from kdrl.teachers import load_teacher_net

    state = load_policy(path)
    target = str((state.get("net") or {}).get("_target_", ""))
    if not target.startswith(NET_TARGET_PREFIX):
        raise CheckpointError(f"{path}: net._target_ must be a kdrl network class, got {target!r}")
    try:
        net, state = load_teacher_net(path, state["env_id"], tuple(state["obs_shape"]), int(state["n_actions"]))
    except CheckpointError:
        raise
    except Exception as exc:  # a net config or state dict that does not fit: the file is bad
        raise CheckpointError(f"{path}: cannot rebuild the network ({type(exc).__name__}: {exc})") from exc
    return net.eval(), state


# ---- wrappers that fix what the exported graphs compute -----------------------------------------------
class QActModule(nn.Module):
    """TorchScript entry points: ``forward`` -> Q-values, ``act`` -> greedy actions (int64)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs)

    def act(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs).argmax(dim=1)


class QAndAction(nn.Module):
    """ONNX graph: one pass gives both outputs, ``q`` and ``action``."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q = self.net(obs)
        return q, q.argmax(dim=1)


# ---- writers -------------------------------------------------------------------------------------
def export_torchscript(net: nn.Module, obs_shape: Sequence[int], path: Path) -> Path:
    """Trace ``forward`` and ``act``; tracing (not scripting) works for any net whose forward is
    plain tensor code, which is what kdrl's nets are. Traced at batch 2 and verified at another
    batch size, so a batch size baked into the graph would be caught."""
    example = torch.zeros(2, *obs_shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch 2.13 marks torch.jit deprecated; it still works
        traced = torch.jit.trace_module(QActModule(net).eval(), {"forward": example, "act": example})
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer)
    # Written by Python: torch.jit.save given a path aborts the whole process (C++ terminate) when
    # the disk fills up; a Python write raises OSError ENOSPC, reported in one line.
    with open(path, "wb") as f:
        f.write(buffer.getvalue())
    return path


def export_onnx(net: nn.Module, obs_shape: Sequence[int], path: Path, opset: int = ONNX_OPSET) -> Path:
    """ONNX with a dynamic batch axis.

    ``dynamo=False``: since torch 2.9 ``torch.onnx.export`` defaults to the torch.export-based
    exporter, which needs the ``onnxscript`` package (not installed here, and not otherwise needed).
    The legacy TorchScript-based exporter is still in torch 2.13, runs offline with just ``onnx``,
    and handles Linear/Conv/ReLU nets exactly.
    """
    example = torch.zeros(2, *obs_shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter warns that it is legacy
        torch.onnx.export(
            QAndAction(net).eval(),
            (example,),
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=["obs"],
            output_names=["q", "action"],
            dynamic_axes={"obs": {0: "batch"}, "q": {0: "batch"}, "action": {0: "batch"}},
        )
    import onnx

    onnx.checker.check_model(onnx.load(str(path)))
    return path


def has_conv(net: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in net.modules())


class StatesReader:
    """onnxruntime's CalibrationDataReader protocol over an array of real observations."""

    def __init__(self, states: np.ndarray, batch: int = 32) -> None:
        self.batches = iter([{"obs": states[i : i + batch]} for i in range(0, len(states), batch)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.batches, None)


def export_onnx_int8(net: nn.Module, obs_shape: Sequence[int], path: Path, calibration: np.ndarray) -> Path:
    """fp32 ONNX, then int8: dynamic for MLPs, static QDQ calibrated on ``calibration`` for conv nets
    (dynamic quantisation leaves convolutions in float, so only static shrinks and speeds them)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

    fp32 = path.with_name(path.name + ".fp32.onnx")
    export_onnx(net, obs_shape, fp32)
    quiet = logging.getLogger()  # onnxruntime's quantiser logs its pre-processing advice on the root logger
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # onnxruntime suggests pre-processing; the graphs here are plain
            if has_conv(net):
                quantize_static(
                    str(fp32),
                    str(path),
                    StatesReader(np.ascontiguousarray(calibration, dtype=np.float32)),
                    quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    per_channel=True,
                    calibrate_method=CalibrationMethod.MinMax,
                )
            else:
                quantize_dynamic(str(fp32), str(path), weight_type=QuantType.QInt8)
    finally:
        quiet.setLevel(level)
    fp32.unlink()
    import onnx

    compacted = compact_names(onnx.load(str(path)))
    onnx.checker.check_model(compacted)
    onnx.save(compacted, str(path))
    return path


def export_onnx_int8_weights(net: nn.Module, obs_shape: Sequence[int], path: Path) -> Path:
    """fp32 ONNX with its Gemm/MatMul/Conv weights stored as int8 (no calibration: only weights are
    quantised, each channel from its own range)."""
    import onnx

    fp32 = path.with_name(path.name + ".fp32.onnx")
    export_onnx(net, obs_shape, fp32)
    model = compact_names(quantize_onnx_weights(onnx.load(str(fp32))))
    fp32.unlink()
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _channel_axis(node: Any, ndim: int) -> int:
    """The output-channel axis of a node's weight (its second input)."""
    if ndim != (4 if node.op_type == "Conv" else 2):
        raise ExportError(f"cannot quantise the {ndim}-d weight of a {node.op_type} node to int8 per channel")
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    return 0 if node.op_type == "Conv" else 1  # MatMul: (in, out)


def quantize_onnx_weights(model: Any) -> Any:
    """Replace each Gemm/MatMul/Conv weight initializer by int8 values and per-output-channel scales
    (kdrl.quantize's scheme) dequantised by a ``DequantizeLinear`` node."""
    from onnx import helper, numpy_helper

    from kdrl.quantize import int8_symmetric

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    dequant, done = [], set()
    for node in graph.node:
        name = node.input[1] if node.op_type in ("Gemm", "MatMul", "Conv") and len(node.input) > 1 else ""
        if name not in inits or name in done:
            continue
        w = torch.from_numpy(numpy_helper.to_array(inits[name]).copy())
        q_t, scale_t = int8_symmetric(w, _channel_axis(node, w.ndim))
        q, scale = q_t.numpy(), scale_t.flatten().numpy()
        graph.initializer.remove(inits[name])
        graph.initializer.extend([numpy_helper.from_array(q, f"{name}_q"), numpy_helper.from_array(scale, f"{name}_s")])
        axis = _channel_axis(node, w.ndim)
        dequant.append(helper.make_node("DequantizeLinear", [f"{name}_q", f"{name}_s"], [name], axis=axis))
        done.add(name)
    nodes = dequant + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    return model


def compact_names(model: Any) -> Any:
    """Short tensor names and no node names or doc strings: a quantised small net's graph text
    (names like ``/net/body/body.1/Gemm_output_0_quantized``) can outweigh its int8 weights.
    The graph's inputs and outputs keep their names (obs, q, action)."""
    keep = {v.name for v in (*model.graph.input, *model.graph.output)}
    names: dict[str, str] = {}

    def short(name: str) -> str:
        if not name or name in keep:
            return name
        return names.setdefault(name, format(len(names), "x"))

    for node in model.graph.node:
        node.name, node.doc_string = "", ""
        node.input[:] = [short(x) for x in node.input]
        node.output[:] = [short(x) for x in node.output]
    for init in model.graph.initializer:
        init.name, init.doc_string = short(init.name), ""
    del model.graph.value_info[:]
    model.doc_string = model.graph.doc_string = ""
    return model


WRITERS: dict[str, Callable[..., Path]] = {
    "torchscript": export_torchscript,
    "onnx": export_onnx,
    "onnx_int8": export_onnx_int8,
    "onnx_int8_weights": export_onnx_int8_weights,
}
SUFFIXES = {
    "torchscript": ".torchscript.pt",
    "onnx": ".onnx",
    "onnx_int8": ".int8.onnx",
    "onnx_int8_weights": ".int8w.onnx",
}


# ---- runners: numpy obs batch -> (q, actions), one per format -------------------------------------------
Runner = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


@torch.inference_mode()
def _torch_q(net: nn.Module, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    q = net(torch.as_tensor(obs, dtype=torch.float32))
    return q.numpy(), q.argmax(dim=1).numpy()


def torch_runner(net: nn.Module) -> Runner:
    return lambda obs: _torch_q(net, obs)


def torchscript_runner(path: str | Path) -> Runner:
    mod = torch.jit.load(str(path), map_location="cpu").eval()

    @torch.inference_mode()
    def run(obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = torch.as_tensor(obs, dtype=torch.float32)
        return mod(x).numpy(), mod.act(x).numpy()

    return run


def onnx_session(path: str | Path, threads: int = 1, level: str = "all") -> Any:
    """An onnxruntime CPU session; ``threads=1`` so a benchmark measures one core."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[level]
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def onnx_runner(path: str | Path) -> Runner:
    sess = onnx_session(path)

    def run(obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        q, action = sess.run(["q", "action"], {"obs": np.ascontiguousarray(obs, dtype=np.float32)})
        return q, action

    return run


RUNNERS: dict[str, Callable[[Path], Runner]] = {
    "torchscript": torchscript_runner,
    "onnx": onnx_runner,
    "onnx_int8": onnx_runner,
    "onnx_int8_weights": onnx_runner,
}


def read_back(fmt: str, path: Path, target: Path) -> Runner:
    """The runtime of a just-written export, or ExportError naming the file it would become when
    the runtime cannot read it (a truncated or damaged write): nothing is written then."""
    try:
        return RUNNERS[fmt](path)
    except Exception as exc:
        why = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise ExportError(
            f"the {fmt} export {target} cannot be read back ({type(exc).__name__}: {why}); nothing written"
        ) from exc


# ---- verification ------------------------------------------------------------------------------------
def sample_states(env_id: str, obs_shape: Sequence[int], n: int, seed: int = 0) -> tuple[np.ndarray, str]:
    """``n`` real observations from random-action episodes of ``env_id`` (what the policy will see;
    sampling a Box space instead gives values like 3e38 for CartPole's unbounded velocities).
    Falls back to standard normal noise when the env cannot be made here; says which it used."""
    try:
        from kdrl.envs import make_env

        env = make_env(env_id)
    except Exception as exc:
        rng = np.random.default_rng(seed)
        why = " ".join(str(exc).split())[:120]
        return rng.standard_normal((n, *obs_shape)).astype(np.float32), f"N(0,1) noise ({env_id} not available: {why})"
    states: list[np.ndarray] = []
    env.action_space.seed(seed)
    obs, _ = env.reset(seed=seed)
    episode = 0
    while len(states) < n:
        states.append(np.asarray(obs, dtype=np.float32))
        obs, _, term, trunc, _ = env.step(env.action_space.sample())
        if term or trunc:
            episode += 1
            obs, _ = env.reset(seed=seed + episode)
    env.close()
    return np.stack(states), f"random-action episodes of {env_id} (seeds {seed}..{seed + episode})"


@dataclass
class Agreement:
    """How one runtime compares with eager torch on a batch."""

    max_abs_diff: float
    disagreements: int  # greedy actions that differ where torch's Q-values are not tied
    near_ties: int  # greedy actions that differ where torch's top Q-values are within TIE_TOL
    n: int

    @property
    def agreement(self) -> float:
        """Fraction of greedy actions equal to torch's (ties counted as equal)."""
        return 1.0 - self.disagreements / max(self.n, 1)

    def ok(self, tol: float) -> bool:
        return self.disagreements == 0 and math.isfinite(self.max_abs_diff) and self.max_abs_diff <= tol


def compare(q_ref: np.ndarray, a_ref: np.ndarray, q: np.ndarray, a: np.ndarray) -> Agreement:
    """Compare against the reference; an action that differs only between two Q-values tied within
    TIE_TOL is float rounding picking the other of equals, not a wrong export."""
    if q.shape != q_ref.shape or a.shape != a_ref.shape:
        return Agreement(float("inf"), len(a_ref), 0, len(a_ref))
    diff = float(np.max(np.abs(q.astype(np.float64) - q_ref))) if q.size else 0.0
    differ = np.flatnonzero(a != a_ref)
    rows = q_ref[differ]
    gap = rows[np.arange(len(differ)), a_ref[differ]] - rows[np.arange(len(differ)), a[differ]]
    ties = int(np.sum(gap <= TIE_TOL))
    return Agreement(diff, len(differ) - ties, ties, len(a_ref))


def verify(
    reference: Runner,
    runners: dict[str, Runner],
    obs: np.ndarray,
    tol: float = DEFAULT_TOL,
    min_agreement: float = MIN_INT8_AGREEMENT,
) -> dict[str, Agreement]:
    """Compare every runtime with eager torch on ``obs`` (and on a batch of one, the deployment case);
    raise ExportError naming the first runtime that does not agree. Quantised runtimes must agree
    on at least ``min_agreement`` of the greedy actions (their Q-values are approximate)."""
    q_ref, a_ref = reference(obs)
    report: dict[str, Agreement] = {}
    for name, run in runners.items():
        q, a = run(obs)
        agree = compare(q_ref, a_ref, q, a)
        q1, a1 = run(obs[:1])
        one = compare(q_ref[:1], a_ref[:1], q1, a1)
        agree.max_abs_diff = max(agree.max_abs_diff, one.max_abs_diff)
        agree.disagreements += one.disagreements
        report[name] = agree
        if name in QUANTIZED:
            if agree.n and agree.agreement < min_agreement:
                raise ExportError(
                    f"{name} export agrees with torch on {100 * agree.agreement:.1f}% of {agree.n} greedy actions, "
                    f"below the {100 * min_agreement:.0f}% required (Q-values with small action gaps flip under int8: "
                    "check its return, or lower --min-agreement); nothing written"
                )
            continue
        if not agree.ok(tol):
            raise ExportError(
                f"{name} export does not match torch on {agree.n} observations: "
                f"{agree.disagreements} greedy actions differ, max |ΔQ| = {agree.max_abs_diff:.3g} "
                f"(tolerance {tol:g}); nothing written"
            )
    return report


# ---- the whole export ----------------------------------------------------------------------------------
@dataclass
class ExportResult:
    files: dict[str, Path]
    sidecar: Path
    info: dict[str, Any] = field(default_factory=dict)


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime

    return {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}


def export_policy(
    policy: str | Path,
    out_dir: str | Path,
    formats: Sequence[str] = DEFAULT_FORMATS,
    name: str | None = None,
    n_verify: int = 512,
    tol: float = DEFAULT_TOL,
    seed: int = 0,
    min_agreement: float = MIN_INT8_AGREEMENT,
) -> ExportResult:
    """Export ``policy`` into ``out_dir`` as ``<name>.torchscript.pt``, ``<name>.onnx`` and
    ``<name>.export.json`` (name defaults to the policy file's stem), verified before writing."""
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise ValueError(f"--formats must be among {', '.join(FORMATS)}, got {', '.join(bad) or 'none'}")
    policy = Path(policy)
    net, state = load_policy_net(policy)
    obs_shape = tuple(int(d) for d in state["obs_shape"])
    name = name or policy.stem
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    obs, obs_source = sample_states(state["env_id"], obs_shape, n_verify, seed)
    with tempfile.TemporaryDirectory(prefix=".kdrl-export-", dir=out_dir) as tmp:
        staged = {}
        for fmt in formats:
            target = Path(tmp) / f"{name}{SUFFIXES[fmt]}"
            try:
                if fmt == "onnx_int8":  # calibrated on other episodes than the ones it is verified on
                    calibration, _ = sample_states(state["env_id"], obs_shape, n_verify, seed + 100_000)
                    staged[fmt] = WRITERS[fmt](net, obs_shape, target, calibration)
                else:
                    staged[fmt] = WRITERS[fmt](net, obs_shape, target)
            except Exception as exc:  # torch's and onnx's C++ writers say "unexpected pos" for a full disk
                raise_if_disk_full(exc, out_dir / target.name, Path(tmp))
                raise
        runners = {fmt: read_back(fmt, p, out_dir / p.name) for fmt, p in staged.items()}
        report = verify(torch_runner(net), runners, obs, tol, min_agreement)
        files = {}
        for fmt, p in staged.items():  # same filesystem: each rename is atomic
            files[fmt] = out_dir / p.name
            os.replace(p, files[fmt])
    info = sidecar_info(policy, state, net, files, report, obs_source, tol)
    sidecar = atomic_write_json(out_dir / f"{name}.export.json", info)  # last: its presence means done
    return ExportResult(files, sidecar, info)


def sidecar_info(
    policy: Path,
    state: dict,
    net: nn.Module,
    files: dict[str, Path],
    report: dict[str, Agreement],
    obs_source: str,
    tol: float,
) -> dict[str, Any]:
    from kdrl.nets import count_params

    files_info: dict[str, Any] = {}
    if "torchscript" in files:
        files_info["torchscript"] = {
            "file": files["torchscript"].name,
            "sha256": _sha256(files["torchscript"]),
            "methods": {"forward": "obs -> q", "act": "obs -> action (int64)"},
        }
    schemes = {
        "onnx_int8": "static QDQ (int8 weights per channel, uint8 activations, MinMax calibration on real states)"
        if has_conv(net)
        else "dynamic (int8 weights, activations quantised at run time)",
        "onnx_int8_weights": "weight-only (int8 weights per output channel, symmetric; float activations)",
    }
    for fmt in QUANTIZED:
        if fmt in files:
            files_info[fmt] = {
                "file": files[fmt].name,
                "sha256": _sha256(files[fmt]),
                "quantization": schemes[fmt],
                "bytes": files[fmt].stat().st_size,
                "fp32_bytes": files["onnx"].stat().st_size if "onnx" in files else None,
            }
    if "onnx" in files:
        files_info["onnx"] = {
            "file": files["onnx"].name,
            "sha256": _sha256(files["onnx"]),
            "opset": ONNX_OPSET,
            "inputs": {"obs": ["batch", *state["obs_shape"]]},
            "outputs": {"q": ["batch", state["n_actions"]], "action": ["batch"]},
        }
    return {
        "format": EXPORT_FORMAT,
        "env_id": state["env_id"],
        "obs_shape": list(state["obs_shape"]),
        "obs_dtype": "float32",
        "n_actions": int(state["n_actions"]),
        "params": count_params(net),
        "net": state["net"],
        "source": str(policy.resolve()),
        "source_sha256": _sha256(policy),
        "source_extra": state.get("extra") or {},
        "files": files_info,
        "verification": {
            "observations": obs_source,
            "tolerance": tol,
            **{fmt: {**vars(a), "agreement": a.agreement} for fmt, a in report.items()},
        },
        "versions": _versions(),
    }
