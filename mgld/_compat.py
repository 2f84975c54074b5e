"""Compatibility shims applied before any third-party import that needs them.

basicsr 1.4.2 (``basicsr/data/degradations.py``) imports
``torchvision.transforms.functional_tensor``, a private module that torchvision 0.17
removed; its only use there is ``rgb_to_grayscale``, which the public
``torchvision.transforms.functional`` still provides with the same signature. Importing ``mgld``
registers an import hook that serves the old name from the public module when (and only when)
something imports it and torchvision no longer has it; torchvision itself is not imported early.

basicsr (``basicsr/archs/arch_util.py``) also imports ``distutils.version.LooseVersion``; ``distutils`` left the
standard library in Python 3.12 and is then only there when setuptools is installed. A second hook serves a
minimal ``distutils.version`` with a ``LooseVersion`` of the same parsing and ordering when (and only when) no
other importer has ``distutils`` (the standard library's up to 3.11, or setuptools' copy win).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import re
import sys
import types

_OLD_NAME = "torchvision.transforms.functional_tensor"
_NEW_NAME = "torchvision.transforms.functional"


def _available_elsewhere(fullname: str, finder, path=None) -> bool:
    """Does any other importer (the standard library, setuptools' ``_distutils_hack``,
    a torchvision that still ships the module) provide ``fullname``?"""
    for other in sys.meta_path:
        if other is not finder and hasattr(other, "find_spec"):
            try:
                if other.find_spec(fullname, path) is not None:
                    return True
            except (ImportError, AttributeError):
                continue
    return False


class _ModuleLoader(importlib.abc.Loader):
    """Serves the module ``build(name)`` returns."""

    def __init__(self, build):
        self.build = build

    def create_module(self, spec):
        return self.build(spec.name)

    def exec_module(self, module):
        pass


class _FunctionalTensorFinder(importlib.abc.MetaPathFinder):
    """Resolve ``torchvision.transforms.functional_tensor`` to ``functional`` when it is missing."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != _OLD_NAME:
            return None
        if _available_elsewhere(fullname, self, path):  # this torchvision still ships the module
            return None
        return importlib.machinery.ModuleSpec(fullname, _ModuleLoader(lambda name: importlib.import_module(_NEW_NAME)))


def install_torchvision_functional_tensor_alias() -> None:
    """Register the import hook once (idempotent)."""
    if not any(isinstance(f, _FunctionalTensorFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _FunctionalTensorFinder())


class LooseVersion:
    """``distutils.version.LooseVersion`` (what basicsr compares torchvision versions with): the version string
    split into runs of digits (compared as integers), of letters and other characters, dots dropped; ordered as
    those lists."""

    _component = re.compile(r"(\d+ | [a-z]+ | \.)", re.VERBOSE)

    def __init__(self, vstring: str | None = None):
        if vstring:
            self.parse(vstring)

    def parse(self, vstring: str) -> None:
        self.vstring = vstring
        parts = [c for c in self._component.split(vstring) if c and c != "."]
        self.version = [int(c) if c.isdigit() else c for c in parts]

    def __str__(self) -> str:
        return self.vstring

    def __repr__(self) -> str:
        return f"LooseVersion ('{self}')"

    def _cmp(self, other) -> int:
        other = other if isinstance(other, LooseVersion) else LooseVersion(str(other))
        return (self.version > other.version) - (self.version < other.version)

    def __eq__(self, other) -> bool:
        return self._cmp(other) == 0

    def __lt__(self, other) -> bool:
        return self._cmp(other) < 0

    def __le__(self, other) -> bool:
        return self._cmp(other) <= 0

    def __gt__(self, other) -> bool:
        return self._cmp(other) > 0

    def __ge__(self, other) -> bool:
        return self._cmp(other) >= 0


_SHIM_MARK = "__mgld_distutils_shim__"


def _distutils_module(name: str) -> types.ModuleType:
    module = types.ModuleType(name)
    setattr(module, _SHIM_MARK, True)
    if name == "distutils":
        module.__path__ = []  # a package, so that distutils.version is looked up
    else:
        module.LooseVersion = LooseVersion
    return module


class _DistutilsFinder(importlib.abc.MetaPathFinder):
    """Serve ``distutils`` / ``distutils.version`` (module docstring) when no other importer has them."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname == "distutils":
            if _available_elsewhere(fullname, self, path):
                return None
        elif fullname == "distutils.version":
            if not getattr(sys.modules.get("distutils"), _SHIM_MARK, False):
                return None  # a real distutils: its own version module
        else:
            return None
        return importlib.machinery.ModuleSpec(fullname, _ModuleLoader(_distutils_module), is_package=fullname ==
                                              "distutils")


def install_distutils_shim() -> None:
    """Register the ``distutils`` import hook once (idempotent)."""
    if not any(isinstance(f, _DistutilsFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _DistutilsFinder())


def import_basicsr(module: str = "basicsr"):
    """Import a basicsr (sub)module with the shims in place; mgld imports basicsr through here."""
    install_torchvision_functional_tensor_alias()
    install_distutils_shim()
    return importlib.import_module(module)


def quiet_third_party_logs() -> None:
    """Silence start-up warnings unrelated to mgld: bitsandbytes (pulled in by pyiqa and imported
    by diffusers) warns on CPUs with AVX512-BF16 that an optional 4-bit kernel package is missing;
    mgld never quantises to 4 bits."""
    import logging

    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
