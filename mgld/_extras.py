"""The optional extras of the package: which importable module comes from which distribution and extra.

Kept in one light module (no imports) so that the ``mgld`` command's error handler and the evaluation can both
name the ``pip install "mgld[...]"`` that brings a missing module; ``tests/test_packaging.py`` checks the table
against pyproject.toml.
"""

from __future__ import annotations

# Importable name -> (distribution, extras that install it), as in pyproject.toml's optional-dependencies
# (tests/test_packaging.py checks the two agree). A command names the extra it belongs to when it can.
OPTIONAL_MODULES: dict[str, tuple[str, tuple[str, ...]]] = {
    "pytorch_lightning": ("pytorch-lightning", ("train",)),
    "tensorboard": ("tensorboard", ("train",)),
    "lpips": ("lpips", ("train", "eval")),
    "pyiqa": ("pyiqa", ("eval",)),
    "matplotlib": ("matplotlib", ("eval",)),
    "skimage": ("scikit-image", ("eval",)),
    "open_clip": ("open_clip_torch", ("dev",)),
}


def install_hint(module: str, extra: str | None = None) -> str | None:
    """What to install for a missing optional ``module``: its distribution, the module, and the
    ``pip install "mgld[<extra>]"`` (``extra`` when it is one of its extras, else its first); None when the module
    is not an optional one."""
    top = module.split(".")[0]
    entry = OPTIONAL_MODULES.get(top)
    if entry is None:
        return None
    distribution, extras = entry
    chosen = extra if extra in extras else extras[0]
    return (f"the optional package {distribution!r} (module {top!r} is not installed), "
            f"part of the '{chosen}' extra: pip install \"mgld[{chosen}]\"")
