"""Temporal layers that make a per-frame (2-D) network video-aware (docs/algorithm.md §2.1, §2.3).

Frames travel folded into the batch, ``(b t) c h w`` with the frame index fastest; every layer here
takes the number of frames ``num_frames`` from the call, so any clip length T >= 1 works.

Both layers blend their output with their input by a learned scalar ``alpha`` (a convex blend,
not a residual add): ``out = alpha * f(x) + (1 - alpha) * x``. Upstream leaves ``alpha``
uninitialised; here it starts at ``alpha_init`` (default 0: the layer is an identity at the start of
training and still receives a gradient for ``alpha``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


class TemporalConv(nn.Module):
    """A (3, 1, 1) convolution over time, zero-padded at the clip ends, blended by ``alpha``.

    Parameter names (``temporal_conv``, ``temporal_alpha``) follow the official checkpoints.
    """

    def __init__(self, channels: int, kernel_t: int = 3, alpha_init: float = 0.0):
        super().__init__()
        if kernel_t % 2 != 1:
            raise ValueError(f"kernel_t must be odd to keep the clip length, got {kernel_t}")
        self.temporal_conv = nn.Conv3d(
            channels, channels, kernel_size=(kernel_t, 1, 1), padding=(kernel_t // 2, 0, 0)
        )
        self.temporal_alpha = nn.Parameter(torch.full((1,), float(alpha_init)))

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        """x: ``(b t) c h w`` -> ``(b t) c h w``."""
        h = rearrange(x, "(b t) c h w -> b c t h w", t=num_frames)
        h = self.temporal_conv(h)
        h = rearrange(h, "b c t h w -> (b t) c h w")
        alpha = self.temporal_alpha.to(x.dtype)
        return alpha * h + (1 - alpha) * x


class TemporalSelfAttention(nn.Module):
    """Self-attention over the T frames of each spatial position, blended by ``alpha``.

    ``LayerNorm -> multi-head attention (no positional encoding, no mask) -> output projection``.
    Parameter names follow the official checkpoints: ``norm``, ``temporal_attn.to_{q,k,v}`` (no
    bias), ``temporal_attn.to_out.0`` (with bias), ``temporal_alpha``.
    """

    def __init__(self, channels: int, head_channels: int = 64, alpha_init: float = 0.0):
        super().__init__()
        if channels % head_channels != 0:
            raise ValueError(f"channels ({channels}) must be a multiple of head_channels ({head_channels})")
        self.heads = channels // head_channels
        self.norm = nn.LayerNorm(channels)
        self.temporal_attn = nn.Module()
        self.temporal_attn.to_q = nn.Linear(channels, channels, bias=False)
        self.temporal_attn.to_k = nn.Linear(channels, channels, bias=False)
        self.temporal_attn.to_v = nn.Linear(channels, channels, bias=False)
        self.temporal_attn.to_out = nn.ModuleList([nn.Linear(channels, channels)])
        self.temporal_alpha = nn.Parameter(torch.full((1,), float(alpha_init)))

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        """x: ``(b t) c h w`` -> ``(b t) c h w``."""
        _, _, height, width = x.shape
        tokens = rearrange(x, "(b t) c h w -> (b h w) t c", t=num_frames)
        attn = self.temporal_attn
        h = self.norm(tokens)
        q, k, v = (
            rearrange(proj(h), "n t (heads d) -> n heads t d", heads=self.heads)
            for proj in (attn.to_q, attn.to_k, attn.to_v)
        )
        h = F.scaled_dot_product_attention(q, k, v)  # n heads t d
        h = attn.to_out[0](rearrange(h, "n heads t d -> n t (heads d)"))
        h = rearrange(h, "(b h w) t c -> (b t) c h w", h=height, w=width)
        alpha = self.temporal_alpha.to(x.dtype)
        return alpha * h + (1 - alpha) * x
