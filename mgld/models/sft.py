"""Spatial feature transform (SFT) of the stage-1 UNet (docs/algorithm.md §2.1; StableSR's ``SPADE``).

Every UNet ResNet block passes its residual branch through an SFT layer before the skip addition:
``out = GN(h) * (1 + gamma(s)) + beta(s)``, where ``s`` is the time-aware encoder's feature map at
the block's resolution and ``gamma``/``beta`` are 3x3 convolutions over a shared ReLU layer.
"""

from __future__ import annotations

import torch
from torch import nn


class SFT(nn.Module):
    """Scale/shift modulation of ``channels`` features by ``cond_channels`` condition maps.

    ``param_free_norm`` is a learnable GroupNorm(32, eps 1e-5), named as in the official checkpoints.
    """

    def __init__(self, channels: int, cond_channels: int, hidden: int = 128, groups: int = 32, eps: float = 1e-5):
        super().__init__()
        self.param_free_norm = nn.GroupNorm(groups, channels, eps=eps, affine=True)
        self.mlp_shared = nn.Sequential(nn.Conv2d(cond_channels, hidden, 3, padding=1), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(hidden, channels, 3, padding=1)
        self.mlp_beta = nn.Conv2d(hidden, channels, 3, padding=1)

    def forward(self, h: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """h: ``(b t) C H W``; cond: ``(b t) cond_channels H W`` (same H, W) -> ``(b t) C H W``."""
        if cond.shape[-2:] != h.shape[-2:]:
            raise ValueError(
                f"SFT condition map is {tuple(cond.shape[-2:])} but the features are {tuple(h.shape[-2:])}; "
                "the encoder and the UNet must see latents of the same size"
            )
        actv = self.mlp_shared(cond)
        return self.param_free_norm(h) * (1 + self.mlp_gamma(actv)) + self.mlp_beta(actv)
