"""kdrl-play: watch policies act greedily; one policy -> an animation, two -> side by side.

    kdrl-play student.pt --episodes 3 --seed 0 --out student.gif
    kdrl-play teacher.pt student.pt --out cmp.gif          # same seeds, panels labelled
    kdrl-play student.pt --out run.mp4                     # MP4 (or .webm, .mkv, ...) when an ffmpeg writer exists, else GIF

Episode i is reset with seed ``seed + i``, so the printed returns are the returns
``kdrl.evaluation.evaluate_policy`` gives for those seeds (see kdrl.render).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import numpy as np

from kdrl.errors import OutputPathError, run_cli, writable_dir
from kdrl.render import Note, compose, open_players, panel_names, play_episodes, write_animations

PROG = "kdrl-play"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=PROG, description="Run policy files greedily and record an animation.")
    p.add_argument("policies", nargs="+", help="one policy file, or two to show side by side")
    p.add_argument("--out", nargs="+", default=["play.gif"], help="output file(s): .gif and/or .mp4 (default play.gif)")
    p.add_argument("--episodes", type=int, default=1)
    p.add_argument("--seed", type=int, default=0, help="episode i is reset with seed+i")
    p.add_argument("--max-frames", type=int, default=300, help="frames recorded per episode at most (default 300)")
    p.add_argument("--every", type=int, default=1, help="record every k-th step (default 1)")
    p.add_argument("--fps", type=float, default=30.0)
    p.add_argument("--names", nargs="+", help="panel labels (default: the files' stems)")
    p.add_argument("--no-labels", action="store_true")
    args = p.parse_args(argv)
    if len(args.policies) > 2:
        p.error(f"give one or two policy files, got {len(args.policies)}")
    if args.names and len(args.names) != len(args.policies):
        p.error(f"--names needs one name per policy ({len(args.policies)}), got {len(args.names)}")
    for key in ("episodes", "max_frames", "every"):
        if getattr(args, key) < 1:
            p.error(f"--{key.replace('_', '-')} must be >= 1, got {getattr(args, key)}")
    if args.fps <= 0:
        p.error(f"--fps must be > 0, got {args.fps}")
    return args


def note_to(stream: TextIO) -> Note:
    return lambda msg: print(f"{PROG}: note: {msg}", file=stream)


VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi")  # written through ffmpeg (imageio)


def check_outputs(outs: Sequence[str]) -> None:
    """Each --out an animation file kdrl-play can write, in a directory it can write into: said in one
    line before any episode is played."""
    for out in map(Path, outs):
        if out.suffix.lower() not in (".gif", *VIDEO_SUFFIXES):
            raise OutputPathError(
                f"--out {out}: kdrl-play writes a .gif or a video ({', '.join(VIDEO_SUFFIXES)}), "
                f"not {out.suffix or 'a file without a suffix'}"
            )
        writable_dir(out.parent, f"--out {out}: its directory")


def play(args: argparse.Namespace) -> None:
    check_outputs(args.out)
    names = panel_names(args.policies, args.names)
    frames: list[np.ndarray] = []
    with open_players(args.policies, note_to(sys.stdout)) as players:
        runs = play_episodes(players, args.episodes, args.seed, args.max_frames, args.every)
        for i, episodes in enumerate(runs):
            for name, ep in zip(names, episodes):
                print(ep.summary(name, i))
            frames += compose(names, episodes, labels=not args.no_labels)
    h, w = frames[0].shape[:2]
    for path in write_animations(args.out, frames, args.fps, note_to(sys.stderr)):
        print(f"wrote {path} ({len(frames)} frames, {w}x{h})")


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    run_cli(PROG, lambda: play(args))


if __name__ == "__main__":
    main()
