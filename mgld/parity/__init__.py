"""Numerical parity with the authors' code, checked against oracle fixture folders.

A fixture folder (``tests/fixtures/oracle``, format described in its README) holds ``config.json`` and
one ``.pt``/``.json`` file per checked component. Each component has a check function registered in
:data:`CHECKS` under its file name; the function runs this project's code on the fixture inputs and
returns one :class:`ParityRow` per compared output. ``mgld parity`` prints the rows.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from mgld.parity.registry import CHECKS, DEFAULT_TOLERANCE, CheckFn, ParityRow, compare, load_fixture, register

__all__ = ["CHECKS", "DEFAULT_TOLERANCE", "CheckFn", "ParityRow", "checked_files", "compare", "format_table",
           "load_fixture", "register", "run_checks"]


def run_checks(fixture_dir: str | Path, only: list[str] | None = None) -> dict[str, list[ParityRow]]:
    """Run every registered check whose fixture file exists in ``fixture_dir``.

    Returns ``{check name: rows}``. Raises ``FileNotFoundError`` when the folder or its ``config.json`` is
    missing, or when ``only`` names a check whose fixture files are not there; ``ValueError`` when ``only``
    names a check that is not registered.
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
            raise ValueError(f"no parity check is registered for {name!r}; known: {sorted(CHECKS)}")
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
