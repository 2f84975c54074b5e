"""Shared set-up of the inference tests on disk (test_infer, test_resume, test_multiprocess): the tiny config, frame
names, config edits. The ``cfg`` / ``pipe`` fixtures built from them are in conftest.py."""

from dataclasses import replace
from pathlib import Path

from conftest import ROOT

TINY = ROOT / "configs" / "tiny.yaml"
TINY_OVERRIDES = ["sampling.steps=1", "sampling.guidance_scale=10"]  # one step: fast; guidance on
NAMES = [f"im{i}.png" for i in (1, 2, 3, 10, 11, 12)]  # natural order 1, 2, 3, 10, 11, 12


def with_sections(cfg, **sections):
    """``cfg`` with fields replaced, e.g. ``with_sections(cfg, infer={"overwrite": True})``."""
    return replace(cfg, **{name: replace(getattr(cfg, name), **values) for name, values in sections.items()})


def pngs(folder: Path) -> list[str]:
    """The PNG file names in ``folder``, sorted."""
    return sorted(p.name for p in Path(folder).glob("*.png"))
