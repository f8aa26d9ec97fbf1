"""Resource figures of a Q-network (params, bytes on disk, FLOPs per forward, batch-1 latency) and of
the process (its age: time to a score counts imports too)."""

from __future__ import annotations

import io
import os
import time

import numpy as np
import torch
from torch import nn

from kdrl.io import own_cpu_copy
from kdrl.nets import count_params


def forward_flops(net: nn.Module, obs_shape: tuple[int, ...]) -> int:
    """FLOPs of one single-observation forward (2 per multiply-add, Linear and Conv2d layers)."""
    flops = 0

    def linear_hook(mod: nn.Linear, inp, out) -> None:
        nonlocal flops
        flops += 2 * mod.in_features * mod.out_features

    def conv_hook(mod: nn.Conv2d, inp, out) -> None:
        nonlocal flops
        per_out = 2 * (mod.in_channels // mod.groups) * int(np.prod(mod.kernel_size))
        flops += per_out * out[0].numel()

    hooks = [m.register_forward_hook(linear_hook) for m in net.modules() if isinstance(m, nn.Linear)]
    hooks += [m.register_forward_hook(conv_hook) for m in net.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            net(torch.zeros(1, *obs_shape))
    finally:
        for h in hooks:
            h.remove()
    return flops


def state_dict_bytes(net: nn.Module) -> int:
    """Bytes of ``torch.save(net.state_dict())`` with each tensor in a storage of its own
    (kdrl.io.own_cpu_copy), not the optimiser's flat buffer it may be a view of."""
    state = net.state_dict()  # an OrderedDict with torch's version metadata: replaced in place
    for k, v in state.items():
        if isinstance(v, torch.Tensor):
            state[k] = own_cpu_copy(v)
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getbuffer().nbytes


@torch.no_grad()
def batch1_latency_us(net: nn.Module, obs_shape: tuple[int, ...], repeat_s: float = 0.04, repeats: int = 5) -> float:
    """Median over ``repeats`` of the mean time of a batch-1 greedy action on CPU (forward + argmax), each
    repeat as many calls as fill ``repeat_s`` (20 to 2,000): 0.2 s a net whatever its size, where a fixed
    10,000 calls cost a Nature CNN ~10 s of every pixel student's job."""
    net = net.to("cpu").eval()
    x = torch.zeros(1, *obs_shape)
    warm, t0 = 0, time.perf_counter()
    while warm < 20 or (warm < 200 and time.perf_counter() - t0 < repeat_s / 2):
        net(x).argmax(1)
        warm += 1
    calls = int(min(2000, max(20, repeat_s * warm / (time.perf_counter() - t0))))
    means = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            net(x).argmax(1)
        means.append((time.perf_counter() - t0) / calls * 1e6)
    return float(np.median(means))


def resource_report(net: nn.Module, obs_shape: tuple[int, ...]) -> dict[str, float]:
    return {
        "params": count_params(net),
        "bytes": state_dict_bytes(net),
        "flops": forward_flops(net, obs_shape),
        "latency_us": batch1_latency_us(net, obs_shape),
    }


_JOB_CLOCK: dict[str, float | None] = {}


def start_job_clock() -> None:
    """A job starts: the wait a user of a fresh process sees is this process's imports (its age when
    its first job started; a reused launcher worker paid them once) plus the job's own time."""
    if "imports_s" not in _JOB_CLOCK:
        _JOB_CLOCK["imports_s"] = process_age_s()
    _JOB_CLOCK["t0"] = time.perf_counter()


def job_age_s() -> float | None:
    """Seconds since a fresh process running this job alone would have started (``start_job_clock``;
    before any job: the process's age)."""
    imports, t0 = _JOB_CLOCK.get("imports_s"), _JOB_CLOCK.get("t0")
    if t0 is None or imports is None:
        return process_age_s()
    return imports + time.perf_counter() - t0


def process_age_s() -> float | None:
    """Seconds since this process started (Linux /proc; None elsewhere): the time a user waits,
    interpreter start and imports included, which a timer started in the job cannot see."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def set_threads(threads: int) -> None:
    """``torch_threads`` for torch and for numpy's BLAS alike. The acting loop's numpy forward
    (QNetwork.numpy_greedy) is a BLAS call too: left at one thread per core, a batch-8 MLP action took
    4.7 ms against 53 us on one thread whenever the other core was busy (two jobs at once, a test worker)."""
    from threadpoolctl import threadpool_limits

    n = max(1, int(threads))
    torch.set_num_threads(n)
    threadpool_limits(limits=n, user_api="blas")
