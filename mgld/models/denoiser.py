"""The stage-1 denoiser: time-aware encoder + video UNet + the stored empty-prompt context.

MGLD always conditions on the empty prompt (docs/algorithm.md §2.4), so the text encoder is run once, at
conversion time, and its output ``[1, L, D]`` is kept as the ``text_context`` buffer; inference and
training never need a text encoder.
"""

from __future__ import annotations

import torch
from torch import nn

from mgld.models.cond_encoder import TimeAwareEncoder
from mgld.models.unet import VideoUNet

# Parameter groups by name prefix; stage 1 trains everything but ``base``.
DENOISER_GROUPS = {
    "sft": "unet.sft.",
    "temporal": "unet.temporal.",
    "cond_encoder": "cond_encoder.",
    "base": "unet.base.",
}


class MGLDDenoiser(nn.Module):
    """``eps = unet(x_t, t, context, cond_encoder(z_lr, t), T)``."""

    def __init__(self, unet: VideoUNet, cond_encoder: TimeAwareEncoder, context_length: int = 77):
        super().__init__()
        self.unet = unet
        self.cond_encoder = cond_encoder
        context_dim = unet.base.config.cross_attention_dim
        self.register_buffer("text_context", torch.zeros(1, context_length, context_dim))

    def forward(
        self,
        x_t: torch.Tensor,
        timesteps: torch.Tensor,
        z_lr: torch.Tensor,
        num_frames: int,
        context: torch.Tensor | None = None,
        cond: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """x_t, z_lr: ``(b t) 4 h w``; timesteps: ``(b t)`` or ``(1,)`` original steps -> eps ``(b t) 4 h w``.

        ``context`` defaults to the stored empty-prompt context; ``cond`` (the encoder's maps) is
        computed from ``z_lr`` unless given.
        """
        if x_t.shape != z_lr.shape:
            raise ValueError(f"x_t {tuple(x_t.shape)} and z_lr {tuple(z_lr.shape)} must have the same shape")
        if cond is None:
            cond = self.cond_encoder(z_lr, timesteps)
        context = self.text_context if context is None else context
        return self.unet(x_t, timesteps, context, cond, num_frames)

    def parameter_groups(self) -> dict[str, list[tuple[str, nn.Parameter]]]:
        """``{group: [(name, parameter)]}`` for the groups of :data:`DENOISER_GROUPS`."""
        groups: dict[str, list] = {g: [] for g in DENOISER_GROUPS}
        for name, param in self.named_parameters():
            group = next((g for g, prefix in DENOISER_GROUPS.items() if name.startswith(prefix)), None)
            if group is None:
                raise RuntimeError(f"parameter {name} belongs to no group")
            groups[group].append((name, param))
        return groups

    def set_stage1_trainable(self, train_temporal_norm: bool = True) -> list[nn.Parameter]:
        """Freeze the SD UNet, unfreeze SFT + temporal + encoder; return the trainable parameters.

        ``train_temporal_norm=False`` reproduces the authors' run, where the temporal attention's
        LayerNorm stayed frozen at its init because its name lacks "temporal" (docs/training.md §1).
        """
        trainable = []
        for group, params in self.parameter_groups().items():
            for name, param in params:
                frozen_norm = not train_temporal_norm and name.startswith("unet.temporal.attention.norm.")
                param.requires_grad_(group != "base" and not frozen_norm)
                if param.requires_grad:
                    trainable.append(param)
        return trainable
