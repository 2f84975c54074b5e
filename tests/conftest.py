"""Shared test set-up: offline hubs, deterministic seeds, few CPU threads."""

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


@pytest.fixture(scope="session")
def tiny_model_cfg():
    """The ``model`` section of configs/tiny.yaml."""
    from mgld.config import load_config

    return load_config(ROOT / "configs" / "tiny.yaml").model


@pytest.fixture(scope="session")
def oracle_cfg():
    """The oracle fixtures' model config, mapped from the authors' config names."""
    import json

    from mgld.parity.models import authors_model_config

    return authors_model_config(json.loads((ORACLE_DIR / "config.json").read_text()))


def load_oracle(name: str) -> dict:
    return torch.load(ORACLE_DIR / name, map_location="cpu", weights_only=True)
