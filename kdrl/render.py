"""Watching policies: greedy episodes recorded as frames, labelled, composed and written as GIF/MP4.

Episode i of a recording is reset with seed ``seed + i`` (kdrl.evaluation's convention) and acts
through ``kdrl.collector.greedy_actions``, so its returns are the returns ``evaluate_policy`` gives for
those seeds. A frame cap limits what is recorded, never the episode, so the return stays the true one.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

GreedyFn = Callable[[np.ndarray], np.ndarray]
Note = Callable[[str], None]  # where a recording says what it did instead of what was asked

PALETTE = np.array(
    [  # channel colours for observation images (tab10)
        [31, 119, 180],
        [255, 127, 14],
        [44, 160, 44],
        [214, 39, 40],
        [148, 103, 189],
        [140, 86, 75],
        [227, 119, 194],
        [127, 127, 127],
        [188, 189, 34],
        [23, 190, 207],
    ],
    dtype=np.float32,
)
MIN_SIDE = 160  # observation images are upscaled (nearest) to at least this many pixels a side


# ---- observation -> image (for envs that cannot render rgb_array) -------------------------------------------
def _upscale(img: np.ndarray) -> np.ndarray:
    k = max(1, -(-MIN_SIDE // max(1, min(img.shape[:2]))))
    return np.repeat(np.repeat(img, k, axis=0), k, axis=1)


def _unit(x: np.ndarray) -> np.ndarray:
    lo, hi = float(x.min()), float(x.max())
    return (x - lo) / (hi - lo) if hi > lo else np.clip(x, 0.0, 1.0)


def obs_to_image(obs: np.ndarray) -> np.ndarray:
    """Any observation as an RGB uint8 image: 3-D as channels (each channel a colour, e.g. MinAtar's
    10x10xC maps; channels-last unless the first axis is clearly the smaller), 2-D as greyscale,
    1-D as a bar per feature (tanh-squashed, zero at mid-height)."""
    x = np.asarray(obs, dtype=np.float32)
    x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    if x.ndim == 3:
        if x.shape[0] < x.shape[-1] and x.shape[0] <= 16:  # (C, H, W) -> (H, W, C)
            x = np.moveaxis(x, 0, -1)
        c = x.shape[-1]
        if c == 3 and x.max() > 1.0:  # already an RGB image
            return _upscale(np.clip(x, 0, 255).astype(np.uint8))
        colours = PALETTE[np.arange(c) % len(PALETTE)]
        img = np.clip(_unit(x) @ colours, 0, 255) if c > 1 else _unit(x)[..., :1] * 255.0 * np.ones(3)
        return _upscale(img.astype(np.uint8))
    if x.ndim == 2:
        return _upscale((np.repeat(_unit(x)[..., None], 3, axis=-1) * 255).astype(np.uint8))
    x = x.reshape(-1)
    height, bar = 96, 24
    img = np.full((height, bar * len(x), 3), 255, np.uint8)
    mid = height // 2
    for i, v in enumerate(np.tanh(x)):
        top, bottom = sorted((mid, int(round(mid - v * (mid - 2)))))
        img[top : bottom + 1, i * bar + 2 : (i + 1) * bar - 2] = PALETTE[i % len(PALETTE)].astype(np.uint8)
    img[mid, :] = 0
    return _upscale(img)


def rgb_frame(frame: Any) -> np.ndarray:
    """What ``render()`` gave, as an RGB uint8 image of a watchable size: some envs (MinAtar) return
    a 10x10 float image in [0, 1]."""
    x = np.asarray(frame)
    if x.dtype != np.uint8:
        x = np.nan_to_num(x.astype(np.float32))
        x = np.clip(x * 255.0 if x.max(initial=0.0) <= 1.0 else x, 0, 255).astype(np.uint8)
    if x.ndim == 2:
        x = np.repeat(x[..., None], 3, axis=-1)
    x = x[..., :3] if x.shape[-1] >= 3 else np.repeat(x[..., :1], 3, axis=-1)
    return _upscale(x) if min(x.shape[:2]) < MIN_SIDE else x


# ---- policies and envs ------------------------------------------------------------------------------
def policy_greedy(path: str | Path) -> tuple[GreedyFn, dict]:
    """Greedy actions of a policy file, computed exactly as training's evaluation computes them."""
    import torch

    from kdrl.collector import greedy_actions
    from kdrl.export import load_policy_net

    net, state = load_policy_net(path)
    return partial(greedy_actions, net, device=torch.device("cpu")), state


def make_render_env(env_id: str) -> tuple[Any, bool]:
    """The env with rgb_array rendering if it supports it; else a plain one (frames from obs)."""
    from kdrl.envs import make_env

    # rgb_array rendering needs neither a display nor sound; without these, SDL prints an
    # "XDG_RUNTIME_DIR is invalid" line on stderr when the env closes on a headless machine.
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
    # gymnasium's env checker warns about render fps/dtype of envs we cannot change; rgb_frame copes
    warnings.filterwarnings("ignore", category=UserWarning, module=r"gymnasium\.utils\.passive_env_checker")
    try:
        env = make_env(env_id, {"render_mode": "rgb_array"})
        env.reset(seed=0)
        frame = env.render()
        if isinstance(frame, np.ndarray) and frame.ndim in (2, 3) and frame.size:
            return env, True
        env.close()
    except Exception:  # no render_mode kwarg, no renderer installed, ...
        pass
    return make_env(env_id), False  # an unknown env id fails here, with make_env's own message


@dataclass
class Player:
    """One policy file acting in its own env."""

    greedy: GreedyFn
    env: Any
    renders: bool  # frames from env.render(); else drawn from observations


def load_player(path: str | Path, note: Note) -> Player:
    greedy, state = policy_greedy(path)
    env, renders = make_render_env(state["env_id"])
    if not renders:
        note(f"{state['env_id']} cannot render rgb_array; drawing its observations")
    return Player(greedy, env, renders)


@contextmanager
def open_players(paths: Sequence[str | Path], note: Note) -> Iterator[list[Player]]:
    """The policies, each in its own env; the envs are closed on the way out."""
    players: list[Player] = []
    try:
        for path in paths:
            players.append(load_player(path, note))
        yield players
    finally:
        for player in players:
            player.env.close()


def panel_names(paths: Sequence[str | Path], names: Sequence[str] | None = None) -> list[str]:
    """``names`` if given, else file stems, or parent/stem when two policies share a stem (e.g. two
    best_policy.pt)."""
    if names:
        return list(names)
    stems = [Path(p).stem for p in paths]
    if len(set(stems)) == len(stems):
        return stems
    return [f"{Path(p).parent.name}/{Path(p).stem}" for p in paths]


# ---- running episodes -----------------------------------------------------------------------------
@dataclass
class Episode:
    seed: int
    ret: float = 0.0
    steps: int = 0
    frames: list[np.ndarray] = field(default_factory=list)
    returns_at: list[float] = field(default_factory=list)  # return so far at each recorded frame
    capped: bool = False  # frames were dropped by the frame cap

    def summary(self, name: str, index: int) -> str:
        """The line kdrl-play prints per episode (tests and users parse ``return`` and ``steps``)."""
        frames = f", {len(self.frames)} frames" + (" (capped)" if self.capped else "")
        return f"{name} episode {index} seed {self.seed}: return {self.ret:g} ({self.steps} steps{frames})"


def frame_of(env: Any, obs: np.ndarray, renders: bool) -> np.ndarray:
    return rgb_frame(env.render()) if renders else obs_to_image(obs)


def play_episode(env: Any, renders: bool, greedy: GreedyFn, seed: int, max_frames: int, every: int) -> Episode:
    """One greedy episode from ``reset(seed)`` to its end; frames 0, every, 2*every, ... are kept
    (at most ``max_frames``) along with the return so far at each."""
    ep = Episode(seed=seed)
    obs, _ = env.reset(seed=seed)
    done = False
    while True:
        if ep.steps % every == 0 and len(ep.frames) < max_frames:
            ep.frames.append(frame_of(env, obs, renders))
            ep.returns_at.append(ep.ret)
        if done:
            ep.capped = ep.steps // every + 1 > len(ep.frames)
            return ep
        action = int(greedy(np.asarray(obs)[None])[0])
        obs, reward, term, trunc, _ = env.step(action)
        ep.ret += float(reward)
        ep.steps += 1
        done = term or trunc


def play_episodes(
    players: Sequence[Player], episodes: int, seed: int, max_frames: int, every: int
) -> Iterator[list[Episode]]:
    """Episode i of every player, reset with ``seed + i``: the same seeds for each, for comparing."""
    for i in range(episodes):
        yield [play_episode(p.env, p.renders, p.greedy, seed + i, max_frames, every) for p in players]


# ---- composing frames ------------------------------------------------------------------------------
def label(frame: np.ndarray, text: str) -> np.ndarray:
    """Write ``text`` in the top-left corner (PIL, which matplotlib brings); unchanged without PIL."""
    try:
        from PIL import Image, ImageDraw, ImageFont
    except ImportError:
        return frame
    img = Image.fromarray(frame)
    draw = ImageDraw.Draw(img)
    try:
        font = ImageFont.load_default(size=max(10, frame.shape[0] // 28))
    except TypeError:  # Pillow < 10.1 has one fixed-size default font
        font = ImageFont.load_default()
    box = draw.textbbox((4, 2), text, font=font)
    draw.rectangle((box[0] - 2, box[1] - 1, box[2] + 2, box[3] + 1), fill=(255, 255, 255))
    draw.text((4, 2), text, fill=(0, 0, 0), font=font)
    return np.array(img)  # a writable copy (np.asarray of a PIL image is read-only)


def pad_to(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    out = np.zeros((height, width, 3), np.uint8)
    out[: frame.shape[0], : frame.shape[1]] = frame[..., :3]
    return out


def compose(names: Sequence[str], episodes: Sequence[Episode], labels: bool) -> list[np.ndarray]:
    """Side by side, one panel per policy; a panel whose episode ended holds its last frame. Each
    label carries the step so no two consecutive frames are identical (GIF writers merge those)."""
    n = max(len(ep.frames) for ep in episodes)
    height = max(ep.frames[0].shape[0] for ep in episodes)
    width = max(ep.frames[0].shape[1] for ep in episodes)
    out = []
    for t in range(n):
        panels = []
        for name, ep in zip(names, episodes):
            i = min(t, len(ep.frames) - 1)
            panel = pad_to(ep.frames[i], height, width) if len(episodes) > 1 else ep.frames[i][..., :3]
            if labels:
                panel = label(panel, f"{name}  seed {ep.seed}  t={t}  return {ep.returns_at[i]:g}")
            if len(panels) < len(episodes) - 1:
                panel[:, -1] = 128  # a grey line between panels (inside the panel: widths stay n x single)
            panels.append(panel)
        out.append(np.concatenate(panels, axis=1))
    return out


# ---- writing ------------------------------------------------------------------------------------
def write_gif(path: Path, frames: Sequence[np.ndarray], fps: float) -> Path:
    import imageio.v3 as iio

    iio.imwrite(path, np.stack(frames), extension=".gif", duration=1000.0 / fps, loop=0)
    return path


def write_mp4(path: Path, frames: Sequence[np.ndarray], fps: float) -> Path:
    """Through imageio's ffmpeg (imageio-ffmpeg) or pyav plugin; raises when neither is installed."""
    import imageio.v3 as iio

    h, w = frames[0].shape[:2]
    even = [f[: h - h % 2, : w - w % 2] for f in frames]  # yuv420p needs even sides
    errors = []
    for plugin, kwargs in (("FFMPEG", {"fps": fps}), ("pyav", {"fps": fps, "codec": "libx264"})):
        try:
            iio.imwrite(path, np.stack(even), plugin=plugin, **kwargs)
            return path
        except Exception as exc:  # plugin missing or broken: try the next
            errors.append(f"{plugin}: {type(exc).__name__}")
            Path(path).unlink(missing_ok=True)
    raise RuntimeError("no MP4 writer (" + "; ".join(errors) + ")")


def write_animation(
    path: Path, frames: Sequence[np.ndarray], fps: float, note: Note, done: Sequence[Path] = ()
) -> Path:
    """GIF by suffix; MP4 (or any other suffix) through ffmpeg, falling back to a GIF next to it
    (not written twice when that GIF was asked for too: ``done`` holds what is already written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".gif":
        return write_gif(path, frames, fps)
    try:
        return write_mp4(path, frames, fps)
    except RuntimeError as exc:
        gif = path.with_suffix(".gif")
        note(f"cannot write {path.name}: {exc}; writing {gif} instead (pip install imageio-ffmpeg for MP4)")
        return gif if gif in done else write_gif(gif, frames, fps)


def write_animations(outs: Sequence[str | Path], frames: Sequence[np.ndarray], fps: float, note: Note) -> list[Path]:
    """Every requested file, each written once. GIFs first, so an MP4 that falls back to a GIF
    already asked for is not written twice."""
    written: list[Path] = []
    for out in sorted(map(Path, outs), key=lambda p: p.suffix.lower() != ".gif"):
        path = write_animation(out, frames, fps, note, written)
        if path not in written:
            written.append(path)
    return written
