"""Evaluation of video SR outputs against folders of frames: settings, checks, metrics, aggregation
(docs/evaluation.md; metric definitions: mgld.eval.metrics; inputs: mgld.eval.inputs; reports: mgld.eval.report).

Predicted frames are matched to GT frames by file stem (:mod:`mgld.eval.inputs`); differing sequence sets, frame
names or frame sizes are refused with a message naming the sequence (without GT, every method must have the
sequences and frame names of the first one).

Aggregation: a frame metric gives one value per frame, a temporal metric one per consecutive
pair; the sequence value is the mean over its frames (pairs) and the dataset value the mean over
sequences (each sequence weighs the same). :class:`EvalReport` holds every level; :mod:`mgld.eval.report` writes it.

Robustness: :func:`prepare` lists, matches and size-checks every sequence and checks the settings before any
metric is computed. A metric that cannot be built is *skipped* with its reason; a metric that raises on a
sequence is a *failure* recorded with the method, sequence and reason (``report.failures``, listed under the
table), its data-set mean for that method is n/a, and every other metric and sequence is still computed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mgld._extras import install_hint
from mgld.eval import metrics as M
from mgld.eval.inputs import frame_stems, list_sequences, load_sequence, match_sequences, upsample_to
from mgld.io.sequences import Sequence
from mgld.weights.checkpoints import CheckpointError

logger = logging.getLogger(__name__)


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

    preds: dict[str, dict[str, Sequence]]  # method -> sequence name -> its frames (mgld.eval.inputs)
    gt: dict[str, Sequence] | None
    lr: dict[str, Sequence] | None
    sizes: dict[str, dict[str, tuple[int, int]]]  # label (method, "GT", "LR") -> sequence -> (h, w) of its frames


def _device(name: str) -> str:
    return ("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name


def prepare(preds: dict[str, str | Path], gt: str | Path | None = None, settings: EvalSettings | None = None,
            lr: str | Path | None = None) -> EvalInputs:
    """List every sequence (each frame's integrity and size checked), match them, check sizes and settings (no
    metric yet).

    Raises ``ValueError`` / ``OSError`` naming the option, method, sequence or file.
    """
    settings = settings or EvalSettings()
    settings.check()
    if "ewarp" in settings.metrics and settings.flow_from == "gt" and gt is None:
        raise ValueError("--warp-flow-from gt: E*warp with the flow from GT needs the GT frames (--gt)")
    if "ewarp" in settings.metrics and settings.flow_from == "lr" and lr is None:
        raise ValueError("--warp-flow-from lr: E*warp with the flow from the LR input needs the LR frames (--lr)")
    gt_seqs = list_sequences(gt, "--gt") if gt is not None else None
    pred_seqs = {m: list_sequences(root, f"method {m!r}") for m, root in preds.items()}
    reference = gt_seqs if gt_seqs is not None else next(iter(pred_seqs.values()))
    for method, seqs in pred_seqs.items():  # without GT, every method must match the first one
        match_sequences(seqs, reference, method)
    lr_seqs = None
    if lr is not None and "ewarp" in settings.metrics and settings.flow_from == "lr":
        lr_seqs = list_sequences(lr, "--lr")
        match_sequences(lr_seqs, reference, "LR", what="LR", who=f"--lr {lr}")
    listings = dict(pred_seqs) | ({"GT": gt_seqs} if gt_seqs is not None else {}) | (
        {"LR": lr_seqs} if lr_seqs is not None else {})
    sizes = {label: {name: (seq.height, seq.width) for name, seq in seqs.items()} for label, seqs in listings.items()}
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


def build_metrics(settings: EvalSettings, have_gt: bool) -> tuple[dict[str, Callable], dict[str, str], dict[str, str]]:
    """(name -> callable, skipped name -> reason, notes) for the requested metrics.

    A metric that cannot be built (weights not cached, a package that does not import) is skipped with the
    reason; the others are still built. ``settings`` are checked ones (:meth:`EvalSettings.check`, which
    :func:`prepare` runs with the check that E*warp's flow source is given).
    """
    device, built, skipped = _device(settings.device), {}, {}
    notes = {"psnr": f"{'Y' if settings.y_channel else 'RGB'}, crop {settings.crop_border}",
             "ssim": f"{'Y' if settings.y_channel else 'RGB'}, crop {settings.crop_border}"}
    for name in settings.metrics:
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
    # sequence by sequence, so that the GT frames, the E*warp flow source and what depends on them only (cache)
    # are read and computed once for all methods; the report keeps the method-then-sequence order
    sequences = list(dict.fromkeys(s for m in preds for s in inputs.preds[m]))
    jobs = [(m, s) for s in sequences for m in preds if s in inputs.preds[m]]
    results: dict[tuple[str, str], tuple[dict, list[dict]]] = {}
    current = ref = guides = cache = None
    for method, seq in tqdm(jobs, desc="evaluate", unit="seq", disable=not progress):
        if seq != current:  # the first method of a sequence
            current = seq
            ref = load_sequence(inputs.gt[seq]) if inputs.gt is not None else None  # same shape (prepare checked)
            guides, cache = {}, {}
        pred = load_sequence(inputs.preds[method][seq])
        if "ewarp" in built and pred.shape[1:3] not in guides:
            guides[pred.shape[1:3]] = _flow_source(settings, ref, inputs, seq, pred.shape[1:3])
        guide = guides.get(pred.shape[1:3])
        values, failures = {}, []
        for name, fn in built.items():
            try:
                extra = {"cache": cache} if M.METRICS[name].kind == "temporal" else {}
                values[name] = _checked(fn(pred, ref, flow_frames=guide if name == "ewarp" else None, **extra),
                                        name, pred)
            except Exception as err:  # one metric failing on one sequence does not stop the others
                failures.append({"method": method, "sequence": seq, "metric": name, "error": _one_line(err)})
                logger.warning("metric %s failed on %s/%s: %s", name, method, seq, _one_line(err))
        results[method, seq] = values, failures
    for method in preds:
        for seq in inputs.preds[method]:
            values, failures = results[method, seq]
            report.failures.extend(failures)
            _collect(report, method, seq, frame_stems(inputs.preds[method][seq]), values)
    for method in preds:
        report.mean[method] = {m: _mean_over_sequences(report, method, m) for m in report.measured}
    return report


def _flow_source(settings: EvalSettings, ref, inputs: EvalInputs, seq: str, size) -> np.ndarray | None:
    if settings.flow_from == "gt":
        return ref
    if settings.flow_from == "lr":
        return upsample_to(load_sequence(inputs.lr[seq]), tuple(size))
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
