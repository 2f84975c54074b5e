"""PatchGAN discriminator of stage-2 training (docs/training.md §5; pix2pix's ``NLayerDiscriminator``).

The adversarial term of the temporal-VAE decoder's loss judges each frame on its own, folded into the
batch as ``(b t) 3 H W`` in [-1, 1]. Layout for ``num_layers = 3`` (the authors' setting)::

    conv4x4 s2 3->64, LeakyReLU(0.2)
    conv4x4 s2 64->128 (no bias), BatchNorm, LeakyReLU
    conv4x4 s2 128->256 (no bias), BatchNorm, LeakyReLU
    conv4x4 s1 256->512 (no bias), BatchNorm, LeakyReLU
    conv4x4 s1 512->1                                   -> one logit per ~70x70 px patch

Weights ~ N(0, 0.02), BatchNorm weights ~ N(1, 0.02) and biases 0 (the authors' ``weights_init``).
"""

from __future__ import annotations

import torch
from torch import nn


class PatchDiscriminator(nn.Module):
    """PatchGAN: ``(n, in_channels, H, W)`` -> patch logits ``(n, 1, H', W')`` (H' = H/8 - 2 for 3 layers)."""

    def __init__(self, in_channels: int = 3, base_channels: int = 64, num_layers: int = 3):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, base_channels, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        channels = base_channels
        for n in range(1, num_layers + 1):
            out = base_channels * min(2**n, 8)
            stride = 2 if n < num_layers else 1  # the last hidden layer keeps the resolution
            layers += [
                nn.Conv2d(channels, out, 4, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(out),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            channels = out
        layers.append(nn.Conv2d(channels, 1, 4, stride=1, padding=1))
        self.main = nn.Sequential(*layers)
        self.apply(_init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``(b t) c H W`` in [-1, 1] -> logits ``(b t) 1 H' W'``."""
        return self.main(x)


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Conv2d):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


__all__ = ["PatchDiscriminator"]
