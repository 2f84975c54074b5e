"""Numerical parity with the authors' code, checked against oracle fixture folders.

A fixture folder (``tests/fixtures/oracle``, format described in its README) holds ``config.json`` and
one ``.pt``/``.json`` file per checked component. Each component has a check function registered in
:data:`CHECKS` under its file name; the function runs this project's code on the fixture inputs and
returns one :class:`ParityRow` per compared output. ``scripts/check_parity.py`` prints the rows.
"""

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
# fixture file name -> check function; filled in by the submodules imported at the end of this file
CHECKS: dict[str, CheckFn] = {}


def register(fixture_name: str) -> Callable[[CheckFn], CheckFn]:
    """Decorator registering a check for the fixture file ``fixture_name``."""

    def wrap(fn: CheckFn) -> CheckFn:
        CHECKS[fixture_name] = fn
        return fn

    return wrap


def load_fixture(path: Path) -> dict:
    """Load one fixture file. The fixtures hold Python scalars and strings besides tensors, which
    ``weights_only=True`` accepts; nothing else is unpickled."""
    if path.suffix == ".json":
        return json.loads(path.read_text())
    return torch.load(path, map_location="cpu", weights_only=True)


def run_checks(fixture_dir: str | Path, only: list[str] | None = None) -> dict[str, list[ParityRow]]:
    """Run every registered check whose fixture file exists in ``fixture_dir``.

    Returns ``{fixture file name: rows}``. Raises ``FileNotFoundError`` when the folder or its
    ``config.json`` is missing, or when ``only`` names a fixture that is not there.
    """
    _import_checks()
    fixture_dir = Path(fixture_dir)
    config_path = fixture_dir / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path}: not found; a fixture folder needs config.json")
    config = json.loads(config_path.read_text())
    names = only or sorted(CHECKS)
    results: dict[str, list[ParityRow]] = {}
    for name in names:
        if name not in CHECKS:
            raise KeyError(f"no parity check is registered for {name!r}; known: {sorted(CHECKS)}")
        path = fixture_dir / name
        if not path.exists():
            if only:
                raise FileNotFoundError(f"{path}: fixture not found")
            continue
        torch.manual_seed(0)
        results[name] = CHECKS[name](path, config)
    return results


def format_table(results: dict[str, list[ParityRow]], tolerance: float = DEFAULT_TOLERANCE) -> str:
    """Markdown table, one row per compared output."""
    lines = [
        "| fixture | output | shape | max abs err | rel err | ok |",
        "|---|---|---|---|---|---|",
    ]
    for fixture, rows in results.items():
        for row in rows:
            shape = "x".join(map(str, row.shape)) or "scalar"
            ok = "yes" if row.passed(tolerance) else "NO"
            lines.append(f"| {fixture} | {row.name} | {shape} | {row.max_abs:.3e} | {row.rel:.3e} | {ok} |")
    return "\n".join(lines)


def _import_checks() -> None:
    """Import the modules whose ``@register`` decorators fill :data:`CHECKS`."""
    from mgld.parity import models, sampling  # noqa: F401
