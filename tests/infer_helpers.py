"""Shared set-up of the inference tests: the tiny config and its overrides, frame names, config edits, seeded LR
clips, tiny networks made non-trivial, a call-counting denoiser. The ``cfg`` / ``pipe`` fixtures built from them are
in conftest.py."""

from collections import Counter
from dataclasses import replace
from pathlib import Path

import torch

from conftest import ROOT

TINY = ROOT / "configs" / "tiny.yaml"
TINY_OVERRIDES = ["sampling.steps=1", "sampling.guidance_scale=10"]  # one step: fast; guidance on
TWO_TILES = ["decode.tile_size=64", "decode.tile_stride=48", "sampling.latent_tile_size=6",
             "sampling.latent_tile_overlap=3"]  # LR 16x24 -> 64x96: pixel tiles at x = 0, 32; 2x2 latent tiles each
NAMES = [f"im{i}.png" for i in (1, 2, 3, 10, 11, 12)]  # natural order 1, 2, 3, 10, 11, 12


def with_sections(cfg, **sections):
    """``cfg`` with fields replaced, e.g. ``with_sections(cfg, infer={"overwrite": True})``."""
    return replace(cfg, **{name: replace(getattr(cfg, name), **values) for name, values in sections.items()})


def pngs(folder: Path) -> list[str]:
    """The PNG file names in ``folder``, sorted."""
    return sorted(p.name for p in Path(folder).glob("*.png"))


def clip(t: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """A seeded random LR clip, ``t`` x 3 x ``h`` x ``w`` in [0, 1)."""
    return torch.rand(t, 3, h, w, generator=torch.Generator().manual_seed(seed))


def nontrivial(net: torch.nn.Module) -> torch.nn.Module:
    """``net`` with its zero-initialised weights (UNet output layers, CFW, temporal alphas) made non-trivial, so that
    tiling, batching and the CFW features change the output: one-element parameters set to 0.5, all-zero ones drawn
    from N(0, 0.05) with the global torch generator (the caller seeds it). Returns ``net`` in eval mode, without
    gradients."""
    for p in net.parameters():
        if p.numel() == 1:
            p.data.fill_(0.5)
        elif not p.abs().sum():
            p.data.normal_(0, 0.05)
    return net.eval().requires_grad_(False)


class Counting(torch.nn.Module):
    """The denoiser, counting its calls by input shape."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.shapes = inner, Counter()

    def forward(self, x, t, z, num_frames, context=None, cond=None):
        if x.device.type != "meta":  # not the memory count of tile_batch=auto
            self.shapes[tuple(x.shape)] += 1
        return self.inner(x, t, z, num_frames, context, cond)
