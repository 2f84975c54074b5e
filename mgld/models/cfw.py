"""Controllable feature wrapping (CFW) of the temporal VAE decoder (docs/algorithm.md §2.3).

MGLD's video decoder fuses VAE-encoder features of the LR frames into the decoder at H/4 and H/2:
``out = dec + w * fuse_out(dense(fuse_in(concat[enc, dec])))``. Unlike StableSR's image CFW
(RRDB-based), the video version uses plain ESRGAN residual dense blocks (basicsr's
``ResidualDenseBlock``, growth 32), and it is trained from scratch in stage 2.
"""

from __future__ import annotations

import torch
from diffusers.models.resnet import ResnetBlock2D
from torch import nn

from mgld._compat import import_basicsr


class CFWFusion(nn.Module):
    """Fuse encoder features into decoder features of ``channels`` channels.

    ``fuse_in``: ResNet block 2C -> C (1x1 conv shortcut); ``dense``: ``num_blocks`` residual dense
    blocks; ``fuse_out``: ResNet block C -> C. GroupNorm(32, eps 1e-6), no time embedding.
    """

    def __init__(self, channels: int, num_blocks: int = 2, growth: int = 32):
        super().__init__()
        rdb = import_basicsr("basicsr.archs.rrdbnet_arch").ResidualDenseBlock
        self.fuse_in = ResnetBlock2D(in_channels=2 * channels, out_channels=channels, temb_channels=None, eps=1e-6)
        self.dense = nn.Sequential(*[rdb(num_feat=channels, num_grow_ch=growth) for _ in range(num_blocks)])
        self.fuse_out = ResnetBlock2D(in_channels=channels, out_channels=channels, temb_channels=None, eps=1e-6)

    def forward(self, enc: torch.Tensor, dec: torch.Tensor, w: float = 1.0) -> torch.Tensor:
        """enc, dec: ``(b t) C H W`` -> ``(b t) C H W``; ``w`` scales the fused correction."""
        if enc.shape != dec.shape:
            raise ValueError(f"CFW: encoder features {tuple(enc.shape)} do not match decoder {tuple(dec.shape)}")
        h = self.fuse_in(torch.cat([enc, dec], dim=1), None)
        h = self.fuse_out(self.dense(h), None)
        return dec + w * h
