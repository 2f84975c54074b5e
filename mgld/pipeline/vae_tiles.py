"""The VAE over a whole frame in feathered pixel tiles (``sampling.pixel_tiling=frame``; docs/algorithm.md §5, §7).

:func:`encode_tiles` blends the posterior moments of the tiles and keeps the CFW encoder features of every tile
(:class:`TileFeatures`) while they fit a budget, so that :func:`decode_tiles` does not run the encoder again for
each tile (the values are the ones it would compute); without them it encodes each tile again, as before. Tiles
are the authors' boxes (:func:`vae_boxes`) with their starts floored to a multiple of 8, of the size
:func:`choose_tile` gives (``decode.tile_size``, or chosen from the free memory for ``auto``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import Tensor

from mgld.diffusion.tiling import TileBox, blend_tiles, feather_weights, pixel_tile_boxes
from mgld.models.efficiency import DTYPES
from mgld.models.vae import sample_posterior
from mgld.pipeline import memory
from mgld.pipeline.memory import AUTHORS_TILE, auto_decode_tile, tile_stride_for

log = logging.getLogger(__name__)


@dataclass
class TileFeatures:
    """The CFW encoder features of every VAE tile of a frame-mode pass, kept from the encode for the decode.
    ``tile``: the ``(size, stride)`` they belong to; ``feats[i]``: the feature maps of tile ``i`` (on the device,
    or in host memory with ``infer.offload``), None where the VAE gave none."""

    tile: tuple[int, int]
    feats: list


def vae_boxes(height: int, width: int, size: int, stride: int) -> list[TileBox]:
    """The VAE's pixel tiles over a ``height × width`` frame: the authors' boxes (``size``/``stride``) with their
    starts floored to a multiple of 8, so every tile's latent lies on the frame's latent grid (one box when the
    frame fits)."""
    return [TileBox(b.top // 8 * 8, b.left // 8 * 8, b.height, b.width)
            for b in pixel_tile_boxes(height, width, size, stride)]


def tile_stride(decode, size: int) -> int:
    """The VAE tile stride for a tile of ``size`` px under ``decode`` (:class:`mgld.config.DecodeConfig`): the
    configured stride at the configured size (960 for ``auto``), else scaled like the tile
    (:func:`mgld.pipeline.memory.tile_stride_for`)."""
    base = AUTHORS_TILE if decode.tile_size == "auto" else decode.tile_size
    return tile_stride_for(size, base, decode.tile_stride)


def choose_tile(decode, up: Tensor, precision: str, autocast: bool) -> tuple[int, int]:
    """``(size, stride)`` of the VAE tiles for ``up`` (``t 3 H W``, on its device): ``decode.tile_size`` /
    ``tile_stride``, or for ``auto`` the largest tile up to the authors' 960 whose encode + decode fit the free
    memory of the device (:func:`mgld.pipeline.memory.auto_decode_tile` for ``precision``, under autocast or with
    weights in that dtype), the stride scaled with it."""
    if decode.tile_size != "auto":
        return decode.tile_size, decode.tile_stride
    tile = auto_decode_tile(memory.free_bytes(up.device), tuple(up.shape[-2:]), up.shape[0], DTYPES[precision],
                            autocast=autocast)
    log.debug("decode.tile_size=auto: %d px", tile)
    return tile, tile_stride(decode, tile)


def encode_tiles(vae, up: Tensor, noise: Tensor, vae_tile: tuple[int, int], store: torch.device, budget: int
                 ) -> tuple[Tensor, TileFeatures | None]:
    """``z_lr = sf·(mean + std·noise)`` ``t 4 H/8 W/8`` of ``up`` (``t 3 H W``) from the moments of the tiles
    blended with feathered weights, and the tiles' CFW features moved to ``store`` (None once they would exceed
    ``budget`` bytes)."""
    kept: list | None = []
    used = 0

    def moments():
        nonlocal kept, used
        for box in vae_boxes(*up.shape[-2:], *vae_tile):
            posterior, feats = vae.encode(box.crop(up))
            if kept is not None:
                used += sum(f.numel() * f.element_size() for f in feats or ())
                if used > budget:
                    kept = None  # too large to keep: the decode encodes the tiles again (the same values)
                else:
                    kept.append(None if feats is None else [f.to(store) for f in feats])
            yield box.downscaled(8), torch.cat([posterior.mean, posterior.std], 1)

    overlap = (vae_tile[0] - vae_tile[1]) // 8
    size = (up.shape[-2] // 8, up.shape[-1] // 8)
    mean, std = blend_tiles(moments(), size, weights=lambda box: feather_weights(box, *size, overlap)).chunk(2, dim=1)
    z_lr = sample_posterior(mean, std, noise, vae.scaling_factor)  # fp32 noise, as in MGLDPipeline.encode
    return z_lr, TileFeatures(tuple(vae_tile), kept) if kept is not None else None


def decode_tiles(vae, z0: Tensor, up: Tensor, feats: TileFeatures | None, vae_tile: tuple[int, int],
                 cfw_weight: float) -> Tensor:
    """Latents ``t 4 h w`` -> ``t 3 8h 8w`` decoded per VAE tile (all frames of the clip together) with the CFW
    features of the tile (``feats`` when they belong to ``vae_tile``, else encoded from ``up`` again), blended
    with feathered weights."""
    t = z0.shape[0]
    z = z0 / vae.scaling_factor
    cached = feats.feats if isinstance(feats, TileFeatures) and feats.tile == tuple(vae_tile) else None

    def tiles():
        for i, box in enumerate(vae_boxes(*up.shape[-2:], *vae_tile)):
            if cached is not None:
                tile_feats = None if cached[i] is None else [f.to(z.device) for f in cached[i]]
            else:
                tile_feats = vae.encode(box.crop(up))[1]
            yield box, vae.decode(box.downscaled(8).crop(z), tile_feats, t, cfw_weight).float()

    size = tuple(up.shape[-2:])
    overlap = vae_tile[0] - vae_tile[1]
    return blend_tiles(tiles(), size, weights=lambda box: feather_weights(box, *size, overlap))


__all__ = ["TileFeatures", "choose_tile", "decode_tiles", "encode_tiles", "tile_stride", "vae_boxes"]
