"""The stage-1 denoising UNet: Stable Diffusion 2.1's UNet with SFT and middle-block temporal layers.

docs/algorithm.md §2.1. ``VideoUNet`` wraps an unmodified diffusers ``UNet2DConditionModel`` (``self.base``, the
frozen SD weights) and adds what MGLD trains:

* ``self.sft``: one :class:`~mgld.models.sft.SFT` per ResNet block (22 in SD 2.1), modulating the
  block's residual branch by the time-aware encoder's map at that resolution;
* ``self.temporal``: two (3,1,1) temporal convolutions and one temporal self-attention in the middle
  block, run in the order ResNet -> temporal conv -> spatial transformer -> temporal attention ->
  ResNet -> temporal conv (upstream ``middle_block.0..5``).

The forward pass walks the diffusers blocks itself because the SFT sits *inside* each ResNet block
(between the second convolution and the skip addition), which diffusers' block forwards cannot
express. All frames of all clips are folded into the batch, ``(b t) c h w``, and the number of
frames per clip comes from the call.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from diffusers import UNet2DConditionModel
from diffusers.models.resnet import ResnetBlock2D
from torch import nn
from torch.utils.checkpoint import checkpoint

from mgld.models.sft import SFT
from mgld.models.temporal import TemporalConv, TemporalSelfAttention


def sd_unet_kwargs(
    in_channels: int = 4,
    out_channels: int = 4,
    model_channels: int = 320,
    channel_mult: Sequence[int] = (1, 2, 4, 4),
    num_res_blocks: int = 2,
    attention_resolutions: Sequence[int] = (4, 2, 1),
    num_head_channels: int = 64,
    num_heads: int = -1,
    context_dim: int = 1024,
    transformer_depth: int = 1,
    use_linear_projection: bool = True,
    upcast_attention: bool = False,
) -> dict:
    """``UNet2DConditionModel`` kwargs for an LDM-style UNet description (SD 2.1-base by default).

    ``attention_resolutions`` lists the downsampling factors (1, 2, 4, ...) whose level has
    cross-attention transformers; ``num_head_channels`` fixes the head width (heads = channels / it),
    or, when it is -1, ``num_heads`` fixes the number of heads.
    """
    block_out = [model_channels * m for m in channel_mult]
    if num_head_channels == -1 and num_heads <= 0:
        raise ValueError("set num_head_channels, or num_head_channels=-1 and num_heads > 0")
    heads = [num_heads if num_head_channels == -1 else c // num_head_channels for c in block_out]
    has_attn = [2**level in attention_resolutions for level in range(len(channel_mult))]
    return dict(
        in_channels=in_channels,
        out_channels=out_channels,
        down_block_types=tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in has_attn),
        up_block_types=tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(has_attn)),
        block_out_channels=tuple(block_out),
        layers_per_block=num_res_blocks,
        cross_attention_dim=context_dim,
        # diffusers' historic misnomer: ``attention_head_dim`` holds the number of heads per level
        attention_head_dim=tuple(heads),
        transformer_layers_per_block=transformer_depth,
        use_linear_projection=use_linear_projection,
        upcast_attention=upcast_attention,
        norm_num_groups=32,
        norm_eps=1e-5,
        flip_sin_to_cos=True,
        freq_shift=0,
        act_fn="silu",
    )


class SFTLayers(nn.Module):
    """The SFT layers of every ResNet block, indexed like the diffusers blocks that own them.

    ``down[i][j]`` -> ``down_blocks[i].resnets[j]``, ``mid[j]`` -> ``mid_block.resnets[j]``,
    ``up[i][j]`` -> ``up_blocks[i].resnets[j]``.
    """

    def __init__(self, base: UNet2DConditionModel, cond_channels: int, hidden: int = 128):
        super().__init__()

        def layers(resnets) -> nn.ModuleList:
            return nn.ModuleList([SFT(r.out_channels, cond_channels, hidden) for r in resnets])

        self.down = nn.ModuleList([layers(b.resnets) for b in base.down_blocks])
        self.mid = layers(base.mid_block.resnets)
        self.up = nn.ModuleList([layers(b.resnets) for b in base.up_blocks])


class MidBlockTemporal(nn.Module):
    """The middle block's temporal layers: ``conv0`` after ResNet 0, ``attention`` after the
    transformer, ``conv1`` after ResNet 1."""

    def __init__(self, channels: int, head_channels: int, alpha_init: float = 0.0):
        super().__init__()
        self.conv0 = TemporalConv(channels, alpha_init=alpha_init)
        self.attention = TemporalSelfAttention(channels, head_channels, alpha_init=alpha_init)
        self.conv1 = TemporalConv(channels, alpha_init=alpha_init)


def resnet_sft_forward(
    resnet: ResnetBlock2D, sft: SFT, x: torch.Tensor, emb: torch.Tensor, cond: torch.Tensor
) -> torch.Tensor:
    """A diffusers ResNet block with SFT applied to its residual branch before the skip addition.

    x: ``(b t) c h w``; emb: ``(b t) e``; cond: ``(b t) s h w`` -> ``(b t) c' h w``.
    """
    act = resnet.nonlinearity
    h = resnet.conv1(act(resnet.norm1(x)))
    h = h + resnet.time_emb_proj(act(emb))[:, :, None, None]
    h = resnet.conv2(resnet.dropout(act(resnet.norm2(h))))
    h = sft(h, cond)
    skip = x if resnet.conv_shortcut is None else resnet.conv_shortcut(x)
    return (skip + h) / resnet.output_scale_factor


def expand_context(context: torch.Tensor, batch_frames: int) -> torch.Tensor:
    """Repeat a per-clip text context over the frames of each clip.

    context: ``1 L D`` or ``b L D`` (one row per clip, clip-major) -> ``(b t) L D``.
    """
    rows = context.shape[0]
    if batch_frames % rows != 0:
        raise ValueError(f"context has {rows} rows, which does not divide the frame batch {batch_frames}")
    return context.repeat_interleave(batch_frames // rows, dim=0)


class VideoUNet(nn.Module):
    """SD UNet + SFT + middle-block temporal layers. See the module docstring."""

    def __init__(
        self,
        cond_channels: int = 256,
        sft_hidden: int = 128,
        temporal_head_channels: int = 64,
        temporal_alpha_init: float = 0.0,
        **unet_kwargs,
    ):
        super().__init__()
        self.base = UNet2DConditionModel(**sd_unet_kwargs(**unet_kwargs))
        self.sft = SFTLayers(self.base, cond_channels, sft_hidden)
        mid_channels = self.base.config.block_out_channels[-1]
        self.temporal = MidBlockTemporal(mid_channels, temporal_head_channels, temporal_alpha_init)
        self.gradient_checkpointing = False

    @property
    def num_levels(self) -> int:
        return len(self.base.down_blocks)

    def _call(self, fn, *args):
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(fn, *args, use_reentrant=False)
        return fn(*args)

    def _attend(self, attn: nn.Module, h: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return self._call(lambda x, c: attn(x, encoder_hidden_states=c, return_dict=False)[0], h, context)

    def _resnet(self, resnet, sft, h, emb, cond) -> torch.Tensor:
        return self._call(resnet_sft_forward, resnet, sft, h, emb, cond)

    def forward(
        self,
        sample: torch.Tensor,
        timesteps: torch.Tensor,
        context: torch.Tensor,
        cond: Sequence[torch.Tensor],
        num_frames: int,
    ) -> torch.Tensor:
        """Predict the noise.

        sample: ``(b t) 4 h w`` noisy latents; timesteps: ``(b t)`` or ``(1,)`` original 0..999 steps;
        context: ``1 L D`` or ``b L D`` (repeated over frames here); cond: the time-aware encoder's
        maps, one per level, ``(b t) s h/2^i w/2^i``; num_frames: T. Returns ``(b t) 4 h w``.
        """
        base = self.base
        if sample.shape[0] % num_frames != 0:
            raise ValueError(f"batch of {sample.shape[0]} frames is not a whole number of {num_frames}-frame clips")
        if len(cond) != self.num_levels:
            raise ValueError(f"expected {self.num_levels} condition maps (one per level), got {len(cond)}")
        context = expand_context(context.to(sample.dtype), sample.shape[0])
        emb = base.time_embedding(base.get_time_embed(sample, timesteps).to(sample.dtype))  # (b t) e

        h = base.conv_in(sample)
        skips = [h]
        for level, block in enumerate(base.down_blocks):
            attentions = getattr(block, "attentions", None)
            for j, resnet in enumerate(block.resnets):
                h = self._resnet(resnet, self.sft.down[level][j], h, emb, cond[level])
                if attentions is not None:
                    h = self._attend(attentions[j], h, context)
                skips.append(h)
            if block.downsamplers is not None:
                h = block.downsamplers[0](h)
                skips.append(h)

        h = self._mid_block(h, emb, context, cond[-1], num_frames)

        for k, block in enumerate(base.up_blocks):
            level = self.num_levels - 1 - k
            attentions = getattr(block, "attentions", None)
            for j, resnet in enumerate(block.resnets):
                h = torch.cat([h, skips.pop()], dim=1)
                h = self._resnet(resnet, self.sft.up[k][j], h, emb, cond[level])
                if attentions is not None:
                    h = self._attend(attentions[j], h, context)
            if block.upsamplers is not None:
                h = block.upsamplers[0](h, output_size=skips[-1].shape[-2:])
        return base.conv_out(base.conv_act(base.conv_norm_out(h)))

    def _mid_block(self, h, emb, context, cond, num_frames) -> torch.Tensor:
        """ResNet -> temporal conv -> transformer -> temporal attention -> ResNet -> temporal conv."""
        mid, sft, temporal = self.base.mid_block, self.sft.mid, self.temporal
        h = self._resnet(mid.resnets[0], sft[0], h, emb, cond)
        h = temporal.conv0(h, num_frames)
        h = self._attend(mid.attentions[0], h, context)
        h = temporal.attention(h, num_frames)
        h = self._resnet(mid.resnets[1], sft[1], h, emb, cond)
        return temporal.conv1(h, num_frames)
