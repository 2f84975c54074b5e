"""Video SR quality metrics: full-reference, no-reference and temporal (docs/evaluation.md).

The authors ship no evaluation code (docs/evaluation.md); the definitions here follow the packages and the
reference code the field uses:

* **PSNR / SSIM**: basicsr's ``calculate_psnr`` / ``calculate_ssim`` on 8-bit frames, RGB by
  default (``y_channel=True``: the Y of BT.601 YCbCr, as basicsr), ``crop_border`` pixels
  removed on each side.
* **LPIPS** (alex, vgg; the ``lpips`` package), **DISTS**, **BRISQUE**, **MUSIQ** (KonIQ), **CLIP-IQA**
  (pyiqa ``clipiqa``: CLIP RN50, the "Good photo." / "Bad photo." prompt pair) and **MANIQA** (pyiqa ``maniqa``,
  trained on KonIQ-10k), all through ``pyiqa`` except LPIPS; **NIQE** (basicsr, which ships its
  parameters; Y channel, no crop; it fits a Gaussian to 96x96 blocks, so a frame needs at least two of them:
  192x96 or 96x192 px).
* **E*warp**, as Lai et al. (ECCV 2018)'s reference code computes it (github
  phoenix104104/fast_blind_video_consistency: compute_flow_occlusion.py, evaluate_WarpError.py, utils.py).
  For each consecutive pair (t, t+1) of a sequence of RGB frames V in [0, 1], the flow and occlusion are
  estimated on the *flow source* F (the evaluated frames, GT, or the LR input upsampled; an option, recorded in
  the report): ``w = flow(F_t -> F_{t+1})`` on grid t (``V_t(p) ≈ V_{t+1}(p + w(p))``) and ``b = flow(F_{t+1} ->
  F_t)`` on grid t+1; ``ŵ = warp(b, w)``. A pixel p is occluded when

      |w + ŵ|² > 0.01 (|w|² + |ŵ|²) + 0.5                       (forward-backward check, squared norms)
      or  |∂x w|² + |∂y w|² > 0.01 |w|² + 0.002                 (motion boundary)

  with forward differences ``∂x w(y, x) = w(y, x) - w(y, x+1)`` (0 in the last column; ``∂y`` likewise).
  With M = 1 - occlusion repeated over the 3 channels,

      e_t = Σ_{p,c} M(p) (warp(V_{t+1}, w)(p, c) - V_t(p, c))² / Σ_{p,c} M(p)

  (a per-channel mean over the non-occluded pixels; e_t = 0 when every pixel is occluded, as the reference
  code's fallback divisor gives), E*warp of a sequence = mean of e_t over its pairs, of a data set = mean over
  sequences, reported x 1e3. Warping is bilinear with border clamping (the reference code's FlowNet2
  ``Resample2d``; :func:`mgld.flow.flow_warp` with ``padding_mode="border"``). Flow: RAFT (torchvision
  ``raft_large``, inputs scaled to [-1, 1] as RAFT was trained, raft-things weights) when its weights are local,
  else OpenCV DIS; which one was used is recorded in the report. The reference code uses FlowNet2 on frames
  resized to a multiple of 64; mgld pads for RAFT instead (docs/differences.md).
* **Flicker** (needs GT): ``mean |(O_{t+1} - O_t) - (G_{t+1} - G_t)|`` over pixels, channels and
  pairs, in 8-bit levels. **tLPIPS** (needs GT): ``mean_t |LPIPS(O_t, O_{t+1}) - LPIPS(G_t, G_{t+1})|``.

Weights are never downloaded here: every metric is built inside :func:`offline_weights`, which
turns a download attempt (torch hub, pyiqa, timm/Hugging Face, CLIP's own downloader) into
:class:`WeightsUnavailable`; the evaluation then reports the metric as skipped with that one-line reason.

Shapes: frames are ``t h w 3`` uint8 RGB at the public boundary; torch models get ``t 3 h w``
float in [0, 1] (:func:`mgld.io.frames.frames_to_tensor`, the project's one converter). Every metric callable
is ``fn(pred, gt, flow_frames=None) -> list[float]``: one value per frame, or per consecutive pair for the temporal
ones; ``flow_frames`` is the E*warp flow source (``None``: the evaluated frames), ignored by the other metrics.
The temporal ones also take ``cache``: a dict shared by the calls on one sequence (the same GT and flow-source
frames, whatever the method), where they keep what depends on those frames only (E*warp's flow and occlusion
on a GT/LR flow source, tLPIPS's GT distances), so that it is computed once per sequence.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import sys
import types
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from mgld import flow as mflow
from mgld._compat import import_basicsr
from mgld.eval.registry import DEFAULT_METRICS, FLOW_METHODS, FLOW_SOURCES, METRICS, MetricInfo
from mgld.io.frames import frames_to_tensor

__all__ = ["DEFAULT_METRICS", "FLOW_SOURCES", "METRICS", "MetricInfo", "WeightsUnavailable", "build_flow",
           "build_frame_metric", "build_temporal_metric", "flicker", "niqe", "occlusion_mask_lai", "offline_weights",
           "psnr", "ssim", "warping_errors"]


class WeightsUnavailable(RuntimeError):
    """A metric's weights are not in the local cache of the package that owns them."""


# Metric callable: (pred t h w 3 uint8, gt t h w 3 uint8 or None, flow_frames or None) -> one value per frame
# (frame metrics) or per consecutive pair (temporal metrics, t - 1 values).
Metric = Callable[..., list[float]]
FrameMetric = TemporalMetric = Metric
NIQE_BLOCK = 96  # basicsr's NIQE block side (the official recommended value)


# --------------------------------------------------------------------------------------------------
# Offline weight loading
# --------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def offline_weights() -> Iterator[None]:
    """Within the block, any weight download raises WeightsUnavailable naming the file and where it belongs.

    Covers torch hub (torchvision, lpips), pyiqa's downloader, timm (its torch-hub and Hugging Face paths: a
    file already in the Hugging Face cache is still used), and ``urllib.request.urlopen`` (OpenAI CLIP's own
    downloader, which CLIP-IQA uses).
    """

    def refuse(url, dst=None, *args, **kwargs):
        url = str(getattr(url, "full_url", url))  # urlopen may get a Request
        name = url.rsplit("/", 1)[-1]
        if dst is None and "openaipublic" in url:  # OpenAI CLIP's downloader: <torch hub>/clip/<name>
            dst = Path(torch.hub.get_dir()) / "clip" / name
        where = f" ({dst})" if isinstance(dst, (str, Path)) else ""
        raise WeightsUnavailable(f"weights {name} not in the local cache{where}; download {url}")

    def local_only(download):
        def hf_download(*args, **kwargs):
            kwargs["local_files_only"] = True
            try:
                return download(*args, **kwargs)
            except Exception as err:
                repo = kwargs.get("repo_id", args[0] if args else "?")
                name = kwargs.get("filename", args[1] if len(args) > 1 else "?")
                raise WeightsUnavailable(f"weights {name} of the Hugging Face repo {repo} not in the local "
                                         f"Hugging Face cache ({type(err).__name__})") from None
        return hf_download

    patches = [("torch.hub", "download_url_to_file", lambda _: refuse),
               ("pyiqa.utils.download_util", "download_url_to_file", lambda _: refuse),
               ("timm.models._hub", "download_url_to_file", lambda _: refuse),
               ("timm.models._hub", "hf_hub_download", local_only),
               ("urllib.request", "urlopen", lambda _: refuse)]
    saved = []
    try:
        for module_name, attr, make in patches:
            try:
                module = importlib.import_module(module_name)
            except ImportError:
                continue
            original = getattr(module, attr, None)
            if original is None:
                continue
            saved.append((module, attr, original))
            setattr(module, attr, make(original))
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


def _batched(model: Callable, device, batch_size: int, *arrays: np.ndarray) -> list[float]:
    values: list[float] = []
    with torch.no_grad():
        for start in range(0, len(arrays[0]), batch_size):
            batch = [frames_to_tensor(a[start:start + batch_size]).to(device) for a in arrays]
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
    """basicsr NIQE of an ``h w 3`` uint8 RGB frame (Y channel, official pristine parameters).

    Raises ``ValueError`` with the reason for a frame NIQE is undefined on: fewer than two 96x96 blocks (the
    block statistics need a covariance), or blocks without texture (basicsr's SVD does not converge).
    """
    h, w = frame.shape[:2]
    if (h // NIQE_BLOCK) * (w // NIQE_BLOCK) < 2:
        raise ValueError(f"NIQE needs frames of at least two {NIQE_BLOCK}x{NIQE_BLOCK} blocks "
                         f"({2 * NIQE_BLOCK}x{NIQE_BLOCK} or {NIQE_BLOCK}x{2 * NIQE_BLOCK} px), got {h}x{w}")
    fn = import_basicsr("basicsr.metrics.niqe").calculate_niqe
    try:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # empty-slice means of flat blocks
            value = float(fn(frame[..., ::-1], 0, "HWC", convert_to="y"))
    except np.linalg.LinAlgError as err:
        raise ValueError(f"NIQE undefined on this {h}x{w} frame ({err}; flat, untextured blocks?)") from None
    if not np.isfinite(value):
        raise ValueError(f"NIQE undefined on this {h}x{w} frame (non-finite block statistics; flat blocks?)")
    return value


def load_lpips(net: Literal["alex", "vgg"], device: str | torch.device = "cpu") -> torch.nn.Module:
    """The ``lpips`` package's LPIPS (its linear heads ship with it; the backbone comes from torchvision)."""
    import lpips

    with offline_weights(), _quiet():
        return lpips.LPIPS(net=net, verbose=False).to(device).eval()


@contextlib.contextmanager
def _pkg_resources_for_clip() -> Iterator[None]:
    """OpenAI's ``clip`` package (imported by pyiqa's CLIP-IQA) does ``from pkg_resources import packaging``;
    setuptools 81+ no longer ships ``pkg_resources``. While ``clip`` is imported, a stand-in module holding the
    real ``packaging`` (all ``clip`` uses) is visible; it is removed afterwards, so nothing else sees it."""
    if "clip" in sys.modules or importlib.util.find_spec("pkg_resources") is not None:
        yield
        return
    import packaging.version

    shim = types.ModuleType("pkg_resources")
    shim.packaging = packaging
    sys.modules["pkg_resources"] = shim
    try:
        importlib.import_module("clip")
        yield
    finally:
        if sys.modules.get("pkg_resources") is shim:
            del sys.modules["pkg_resources"]


def load_pyiqa(name: str, device: str | torch.device = "cpu") -> torch.nn.Module:
    """A pyiqa metric (``dists``, ``brisque``, ``musiq``, ``clipiqa``, ``maniqa``) with weights from local caches
    only (WeightsUnavailable otherwise)."""
    import pyiqa

    with contextlib.ExitStack() as stack:
        if name == "clipiqa":
            try:
                stack.enter_context(_pkg_resources_for_clip())
            except ImportError as err:
                raise WeightsUnavailable(f"CLIP-IQA needs the `clip` package (pip install openai-clip): "
                                         f"{err}") from None
        stack.enter_context(offline_weights())
        stack.enter_context(_quiet())
        return pyiqa.create_metric(name, device=torch.device(device), as_loss=False)


PYIQA_METRICS = ("dists", "brisque", "musiq", "clipiqa", "maniqa")


def build_frame_metric(name: str, *, device="cpu", batch_size: int = 8, crop_border: int = 0,
                       y_channel: bool = False) -> Metric:
    """A per-frame metric by name (see METRICS). Raises WeightsUnavailable when weights are absent."""
    if name in ("psnr", "ssim"):
        fn = psnr if name == "psnr" else ssim
        return lambda pred, gt, flow_frames=None: [fn(p, g, crop_border, y_channel) for p, g in zip(pred, gt)]
    if name == "niqe":
        return lambda pred, gt=None, flow_frames=None: [niqe(p) for p in pred]
    if name in ("lpips", "lpips_vgg"):
        model = load_lpips("vgg" if name == "lpips_vgg" else "alex", device)
        return lambda pred, gt, flow_frames=None: _batched(lambda a, b: model(a, b, normalize=True), device,
                                                           batch_size, pred, gt)
    if name in PYIQA_METRICS:
        model = load_pyiqa(name, device)
        if METRICS[name].needs_gt:
            return lambda pred, gt, flow_frames=None: _batched(model, device, batch_size, pred, gt)
        return lambda pred, gt=None, flow_frames=None: _batched(model, device, batch_size, pred)
    raise ValueError(f"unknown frame metric {name!r}; known: {sorted(METRICS)}")


# --------------------------------------------------------------------------------------------------
# Temporal metrics
# --------------------------------------------------------------------------------------------------


def occlusion_mask_lai(fwd: torch.Tensor, bwd: torch.Tensor) -> torch.Tensor:
    """Lai et al.'s occlusion test (module docstring): forward-backward check with squared norms, or motion boundary.

    Shapes:
        fwd: ``(n, 2, h, w)`` flow on the reference grid t (warps frame t+1 onto frame t); bwd: ``(n, 2, h, w)``
        on grid t+1. Returns ``(n, 1, h, w)`` float in {0, 1}, 1 = occluded, on grid t.
    """
    warped = mflow.flow_warp(bwd, fwd, padding_mode="border")
    squared = lambda x: (x ** 2).sum(dim=1, keepdim=True)  # noqa: E731
    inconsistent = squared(fwd + warped) > 0.01 * (squared(fwd) + squared(warped)) + 0.5
    du, dv = torch.zeros_like(fwd), torch.zeros_like(fwd)
    du[..., :, :-1] = fwd[..., :, :-1] - fwd[..., :, 1:]
    dv[..., :-1, :] = fwd[..., :-1, :] - fwd[..., 1:, :]
    boundary = squared(du) + squared(dv) > 0.01 * squared(fwd) + 0.002
    return (inconsistent | boundary).to(fwd.dtype)


def _pair_flow(guide: torch.Tensor, t: int, estimator: mflow.FlowEstimator) -> tuple[torch.Tensor, torch.Tensor]:
    """``(forward flow, visibility)`` of the pair ``t, t + 1`` of ``guide`` (``t 3 h w``); visibility ``1 1 h w``
    on grid t."""
    ref, nxt = guide[t:t + 1], guide[t + 1:t + 2]
    fwd, bwd = estimator(ref, nxt).float(), estimator(nxt, ref).float()
    return fwd, 1.0 - occlusion_mask_lai(fwd, bwd)


def warping_errors(frames: np.ndarray, estimator: mflow.FlowEstimator, *, flow_frames: np.ndarray | None = None,
                   device="cpu", cache: dict | None = None) -> list[float]:
    """Per-pair warping error ``e_t`` of ``t h w 3`` uint8 frames as Lai et al. define it (module docstring),
    not scaled. ``flow_frames`` (same shape): the flow source; default ``frames`` themselves. ``cache``: where the
    flow and occlusion found on ``flow_frames`` are kept (on the CPU) for the next call with the same
    ``flow_frames`` (module docstring)."""
    if len(frames) < 2:
        raise ValueError(f"warping error needs at least 2 frames, got {len(frames)}")
    if flow_frames is not None and flow_frames.shape != frames.shape:
        raise ValueError(f"E*warp flow source frames are {flow_frames.shape[1:3]}, "
                         f"evaluated frames {frames.shape[1:3]}")
    video = frames_to_tensor(frames).to(device)
    key = ("ewarp-flows", flow_frames.shape) if flow_frames is not None and cache is not None else None
    if key is None or key not in cache:
        guide = video if flow_frames is None else frames_to_tensor(flow_frames).to(device)
    if key is not None and key not in cache:
        with torch.no_grad():
            cache[key] = [tuple(x.cpu() for x in _pair_flow(guide, t, estimator)) for t in range(len(frames) - 1)]
    errors = []
    with torch.no_grad():
        for t in range(len(frames) - 1):
            if key is not None:
                fwd, visible = (x.to(device) for x in cache[key][t])
            else:
                fwd, visible = _pair_flow(guide, t, estimator)
            warped = mflow.flow_warp(video[t + 1:t + 2], fwd, padding_mode="border")
            squared = ((warped - video[t:t + 1]) * visible).double() ** 2
            count = 3.0 * visible.double().sum()  # the mask counted over the 3 channels
            errors.append(float(squared.sum() / count) if count > 0 else 0.0)
    return errors


def flicker(pred: np.ndarray, gt: np.ndarray) -> list[float]:
    """Per pair ``mean |(O_{t+1} - O_t) - (G_{t+1} - G_t)|`` in 8-bit levels; 0 when pred == gt."""
    dp = np.diff(pred.astype(np.float64), axis=0)
    dg = np.diff(gt.astype(np.float64), axis=0)
    return np.abs(dp - dg).reshape(len(dp), -1).mean(axis=1).tolist()


def _raft_candidates(weights: str | Path | None) -> list[str | Path | None]:
    """Explicit path; else torchvision's file in torch hub's cache, the converted folder's flow.safetensors (the
    stage-1 checkpoint's RAFT), then mgld's raft-things.pth (all three hold raft-things weights)."""
    if weights is not None:
        return [weights]
    from mgld.weights.hub import FLOW_FILE, OFFICIAL_FILES, default_official_dir, default_weights_dir

    local = [default_weights_dir() / FLOW_FILE, default_official_dir() / OFFICIAL_FILES["raft"]]
    return [None, *[p for p in local if p.is_file()]]


def build_flow(method: Literal["auto", "raft", "dis"] = "auto", device="cpu",
               raft_weights: str | Path | None = None) -> tuple[Callable, str]:
    """A flow estimator for E*warp and a description of it; ``auto`` = RAFT if its weights are local, else DIS."""
    from mgld.weights.checkpoints import CheckpointError

    if method not in FLOW_METHODS:
        raise ValueError(f"unknown flow method {method!r}; expected one of {', '.join(FLOW_METHODS)}")
    reasons = []
    if method != "dis":
        for weights in _raft_candidates(raft_weights):
            try:
                with offline_weights():
                    estimator = mflow.build_flow_estimator("raft", weights, device, raft_input_range="symmetric")
                return estimator, f"raft (torchvision raft_large, weights {weights or 'C_T_V1 from torch hub cache'})"
            except (FileNotFoundError, WeightsUnavailable, CheckpointError) as err:
                reasons.append(str(err).split(". ")[0])  # the first sentence names the file
                if raft_weights is not None and isinstance(err, CheckpointError):
                    raise
        reason = "; ".join(reasons)
        if method == "raft":
            raise WeightsUnavailable(f"RAFT weights not found: {reason}")
        return mflow.build_flow_estimator("dis"), f"dis (OpenCV DIS medium; RAFT unavailable: {reason})"
    return mflow.build_flow_estimator("dis"), "dis (OpenCV DIS medium)"


_FLOW_SOURCE_TEXT = {"pred": "the evaluated frames", "gt": "the GT frames", "lr": "the LR input, bicubic-upsampled"}


def build_temporal_metric(name: str, *, device="cpu", flow: str = "auto", flow_from: str = "pred",
                          batch_size: int = 8, raft_weights: str | Path | None = None) -> tuple[Metric, str]:
    """A per-pair temporal metric by name and a note for the report (the flow and its source, for ewarp).

    For ``ewarp`` the caller passes the flow-source frames as ``flow_frames`` (GT or the upsampled LR when
    ``flow_from`` is ``gt`` / ``lr``); ``pred`` uses the evaluated frames.
    """
    if name == "ewarp":
        if flow_from not in FLOW_SOURCES:
            raise ValueError(f"unknown E*warp flow source {flow_from!r}; expected one of {', '.join(FLOW_SOURCES)}")
        estimator, note = build_flow(flow, device, raft_weights)

        def ewarp(pred, gt=None, flow_frames=None, cache=None):
            if flow_from != "pred" and flow_frames is None:
                raise ValueError(f"E*warp with the flow from {_FLOW_SOURCE_TEXT[flow_from]} needs those frames")
            guide = flow_frames if flow_from != "pred" else None
            return [1e3 * e for e in warping_errors(pred, estimator, flow_frames=guide, device=device, cache=cache)]

        source = f"{_FLOW_SOURCE_TEXT[flow_from]} (flow source {flow_from})"
        return ewarp, f"Lai et al.'s definition; flow and occlusion on {source}; flow: {note}"
    if name == "flicker":
        return (lambda pred, gt, flow_frames=None, cache=None: flicker(pred, gt)), "8-bit levels"
    if name == "tlpips":
        model = load_lpips("alex", device)

        def tlpips(pred, gt, flow_frames=None, cache=None):
            run = lambda x: _batched(lambda a, b: model(a, b, normalize=True), device, batch_size, x[:-1], x[1:])  # noqa: E731
            if cache is None:
                return np.abs(np.subtract(run(pred), run(gt))).tolist()
            if "tlpips-gt" not in cache:
                cache["tlpips-gt"] = run(gt)
            return np.abs(np.subtract(run(pred), cache["tlpips-gt"])).tolist()

        return tlpips, "LPIPS-alex between consecutive frames"
    raise ValueError(f"unknown temporal metric {name!r}; known: {sorted(METRICS)}")
