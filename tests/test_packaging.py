"""kdrl as installed from its wheel, away from the source tree: the Hydra configs (the repo's conf/)
ship inside the package as kdrl/conf, and the console scripts run from any directory.

The slow test builds an sdist and a wheel from a copy of the files the build needs, installs the
wheel (no deps) into a fresh venv whose dependencies come from this interpreter's site-packages
through a .pth file (so torch and friends are not reinstalled, and this venv's editable-install
hooks for kdrl are not loaded), checks that kdrl imports from that venv, then runs the console
scripts from a temporary directory.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

import kdrl
from kdrl.config import CONF_DIR

ROOT = Path(__file__).resolve().parents[1]
BUILD_INPUTS = ("pyproject.toml", "README.md", "MANIFEST.in", "kdrl", "conf", "hydra_plugins")


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_package_list_covers_every_kdrl_package():
    """pyproject.toml lists packages by hand (find cannot map conf/ to kdrl.conf): a new kdrl
    subpackage must be added there or the wheel silently lacks it."""
    st = _pyproject()["tool"]["setuptools"]
    # kdrl's packages, and its Hydra sweeper plugin (Hydra instantiates plugins only from hydra_plugins.*)
    on_disk = {
        ".".join(d.relative_to(ROOT).parts)
        for top in ("kdrl", "hydra_plugins")
        for d in [ROOT / top, *(ROOT / top).rglob("*")]
        if d.is_dir() and d.name != "__pycache__" and any(d.glob("*.py"))
    }
    plugins = {".".join(d.relative_to(ROOT).parts) for d in (ROOT / "hydra_plugins").iterdir() if any(d.glob("*.py"))}
    assert set(st["packages"]) == on_disk | {"kdrl.conf"} | plugins
    assert st["package-dir"] == {"kdrl.conf": "conf"}
    assert "**/*.yaml" in st["package-data"]["kdrl.conf"]


def test_source_checkout_uses_top_level_conf():
    """A source checkout or editable install reads conf/ itself, so edits there need no reinstall."""
    if Path(kdrl.__file__).resolve().parent != ROOT / "kdrl":
        pytest.skip("kdrl is not imported from this source tree")
    assert Path(CONF_DIR).is_absolute()
    assert Path(CONF_DIR) == ROOT / "conf"


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _ok(proc: subprocess.CompletedProcess, what: str) -> None:
    assert proc.returncode == 0, f"{what} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


def _build_wheel(tmp: Path, env: dict[str, str]) -> tuple[Path, Path]:
    """(wheel, copied source): sdist from a copy of the build inputs, then the wheel from the sdist
    (as `python -m build` does), so a file the sdist misses is missing from the wheel too."""
    src, dist = tmp / "src", tmp / "dist"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in BUILD_INPUTS:
        p = ROOT / name
        if p.is_dir():
            shutil.copytree(p, src / name, ignore=ignore)
        elif p.is_file():
            shutil.copy2(p, src / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "wheel", "--no-deps", "-q", "-w", dist]
    if importlib.util.find_spec("setuptools") is not None:  # build offline with this venv's setuptools
        proc = _run(
            [sys.executable, "-c", f"from setuptools import build_meta as b; print(b.build_sdist({str(dist)!r}))"],
            src,
            env,
            120,
        )
        _ok(proc, "building the sdist")
        sdist = dist / proc.stdout.strip().splitlines()[-1]
        with tarfile.open(sdist) as tf:
            names = tf.getnames()
        assert any(n.endswith("/conf/train.yaml") for n in names), "the sdist lacks conf/"
        _ok(_run([*pip, "--no-build-isolation", sdist], tmp, env, 180), "building the wheel")
    else:  # pip fetches setuptools from the index into an isolated build env
        _ok(_run([*pip, src], tmp, env, 300), "building the wheel")
    (wheel,) = dist.glob("kdrl-*.whl")
    return wheel, src


def test_scripts_neither_patch_sys_path_nor_import_each_other():
    """scripts/ holds standalone programs: kdrl comes from the installed package (no ``sys.path``
    patch), and no script imports another script or a test helper (code two scripts share lives in
    kdrl). Running a plain loop in its own process is not an import."""
    scripts = ROOT / "scripts"
    files = sorted(scripts.rglob("*.py"))
    own = {p.stem for p in files} | {p.name for p in scripts.rglob("*") if p.is_dir()} | {"scripts", "tests"}
    problems = []
    for path in files:
        text = path.read_text()
        problems += [f"{path.relative_to(ROOT)}: {s}" for s in ("sys.path.insert", "sys.path.append") if s in text]
        for node in ast.walk(ast.parse(text, str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""] if node.level == 0 else ["." * node.level + (node.module or "")]
            else:
                continue
            problems += [
                f"{path.relative_to(ROOT)}:{node.lineno}: imports {n}"
                for n in names
                if n.startswith(".") or n.split(".")[0] in own
            ]
    assert files and not problems, "\n".join(problems)


def test_installed_wheel_runs_outside_the_source_tree(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(
        PYTHONNOUSERSITE="1",
        WANDB_MODE="disabled",
        KDRL_NO_PROGRESS="1",
        HYDRA_FULL_ERROR="1",
        KDRL_CACHE=str(tmp_path / "cache"),
        PIP_NO_INPUT="1",
    )
    wheel, src = _build_wheel(tmp_path, env)
    with zipfile.ZipFile(wheel) as zf:
        shipped = {n[len("kdrl/conf/") :] for n in zf.namelist() if n.startswith("kdrl/conf/")}
        assert "hydra_plugins/kdrl_sweeper/listed_sweeper.py" in zf.namelist()  # kdrl-study's stages need it
    assert shipped == {p.relative_to(src / "conf").as_posix() for p in (src / "conf").rglob("*.yaml")}
    with zipfile.ZipFile(wheel) as zf:
        assert "hydra_plugins/kdrl_search/kdrl_optuna_sweeper.py" in zf.namelist()  # hydra/sweeper=kdrl_optuna
        assert not any(n.startswith("hydra_plugins/__init__") for n in zf.namelist())  # a namespace package

    venv = tmp_path / "venv"
    _ok(_run([sys.executable, "-m", "venv", "--without-pip", venv], tmp_path, env, 120), "creating the venv")
    bin_dir = venv / ("Scripts" if os.name == "nt" else "bin")
    py = bin_dir / ("python.exe" if os.name == "nt" else "python")
    site = Path(
        _run([py, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], tmp_path, env, 60).stdout.strip()
    )
    # dependencies (and pip) from this interpreter's site-packages: plain path lines, so its .pth
    # files (the editable kdrl finder among them) are not run in the new venv
    deps = dict.fromkeys(sysconfig.get_path(k) for k in ("purelib", "platlib"))
    (site / "_kdrl_test_deps.pth").write_text("".join(f"{d}\n" for d in deps))
    _ok(
        _run(
            [
                py,
                "-m",
                "pip",
                "--disable-pip-version-check",
                "install",
                "-q",
                "--no-deps",
                "--no-index",
                "--ignore-installed",
                "--no-compile",
                wheel,
            ],
            tmp_path,
            env,
            180,
        ),
        "installing the wheel",
    )

    work = tmp_path / "elsewhere"
    work.mkdir()
    probe = _run(
        [py, "-c", "import json, kdrl, kdrl.config; print(json.dumps([kdrl.__file__, kdrl.config.CONF_DIR]))"],
        work,
        env,
        120,
    )
    _ok(probe, "importing kdrl")
    kdrl_file, conf_dir = json.loads(probe.stdout.strip().splitlines()[-1])
    assert Path(kdrl_file).parent == site / "kdrl", f"kdrl imported from {kdrl_file}, not the installed wheel"
    assert Path(conf_dir) == site / "kdrl" / "conf" and (Path(conf_dir) / "train.yaml").is_file()

    train = _run([bin_dir / "kdrl-train", "debug=fast", f"hydra.run.dir={work / 'train'}"], work, env, 240)
    _ok(train, "kdrl-train debug=fast")
    assert json.loads((work / "train" / "results.json").read_text())["status"] == "ok"

    # trains its CartPole teacher on demand (into KDRL_CACHE), composing kdrl-train's config with debug=fast
    distill = _run([bin_dir / "kdrl-distill", "debug=fast", f"hydra.run.dir={work / 'distill'}"], work, env, 300)
    _ok(distill, "kdrl-distill debug=fast")
    res = json.loads((work / "distill" / "results.json").read_text())
    assert res["status"] == "ok"
    assert Path(res["teacher_checkpoint"]).resolve().is_relative_to((tmp_path / "cache").resolve())

    # a declared study, planned from the package's conf/study/ (no job runs: --status only)
    study = _run([bin_dir / "kdrl-study", "study=debug", f"dir={work / 'study'}", "--status"], work, env, 120)
    _ok(study, "kdrl-study study=debug --status")
    assert "4 jobs" in study.stdout and (work / "study" / "index.json").is_file()

    show = _run(
        [bin_dir / "kdrl-show", work / "train" / "results.json", work / "distill" / "results.json"], work, env, 120
    )
    _ok(show, "kdrl-show")
    assert show.stdout.count("CartPole-v1") == 2
    table = _run([bin_dir / "kdrl-multitask-table", work], work, env, 120)  # no multitask runs here
    assert table.returncode == 2 and table.stderr.strip() and "Traceback" not in table.stderr, table.stderr
