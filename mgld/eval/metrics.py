"""Video SR quality metrics: full-reference, no-reference and temporal (docs/evaluation.md).

The authors ship no evaluation code (docs/evaluation.md), so the definitions here are ours:

* **PSNR / SSIM**: basicsr's ``calculate_psnr`` / ``calculate_ssim`` on 8-bit frames, RGB by
  default (``y_channel=True``: the Y of BT.601 YCbCr, as basicsr), ``crop_border`` pixels
  removed on each side.
* **LPIPS** (alex, vgg; the ``lpips`` package), **DISTS**, **BRISQUE**, **MUSIQ** (``pyiqa``),
  **NIQE** (basicsr, which ships its parameters; Y channel, no crop).
* **E_warp** (Lai et al. 2018): for each consecutive pair (t, t+1) of the evaluated frames,
  ``B = flow(V_t, V_{t+1})`` on grid t and ``W = flow(V_{t+1}, V_t)`` on grid t+1; the
  non-occlusion mask is ``M = 1 - occlusion_mask(B, W)`` (forward-backward check, alpha 0.01,
  beta 0.5, ``mgld.flow``); ``e_t = sum_p M(p) ||V_t(p) - warp(V_{t+1}, B)(p)||^2 / sum_p M(p)``
  with RGB in [0, 1] and the squared norm summed over the 3 channels; E_warp is the mean of
  ``e_t`` over pairs, reported x 1e3 (the paper's E*_warp unit). Flow: RAFT (torchvision
  ``raft_large``, inputs scaled to [-1, 1] as RAFT was trained) when its weights are in torch
  hub's cache, else OpenCV DIS; which one was used is recorded in the report.
* **Flicker** (needs GT): ``mean |(O_{t+1} - O_t) - (G_{t+1} - G_t)|`` over pixels, channels and
  pairs, in 8-bit levels. **tLPIPS** (needs GT): ``mean_t |LPIPS(O_t, O_{t+1}) - LPIPS(G_t, G_{t+1})|``.

Weights are never downloaded here: every metric is built inside :func:`offline_weights`, which
turns a download attempt into :class:`WeightsUnavailable`; the evaluation then reports the metric
as skipped with that one-line reason.

Shapes: frames are ``t h w 3`` uint8 RGB at the public boundary; torch models get ``t 3 h w``
float in [0, 1].
"""

from __future__ import annotations

import contextlib
import importlib
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from mgld import flow as mflow
from mgld._compat import import_basicsr


class WeightsUnavailable(RuntimeError):
    """A metric's weights are not in the local cache of the package that owns them."""


@dataclass(frozen=True)
class MetricInfo:
    """How a metric is reported: table label, direction, and what it needs."""

    label: str
    kind: Literal["full_ref", "no_ref", "temporal"]
    higher_is_better: bool
    needs_gt: bool


METRICS: dict[str, MetricInfo] = {
    "psnr": MetricInfo("PSNR", "full_ref", True, True),
    "ssim": MetricInfo("SSIM", "full_ref", True, True),
    "lpips": MetricInfo("LPIPS", "full_ref", False, True),
    "lpips_vgg": MetricInfo("LPIPS-vgg", "full_ref", False, True),
    "dists": MetricInfo("DISTS", "full_ref", False, True),
    "niqe": MetricInfo("NIQE", "no_ref", False, False),
    "brisque": MetricInfo("BRISQUE", "no_ref", False, False),
    "musiq": MetricInfo("MUSIQ", "no_ref", True, False),
    "ewarp": MetricInfo("E*warp(×10⁻³)", "temporal", False, False),
    "flicker": MetricInfo("Flicker", "temporal", False, True),
    "tlpips": MetricInfo("tLPIPS", "temporal", False, True),
}
DEFAULT_METRICS = ("psnr", "ssim", "lpips", "dists", "niqe", "brisque", "musiq", "ewarp", "flicker")

# Frame metric: (pred t h w 3 uint8, gt t h w 3 uint8 or None) -> one value per frame.
FrameMetric = Callable[[np.ndarray, np.ndarray | None], list[float]]
# Temporal metric: (pred, gt or None) -> one value per consecutive pair (t - 1 values).
TemporalMetric = Callable[[np.ndarray, np.ndarray | None], list[float]]


# --------------------------------------------------------------------------------------------------
# Offline weight loading
# --------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def offline_weights() -> Iterator[None]:
    """Within the block, any weight download through torch hub or pyiqa raises WeightsUnavailable."""

    def refuse(url, dst, *args, **kwargs):
        name = url.rsplit("/", 1)[-1]
        raise WeightsUnavailable(f"weights {name} not in the local cache ({dst}); download {url}")

    targets = [(importlib.import_module("torch.hub"), "download_url_to_file")]
    with contextlib.suppress(ImportError):
        targets.append((importlib.import_module("pyiqa.utils.download_util"), "download_url_to_file"))
    saved = [(module, attr, getattr(module, attr)) for module, attr in targets]
    try:
        for module, attr, _ in saved:
            setattr(module, attr, refuse)
        yield
    finally:
        for module, attr, original in saved:
            setattr(module, attr, original)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Hide the packages' "Downloading: ..." lines (nothing is downloaded, see offline_weights)."""
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        yield


def to_tensor(frames: np.ndarray, device: str | torch.device = "cpu") -> torch.Tensor:
    """``t h w 3`` uint8 -> ``t 3 h w`` float32 in [0, 1] on ``device``."""
    return torch.from_numpy(np.ascontiguousarray(frames)).to(device).permute(0, 3, 1, 2).float() / 255.0


def _batched(model: Callable, device, batch_size: int, *arrays: np.ndarray) -> list[float]:
    values: list[float] = []
    with torch.no_grad():
        for start in range(0, len(arrays[0]), batch_size):
            batch = [to_tensor(a[start:start + batch_size], device) for a in arrays]
            values.extend(model(*batch).reshape(-1).double().cpu().tolist())
    return values


# --------------------------------------------------------------------------------------------------
# Per-frame metrics
# --------------------------------------------------------------------------------------------------


def psnr(pred: np.ndarray, gt: np.ndarray, crop_border: int = 0, y_channel: bool = False) -> float:
    """basicsr PSNR of two ``h w 3`` uint8 RGB frames (RGB, or Y with ``y_channel``), in dB."""
    fn = import_basicsr("basicsr.metrics.psnr_ssim").calculate_psnr
    return float(fn(pred[..., ::-1], gt[..., ::-1], crop_border, "HWC", test_y_channel=y_channel))


def ssim(pred: np.ndarray, gt: np.ndarray, crop_border: int = 0, y_channel: bool = False) -> float:
    """basicsr SSIM (Gaussian window 11, sigma 1.5, mean over channels) of ``h w 3`` uint8 RGB frames."""
    fn = import_basicsr("basicsr.metrics.psnr_ssim").calculate_ssim
    return float(fn(pred[..., ::-1], gt[..., ::-1], crop_border, "HWC", test_y_channel=y_channel))


def niqe(frame: np.ndarray) -> float:
    """basicsr NIQE of an ``h w 3`` uint8 RGB frame (Y channel, official pristine parameters)."""
    fn = import_basicsr("basicsr.metrics.niqe").calculate_niqe
    return float(fn(frame[..., ::-1], 0, "HWC", convert_to="y"))


def load_lpips(net: Literal["alex", "vgg"], device: str | torch.device = "cpu") -> torch.nn.Module:
    """The ``lpips`` package's LPIPS (its linear heads ship with it; the backbone comes from torchvision)."""
    import lpips

    with offline_weights(), _quiet():
        return lpips.LPIPS(net=net, verbose=False).to(device).eval()


def load_pyiqa(name: str, device: str | torch.device = "cpu") -> torch.nn.Module:
    """A pyiqa metric (``dists``, ``brisque``, ``musiq``...) with weights from pyiqa's cache only."""
    import pyiqa

    with offline_weights(), _quiet():
        return pyiqa.create_metric(name, device=torch.device(device), as_loss=False)


def build_frame_metric(name: str, *, device="cpu", batch_size: int = 8, crop_border: int = 0,
                       y_channel: bool = False) -> FrameMetric:
    """A per-frame metric by name (see METRICS). Raises WeightsUnavailable when weights are absent."""
    if name in ("psnr", "ssim"):
        fn = psnr if name == "psnr" else ssim
        return lambda pred, gt: [fn(p, g, crop_border, y_channel) for p, g in zip(pred, gt)]
    if name == "niqe":
        return lambda pred, gt: [niqe(p) for p in pred]
    if name in ("lpips", "lpips_vgg"):
        model = load_lpips("vgg" if name == "lpips_vgg" else "alex", device)
        return lambda pred, gt: _batched(lambda a, b: model(a, b, normalize=True), device, batch_size, pred, gt)
    if name in ("dists", "brisque", "musiq"):
        model = load_pyiqa(name, device)
        if METRICS[name].needs_gt:
            return lambda pred, gt: _batched(model, device, batch_size, pred, gt)
        return lambda pred, gt: _batched(model, device, batch_size, pred)
    raise ValueError(f"unknown frame metric {name!r}; known: {sorted(METRICS)}")


# --------------------------------------------------------------------------------------------------
# Temporal metrics
# --------------------------------------------------------------------------------------------------


def warping_errors(frames: np.ndarray, estimator: mflow.FlowEstimator, *, flow_frames: np.ndarray | None = None,
                   device="cpu", alpha: float = 0.01, beta: float = 0.5) -> list[float]:
    """Per-pair warping error ``e_t`` of ``t h w 3`` uint8 frames (module docstring), not scaled.

    ``flow_frames`` (same shape) are the frames the flow and occlusion masks are estimated on;
    default: ``frames`` themselves (works without GT).
    """
    if len(frames) < 2:
        raise ValueError(f"warping error needs at least 2 frames, got {len(frames)}")
    video = to_tensor(frames, device)
    guide = video if flow_frames is None else to_tensor(flow_frames, device)
    errors = []
    with torch.no_grad():
        for t in range(len(frames) - 1):
            ref, nxt = guide[t:t + 1], guide[t + 1:t + 2]
            fwd, bwd = estimator(ref, nxt), estimator(nxt, ref)
            visible = 1.0 - mflow.occlusion_mask(fwd, bwd, alpha, beta)  # 1 h w on grid t
            warped = mflow.flow_warp(video[t + 1:t + 2], fwd)
            sq = ((video[t:t + 1] - warped) ** 2).sum(dim=1, keepdim=True)
            count = visible.sum()
            errors.append(float((sq * visible).sum() / count) if count > 0 else float("nan"))
    return errors


def flicker(pred: np.ndarray, gt: np.ndarray) -> list[float]:
    """Per pair ``mean |(O_{t+1} - O_t) - (G_{t+1} - G_t)|`` in 8-bit levels; 0 when pred == gt."""
    dp = np.diff(pred.astype(np.float64), axis=0)
    dg = np.diff(gt.astype(np.float64), axis=0)
    return np.abs(dp - dg).reshape(len(dp), -1).mean(axis=1).tolist()


def _raft_candidates(weights: str | Path | None) -> list[str | Path | None]:
    """Explicit path; else torchvision's file in torch hub's cache, then mgld's raft-things.pth."""
    if weights is not None:
        return [weights]
    from mgld.weights.hub import OFFICIAL_FILES, default_official_dir

    official = default_official_dir() / OFFICIAL_FILES["raft"]
    return [None, official] if official.is_file() else [None]


def build_flow(method: Literal["auto", "raft", "dis"] = "auto", device="cpu",
               raft_weights: str | Path | None = None) -> tuple[Callable, str]:
    """A flow estimator for E_warp and a description of it; ``auto`` = RAFT if its weights are local, else DIS."""
    if method not in ("auto", "raft", "dis"):
        raise ValueError(f"unknown flow method {method!r}; expected auto, raft or dis")
    reason = "not requested"
    if method != "dis":
        for weights in _raft_candidates(raft_weights):
            try:
                with offline_weights():
                    estimator = mflow.build_flow_estimator("raft", weights, device, raft_input_range="symmetric")
                return estimator, f"raft (torchvision raft_large, weights {weights or 'C_T_V1 from torch hub cache'})"
            except (FileNotFoundError, WeightsUnavailable) as err:
                reason = str(err).split(". ")[0]  # the first sentence names the missing file
        if method == "raft":
            raise WeightsUnavailable(f"RAFT weights not found: {reason}")
        return mflow.build_flow_estimator("dis"), f"dis (OpenCV DIS medium; RAFT unavailable: {reason})"
    return mflow.build_flow_estimator("dis"), "dis (OpenCV DIS medium)"


def build_temporal_metric(name: str, *, device="cpu", flow: str = "auto", flow_from: str = "pred",
                          batch_size: int = 8, raft_weights: str | Path | None = None) -> tuple[TemporalMetric, str]:
    """A per-pair temporal metric by name and a note for the report (the flow used, for ewarp)."""
    if name == "ewarp":
        estimator, note = build_flow(flow, device, raft_weights)

        def ewarp(pred, gt):
            guide = gt if flow_from == "gt" else None
            if flow_from == "gt" and gt is None:
                raise ValueError("E_warp with flow from GT needs GT frames")
            return [1e3 * e for e in warping_errors(pred, estimator, flow_frames=guide, device=device)]

        return ewarp, f"flow: {note}; estimated on {flow_from} frames"
    if name == "flicker":
        return (lambda pred, gt: flicker(pred, gt)), "8-bit levels"
    if name == "tlpips":
        model = load_lpips("alex", device)

        def tlpips(pred, gt):
            run = lambda x: _batched(lambda a, b: model(a, b, normalize=True), device, batch_size, x[:-1], x[1:])  # noqa: E731
            return np.abs(np.subtract(run(pred), run(gt))).tolist()

        return tlpips, "LPIPS-alex between consecutive frames"
    raise ValueError(f"unknown temporal metric {name!r}; known: {sorted(METRICS)}")


def weights_help() -> dict[str, str]:
    """Where each weight-needing metric looks for its files (for error messages and the README)."""
    hub = Path(torch.hub.get_dir())
    return {
        "lpips": f"torchvision alexnet in {hub / 'checkpoints'}",
        "lpips_vgg": f"torchvision vgg16 in {hub / 'checkpoints'}",
        "dists": f"pyiqa DISTS + torchvision vgg16 in {hub / 'pyiqa'} and {hub / 'checkpoints'}",
        "brisque": f"pyiqa brisque_svm_weights.pth in {hub / 'pyiqa'}",
        "musiq": f"pyiqa MUSIQ (KonIQ) in {hub / 'pyiqa'}",
        "ewarp": f"torchvision raft_large C_T_V1 in {hub / 'checkpoints'} or raft-things.pth in mgld's "
                 "official weights folder (mgld download); else OpenCV DIS",
    }
