import os
import shutil
import subprocess
from pathlib import Path

import pytest

from kdrl.resources import set_threads

ROOT = Path(__file__).resolve().parents[1]

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("KDRL_NO_PROGRESS", "1")


# Tests that bring up a real cluster (the session's SLURM, a local Ray) run on one xdist worker, one
# after the other: two workers would each start (and stop) the same single-node cluster.
CLUSTER_WORDS = ("slurm", "ray")


def pytest_collection_modifyitems(config, items):
    for item in items:
        uses_slurm = "slurm" in getattr(item, "fixturenames", ())
        if uses_slurm or any(w in item.name.lower().split("_") for w in CLUSTER_WORDS):
            item.add_marker(pytest.mark.xdist_group("cluster"))


@pytest.fixture(autouse=True)
def _one_thread():
    # torch and numpy's BLAS alike: a numpy action at one BLAS thread per core took 3x (this machine) to 90x longer
    # whenever the other worker was busy (kdrl.resources.set_threads)
    set_threads(1)
    yield


@pytest.fixture(scope="session")
def slurm():
    """A real single-node SLURM (scripts/slurm_up.sh; CI runs as root). Stopped at the end only if
    this fixture started it: a cluster that was already up is left as it was."""
    if os.geteuid() != 0 and shutil.which("sinfo") is None:
        pytest.skip("starting a SLURM cluster needs root (CI runs as root)")
    up = subprocess.run(["bash", str(ROOT / "scripts" / "slurm_up.sh")], capture_output=True, text=True, timeout=900)
    assert up.returncode == 0, up.stdout + up.stderr
    yield
    if "already running" not in up.stdout:
        subprocess.run(["bash", str(ROOT / "scripts" / "slurm_down.sh")], capture_output=True, text=True, timeout=60)
