"""Frames given to the Python API -> the pipeline's ``t 3 h w`` float32 tensor in [0, 1] (:func:`to_frames_tensor`).

:class:`mgld.pipeline.pipeline.MGLDPipeline` calls it on whatever ``pipe(frames)`` receives; it is importable from
``mgld.pipeline.pipeline`` as before.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

FRAMES_HELP = ("frames: a t 3 h w or t h w 3 tensor/array (uint8, uint16, or float in [0, 1]), or a list of PIL "
               "images, h w 3 arrays or 3 h w tensors")


def to_frames_tensor(frames) -> Tensor:
    """A ``t 3 h w`` float32 tensor in [0, 1] from the layouts the Python API accepts.

    * a tensor or array ``t 3 h w`` or ``t h w 3`` (what ``torchvision.io.read_video`` and stacked PyAV
      ``to_ndarray(format="rgb24")`` frames give); a second axis of size 3 is read as channels;
    * a list of PIL images (any mode; 16-bit grey stays 16-bit), of ``h w 3`` / ``h w 4`` / ``h w`` arrays, or of
      ``3 h w`` tensors.

    Values: uint8 is divided by 255, uint16 by 65535, floats must already lie in [0, 1]; other integer types,
    floats outside [0, 1] and NaN are refused with a message. Grey is repeated to RGB, alpha dropped.
    """
    if isinstance(frames, np.ndarray | Tensor):
        return _channels_first(_unit_range(frames, "frames"), "frames")
    if isinstance(frames, str | bytes | Path) or not isinstance(frames, Sequence) or not len(frames):
        raise ValueError(f"no frames given ({type(frames).__name__}); expected {FRAMES_HELP}")
    out = []
    for i, frame in enumerate(frames):
        name = f"frames[{i}]"
        if hasattr(frame, "mode") and hasattr(frame, "convert"):  # PIL image
            frame = np.asarray(frame if frame.mode in ("RGB", "RGBA", "L", "I;16") else frame.convert("RGB"))
        if not isinstance(frame, np.ndarray | Tensor) or frame.ndim not in (2, 3):
            raise ValueError(f"{name}: expected an h w 3 array, a 3 h w tensor or a PIL image; got "
                             f"{type(frame).__name__} of shape {tuple(getattr(frame, 'shape', ()))}")
        frame = frame[None, ..., None] if frame.ndim == 2 else frame[None]
        out.append(_channels_first(_unit_range(frame, name), name)[0])
    if len({tuple(f.shape) for f in out}) > 1:
        raise ValueError(f"all frames must have the same size, got {sorted({tuple(f.shape[1:]) for f in out})}")
    return torch.stack(out)


def _unit_range(x: np.ndarray | Tensor, name: str) -> Tensor:
    """Float32 in [0, 1]: uint8 / 255, uint16 / 65535, floats checked; other dtypes refused."""
    if isinstance(x, np.ndarray):
        if x.dtype == np.uint16:
            return torch.from_numpy(x.astype(np.float32) / 65535.0)
        if x.dtype.kind not in "uif":
            raise ValueError(f"{name}: frames of dtype {x.dtype} are not images; expected uint8, uint16 or float")
        x = torch.from_numpy(np.array(x, dtype=np.int64 if x.dtype.kind in "iu" and x.dtype != np.uint8 else None))
    if x.dtype == torch.uint8:
        return x.float() / 255.0
    if x.dtype == torch.uint16:
        return x.to(torch.int32).float() / 65535.0
    if not x.dtype.is_floating_point:
        raise ValueError(f"{name}: integer frames must be uint8 (0-255) or uint16 (0-65535), got {x.dtype}; "
                         "convert them (e.g. frames.to(torch.uint8)) or pass floats in [0, 1]")
    x = x.float()
    lo, hi = (float(v) for v in torch.aminmax(x))
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo < 0.0 or hi > 1.0:
        raise ValueError(f"{name}: float frames must lie in [0, 1], got values in [{lo:.4g}, {hi:.4g}]; divide "
                         "8-bit values by 255 (or pass uint8), or clamp(0, 1)")
    return x


def _channels_first(x: Tensor, name: str) -> Tensor:
    """``t 3 h w``, ``t 1 h w`` or ``t h w c`` (c in 1, 3, 4) -> ``t 3 h w`` (grey repeated, alpha dropped)."""
    if x.ndim != 4:
        raise ValueError(f"{name}: expected 4 dimensions (t 3 h w or t h w 3), got shape {tuple(x.shape)}")
    if x.shape[1] != 3 and x.shape[-1] in (1, 3, 4):  # t h w c (a second axis of 3 means t 3 h w)
        x = x.permute(0, 3, 1, 2)
    elif x.shape[1] not in (1, 3):
        raise ValueError(f"{name}: no channel axis of size 3 in shape {tuple(x.shape)}; expected t 3 h w or t h w 3")
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return x[:, :3].contiguous()


__all__ = ["FRAMES_HELP", "to_frames_tensor"]
