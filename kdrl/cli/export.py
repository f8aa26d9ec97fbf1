"""kdrl-export: a policy file -> TorchScript + ONNX + JSON sidecar, verified against torch.

    kdrl-export outputs/.../student.pt --out exported/            # both formats
    kdrl-export teacher.pt --out exported/ --formats onnx

Exit codes: 0 exported; 2 bad input (missing or non-policy file, bad arguments); 1 an export that
does not reproduce the torch policy (nothing is written). Errors are one line on stderr;
KDRL_DEBUG=1 shows the traceback.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from kdrl.errors import run_cli, writable_dir
from kdrl.export import DEFAULT_FORMATS, DEFAULT_TOL, FORMATS, MIN_INT8_AGREEMENT, ExportError, export_policy


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="kdrl-export", description="Export a kdrl policy file to TorchScript and ONNX.")
    p.add_argument("policy", help="policy file (teacher.pt, student.pt, checkpoints/best_policy.pt, ...)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument(
        "--formats",
        nargs="+",
        default=list(DEFAULT_FORMATS),
        choices=FORMATS,
        help="onnx_int8: int8 ONNX (dynamic for MLPs, static QDQ for conv nets); onnx_int8_weights: int8 weights, float activations",
    )
    p.add_argument(
        "--min-agreement",
        type=float,
        default=MIN_INT8_AGREEMENT,
        help=f"int8 exports: greedy actions that must agree with torch (default {MIN_INT8_AGREEMENT})",
    )
    p.add_argument("--name", default=None, help="base name of the written files (default: the policy file's stem)")
    p.add_argument("--verify-obs", type=int, default=512, help="observations to check the exports on (default 512)")
    p.add_argument(
        "--tol", type=float, default=DEFAULT_TOL, help=f"max |Q torch - Q export| allowed (default {DEFAULT_TOL:g})"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the verification episodes")
    args = p.parse_args(argv)
    if args.verify_obs < 1:
        p.error(f"--verify-obs must be >= 1, got {args.verify_obs}")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)

    def body() -> None:
        writable_dir(args.out, "--out")  # before the policy is loaded and exported
        res = export_policy(
            args.policy, args.out, args.formats, args.name, args.verify_obs, args.tol, args.seed, args.min_agreement
        )
        info = res.info
        print(
            f"{args.policy}: {info['env_id']}, obs {tuple(info['obs_shape'])}, {info['n_actions']} actions, "
            f"{info['params']:,} params"
        )
        for fmt, path in res.files.items():
            v = info["verification"][fmt]
            agree = "actions agree" if v["disagreements"] == 0 else f"{100 * v['agreement']:.1f}% of actions agree"
            size = f", {path.stat().st_size:,} bytes"
            print(f"  {fmt:<11} {path}  (max |ΔQ| {v['max_abs_diff']:.2g}, {v['n']} obs, {agree}{size})")
        print(f"  sidecar     {res.sidecar}")

    run_cli("kdrl-export", body, codes={ExportError: 1})


if __name__ == "__main__":
    main()
