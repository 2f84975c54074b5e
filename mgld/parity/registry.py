"""The parity check registry: :class:`ParityRow`, :func:`compare`, :func:`register`, :data:`CHECKS`,
:func:`load_fixture` (used by the check modules ``models`` and ``sampling``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

DEFAULT_TOLERANCE = 1e-4


@dataclass
class ParityRow:
    """One compared output: ``rel`` is ||out - ref|| / ||ref|| (Frobenius), ``max_abs`` the largest |out - ref|."""

    name: str
    shape: tuple[int, ...]
    max_abs: float
    rel: float

    def passed(self, tolerance: float = DEFAULT_TOLERANCE) -> bool:
        return self.rel <= tolerance


def compare(name: str, out, ref) -> ParityRow:
    """Compare ``out`` with the reference ``ref`` (tensors, numbers or nested lists of numbers)."""
    out_t = torch.as_tensor(out).detach().to("cpu", torch.float64)
    ref_t = torch.as_tensor(ref).detach().to("cpu", torch.float64)
    if out_t.shape != ref_t.shape:
        raise ValueError(f"{name}: shape {tuple(out_t.shape)} does not match the reference {tuple(ref_t.shape)}")
    diff = out_t - ref_t
    max_abs = diff.abs().max().item() if diff.numel() else 0.0
    ref_norm = ref_t.norm().item()
    rel = diff.norm().item() / ref_norm if ref_norm > 0 else diff.norm().item()
    return ParityRow(name, tuple(ref_t.shape), max_abs, rel)


CheckFn = Callable[[Path, dict], list[ParityRow]]
# check name -> (check function, fixture files it needs); filled in by the modules of :func:`_import_checks`
CHECKS: dict[str, tuple[CheckFn, tuple[str, ...]]] = {}


def register(name: str, needs: tuple[str, ...] = ()) -> Callable[[CheckFn], CheckFn]:
    """Decorator registering a check. ``name`` is its fixture file, or ``"<file>:<part>"`` for a check of
    part of a file; ``needs`` lists further fixture files it reads (from the same folder). The function
    gets the path of the named file and the folder's ``config.json``."""
    first = name.split(":")[0]

    def wrap(fn: CheckFn) -> CheckFn:
        CHECKS[name] = (fn, (first, *needs))
        return fn

    return wrap


def load_fixture(path: Path) -> dict:
    """Load one fixture file. The fixtures hold Python scalars and strings besides tensors, which
    ``weights_only=True`` accepts; nothing else is unpickled."""
    if path.suffix == ".json":
        return json.loads(path.read_text())
    return torch.load(path, map_location="cpu", weights_only=True)
