"""Numerical parity with the authors' code, checked against oracle fixture folders.

A fixture folder (``tests/fixtures/oracle``, format described in its README) holds ``config.json`` and
one ``.pt``/``.json`` file per checked component. Each component has a check function registered in
:data:`CHECKS` under its file name; the function runs this project's code on the fixture inputs and
returns one :class:`ParityRow` per compared output. ``mgld parity`` prints the rows.
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


def run_checks(fixture_dir: str | Path, only: list[str] | None = None) -> dict[str, list[ParityRow]]:
    """Run every registered check whose fixture file exists in ``fixture_dir``.

    Returns ``{check name: rows}``. Raises ``FileNotFoundError`` when the folder or its ``config.json`` is
    missing, or when ``only`` names a check whose fixture files are not there.
    """
    fixture_dir = Path(fixture_dir)
    config_path = fixture_dir / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path}: not found; a fixture folder needs config.json")
    _import_checks()
    config = json.loads(config_path.read_text())
    names = only or sorted(CHECKS)
    results: dict[str, list[ParityRow]] = {}
    for name in names:
        if name not in CHECKS:
            raise KeyError(f"no parity check is registered for {name!r}; known: {sorted(CHECKS)}")
        fn, files = CHECKS[name]
        missing = [f for f in files if not (fixture_dir / f).exists()]
        if missing:
            if only:
                raise FileNotFoundError(f"{fixture_dir}: fixture files not found: {missing}")
            continue
        torch.manual_seed(0)
        results[name] = fn(fixture_dir / files[0], config)
    return results


def checked_files(names) -> set[str]:
    """The fixture files read by the checks ``names``."""
    return {f for name in names for f in CHECKS[name][1]}


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
