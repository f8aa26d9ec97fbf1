"""Print a results.json as a short human summary: `python -m kdrl.cli.show PATH...`."""

from __future__ import annotations

import json
import sys


def summary(path: str) -> str:
    with open(path) as f:
        r = json.load(f)
    if r.get("status") != "ok":
        return f"{path}: status={r.get('status')} error={r.get('error')}"
    lines = [f"{r['kind']} on {r['env_id']} (seed {r['seed']}, {r['params']:,} params)",
             f"  greedy return {r['eval_return_mean']:.1f} ± {r['eval_return_std']:.1f} over {len(r['eval_returns'])} held-out episodes",
             f"  {r['env_steps']:,} env steps, {r['grad_steps']:,} gradient steps, {r['wall_time_s']:.1f} s, {r['sps']:,.0f} env steps/s",
             f"  checkpoint: {r['checkpoint']}"]
    return "\n".join(lines)


def main() -> None:
    for path in sys.argv[1:]:
        print(summary(path))


if __name__ == "__main__":
    main()
