"""Acting cost of numpy's BLAS thread count: QNetwork.numpy_greedy of a width-256 MLP (CartPole's shape) at
batch 8 and 20, with numpy's default BLAS threads against one (what kdrl.resources.set_threads gives a job),
while a busy loop holds the other core, as a second job or test worker does. Each setting is timed twice,
alternated; the table gives the lower of its two medians (of 5 × 0.5 s).

    python scripts/bench_blas_threads.py
"""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import torch
from threadpoolctl import threadpool_info, threadpool_limits

from kdrl.nets import MLP


def per_call_us(net: MLP, batch: int, repeat_s: float = 0.5, repeats: int = 5) -> float:
    obs = np.random.default_rng(0).standard_normal((batch, 4)).astype(np.float32)
    means = []
    for _ in range(repeats):
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < repeat_s:
            net.numpy_greedy(obs)
            n += 1
        means.append((time.perf_counter() - t0) / n * 1e6)
    return float(np.median(means))


def main() -> None:
    torch.set_num_threads(1)
    net = MLP((4,), 2, width=256)
    default = max(p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas")
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        print(f"| batch | BLAS threads {default} (default), us | 1 thread, us | ratio |\n|---|---|---|---|")
        for batch in (8, 20):
            runs = {}
            for limit in (default, 1, default, 1):  # alternated: drift on a shared machine hits both
                with threadpool_limits(limits=limit, user_api="blas"):
                    runs.setdefault(limit, []).append(per_call_us(net, batch))
            d, one = min(runs[default]), min(runs[1])
            print(f"| {batch} | {d:.0f} | {one:.0f} | {d / one:.1f}x |")
    finally:
        busy.kill()


if __name__ == "__main__":
    main()
