"""Colour correction of decoded frames against the upsampled LR input (docs/algorithm.md §7, step 3).

Both fixes work per image and channel on ``(n, 3, h, w)`` tensors in [-1, 1] and are applied before clamping:

* **AdaIN**: give ``x`` the per-channel mean and standard deviation of ``ref`` (σ = √(unbiased var + 1e-5)).
* **wavelet**: keep the high frequencies of ``x`` and take the low frequencies of ``ref``, splitting each with
  a 5-level à-trous decomposition (3×3 kernel [1,2,1]ᵀ[1,2,1]/16, dilation 2^i, replicate padding 2^i).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

ColorFix = Literal["adain", "wavelet", "none"]
WAVELET_LEVELS = 5


def _mean_std(x: Tensor, eps: float = 1e-5) -> tuple[Tensor, Tensor]:
    """Per image and channel mean and √(unbiased var + eps). x: ``(n, c, h, w)`` → two ``(n, c, 1, 1)``."""
    var, mean = torch.var_mean(x, dim=(-2, -1), keepdim=True, correction=1)
    return mean, (var + eps).sqrt()


def adain_color_fix(x: Tensor, ref: Tensor) -> Tensor:
    """Match the per-channel mean and std of ``x`` to ``ref``.

    Shapes:
        x: ``(n, c, h, w)``; ref: ``(n, c, h', w')`` (statistics only, any size). Returns ``(n, c, h, w)``.
    """
    _check(x, ref, same_size=False)
    x_mean, x_std = _mean_std(x)
    ref_mean, ref_std = _mean_std(ref)
    return (x - x_mean) / x_std * ref_std + ref_mean


def _blur(x: Tensor, dilation: int) -> Tensor:
    """Depthwise 3×3 [1,2,1]ᵀ[1,2,1]/16 blur with the given dilation and replicate padding."""
    taps = x.new_tensor([1.0, 2.0, 1.0])
    kernel = (taps[:, None] * taps[None, :] / 16.0).expand(x.shape[1], 1, 3, 3)
    padded = F.pad(x, (dilation,) * 4, mode="replicate")
    return F.conv2d(padded, kernel, groups=x.shape[1], dilation=dilation)


def wavelet_decomposition(x: Tensor, levels: int = WAVELET_LEVELS) -> tuple[Tensor, Tensor]:
    """Split ``x`` into ``(high, low)`` with ``high + low == x``: ``levels`` blurs of dilation 1, 2, 4, ….

    Shapes:
        x: ``(n, c, h, w)``. Returns two ``(n, c, h, w)``.
    """
    high = torch.zeros_like(x)
    low = x
    for level in range(levels):
        blurred = _blur(low, 2**level)
        high = high + (low - blurred)
        low = blurred
    return high, low


def wavelet_color_fix(x: Tensor, ref: Tensor) -> Tensor:
    """High frequencies of ``x`` plus low frequencies of ``ref``.

    Shapes:
        x, ref: ``(n, c, h, w)`` (same size). Returns ``(n, c, h, w)``.
    """
    _check(x, ref, same_size=True)
    high, _ = wavelet_decomposition(x)
    _, ref_low = wavelet_decomposition(ref)
    return high + ref_low


def color_fix(x: Tensor, ref: Tensor, method: ColorFix = "adain") -> Tensor:
    """Dispatch to :func:`adain_color_fix`, :func:`wavelet_color_fix`, or return ``x`` for ``"none"``."""
    if method == "adain":
        return adain_color_fix(x, ref)
    if method == "wavelet":
        return wavelet_color_fix(x, ref)
    if method == "none":
        return x
    raise ValueError(f"unknown colour fix {method!r}; expected 'adain', 'wavelet' or 'none'")


def _check(x: Tensor, ref: Tensor, same_size: bool) -> None:
    if x.ndim != 4 or ref.ndim != 4 or x.shape[:2] != ref.shape[:2]:
        raise ValueError(
            f"colour fix expects x, ref as (n, c, h, w) with equal n, c; got {tuple(x.shape)}, "
            f"{tuple(ref.shape)}"
        )
    if same_size and x.shape != ref.shape:
        raise ValueError(
            f"wavelet colour fix needs x and ref of the same size, got {tuple(x.shape)}, {tuple(ref.shape)}"
        )


__all__ = ["ColorFix", "adain_color_fix", "color_fix", "wavelet_color_fix", "wavelet_decomposition"]
