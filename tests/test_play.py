"""kdrl-play: GIF frames and widths, returns identical to kdrl.evaluation, render fallbacks."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from kdrl.evaluation import eval_seeds, evaluate_policy
from kdrl.io import save_policy
from kdrl.nets import MLP

SEED, EPISODES = 10, 3
LINE = re.compile(r"^(\S+) episode (\d+) seed (\d+): return (\S+) \((\d+) steps")


def _policy(path: Path, hidden: list[int], seed: int) -> tuple[Path, MLP]:
    torch.manual_seed(seed)
    net = MLP((4,), 2, hidden=hidden).eval()
    cfg = {"_target_": "kdrl.nets.MLP", "width": hidden[0], "depth": len(hidden), "dueling": False, "hidden": hidden}
    return save_policy(path, net, cfg, "CartPole-v1", (4,), 2), net


@pytest.fixture(scope="module")
def policies(tmp_path_factory):
    d = tmp_path_factory.mktemp("play")
    return _policy(d / "teacher.pt", [64, 64], 0), _policy(d / "student.pt", [16], 1)


def run_play(argv: list[str], capsys) -> tuple[dict[str, list[tuple[float, int]]], str, str]:
    """Run kdrl-play in-process; (name -> [(return, steps) per episode], stdout, stderr)."""
    from kdrl.cli.play import main

    main(argv)
    out, err = capsys.readouterr()
    per: dict[str, list[tuple[float, int]]] = {}
    for line in out.splitlines():
        m = LINE.match(line)
        if m:
            per.setdefault(m.group(1), []).append((float(m.group(4)), int(m.group(5))))
    return per, out, err


def gif_frames(path: Path) -> np.ndarray:
    import imageio.v3 as iio

    return iio.imread(path, index=None)


def reference_returns(net: MLP) -> list[float]:
    """kdrl.evaluation's greedy evaluation (batched forward over all episodes) on the same seeds."""

    def greedy(obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return net(torch.as_tensor(obs, dtype=torch.float32)).argmax(dim=1).numpy()

    return evaluate_policy(greedy, "CartPole-v1", eval_seeds(SEED, EPISODES))


@pytest.fixture(scope="module")
def single(policies, tmp_path_factory):
    """One policy's GIF; shared by the tests that compare against it."""
    from kdrl.cli.play import main

    out = tmp_path_factory.mktemp("single") / "teacher.gif"
    buf = io.StringIO()  # module-scoped fixtures cannot use capsys
    with contextlib.redirect_stdout(buf):
        main([str(policies[0][0]), "--episodes", str(EPISODES), "--seed", str(SEED), "--out", str(out)])
    per = [(float(m.group(4)), int(m.group(5))) for m in map(LINE.match, buf.getvalue().splitlines()) if m]
    return out, per


def test_single_returns_match_evaluation_and_frame_count(policies, single):
    out, per = single
    assert [r for r, _ in per] == reference_returns(policies[0][1])
    frames = gif_frames(out)
    assert len(frames) == sum(steps + 1 for _, steps in per)  # the reset frame + one per step
    assert frames.shape[1:3] == (400, 600)


def test_side_by_side_width_frames_and_returns(policies, single, tmp_path, capsys):
    (tpath, tnet), (spath, snet) = policies
    out = tmp_path / "cmp.gif"
    per, _, err = run_play(
        [str(tpath), str(spath), "--episodes", str(EPISODES), "--seed", str(SEED), "--out", str(out)], capsys
    )
    assert err == ""
    assert [r for r, _ in per["teacher"]] == reference_returns(tnet)
    assert [r for r, _ in per["student"]] == reference_returns(snet)
    lengths = list(zip((s for _, s in per["teacher"]), (s for _, s in per["student"])))
    assert any(a != b for a, b in lengths), "seeds should give episodes of different lengths (padding untested)"
    frames = gif_frames(out)
    one = gif_frames(single[0])
    assert frames.shape[2] == 2 * one.shape[2] and frames.shape[1] == one.shape[1]
    assert len(frames) == sum(max(a, b) + 1 for a, b in lengths)  # the shorter panel is padded
    # the shorter panel holds its last frame while the longer one moves on (below the label strip;
    # GIF palettes are per frame, so equal pictures may differ by a few levels)
    i = next(k for k, (a, b) in enumerate(lengths) if a != b)
    start = sum(max(a, b) + 1 for a, b in lengths[:i])
    a, b = lengths[i]
    w = one.shape[2]
    short, long_ = (slice(w, None), slice(0, w)) if b < a else (slice(0, w), slice(w, None))
    end, held = start + max(a, b), start + min(a, b)
    diff = lambda side: np.abs(frames[end, 40:, side].astype(int) - frames[held, 40:, side].astype(int)).max()
    assert diff(short) <= 8 and diff(long_) > 50


def test_max_frames_caps_recording_not_the_return(policies, tmp_path, capsys):
    out = tmp_path / "cap.gif"
    per, _, _ = run_play(
        [str(policies[0][0]), "--episodes", str(EPISODES), "--seed", str(SEED), "--max-frames", "4", "--out", str(out)],
        capsys,
    )
    assert [r for r, _ in per["teacher"]] == reference_returns(policies[0][1])
    assert len(gif_frames(out)) == EPISODES * 4


def test_mp4_or_one_line_gif_fallback(policies, tmp_path, capsys):
    try:
        import imageio_ffmpeg  # noqa: F401

        has_ffmpeg = True
    except ImportError:
        has_ffmpeg = False
    _, _, err = run_play([str(policies[1][0]), "--max-frames", "3", "--out", str(tmp_path / "run.mp4")], capsys)
    if has_ffmpeg:
        assert (tmp_path / "run.mp4").stat().st_size > 0
    else:
        assert not (tmp_path / "run.mp4").exists()
        assert len(gif_frames(tmp_path / "run.gif")) == 3
        assert err.count("\n") == 1 and err.startswith("kdrl-play: note:") and "run.gif" in err


def test_bad_policy_file_exit_2_one_line(tmp_path, capsys):
    from kdrl.cli.play import main

    (tmp_path / "notes.pt").write_text("not a checkpoint\n")
    with pytest.raises(SystemExit) as exc:
        main([str(tmp_path / "notes.pt"), "--out", str(tmp_path / "x.gif")])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1 and err.startswith("kdrl-play: error: cannot load checkpoint")
    assert not (tmp_path / "x.gif").exists()


def test_observation_images_for_envs_without_rgb_array(policies):
    """The generic fallback: any observation becomes an upscaled RGB image."""
    from kdrl.envs import make_env
    from kdrl.render import obs_to_image, play_episode, policy_greedy, rgb_frame

    for obs in (np.zeros(4), np.random.rand(10, 10, 4) > 0.7, np.random.rand(4, 84, 84), np.random.rand(20, 30)):
        img = obs_to_image(obs)
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3 and min(img.shape[:2]) >= 160
    minatar_like = np.zeros((10, 10, 4), bool)
    minatar_like[2, 3, 1] = True
    img = obs_to_image(minatar_like)
    k = img.shape[0] // 10
    assert img[2 * k, 3 * k].any() and not img[0, 0].any()  # the set cell is coloured, empty ones black

    # MinAtar's render() gives a 10x10 float image in [0, 1]: scaled to uint8 and upscaled
    small = np.zeros((10, 10, 3))
    small[4, 5] = [1.0, 0.5, 0.0]
    frame = rgb_frame(small)
    k = frame.shape[0] // 10
    assert frame.dtype == np.uint8 and frame.shape == (10 * k, 10 * k, 3) and k >= 16
    assert frame[4 * k, 5 * k].tolist() == [255, 127, 0] and not frame[0, 0].any()

    greedy, _ = policy_greedy(str(policies[0][0]))
    env = make_env("CartPole-v1")  # no render_mode: frames come from observations
    ep = play_episode(env, False, greedy, seed=SEED, max_frames=1000, every=1)
    assert len(ep.frames) == ep.steps + 1 and ep.frames[0].shape == obs_to_image(np.zeros(4)).shape
