"""Time-aware condition encoder (docs/algorithm.md §2.2; StableSR's ``EncoderUNetModelWT``).

The encoder sees the *clean* LR latent and the diffusion timestep and returns one feature map per
UNet resolution level; those maps drive the UNet's SFT layers. There is no diffusers equivalent, so
the module tree keeps the official checkpoint's names (``time_embed``, ``input_blocks``,
``middle_block``, ``fea_tran``) and the checkpoint loads without a key map.

Layout for ``channel_mult = (m_0, ..., m_{L-1})``: a 3x3 input conv, then per level
``num_res_blocks`` x [ResBlock (+ attention if the level's downsampling factor is in
``attention_resolutions``)], a stride-2 conv between levels, and a middle block
ResBlock-attention-ResBlock. The features kept are the end of levels 0..L-2 (before their
downsampling conv) and the middle block output, each passed through its own ``fea_tran`` ResBlock.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.embeddings import get_timestep_embedding
from einops import rearrange
from torch import nn


def _group_norm(channels: int, eps: float = 1e-5) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels, eps=eps)


class ResBlock(nn.Module):
    """Time-conditioned residual block: GN-SiLU-conv, + Linear(SiLU(emb)), GN-SiLU-dropout-conv, skip."""

    def __init__(self, channels: int, emb_channels: int, out_channels: int | None = None, dropout: float = 0.0):
        super().__init__()
        out_channels = out_channels or channels
        self.in_layers = nn.Sequential(
            _group_norm(channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1)
        )
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, out_channels))
        # Upstream normalises the output with one group per channel when 32 does not divide it.
        out_norm = _group_norm(out_channels) if out_channels % 32 == 0 else nn.GroupNorm(out_channels, out_channels)
        self.out_layers = nn.Sequential(
            out_norm, nn.SiLU(), nn.Dropout(dropout), nn.Conv2d(out_channels, out_channels, 3, padding=1)
        )
        nn.init.zeros_(self.out_layers[-1].weight)
        nn.init.zeros_(self.out_layers[-1].bias)
        self.skip_connection = (
            nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)
        )

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """x: ``n c h w``; emb: ``n e`` -> ``n out h w``."""
        h = self.in_layers(x)
        h = h + self.emb_layers(emb).to(h.dtype)[:, :, None, None]
        return self.skip_connection(x) + self.out_layers(h)


class AttentionBlock(nn.Module):
    """Spatial self-attention with a fused qkv 1x1 conv, per-head channel layout ``[head][q|k|v][d]``."""

    def __init__(self, channels: int, num_heads: int):
        super().__init__()
        if channels % num_heads != 0:
            raise ValueError(f"channels ({channels}) must be a multiple of num_heads ({num_heads})")
        self.num_heads = num_heads
        self.norm = _group_norm(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = nn.Conv1d(channels, channels, 1)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        """x: ``n c h w`` -> ``n c h w`` (``emb`` is ignored)."""
        n, c, height, width = x.shape
        qkv = self.qkv(self.norm(x).reshape(n, c, height * width))  # n (heads 3 d) L
        qkv = rearrange(qkv, "n (heads three d) L -> three n heads L d", heads=self.num_heads, three=3)
        h = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # n heads L d
        h = self.proj_out(rearrange(h, "n heads L d -> n (heads d) L"))
        return x + h.reshape(n, c, height, width)


class Downsample(nn.Module):
    """Stride-2 3x3 convolution (named ``op`` as in the official checkpoints)."""

    def __init__(self, channels: int):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        return self.op(x)


class _Step(nn.ModuleList):
    """A list of layers applied in turn; ResBlocks get the time embedding (LDM's TimestepEmbedSequential)."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        for layer in self:
            x = layer(x, emb) if isinstance(layer, (ResBlock, AttentionBlock, Downsample)) else layer(x)
        return x


class TimeAwareEncoder(nn.Module):
    """LR latent + timestep -> list of ``len(channel_mult)`` condition maps, ordered by level.

    Map ``i`` has ``out_channels`` channels at 1/2^i of the latent size (the last one comes from the
    middle block, at the deepest level's size).
    """

    def __init__(
        self,
        in_channels: int = 4,
        model_channels: int = 256,
        out_channels: int = 256,
        channel_mult: tuple[int, ...] = (1, 1, 2, 2),
        num_res_blocks: int = 2,
        attention_resolutions: tuple[int, ...] = (4, 2, 1),
        num_heads: int = 4,
        num_head_channels: int = -1,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.model_channels = model_channels
        emb_channels = 4 * model_channels
        self.time_embed = nn.Sequential(
            nn.Linear(model_channels, emb_channels), nn.SiLU(), nn.Linear(emb_channels, emb_channels)
        )

        def heads(ch: int) -> int:
            return num_heads if num_head_channels == -1 else ch // num_head_channels

        self.input_blocks = nn.ModuleList([_Step([nn.Conv2d(in_channels, model_channels, 3, padding=1)])])
        ch, ds = model_channels, 1
        level_channels = []  # channels of the kept feature of each level
        self._keep = []  # input_blocks index after which a level's feature is kept
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers = [ResBlock(ch, emb_channels, mult * model_channels, dropout)]
                ch = mult * model_channels
                if ds in attention_resolutions:
                    layers.append(AttentionBlock(ch, heads(ch)))
                self.input_blocks.append(_Step(layers))
            if level != len(channel_mult) - 1:
                self._keep.append(len(self.input_blocks) - 1)
                level_channels.append(ch)
                self.input_blocks.append(_Step([Downsample(ch)]))
                ds *= 2
        self.middle_block = _Step(
            [ResBlock(ch, emb_channels, dropout=dropout), AttentionBlock(ch, heads(ch)),
             ResBlock(ch, emb_channels, dropout=dropout)]
        )
        level_channels.append(ch)
        self.fea_tran = nn.ModuleList(
            [ResBlock(c, emb_channels, out_channels, dropout) for c in level_channels]
        )

    def forward(self, z_lr: torch.Tensor, timesteps: torch.Tensor) -> list[torch.Tensor]:
        """z_lr: ``(b t) 4 h w`` clean LR latent; timesteps: ``(b t)`` or ``(1,)`` original 0..999 steps.

        Returns ``[(b t) out h w, (b t) out h/2 w/2, ...]``, one map per level.
        """
        timesteps = torch.as_tensor(timesteps, device=z_lr.device).reshape(-1).expand(z_lr.shape[0])
        t_emb = get_timestep_embedding(timesteps, self.model_channels, flip_sin_to_cos=True, downscale_freq_shift=0)
        emb = self.time_embed(t_emb.to(z_lr.dtype))
        feats = []
        h = z_lr
        for index, block in enumerate(self.input_blocks):
            h = block(h, emb)
            if index in self._keep:
                feats.append(h)
        feats.append(self.middle_block(h, emb))
        return [tran(f, emb) for tran, f in zip(self.fea_tran, feats)]
