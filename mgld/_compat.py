"""Compatibility shims applied before any third-party import that needs them.

basicsr 1.4.2 (``basicsr/data/degradations.py``) imports
``torchvision.transforms.functional_tensor``, a private module that torchvision 0.17
removed; its only use there is ``rgb_to_grayscale``, which the public
``torchvision.transforms.functional`` still provides with the same signature.
"""

from __future__ import annotations

import importlib
import sys


def install_torchvision_functional_tensor_alias() -> bool:
    """Alias ``torchvision.transforms.functional_tensor`` to ``functional`` when it is missing.

    Returns True when the alias was installed, False when torchvision still ships the module.
    """
    name = "torchvision.transforms.functional_tensor"
    if name in sys.modules:
        return False
    try:
        importlib.import_module(name)
        return False
    except ImportError:
        import torchvision.transforms.functional as functional

        sys.modules[name] = functional
        return True


def import_basicsr(module: str = "basicsr"):
    """Import a basicsr (sub)module after the shim; every basicsr import in mgld goes through here."""
    install_torchvision_functional_tensor_alias()
    return importlib.import_module(module)


def quiet_third_party_logs() -> None:
    """Silence start-up warnings unrelated to mgld: bitsandbytes (pulled in by pyiqa and imported
    by diffusers) warns on CPUs with AVX512-BF16 that an optional 4-bit kernel package is missing;
    mgld never quantises to 4 bits."""
    import logging

    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
