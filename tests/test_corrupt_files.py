"""Corrupt and partial files wherever kdrl reads them: policy files (kdrl-export, kdrl-play,
teacher.checkpoint), Lightning checkpoints (resume), exports, results.json. Each reader recovers
(an older checkpoint) or names the file and what is wrong with it in one line."""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from kdrl.errors import one_line
from kdrl.io import CheckpointError, load_policy, save_policy
from kdrl.nets import MLP
from tests.zygote import run_app

ROOT = Path(__file__).resolve().parents[1]
NET_CFG = {"_target_": "kdrl.nets.MLP", "width": 16, "depth": 1, "dueling": False, "hidden": None}
ENV = {k: v for k, v in os.environ.items() if k not in ("KDRL_DEBUG", "HYDRA_FULL_ERROR")}


def flip_byte(data: bytes, at: int) -> bytes:
    b = bytearray(data)
    b[at] ^= 0xFF
    return bytes(b)


def tensor_offset(path: Path) -> int:
    """Where the first tensor's bytes start in a torch zip file (a flip there changes a weight)."""
    import zipfile

    with zipfile.ZipFile(path) as z:
        info = next(i for i in z.infolist() if "/data/" in i.filename)
    raw = path.read_bytes()
    name_len = int.from_bytes(raw[info.header_offset + 26 : info.header_offset + 28], "little")
    extra_len = int.from_bytes(raw[info.header_offset + 28 : info.header_offset + 30], "little")
    return info.header_offset + 30 + name_len + extra_len


@pytest.fixture(scope="module")
def bad(tmp_path_factory) -> dict[str, tuple[Path, str]]:
    """Damaged policy files, each with the words its one-line error must contain."""
    d = tmp_path_factory.mktemp("bad")
    torch.manual_seed(0)
    good = d / "good.pt"
    save_policy(good, MLP((4,), 2, 16, 1), NET_CFG, "CartPole-v1", (4,), 2)
    raw = good.read_bytes()
    (d / "truncated.pt").write_bytes(raw[: len(raw) * 2 // 3])
    (d / "empty.pt").write_bytes(b"")
    (d / "random.pt").write_bytes(os.urandom(2048).replace(b"PK", b"pk").replace(b"\x80", b"\x81"))
    (d / "results.pt").write_text(json.dumps({"kind": "teacher", "status": "ok"}))
    (d / "folder.pt").mkdir()
    (d / "bitflip.pt").write_bytes(flip_byte(raw, tensor_offset(good) + 3))  # a weight changes, the zip is whole
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(torch.nn.Linear(4, 2), torch.zeros(1, 4))
    torch.jit.save(traced, str(d / "student.torchscript.pt"))
    (d / "student.onnx").write_bytes(b"\x08\x07\x12\x07pytorch\x1a\x052.13.0" + os.urandom(64))
    return {
        "truncated": (d / "truncated.pt", "truncated or corrupt"),
        "empty": (d / "empty.pt", "empty (0 bytes)"),
        "random": (d / "random.pt", "not a torch checkpoint"),
        "json": (d / "results.pt", "JSON file, not a torch checkpoint"),
        "directory": (d / "folder.pt", "is a directory"),
        "bitflip": (d / "bitflip.pt", "checksum mismatch"),
        "torchscript": (d / "student.torchscript.pt", "TorchScript export, not a kdrl policy file"),
        "onnx": (d / "student.onnx", "ONNX model, not a kdrl checkpoint"),
    }


CASES = ["truncated", "empty", "random", "json", "directory", "bitflip", "torchscript", "onnx"]


# ---- policy files --------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", CASES)
def test_load_policy_names_the_file_and_what_is_wrong(bad, case):
    path, expected = bad[case]
    with pytest.raises(CheckpointError) as exc:
        load_policy(path)
    msg = one_line(exc.value)
    assert str(path) in msg and expected in msg, msg
    assert "weights_only` set to `False`" not in msg  # never torch's advice to unpickle unsafely


def test_a_whole_policy_file_still_loads(bad):
    good = bad["truncated"][0].with_name("good.pt")
    assert load_policy(good, "CartPole-v1", (4,), 2)["format"] == "kdrl-qnet/1"


@pytest.mark.parametrize("prog", ["export", "play"])
def test_export_and_play_fail_in_one_line_exit_2(bad, prog, tmp_path, capsys):
    import importlib

    main = importlib.import_module(f"kdrl.cli.{prog}").main
    for case in CASES:
        path, expected = bad[case]
        argv = [str(path), "--out", str(tmp_path / ("out" if prog == "export" else "x.gif"))]
        with pytest.raises(SystemExit) as exc:
            main(argv)
        err = capsys.readouterr().err
        assert exc.value.code == 2, (case, err)
        assert err.count("\n") == 1 and err.startswith(f"kdrl-{prog}: error: "), (case, err)
        assert str(path) in err and expected in err, (case, err)
    assert not (tmp_path / "x.gif").exists() and not list(tmp_path.glob("out/*"))


@pytest.mark.parametrize("case", ["truncated", "empty", "random", "json", "bitflip"])
def test_teacher_checkpoint_of_distill_names_the_file(bad, case, tmp_path):
    """teacher.checkpoint goes through kdrl.foreign's format detection, then load_policy."""
    from kdrl.runs.distill import distill_student
    from tests.helpers import compose_cfg

    path, expected = bad[case]
    cfg = compose_cfg("distill", ["debug=fast", f"teacher.checkpoint={path}"])
    with pytest.raises(CheckpointError) as exc:
        distill_student(cfg, tmp_path)
    msg = one_line(exc.value)
    assert str(path) in msg and expected in msg, msg
    assert json.loads((tmp_path / "results.json").read_text())["status"] == "failed"


def test_corrupt_torchscript_teacher_is_named(bad, tmp_path):
    """A TorchScript export read back as a teacher: truncated or bit-flipped, caught before torch.jit.load."""
    from kdrl.foreign import detect_format

    ts = bad["torchscript"][0]
    assert detect_format(ts) == "torchscript"
    raw = ts.read_bytes()
    (tmp_path / "cut.pt").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "flip.pt").write_bytes(flip_byte(raw, tensor_offset(ts) + 1))
    for name, expected in (("cut.pt", "truncated or corrupt"), ("flip.pt", "checksum mismatch")):
        with pytest.raises(CheckpointError) as exc:
            detect_format(tmp_path / name)
        msg = one_line(exc.value)
        assert str(tmp_path / name) in msg and expected in msg, msg


def test_end_to_end_one_line_no_traceback(bad, tmp_path):
    """The console commands as a user runs them (``python -m kdrl.cli.<app>``, forked from a warm process:
    tests/zygote.py): exit 2, one error line naming the file, no traceback."""
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"status": "ok", "kind": "teacher", "env_id": "CartPole-v1", "seed": 0}))
    runs = {
        "kdrl-export": (["export", str(bad["empty"][0]), "--out", str(tmp_path / "o")], bad["empty"]),
        "kdrl-play": (["play", str(bad["bitflip"][0]), "--out", str(tmp_path / "p.gif")], bad["bitflip"]),
        "kdrl-show": (["show", str(results)], (results, "has no 'params' field")),
        "kdrl-distill": (
            ["distill", "debug=fast", f"teacher.checkpoint={bad['json'][0]}", f"hydra.run.dir={tmp_path}/d"],
            bad["json"],
        ),
    }
    for prog, (argv, (path, expected)) in runs.items():
        proc = run_app(argv[0], argv[1:], env=ENV, cwd=ROOT)
        out, err = proc.stdout, proc.stderr
        assert proc.returncode == 2, (prog, err[-2000:])
        assert "Traceback" not in out + err, (prog, err[-2000:])
        errors = [line for line in err.splitlines() if line.startswith(f"{prog}: error: ")]
        assert len(errors) == 1 and str(path) in errors[0] and expected in errors[0], (prog, err[-2000:])
    assert json.loads((tmp_path / "d" / "results.json").read_text())["status"] == "failed"


# ---- exports -------------------------------------------------------------------------------------------
def test_an_export_that_cannot_be_read_back_is_refused_and_named(bad, tmp_path, capsys, monkeypatch):
    """A damaged write of an export (here: half a TorchScript file) is caught reading it back."""
    import kdrl.export as kx
    from kdrl.cli.export import main

    real = kx.WRITERS["torchscript"]

    def half_written(net, shape, path):
        real(net, shape, path)
        path.write_bytes(path.read_bytes()[:1000])
        return path

    monkeypatch.setitem(kx.WRITERS, "torchscript", half_written)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        main([str(bad["truncated"][0].with_name("good.pt")), "--out", str(out), "--formats", "torchscript"])
    err = capsys.readouterr().err
    assert exc.value.code == 1, err
    assert err.count("\n") == 1 and f"torchscript export {out / 'good.torchscript.pt'} cannot be read back" in err
    assert list(out.iterdir()) == []  # nothing a deployment could pick up


# ---- results.json --------------------------------------------------------------------------------------
def test_kdrl_show_names_a_results_file_with_a_field_of_the_wrong_type(tmp_path, capsys):
    from kdrl.cli.show import main

    body = {
        "status": "ok",
        "kind": "teacher",
        "env_id": "CartPole-v1",
        "seed": 0,
        "params": 100,
        "eval_return_mean": "n/a",
        "eval_return_std": 0.0,
        "eval_returns": [1.0],
        "env_steps": 1,
        "grad_steps": 1,
        "wall_time_s": 1.0,
        "sps": 1.0,
        "checkpoint": "x",
    }
    (tmp_path / "results.json").write_text(json.dumps(body))
    with pytest.raises(SystemExit) as exc:
        main([str(tmp_path / "results.json")])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1
    assert err.startswith(f"kdrl-show: error: {tmp_path / 'results.json'} has a field of the wrong type")


@pytest.mark.parametrize(
    "content", [b"[1, 2]", b'{"status": "ok", "con', b"", b"\xff\xfe\x00garbage"], ids=["list", "cut", "empty", "bytes"]
)
def test_job_runner_reads_a_damaged_results_file_as_unfinished(tmp_path, content, caplog):
    """completed_results (skip a finished run) and resume_checkpoint (was it finished?) go on with
    one warning naming the file, where a JSON list used to crash them."""
    from kdrl.runs.job import completed_results, resume_checkpoint

    (tmp_path / "results.json").write_bytes(content)
    cfg = OmegaConf.create({"skip_completed": True, "resume": True})
    with caplog.at_level(logging.WARNING, logger="kdrl"):
        assert completed_results(tmp_path, cfg) is None
        assert resume_checkpoint(cfg, tmp_path) is None
    lines = [r.getMessage() for r in caplog.records if "results.json" in r.getMessage()]
    assert len(lines) == 1 and str(tmp_path / "results.json") in lines[0] and "unfinished" in lines[0], lines


def test_multitask_table_names_damaged_results_files_and_goes_on(tmp_path, capsys):
    from kdrl.cli.multitask_table import collect_multitask, main

    for name, content in (("list", b"[1]"), ("bytes", b"\xff\xfe\x00"), ("cut", b'{"kind": "multi')):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_bytes(content)
    df = collect_multitask([tmp_path])
    assert list(df["status"]) == ["unreadable"] * 3
    assert main([str(tmp_path)]) == 0
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3 and all(line.startswith("kdrl-multitask-table: unreadable: ") for line in err), err
    assert {Path(line.split(": ")[2]).parent.name for line in err} == {"list", "bytes", "cut"}


# ---- Lightning checkpoints (resume) --------------------------------------------------------------------
def _whole_ckpt(path: Path, step: int) -> None:
    torch.save({"global_step": step, "state_dict": {"w": torch.ones(64)}}, path)


def _damage(path: Path, how: str) -> None:
    raw = path.read_bytes()
    if how == "truncated":
        path.write_bytes(raw[: len(raw) // 2])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "bitflip":
        path.write_bytes(flip_byte(raw, tensor_offset(path) + 5))


@pytest.mark.parametrize("how", ["truncated", "empty", "bitflip"])
def test_resume_skips_a_damaged_last_ckpt_for_the_previous_one(tmp_path, how, caplog):
    from kdrl.runs.job import resume_checkpoint

    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    _whole_ckpt(ckpts / "last.ckpt", 2)
    _whole_ckpt(ckpts / "prev.ckpt", 1)
    _damage(ckpts / "last.ckpt", how)
    with caplog.at_level(logging.INFO, logger="kdrl"):
        chosen = resume_checkpoint(OmegaConf.create({"resume": True}), tmp_path)
    assert chosen == str(ckpts / "prev.ckpt")
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and str(ckpts / "last.ckpt") in warned[0] and "resuming from prev.ckpt" in warned[0]
    assert (ckpts / "last.ckpt.corrupt").exists() and not (ckpts / "last.ckpt").exists()  # never tried again


def test_resume_with_no_whole_checkpoint_starts_afresh_in_one_line(tmp_path, caplog):
    from kdrl.runs.job import resume_checkpoint

    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    _whole_ckpt(ckpts / "last.ckpt", 2)
    _damage(ckpts / "last.ckpt", "truncated")
    with caplog.at_level(logging.INFO, logger="kdrl"):
        assert resume_checkpoint(OmegaConf.create({"resume": True}), tmp_path) is None
    msgs = [r.getMessage() for r in caplog.records]
    assert len(msgs) == 1 and str(ckpts / "last.ckpt") in msgs[0]
    assert "truncated or corrupt" in msgs[0] and "starting afresh" in msgs[0]


def test_a_run_whose_last_ckpt_is_damaged_resumes_from_the_previous_one(tmp_path, monkeypatch, caplog):
    """A run stops after its second checkpoint (600 and 1200 env steps); its last.ckpt is then cut
    short (a partial copy, a crash before the data hit the disk). The rerun resumes from the 600-step
    checkpoint kept as prev.ckpt (the first evaluation past 600 steps), finishes, and drops prev.ckpt."""
    from kdrl.callbacks import GreedyEvaluation
    from kdrl.runs.teacher import train_teacher
    from tests.helpers import compose_cfg

    cfg = compose_cfg("train", ["debug=fast", "algo.total_timesteps=1800", "eval.freq=600", "algo.learning_starts=300"])
    real = GreedyEvaluation.evaluate

    def stop_after_1200(self, trainer, pl_module):
        record = real(self, trainer, pl_module)
        if pl_module.env_steps >= 1200:
            raise RuntimeError("stopped (the test's stand-in for a kill)")
        return record

    monkeypatch.setattr(GreedyEvaluation, "evaluate", stop_after_1200)
    with pytest.raises(RuntimeError, match="stand-in for a kill"):
        train_teacher(cfg, tmp_path)
    monkeypatch.undo()
    ckpts = tmp_path / "checkpoints"
    assert (ckpts / "prev.ckpt").is_file() and (ckpts / "last.ckpt").is_file()
    raw = (ckpts / "last.ckpt").read_bytes()
    (ckpts / "last.ckpt").write_bytes(raw[: len(raw) // 3])
    with caplog.at_level(logging.WARNING, logger="kdrl"):
        res = train_teacher(cfg, tmp_path)
    assert res["status"] == "ok" and res["env_steps"] == 1800
    assert 600 <= res["resumed_from_env_steps"] < 1200  # the first checkpoint, not a fresh start
    warned = [r.getMessage() for r in caplog.records if "unusable checkpoint" in r.getMessage()]
    assert len(warned) == 1 and str(ckpts / "last.ckpt") in warned[0]
    assert not (ckpts / "prev.ckpt").exists()  # a finished run keeps one full checkpoint
    assert not list(tmp_path.rglob("*.tmp"))
