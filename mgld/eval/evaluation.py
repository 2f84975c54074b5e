"""Evaluation of video SR outputs against folders of frames (docs/evaluation.md; metrics: mgld.eval.metrics).

Layouts: a root holds one folder per sequence (REDS4 ``000/00000000.png``, UDM10, VideoLQ), or one
more level with a single frame folder per sequence (SPMCS ``<seq>/truth/``), or the frames
themselves (one sequence). Predicted frames are matched to GT frames by file stem; differing
sequence sets, frame names or frame sizes are refused with a message naming the sequence (without
GT, every method must have the sequences and frame names of the first one).

Aggregation: a frame metric gives one value per frame, a temporal metric one per consecutive
pair; the sequence value is the mean over its frames (pairs) and the dataset value the mean over
sequences (each sequence weighs the same). Reports: ``per_frame.csv``, ``per_sequence.csv``,
``report.json`` and ``table.md`` (one row per method, one column per metric, as in the paper).

Robustness: :func:`prepare` lists, matches and size-checks every sequence and checks the settings before any
metric is computed. A metric that cannot be built is *skipped* with its reason; a metric that raises on a
sequence is a *failure* recorded with the method, sequence and reason (``report.failures``, listed under the
table), its data-set mean for that method is n/a, and every other metric and sequence is still computed.

Also here: deterministic synthetic test sets (:func:`make_testset`), the bicubic x4 baseline,
temporal profiles (x-t slices) and per-frame plots. Every file is written atomically.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import re
import zlib
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from mgld._extras import install_hint
from mgld.eval import metrics as M
from mgld.io.atomic import atomic_write
from mgld.weights.checkpoints import CheckpointError

logger = logging.getLogger(__name__)
IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
_DECIMALS = {"psnr": 2, "ssim": 4, "niqe": 3, "brisque": 2, "musiq": 2, "ewarp": 3, "flicker": 3}


# --------------------------------------------------------------------------------------------------
# Files: reading, atomic writing, sequence folders
# --------------------------------------------------------------------------------------------------


def read_frame(path: Path) -> np.ndarray:
    """``h w 3`` uint8 RGB from an image file; a clear error when it cannot be read."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise OSError(f"cannot read image {path}")
    return np.ascontiguousarray(img[..., ::-1])


def write_frame(path: Path, frame: np.ndarray) -> None:
    """Write ``h w 3`` uint8 RGB as PNG (deterministic bytes), atomically."""
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(frame[..., ::-1]))
    if not ok:
        raise OSError(f"cannot encode {path}")
    atomic_write(path, buf.tobytes())


def _natural_key(path: Path):
    return [int(tok) if tok.isdigit() else tok for tok in re.split(r"(\d+)", path.stem)]


def _images(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS), key=_natural_key)


def list_sequences(root: str | Path) -> dict[str, list[Path]]:
    """Sequence name -> frame paths (natural order) under ``root`` (layouts in the module docstring)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"not a folder: {root}")
    if _images(root):
        return {root.name: _images(root)}
    sequences = {}
    for seq in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        frames = _images(seq)
        if not frames:
            nested = [d for d in sorted(seq.iterdir()) if d.is_dir() and _images(d)]
            if len(nested) != 1:
                raise ValueError(f"sequence {seq.name!r} in {root}: no frames, and {len(nested)} sub-folders "
                                 f"with frames ({[d.name for d in nested]}); expected exactly one")
            frames = _images(nested[0])
        sequences[seq.name] = frames
    if not sequences:
        raise ValueError(f"no sequences (folders of images) under {root}")
    return sequences


def match_sequences(pred: dict[str, list[Path]], gt: dict[str, list[Path]], method: str,
                    what: str = "predicted", who: str | None = None) -> None:
    """Refuse a prediction (or the LR input: ``what="LR"``, ``who="--lr ROOT"``) whose sequences or frame names
    differ from the GT's."""
    who = who or f"method {method!r}"
    missing, extra = sorted(set(gt) - set(pred)), sorted(set(pred) - set(gt))
    if missing or extra:
        raise ValueError(f"{who}: sequences missing {missing[:5]}, unexpected {extra[:5]} "
                         f"(GT has {len(gt)}, {what} {len(pred)})")
    for name in gt:
        p_stems, g_stems = [p.stem for p in pred[name]], [g.stem for g in gt[name]]
        if p_stems != g_stems:
            lacking = sorted(set(g_stems) - set(p_stems))[:3]
            surplus = sorted(set(p_stems) - set(g_stems))[:3]
            raise ValueError(f"{who}, sequence {name!r}: {len(p_stems)} {what} frames for "
                             f"{len(g_stems)} GT frames; missing {lacking}, unexpected {surplus}")


def load_sequence(paths: list[Path], name: str) -> np.ndarray:
    """``t h w 3`` uint8 RGB; frames of different sizes are refused."""
    frames = [read_frame(p) for p in paths]
    for p, f in zip(paths, frames):
        if f.shape != frames[0].shape:
            raise ValueError(f"sequence {name!r}: {p.name} is {f.shape[:2]}, {paths[0].name} is {frames[0].shape[:2]}")
    return np.stack(frames)


def write_sequence(folder: Path, names: Iterable[str], frames: np.ndarray) -> None:
    for name, frame in zip(names, frames):
        write_frame(folder / f"{name}.png", frame)


# --------------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------------


@dataclass
class EvalSettings:
    """What to measure and how (CLI flags of mgld evaluate)."""

    metrics: tuple[str, ...] = M.DEFAULT_METRICS
    crop_border: int = 0  # PSNR/SSIM border crop, pixels
    y_channel: bool = False  # PSNR/SSIM on Y instead of RGB
    device: str = "auto"  # auto -> cuda if available
    batch_size: int = 8  # frames per batch for the network metrics
    flow: str = "auto"  # E*warp flow: auto (RAFT if its weights are local, else DIS), raft, dis
    flow_from: str = "pred"  # E*warp flow source: pred (evaluated frames), gt, or lr (LR input, bicubic-upsampled)
    raft_weights: str | None = None  # RAFT weights for E*warp; None: the local caches (mgld.eval.metrics.build_flow)

    def check(self) -> None:
        """Raise ``ValueError`` naming the option for any value that cannot work (before anything is computed)."""
        if not self.metrics:
            raise ValueError("--metrics: no metric given")
        unknown = [m for m in self.metrics if m not in M.METRICS]
        if unknown:
            raise ValueError(f"--metrics: unknown {', '.join(map(repr, unknown))}; known: {', '.join(M.METRICS)}")
        repeated = sorted({m for m in self.metrics if self.metrics.count(m) > 1})
        if repeated:
            raise ValueError(f"--metrics: {', '.join(repeated)} given twice")
        if self.crop_border < 0:
            raise ValueError(f"--crop-border {self.crop_border}: must be >= 0")
        if self.batch_size < 1:
            raise ValueError(f"--batch-size {self.batch_size}: must be >= 1")
        if self.flow not in M.FLOW_METHODS:
            raise ValueError(f"--flow {self.flow!r}: expected one of {', '.join(M.FLOW_METHODS)}")
        if self.flow_from not in M.FLOW_SOURCES:
            raise ValueError(f"--warp-flow-from {self.flow_from!r}: expected one of {', '.join(M.FLOW_SOURCES)}")
        if self.raft_weights is not None and not Path(self.raft_weights).expanduser().exists():
            raise ValueError(f"--raft-weights {self.raft_weights}: not found")
        try:
            device = torch.device(_device(self.device))
        except RuntimeError as err:
            raise ValueError(f"--device {self.device!r}: {err}") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"--device {self.device}: CUDA is not available here; use --device cpu")


@dataclass
class EvalReport:
    """Everything measured: values, skipped metrics with reasons, failures, and notes on how."""

    settings: EvalSettings
    methods: list[str]
    metrics: list[str]  # requested, in table order
    skipped: dict[str, str] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    per_frame: list[dict] = field(default_factory=list)  # method, sequence, index, frame, metric values
    per_sequence: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    mean: dict[str, dict[str, float]] = field(default_factory=dict)  # NaN where the metric failed on a sequence
    failures: list[dict[str, str]] = field(default_factory=list)  # method, sequence, metric, error

    @property
    def measured(self) -> list[str]:
        return [m for m in self.metrics if m not in self.skipped]


@dataclass
class EvalInputs:
    """The sequences of one evaluation, listed and checked before any metric is computed (:func:`prepare`)."""

    preds: dict[str, dict[str, list[Path]]]  # method -> sequence -> frames
    gt: dict[str, list[Path]] | None
    lr: dict[str, list[Path]] | None
    sizes: dict[str, dict[str, tuple[int, int]]]  # label (method, "GT", "LR") -> sequence -> (h, w) of frame 0


def _device(name: str) -> str:
    return ("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name


def _frame_size(path: Path) -> tuple[int, int]:
    return read_frame(path).shape[:2]


def prepare(preds: dict[str, str | Path], gt: str | Path | None = None, settings: EvalSettings | None = None,
            lr: str | Path | None = None) -> EvalInputs:
    """List and match every sequence, read each one's first frame and check sizes and settings (no metric yet).

    Raises ``ValueError`` / ``OSError`` naming the option, method, sequence or file.
    """
    settings = settings or EvalSettings()
    settings.check()
    if "ewarp" in settings.metrics and settings.flow_from == "gt" and gt is None:
        raise ValueError("--warp-flow-from gt: E*warp with the flow from GT needs the GT frames (--gt)")
    if "ewarp" in settings.metrics and settings.flow_from == "lr" and lr is None:
        raise ValueError("--warp-flow-from lr: E*warp with the flow from the LR input needs the LR frames (--lr)")
    gt_seqs = list_sequences(gt) if gt is not None else None
    pred_seqs = {m: list_sequences(root) for m, root in preds.items()}
    reference = gt_seqs if gt_seqs is not None else next(iter(pred_seqs.values()))
    for method, seqs in pred_seqs.items():  # without GT, every method must match the first one
        match_sequences(seqs, reference, method)
    lr_seqs = None
    if lr is not None and "ewarp" in settings.metrics and settings.flow_from == "lr":
        lr_seqs = list_sequences(lr)
        match_sequences(lr_seqs, reference, "LR", what="LR", who=f"--lr {lr}")
    listings = dict(pred_seqs) | ({"GT": gt_seqs} if gt_seqs is not None else {}) | (
        {"LR": lr_seqs} if lr_seqs is not None else {})
    sizes = {label: {seq: _frame_size(paths[0]) for seq, paths in seqs.items()} for label, seqs in listings.items()}
    if gt_seqs is not None:
        for method in pred_seqs:
            for seq, size in sizes[method].items():
                if size != sizes["GT"][seq]:
                    raise ValueError(f"method {method!r}, sequence {seq!r}: frames are {size}, GT {sizes['GT'][seq]}")
    if settings.crop_border and {"psnr", "ssim"} & set(settings.metrics):
        for method in pred_seqs:
            for seq, (h, w) in sizes[method].items():
                if 2 * settings.crop_border >= min(h, w):
                    raise ValueError(f"--crop-border {settings.crop_border}: leaves nothing of sequence {seq!r} "
                                     f"({h}x{w} frames)")
    return EvalInputs(pred_seqs, gt_seqs, lr_seqs, sizes)


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


def build_metrics(settings: EvalSettings, have_gt: bool) -> tuple[dict[str, Callable], dict[str, str], dict[str, str]]:
    """(name -> callable, skipped name -> reason, notes) for the requested metrics.

    A metric that cannot be built (weights not cached, a package that does not import) is skipped with the
    reason; the others are still built.
    """
    device, built, skipped = _device(settings.device), {}, {}
    if settings.flow_from == "gt" and not have_gt and "ewarp" in settings.metrics:
        raise ValueError("E*warp with the flow estimated on GT frames needs GT frames (--gt)")
    notes = {"psnr": f"{'Y' if settings.y_channel else 'RGB'}, crop {settings.crop_border}",
             "ssim": f"{'Y' if settings.y_channel else 'RGB'}, crop {settings.crop_border}"}
    for name in settings.metrics:
        if name not in M.METRICS:
            raise ValueError(f"unknown metric {name!r}; known: {', '.join(M.METRICS)}")
        if M.METRICS[name].needs_gt and not have_gt:
            skipped[name] = "needs GT frames (no --gt given)"
            continue
        try:
            if M.METRICS[name].kind == "temporal":
                built[name], notes[name] = M.build_temporal_metric(
                    name, device=device, flow=settings.flow, flow_from=settings.flow_from,
                    batch_size=settings.batch_size, raft_weights=settings.raft_weights)
            else:
                built[name] = M.build_frame_metric(name, device=device, batch_size=settings.batch_size,
                                                   crop_border=settings.crop_border, y_channel=settings.y_channel)
        except M.WeightsUnavailable as err:
            skipped[name] = str(err)
        except CheckpointError:  # weights the user named (--raft-weights) that do not load: an error, not a skip
            raise
        except ModuleNotFoundError as err:
            hint = install_hint(err.name or "", "eval")
            skipped[name] = f"needs {hint}" if hint else f"could not be built ({_one_line(err)})"
        except (ImportError, OSError, RuntimeError) as err:  # a package that does not import, a broken cache
            skipped[name] = f"could not be built ({_one_line(err)})"
        if name in skipped:
            needs = M.METRICS[name].weights
            if (" and " in needs or ", " in needs) and "needs GT" not in skipped[name]:  # more than the file named
                skipped[name] += f" (it needs {needs})"
            logger.warning("metric %s skipped: %s", name, skipped[name])
    return built, skipped, notes


def _one_line(err: BaseException, limit: int = 300) -> str:
    text = " ".join(f"{type(err).__name__}: {err}".split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def upsample_to(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``t h w 3`` uint8 frames resized to ``size = (H, W)`` with OpenCV bicubic (the LR flow source of E*warp)."""
    h, w = size
    return np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_CUBIC) for f in frames])


def evaluate(preds: dict[str, str | Path], gt: str | Path | None = None, settings: EvalSettings | None = None,
             progress: bool = True, lr: str | Path | None = None, inputs: EvalInputs | None = None) -> EvalReport:
    """Measure every method (name -> root of its output sequences) against ``gt`` (or without GT).

    ``lr``: root of the LR input sequences, needed when E*warp takes its flow from them
    (``settings.flow_from == "lr"``). ``inputs``: the result of :func:`prepare` when the caller already ran it.
    A metric that raises on a sequence is recorded in ``report.failures`` (its mean for that method becomes
    NaN) and every other metric and sequence is still computed.
    """
    from tqdm.auto import tqdm

    settings = settings or EvalSettings()
    inputs = inputs or prepare(preds, gt, settings, lr)
    built, skipped, notes = build_metrics(settings, inputs.gt is not None)
    if not built:  # nothing would be measured: not a result
        raise RuntimeError("no metric can be computed: " + "; ".join(f"{n} {r}" for n, r in skipped.items()))
    report = EvalReport(settings, list(preds), list(settings.metrics), skipped, notes)
    jobs = [(m, s) for m in preds for s in inputs.preds[m]]
    for method, seq in tqdm(jobs, desc="evaluate", unit="seq", disable=not progress):
        pred = load_sequence(inputs.preds[method][seq], seq)
        ref = load_sequence(inputs.gt[seq], seq) if inputs.gt is not None else None
        if ref is not None and pred.shape != ref.shape:
            raise ValueError(f"method {method!r}, sequence {seq!r}: frames are {pred.shape[1:3]}, GT {ref.shape[1:3]}")
        guide = _flow_source(settings, ref, inputs, seq, pred.shape[1:3]) if "ewarp" in built else None
        values = {}
        for name, fn in built.items():
            try:
                values[name] = _checked(fn(pred, ref, flow_frames=guide if name == "ewarp" else None), name, pred)
            except Exception as err:  # one metric failing on one sequence does not stop the others
                report.failures.append({"method": method, "sequence": seq, "metric": name, "error": _one_line(err)})
                logger.warning("metric %s failed on %s/%s: %s", name, method, seq, _one_line(err))
        _collect(report, method, seq, [p.stem for p in inputs.preds[method][seq]], values)
    for method in preds:
        report.mean[method] = {m: _mean_over_sequences(report, method, m) for m in report.measured}
    return report


def _flow_source(settings: EvalSettings, ref, inputs: EvalInputs, seq: str, size) -> np.ndarray | None:
    if settings.flow_from == "gt":
        return ref
    if settings.flow_from == "lr":
        return upsample_to(load_sequence(inputs.lr[seq], seq), tuple(size))
    return None


def _checked(values: list[float], name: str, pred: np.ndarray) -> list[float]:
    expected = len(pred) - 1 if M.METRICS[name].kind == "temporal" else len(pred)
    if len(values) != expected:
        raise RuntimeError(f"{name} returned {len(values)} values for {len(pred)} frames (expected {expected})")
    return values


def _mean_over_sequences(report: EvalReport, method: str, metric: str) -> float:
    per_seq = report.per_sequence.get(method, {})
    values = [v[metric] for v in per_seq.values() if metric in v]
    if len(values) < len(per_seq) or not values:
        return float("nan")  # failed on some sequence: no data-set mean (the per-sequence values are kept)
    return float(np.mean(values))


def _collect(report: EvalReport, method: str, seq: str, stems: list[str], values: dict[str, list[float]]) -> None:
    for i, stem in enumerate(stems):
        row = {"method": method, "sequence": seq, "index": i, "frame": stem}
        for name, vals in values.items():  # temporal values belong to the pair (i-1, i)
            temporal = M.METRICS[name].kind == "temporal"
            row[name] = (vals[i - 1] if i > 0 else None) if temporal else vals[i]
        report.per_frame.append(row)
    report.per_sequence.setdefault(method, {})[seq] = {n: float(np.mean(v)) for n, v in values.items()}


# --------------------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------------------


def _fmt(name: str, value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{_DECIMALS.get(name, 4)}f}"


def markdown_table(report: EvalReport) -> str:
    """Paper-style table: one row per method, one column per requested metric (skipped = n/a)."""
    labels = [f"{M.METRICS[m].label}{'↑' if M.METRICS[m].higher_is_better else '↓'}" for m in report.metrics]
    lines = ["| Method | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]
    for method in report.methods:
        cells = [_fmt(m, report.mean[method].get(m)) for m in report.metrics]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines += [""] + [f"- {M.METRICS[m].label}: {note}" for m, note in report.notes.items() if m in report.measured]
    lines += [f"- {M.METRICS[m].label} skipped: {reason}" for m, reason in report.skipped.items()]
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
        lines.append(f"- {M.METRICS[metric].label} failed on {shown}: {error}")
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
        ax.set_ylabel(M.METRICS[name].label, fontsize=8)
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
                   profile_row: int | None = None, profile_col: int | None = None) -> list[Path]:
    """Per-frame plots for every sequence, and temporal profiles when a row or column is given."""
    out, written = Path(out_dir), []
    sequences = list(report.per_sequence[report.methods[0]])
    for seq in sequences:
        if report.measured:
            plot_per_frame(report, seq, out / "plots" / f"{seq}.png")
            written.append(out / "plots" / f"{seq}.png")
    if profile_row is None and profile_col is None:
        return written
    roots = ({"GT": gt} if gt is not None else {}) | dict(preds)
    listings = {label: list_sequences(root) for label, root in roots.items()}
    tag = f"row{profile_row}" if profile_row is not None else f"col{profile_col}"
    for seq in sequences:
        profiles = {label: temporal_profile(load_sequence(seqs[seq], seq), profile_row, profile_col)
                    for label, seqs in listings.items()}
        path = out / "profiles" / f"{seq}_{tag}.png"
        save_profiles(path, profiles, title=f"{seq}, {tag}")
        written.append(path)
    return written


# --------------------------------------------------------------------------------------------------
# Test sets and the bicubic baseline
# --------------------------------------------------------------------------------------------------


def panning_sequence(image: np.ndarray, num_frames: int, size: tuple[int, int],
                     velocity: tuple[int, int], start: tuple[int, int] = (0, 0)) -> np.ndarray:
    """``t h w 3`` crops of ``image`` whose window moves by ``velocity`` = (dy, dx) pixels per frame."""
    (h, w), (dy, dx), (y0, x0) = size, velocity, start
    ys, xs = [y0 + i * dy for i in range(num_frames)], [x0 + i * dx for i in range(num_frames)]
    if min(ys + xs) < 0 or max(ys) + h > image.shape[0] or max(xs) + w > image.shape[1]:
        raise ValueError(f"panning {num_frames} frames of {h}x{w} by {velocity} leaves the {image.shape[:2]} image")
    return np.stack([image[y:y + h, x:x + w] for y, x in zip(ys, xs)])


SYNTHETIC_SEQUENCES = {  # name: (scikit-image photograph, start (y, x), velocity (dy, dx) px/frame)
    "astronaut": ("astronaut", (40, 20), (2, 4)),
    "coffee": ("coffee", (60, 300), (1, -5)),
}


def write_synthetic_hr(root: str | Path, num_frames: int = 10, size: tuple[int, int] = (256, 256)) -> list[str]:
    """HR sequences panned across scikit-image photographs by a known integer motion (SYNTHETIC_SEQUENCES)."""
    try:
        from skimage import data
    except ImportError as err:
        raise ImportError("synthetic HR sequences need scikit-image (pip install scikit-image)") from err
    for name, (photo, start, velocity) in SYNTHETIC_SEQUENCES.items():
        frames = panning_sequence(getattr(data, photo)(), num_frames, size, velocity, start)
        write_sequence(Path(root) / name, [f"{i:08d}" for i in range(num_frames)], frames)
    return list(SYNTHETIC_SEQUENCES)


def sequence_rng(seed: int, name: str) -> np.random.Generator:
    """Per-sequence generator: depends on the seed and the sequence name only (not on the order)."""
    return np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(name.encode())]))


def make_testset(hr_root: str | Path, out_root: str | Path, seed: int = 0, degradation=None,
                 progress: bool = True) -> Path:
    """Degrade every HR sequence once (whole sequence = one clip); LR PNGs + ``manifest.json``.

    Same inputs and seed -> same bytes. Returns the manifest path.
    """
    import av
    from tqdm.auto import tqdm

    from mgld.data.degradations import RealBasicVSRDegradation

    degrade = degradation or RealBasicVSRDegradation()
    out = Path(out_root)
    manifest = {"seed": seed, "hr_root": str(hr_root), "config": degrade.config_dict(),
                "versions": {"av": av.__version__, "opencv": cv2.__version__, "numpy": np.__version__,
                             "ffmpeg": {k: list(v) for k, v in av.library_versions.items()}},
                "sequences": {}}
    for name, paths in tqdm(list_sequences(hr_root).items(), desc="degrade", unit="seq", disable=not progress):
        hr = load_sequence(paths, name)
        lq, params = degrade(hr, sequence_rng(seed, name), return_params=True)
        write_sequence(out / name, [p.stem for p in paths], lq)
        manifest["sequences"][name] = {"frames": [p.name for p in paths], "hr_size_hw": list(hr.shape[1:3]),
                                       "lr_size_hw": list(lq.shape[1:3]), "params": params}
    atomic_write(out / "manifest.json", json.dumps(manifest, indent=1, sort_keys=True))
    return out / "manifest.json"


def upscale_bicubic(lr_root: str | Path, out_root: str | Path, scale: int = 4) -> list[str]:
    """The bicubic baseline: every frame resized x``scale`` with OpenCV ``INTER_CUBIC``; same layout."""
    done = []
    for name, paths in list_sequences(lr_root).items():
        for p in paths:
            lr = read_frame(p)
            sr = cv2.resize(lr, (lr.shape[1] * scale, lr.shape[0] * scale), interpolation=cv2.INTER_CUBIC)
            write_frame(Path(out_root) / name / f"{p.stem}.png", sr)
        done.append(name)
    return done
