"""Compatibility shims applied before any third-party import that needs them.

basicsr 1.4.2 (``basicsr/data/degradations.py``) imports
``torchvision.transforms.functional_tensor``, a private module that torchvision 0.17
removed; its only use there is ``rgb_to_grayscale``, which the public
``torchvision.transforms.functional`` still provides with the same signature. Importing ``mgld``
registers an import hook that serves the old name from the public module when (and only when)
something imports it and torchvision no longer has it; torchvision itself is not imported early.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys

_OLD_NAME = "torchvision.transforms.functional_tensor"
_NEW_NAME = "torchvision.transforms.functional"


class _AliasLoader(importlib.abc.Loader):
    def create_module(self, spec):
        return importlib.import_module(_NEW_NAME)

    def exec_module(self, module):
        pass


class _FunctionalTensorFinder(importlib.abc.MetaPathFinder):
    """Resolve ``torchvision.transforms.functional_tensor`` to ``functional`` when it is missing."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != _OLD_NAME:
            return None
        for finder in sys.meta_path:  # does this torchvision still ship the module?
            if finder is not self and hasattr(finder, "find_spec"):
                try:
                    if finder.find_spec(fullname, path, target) is not None:
                        return None
                except (ImportError, AttributeError):
                    continue
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader())


def install_torchvision_functional_tensor_alias() -> None:
    """Register the import hook once (idempotent)."""
    if not any(isinstance(f, _FunctionalTensorFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _FunctionalTensorFinder())


def import_basicsr(module: str = "basicsr"):
    """Import a basicsr (sub)module with the shim in place; mgld imports basicsr through here."""
    install_torchvision_functional_tensor_alias()
    return importlib.import_module(module)


def quiet_third_party_logs() -> None:
    """Silence start-up warnings unrelated to mgld: bitsandbytes (pulled in by pyiqa and imported
    by diffusers) warns on CPUs with AVX512-BF16 that an optional 4-bit kernel package is missing;
    mgld never quantises to 4 bits."""
    import logging

    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
