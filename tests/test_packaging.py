"""Packaging: pyproject's explicit package list and extras, and the installed wheel (not editable) at work.

The wheel is built once per session without build isolation (offline) from a copy of the sources, installed with
``pip install --no-deps --target`` (dependencies come from the current environment) and run from a folder that is
not the repository, with only the installed copy on the path.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT
from mgld._extras import OPTIONAL_MODULES
from mgld.cli._errors import COMMAND_EXTRA

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SAMPLE = ROOT / "mgld" / "assets" / "sample_lr"
# modules that only the extras install: the inference path must not import them
EXTRA_ONLY = ("pytorch_lightning", "pyiqa", "matplotlib", "lpips", "open_clip", "pandas", "datasets")


def _requirement_names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\s<>=!~\[;]", r, maxsplit=1)[0].lower().replace("_", "-") for r in requirements}


def test_package_list_covers_every_package_folder():
    setuptools = PYPROJECT["tool"]["setuptools"]
    listed = set(setuptools["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "mgld").rglob("__init__.py")}
    assert found - listed == set(), "add these packages to [tool.setuptools] packages"
    # configs/ is mapped to mgld.configs; each of its sub-folders is a package of its own
    assert setuptools["package-dir"] == {"mgld.configs": "configs"}
    config_dirs = {"mgld.configs" + "".join(f".{part}" for part in p.relative_to(ROOT / "configs").parts)
                   for p in [ROOT / "configs", *[d for d in (ROOT / "configs").rglob("*") if d.is_dir()]]}
    assert config_dirs <= listed
    assert listed - found - config_dirs == set(), "listed packages that do not exist"


def test_extras_split_inference_training_and_metrics():
    base = _requirement_names(PYPROJECT["project"]["dependencies"])
    extras = {k: _requirement_names(v) for k, v in PYPROJECT["project"]["optional-dependencies"].items()}
    assert set(extras) == {"train", "eval", "dev"}
    for needed in ("torch", "diffusers", "av", "safetensors", "huggingface-hub", "opencv-python", "lightning-fabric"):
        assert needed in base
    assert not base & {"pytorch-lightning", "tensorboard", "lpips", "pyiqa", "matplotlib", "pytest", "ruff"}
    assert {"pytorch-lightning", "tensorboard", "lpips"} <= extras["train"]
    assert {"pyiqa", "lpips"} <= extras["eval"]
    assert {"mgld", "pytest", "ruff"} <= extras["dev"]
    assert "mgld[train,eval]" in PYPROJECT["project"]["optional-dependencies"]["dev"]
    # the error handler's table of optional modules names extras that really install them
    for module, (distribution, names) in OPTIONAL_MODULES.items():
        for extra in names:
            pool = extras[extra] | (extras["train"] | extras["eval"] if extra == "dev" else set())
            assert distribution.lower().replace("_", "-") in pool, (module, extra)
    assert set(COMMAND_EXTRA.values()) <= set(extras)
    assert PYPROJECT["project"]["scripts"] == {"mgld": "mgld.cli:main"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The mgld wheel, built offline from a copy of the sources (the repository stays clean)."""
    pytest.importorskip("setuptools", minversion="70.1", reason="building the wheel needs setuptools >= 70.1")
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "mgld", src / "mgld", ignore=ignore)
    shutil.copytree(ROOT / "configs", src / "configs", ignore=ignore)
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                          "-w", str(tmp / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    (built,) = (tmp / "dist").glob("mgld-*.whl")
    return built


def test_wheel_holds_the_configs_the_sample_clip_and_the_command(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = {p.relative_to(ROOT / "configs").as_posix() for p in (ROOT / "configs").rglob("*.yaml")}
    assert {"tiny.yaml", "infer.yaml", "stage1.yaml", "stage2.yaml", "model/mgld_sd21.yaml"} <= configs
    assert {f"mgld/configs/{c}" for c in configs} <= names
    assert {f"mgld/assets/sample_lr/{p.name}" for p in SAMPLE.glob("*.png")} <= names
    assert len(list(SAMPLE.glob("*.png"))) == 8
    assert {"mgld/cli/__init__.py", "mgld/cli/_errors.py", "mgld/__main__.py"} <= names
    assert not any(n.startswith(("tests/", "scripts/")) for n in names)
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "mgld = mgld.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_installed_wheel_runs_the_smoke_command_from_outside_the_repository(wheel, tmp_path):
    target = tmp_path / "site"
    out = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile", "-q",
                          "--target", str(target), str(wheel)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = dict(os.environ, PYTHONPATH=str(target), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1",
               PYTHONPROFILEIMPORTTIME="1")  # stderr lists every imported module
    env.pop("MGLD_DEBUG", None)
    where = subprocess.run([sys.executable, "-c", "import json, mgld, mgld.config as c; "
                            "print(json.dumps([mgld.__file__, str(c.configs_dir())]))"],
                           capture_output=True, text=True, timeout=120, cwd=work, env=env)
    package, configs = json.loads(where.stdout)
    assert Path(package).is_relative_to(target) and Path(configs) == target / "mgld" / "configs"

    # the console script the wheel installs, on the bundled sample clip with the packaged tiny config
    run = subprocess.run([str(target / "bin" / "mgld"), "infer", "--config", "tiny", "--input", "sample",
                          "--output", "sr", "--steps", "1", "--quiet"],
                         capture_output=True, text=True, timeout=600, cwd=work, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    frames = sorted((work / "sr").glob("*.png"))
    assert [p.name for p in frames] == sorted(p.name for p in SAMPLE.glob("*.png"))
    lr = np.asarray(Image.open(SAMPLE / frames[0].name))
    for path in frames:
        sr = np.asarray(Image.open(path))
        assert sr.dtype == np.uint8 and sr.shape == (4 * lr.shape[0], 4 * lr.shape[1], 3)
        assert sr.std() > 1.0  # an image, not a constant
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in run.stderr.splitlines()
                if line.startswith("import time:")}
    assert {"torch", "diffusers", "mgld"} <= imported  # the listing works
    assert imported.isdisjoint(EXTRA_ONLY), sorted(imported & set(EXTRA_ONLY))
