"""Evaluation reports: the paper-style table, CSV / JSON files, per-frame plots and temporal profiles (x-t slices)
(docs/evaluation.md, Pictures).

Files of a report folder: ``per_frame.csv``, ``per_sequence.csv``, ``report.json`` and ``table.md`` (one row per
method, one column per metric, as in the paper; skipped metrics and failures listed under it), ``plots/<seq>.png``
and, with a profile row or column, ``profiles/<seq>_rowN.png``. Every file is written atomically.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mgld.eval.inputs import list_sequences, load_sequence
from mgld.eval.registry import METRICS
from mgld.io.atomic import atomic_write

if TYPE_CHECKING:
    from mgld.eval.evaluation import EvalInputs, EvalReport

_DECIMALS = {"psnr": 2, "ssim": 4, "niqe": 3, "brisque": 2, "musiq": 2, "ewarp": 3, "flicker": 3}


# --------------------------------------------------------------------------------------------------
# Checks of the report options, before any work
# --------------------------------------------------------------------------------------------------


def check_output_dir(out: str | Path) -> Path:
    """Refuse a report folder that cannot be written (a file, under a file, not writable) before any work."""
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: exists and is not a folder")
    parent = out
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"{out}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{out}: {parent} is not writable")
    return out


def check_profile(inputs: EvalInputs, row: int | None = None, col: int | None = None) -> None:
    """Refuse a temporal-profile row / column outside any sequence's frames (``--profile-row`` / ``--profile-col``)."""
    for option, index, axis in (("--profile-row", row, 0), ("--profile-col", col, 1)):
        if index is None:
            continue
        for label, seqs in inputs.sizes.items():
            if label == "LR":
                continue
            for seq, size in seqs.items():
                if not 0 <= index < size[axis]:
                    raise ValueError(f"{option} {index}: outside 0..{size[axis] - 1} for sequence {seq!r} of "
                                     f"{label} ({size[0]}x{size[1]} frames)")


# --------------------------------------------------------------------------------------------------
# Tables and files
# --------------------------------------------------------------------------------------------------


def _fmt(name: str, value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{_DECIMALS.get(name, 4)}f}"


def markdown_table(report: EvalReport) -> str:
    """Paper-style table: one row per method, one column per requested metric (skipped = n/a)."""
    labels = [f"{METRICS[m].label}{'↑' if METRICS[m].higher_is_better else '↓'}" for m in report.metrics]
    lines = ["| Method | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]
    for method in report.methods:
        cells = [_fmt(m, report.mean[method].get(m)) for m in report.metrics]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines += [""] + [f"- {METRICS[m].label}: {note}" for m, note in report.notes.items() if m in report.measured]
    lines += [f"- {METRICS[m].label} skipped: {reason}" for m, reason in report.skipped.items()]
    lines += failure_lines(report)
    return "\n".join(lines) + "\n"


def failure_lines(report: EvalReport) -> list[str]:
    """One line per (metric, error): which metric failed on which method/sequence, and why (n/a in the table)."""
    grouped: dict[tuple[str, str], list[str]] = {}
    for f in report.failures:
        grouped.setdefault((f["metric"], f["error"]), []).append(f"{f['method']}/{f['sequence']}")
    lines = []
    for (metric, error), where in grouped.items():
        shown = ", ".join(where[:8]) + (f" ... ({len(where)} in all)" if len(where) > 8 else "")
        lines.append(f"- {METRICS[metric].label} failed on {shown}: {error}")
    return lines


def _finite(obj):
    """JSON-safe copy: non-finite floats (PSNR of identical frames is inf) become "inf"/"nan" strings."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _csv(rows: list[dict], columns: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def write_report(report: EvalReport, out_dir: str | Path) -> dict[str, Path]:
    """Write per_frame.csv, per_sequence.csv, report.json and table.md; returns their paths."""
    out = Path(out_dir)
    seq_rows = [{"method": m, "sequence": s, **v} for m, seqs in report.per_sequence.items() for s, v in seqs.items()]
    files = {
        "per_frame": (out / "per_frame.csv", _csv(report.per_frame, ["method", "sequence", "index", "frame",
                                                                     *report.measured])),
        "per_sequence": (out / "per_sequence.csv", _csv(seq_rows, ["method", "sequence", *report.measured])),
        "json": (out / "report.json", json.dumps(_finite(asdict(report)), indent=2, allow_nan=False)),
        "table": (out / "table.md", markdown_table(report)),
    }
    for path, text in files.values():
        atomic_write(path, text)
    return {k: p for k, (p, _) in files.items()}


# --------------------------------------------------------------------------------------------------
# Pictures: temporal profiles and per-frame plots
# --------------------------------------------------------------------------------------------------


def temporal_profile(frames: np.ndarray, row: int | None = None, col: int | None = None) -> np.ndarray:
    """x-t slice: line ``row`` (``t w 3``) or column ``col`` (``t h 3``) of every frame, stacked over time."""
    if (row is None) == (col is None):
        raise ValueError("give exactly one of row and col")
    axis_len = frames.shape[1] if row is not None else frames.shape[2]
    index = row if row is not None else col
    if not 0 <= index < axis_len:
        raise ValueError(f"profile {'row' if row is not None else 'column'} {index} outside 0..{axis_len - 1}")
    return frames[:, row] if row is not None else frames[:, :, col]


def save_profiles(path: str | Path, profiles: dict[str, np.ndarray], title: str = "") -> None:
    """Labelled side-by-side PNG of x-t slices (time downwards), one panel per label."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = next(iter(profiles.values()))
    t, length = first.shape[:2]
    height = max(1.5, 6.0 * max(t, length / 4) / length)  # stretch short clips so time is visible
    fig, axes = plt.subplots(1, len(profiles), figsize=(3.2 * len(profiles), height + 0.8), squeeze=False)
    for ax, (label, img) in zip(axes[0], profiles.items()):
        ax.imshow(img, aspect="auto", interpolation="nearest")
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("x" if img.shape[1] == length else "y")
        ax.set_ylabel("frame")
    fig.suptitle(title, fontsize=10)
    _save_figure(fig, path)


def plot_per_frame(report: EvalReport, sequence: str, path: str | Path) -> None:
    """One panel per measured metric, one line per method, values over frame index."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = report.measured
    fig, axes = plt.subplots(len(names), 1, figsize=(7, 1.9 * len(names) + 0.5), squeeze=False, sharex=True)
    for ax, name in zip(axes[:, 0], names):
        for method in report.methods:
            rows = [r for r in report.per_frame if r["method"] == method and r["sequence"] == sequence]
            pts = [(r["index"], r[name]) for r in rows if r.get(name) is not None]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", label=method)
        ax.set_ylabel(METRICS[name].label, fontsize=8)
    axes[0, 0].legend(fontsize=8)
    axes[-1, 0].set_xlabel("frame (temporal metrics: pair ending at this frame)")
    fig.suptitle(f"sequence {sequence}", fontsize=10)
    _save_figure(fig, path)


def _save_figure(fig, path: str | Path) -> None:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    atomic_write(path, buf.getvalue())


def write_pictures(report: EvalReport, preds: dict[str, str | Path], gt: str | Path | None, out_dir: str | Path,
                   profile_row: int | None = None, profile_col: int | None = None,
                   inputs: EvalInputs | None = None) -> list[Path]:
    """Per-frame plots for every sequence, and temporal profiles when a row or column is given.

    ``inputs``: the sequences :func:`mgld.eval.evaluation.prepare` listed for ``preds`` and ``gt`` (else they are
    listed again)."""
    out, written = Path(out_dir), []
    sequences = list(report.per_sequence[report.methods[0]])
    for seq in sequences:
        if report.measured:
            plot_per_frame(report, seq, out / "plots" / f"{seq}.png")
            written.append(out / "plots" / f"{seq}.png")
    if profile_row is None and profile_col is None:
        return written
    if inputs is not None:
        listings = ({"GT": inputs.gt} if gt is not None else {}) | {m: inputs.preds[m] for m in preds}
    else:
        roots = ({"GT": gt} if gt is not None else {}) | dict(preds)
        listings = {label: list_sequences(root, label) for label, root in roots.items()}
    tag = f"row{profile_row}" if profile_row is not None else f"col{profile_col}"
    for seq in sequences:
        profiles = {label: temporal_profile(load_sequence(seqs[seq]), profile_row, profile_col)
                    for label, seqs in listings.items()}
        path = out / "profiles" / f"{seq}_{tag}.png"
        save_profiles(path, profiles, title=f"{seq}, {tag}")
        written.append(path)
    return written
