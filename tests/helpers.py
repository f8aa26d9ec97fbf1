"""Compose kdrl's real Hydra configs in tests."""

from __future__ import annotations

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from kdrl.config import CONF_DIR


def compose_cfg(config_name: str, overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        return compose(config_name, overrides=overrides)


def wandb_records(path):
    """The complete records of an offline W&B run file (``offline-run-*/run-*.wandb``), read as ``wandb sync``
    reads them: W&B's LevelDB-style log (a 7-byte ``:W&B`` header, then 32 KiB blocks of chunks, each
    with a 7-byte header: crc32, length, type full/first/middle/last) of ``wandb_internal_pb2.Record``s
    (wandb >= 0.2x ships no Python reader of its own). The file may still be being written, so the read
    stops at the first chunk not yet wholly on disk (past the end, or its crc not matching yet)."""
    import struct
    import zlib
    from pathlib import Path

    from wandb.proto import wandb_internal_pb2 as pb

    block = 32768
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path}: not a W&B run file"
    pos, buf = 7, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0 and length == 0:  # zero padding to the block's end
            pos += left
            continue
        chunk = data[pos + 7 : pos + 7 + length]
        if len(chunk) < length or zlib.crc32(chunk, zlib.crc32(bytes([kind]))) != crc:
            return  # a torn tail: the writer is mid-chunk
        pos += 7 + length
        buf = chunk if kind in (1, 2) else buf + chunk
        if kind in (1, 4):  # full, last
            record = pb.Record()
            record.ParseFromString(buf)
            yield record


def wandb_run_summary(run_dir):
    """An offline run dir's run record (project, group, job type, name), config, logged keys and
    summary, from its ``run-*.wandb`` file: {"run": Record.run, "config": {key: json}, "history":
    {key: json}, "summary": {key: json}}."""
    import json
    import time
    from pathlib import Path

    (path,) = Path(run_dir).glob("run-*.wandb")
    deadline = time.time() + 60.0  # W&B's service may still be writing the file after finish() returned
    while not any(r.WhichOneof("record_type") == "exit" for r in wandb_records(path)):
        assert time.time() < deadline, f"{path}: no exit record 60 s after the run finished"
        time.sleep(0.2)
    out = {"run": None, "config": {}, "history": {}, "summary": {}}
    for record in wandb_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            out["run"] = record.run
            out["config"].update({i.key: json.loads(i.value_json) for i in record.run.config.update})
        elif kind == "config":
            out["config"].update({i.key: json.loads(i.value_json) for i in record.config.update})
        elif kind == "history":
            out["history"].update(
                {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item}
            )
        elif kind == "summary":
            out["summary"].update(
                {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.summary.update}
            )
    return out


def budget_frame():
    """A budget sweep's results: two student sizes at four budgets (24k to 192k updates), three seeds a point
    (the level -0.01, +0, +0.01), one rising to a plateau (rusu_7) and one still rising (rusu_4)."""
    import pandas as pd

    rows = []
    for size, levels in [("rusu_7", [0.5, 0.8, 0.9, 0.9]), ("rusu_4", [0.2, 0.4, 0.6, 0.8])]:
        for k, level in enumerate(levels):
            for e in (-0.01, 0.0, 0.01):
                rows.append({"env_id": "MinAtar/Asterix-v1", "student_size": size, "grad_steps": 24_000 * 2**k,
                             "normalized_score": level + e, "job_wall_time_s": 60.0 * 2**k})  # fmt: skip
    return pd.DataFrame(rows)


def kill_after_checkpoint(proc, run_dir, env_steps: int, timeout_s: float = 240.0) -> int:
    """SIGKILL the process group of ``proc`` (started with ``start_new_session=True``) once its run's
    ``checkpoints/last_policy.pt`` is at ``env_steps`` or later; returns the env step it saw. Asserts the
    run was killed, not finished first."""
    import os
    import signal
    import time
    from pathlib import Path

    import torch

    policy, seen, deadline = Path(run_dir) / "checkpoints" / "last_policy.pt", -1, time.time() + timeout_s
    while proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
        try:
            seen = torch.load(policy, weights_only=True)["extra"]["env_steps"]
        except Exception:
            continue
        if seen >= env_steps:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            break
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    return seen
