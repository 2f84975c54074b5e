"""Shared test set-up: offline hubs, deterministic seeds, one-thread fixtures, the subprocesses' environment, the
inference tests' tiny config and pipeline, the training tests' data (plain helpers: infer_helpers.py,
video_helpers.py, training_helpers.py)."""

import contextlib
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ORACLE_DIR = ROOT / "tests" / "fixtures" / "oracle"
KEYS_DIR = ROOT / "tests" / "fixtures" / "keys"


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment of the tests' subprocesses: this one's, with one OpenMP thread, the Hugging Face hub offline,
    the repository first on PYTHONPATH (then any existing entries) and MGLD_DEBUG dropped; ``extra`` set last."""
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    env.pop("MGLD_DEBUG", None)
    env.update(extra)
    return env


def millions(params) -> float:
    """The number of elements in ``params``, in millions, to 2 decimals."""
    return round(sum(p.numel() for p in params) / 1e6, 2)


@pytest.fixture(scope="session")
def tiny_model_cfg():
    """The ``model`` section of configs/tiny.yaml."""
    from infer_helpers import TINY
    from mgld.config import load_config

    return load_config(TINY).model


@pytest.fixture(scope="session")
def oracle_cfg():
    """The oracle fixtures' model config, mapped from the authors' config names."""
    import json

    from mgld.parity.models import authors_model_config

    return authors_model_config(json.loads((ORACLE_DIR / "config.json").read_text()))


def load_oracle(name: str) -> dict:
    return torch.load(ORACLE_DIR / name, map_location="cpu", weights_only=True)


@contextlib.contextmanager
def torch_threads(count: int):
    """Run the block with ``count`` intra-op torch threads, then restore the previous number."""
    threads = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture
def one_thread():
    """One torch thread: the same float results as worker subprocesses, which run with OMP_NUM_THREADS=1."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def one_thread_module():
    """One torch thread for a whole module (``pytestmark = pytest.mark.usefixtures("one_thread_module")``). Tiny
    models gain nothing from intra-op threads, and on a busy 2-core machine OpenMP threads waiting for each other
    stall steps by seconds (measured: 0.25 s vs 3-7 s per stage-2 step)."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def cfg():
    """The inference tests' config: configs/tiny.yaml with ``infer_helpers.TINY_OVERRIDES`` (a module may define
    its own ``cfg``)."""
    from infer_helpers import TINY, TINY_OVERRIDES
    from mgld.config import load_config

    return load_config(TINY, TINY_OVERRIDES)


@pytest.fixture(scope="module")
def pipe(cfg):
    """A tiny random-weight pipeline built from ``cfg`` (a module may define its own ``pipe``)."""
    from mgld.pipeline.pipeline import MGLDPipeline

    return MGLDPipeline.from_config(cfg)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """The training tests' data, one copy per module: ``training_helpers.write_training_data`` (2 moving-texture
    sequences x 10 frames of 32x32, 20 clips, with bicubic LQ frames and random latents; a module may define its
    own ``data``)."""
    from training_helpers import write_training_data

    return write_training_data(tmp_path_factory.mktemp("data"))


@pytest.fixture
def no_model_building(monkeypatch):
    """Any real (non-``meta``) network construction in the training runner fails the test (the training tests'
    check that inputs are validated first)."""
    import mgld.training.runner as runner

    def guard(name, real):
        def build(*args, **kwargs):
            if torch.get_default_device().type != "meta":  # shape checks on the meta device are allowed
                raise AssertionError(f"{name} was called before the inputs were checked")
            return real(*args, **kwargs)

        return build

    for name in ("build_denoiser", "build_vae", "init_denoiser_from_sd", "init_vae_from_sd", "load_denoiser",
                 "load_vae"):
        monkeypatch.setattr(runner, name, guard(name, getattr(runner, name)))
