"""Temporal VAE of stage 2: the SD VAE with a video-aware, LR-guided decoder (docs/algorithm.md §2.3).

``TemporalVAE`` wraps an unmodified diffusers ``AutoencoderKL`` (``self.base``, frozen SD weights)
and adds what stage 2 trains:

* ``self.temporal``: a (3,1,1) temporal convolution after the decoder's first middle ResNet
  (``mid``) and after every decoder up-block ResNet (``up[k][j]``) — 13 layers for SD 2.1;
* ``self.fusion``: CFW blocks at LDM decoder levels 1 and 2 (H/2 and H/4), fed by the encoder
  features of the same level taken after that level's ResNets and before its downsampling.

``encode`` returns the posterior and the features CFW needs; ``decode`` takes latents divided by
the scaling factor (diffusers convention), those features, the number of frames and the fusion
weight ``w`` (``decode.cfw_weight``, the authors' ``dec_w``) for this call.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from diffusers import AutoencoderKL
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from torch import nn

from mgld.models.cfw import CFWFusion
from mgld.models.temporal import TemporalConv


def sample_posterior(mean: torch.Tensor, std: torch.Tensor, noise: torch.Tensor, scaling_factor: float) -> torch.Tensor:
    """The inference's posterior sample ``scaling_factor · (mean + std · noise)`` of the VAE's moments, as the
    authors' ``sample()``: the mean (fp16 under autocast) plus the std (fp32: ``exp`` autocasts up) times the fp32
    ``noise`` (moved to the mean's device, not rounded to its dtype first), so the latents are fp32. Used by
    :meth:`mgld.pipeline.pipeline.MGLDPipeline.encode` and :func:`mgld.pipeline.vae_tiles.encode_tiles`
    (stage-1 training casts the noise to the mean's dtype, :mod:`mgld.training.stage1`)."""
    return scaling_factor * (mean + std * noise.to(mean.device))


class DecoderTemporal(nn.Module):
    """Temporal convolutions of the decoder: ``mid`` and ``up[k][j]`` (diffusers up-block order)."""

    def __init__(self, base: AutoencoderKL, alpha_init: float = 0.0):
        super().__init__()
        decoder = base.decoder
        self.mid = TemporalConv(decoder.mid_block.resnets[0].out_channels, alpha_init=alpha_init)
        self.up = nn.ModuleList(
            [nn.ModuleList([TemporalConv(r.out_channels, alpha_init=alpha_init) for r in block.resnets])
             for block in decoder.up_blocks]
        )


class TemporalVAE(nn.Module):
    """SD ``AutoencoderKL`` + decoder temporal convolutions + CFW fusion. See the module docstring."""

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        latent_channels: int = 4,
        ch: int = 128,
        ch_mult: Sequence[int] = (1, 2, 4, 4),
        num_res_blocks: int = 2,
        num_fuse_blocks: int = 2,
        fusion_levels: Sequence[int] = (1, 2),
        scaling_factor: float = 0.18215,
        temporal_alpha_init: float = 0.0,
    ):
        super().__init__()
        levels = len(ch_mult)
        if any(not 0 <= k < levels for k in fusion_levels):
            raise ValueError(f"fusion_levels {tuple(fusion_levels)} must be within the {levels} VAE levels")
        self.base = AutoencoderKL(
            in_channels=in_channels,
            out_channels=out_channels,
            down_block_types=("DownEncoderBlock2D",) * levels,
            up_block_types=("UpDecoderBlock2D",) * levels,
            block_out_channels=tuple(ch * m for m in ch_mult),
            layers_per_block=num_res_blocks,
            latent_channels=latent_channels,
            norm_num_groups=32,
            scaling_factor=scaling_factor,
        )
        self.scaling_factor = scaling_factor
        self.fusion_levels = tuple(sorted(fusion_levels))
        self.temporal = DecoderTemporal(self.base, temporal_alpha_init)
        self.fusion = nn.ModuleDict({str(k): CFWFusion(ch * ch_mult[k], num_fuse_blocks) for k in self.fusion_levels})

    @property
    def num_levels(self) -> int:
        return len(self.base.encoder.down_blocks)

    def encode(self, x: torch.Tensor) -> tuple[DiagonalGaussianDistribution, list[torch.Tensor]]:
        """x: ``(b t) 3 H W`` in [-1, 1] -> (posterior over ``(b t) 4 H/8 W/8``, CFW features).

        The features are ``[(b t) C_k H/2^k W/2^k for k in fusion_levels]``.
        """
        encoder = self.base.encoder
        h = encoder.conv_in(x)
        feats = []
        for level, block in enumerate(encoder.down_blocks):
            for resnet in block.resnets:
                h = resnet(h, None)
            if level in self.fusion_levels:
                feats.append(h)
            if block.downsamplers is not None:
                h = block.downsamplers[0](h)
        h = encoder.mid_block(h)
        h = encoder.conv_out(encoder.conv_act(encoder.conv_norm_out(h)))
        return DiagonalGaussianDistribution(self.base.quant_conv(h)), feats

    def decode(
        self, z: torch.Tensor, enc_feats: Sequence[torch.Tensor] | None, num_frames: int, cfw_weight: float = 1.0
    ) -> torch.Tensor:
        """z: ``(b t) 4 h w`` latents / scaling_factor -> ``(b t) 3 8h 8w`` in about [-1, 1].

        ``enc_feats`` come from :meth:`encode` of the LR frames (None or ``cfw_weight = 0`` skips CFW);
        all T frames of a clip must be decoded together (the temporal convs see the whole clip).
        """
        if z.shape[0] % num_frames != 0:
            raise ValueError(f"batch of {z.shape[0]} latents is not a whole number of {num_frames}-frame clips")
        decoder = self.base.decoder
        fuse = enc_feats is not None and cfw_weight != 0
        if fuse and len(enc_feats) != len(self.fusion_levels):
            raise ValueError(f"expected {len(self.fusion_levels)} encoder feature maps, got {len(enc_feats)}")
        h = decoder.conv_in(self.base.post_quant_conv(z))
        mid = decoder.mid_block
        h = mid.resnets[0](h, None)
        h = self.temporal.mid(h, num_frames)
        h = mid.attentions[0](h)
        h = mid.resnets[1](h, None)
        for k, block in enumerate(decoder.up_blocks):
            level = self.num_levels - 1 - k
            for resnet, temporal in zip(block.resnets, self.temporal.up[k]):
                h = temporal(resnet(h, None), num_frames)
            if fuse and level in self.fusion_levels:
                h = self.fusion[str(level)](enc_feats[self.fusion_levels.index(level)], h, cfw_weight)
            if block.upsamplers is not None:
                h = block.upsamplers[0](h)
        return decoder.conv_out(decoder.conv_act(decoder.conv_norm_out(h)))
