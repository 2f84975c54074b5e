"""Geometry of a clip: the resize factor, the padding, and the pixel-tile passes (docs/algorithm.md §5).

:func:`plan_tiles` is what :meth:`mgld.pipeline.pipeline.MGLDPipeline.tile_plan` returns: a :class:`TilePlan`
with one :class:`PixelTile` per pass of the per-pixel-tile chain (``sampling.pixel_tiling=authors``: the authors'
960/750 tiles, :func:`mgld.diffusion.tiling.pixel_tile_boxes`), or a single pass over the whole padded frame
(``frame`` mode, or a frame that fits one tile). The names stay importable from ``mgld.pipeline.pipeline``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from mgld.diffusion.tiling import TileBox, pixel_tile_boxes

log = logging.getLogger(__name__)
PAD_MULTIPLE = 32
LATENT_FACTOR = 8
AUTHORS_PIXEL_TILE = 960  # the authors' pixel tile; the reference of frame mode's guidance factor with tile auto


@dataclass(frozen=True)
class PixelTile:
    """One pass of the per-pixel-tile chain.

    ``box``: pixels of the padded upsampled frame; ``latent_box``: ``box`` on the latent grid (starts floored,
    ``box // 8``), where the tile's noise is cropped from the frame's noise streams and where its latents are
    placed; ``flow_box``: the latent crop of the whole-frame flows and masks the tile's guidance uses
    (``sampling.flow_tile_crop=authors``: the authors' own cut with size ``tile_size // 8`` and stride
    ``tile_stride // 8``, up to ~1.5 latent px off ``box`` from the third tile of a side on; ``fixed``:
    ``latent_box``).
    """

    index: int
    box: TileBox
    latent_box: TileBox
    flow_box: TileBox


@dataclass(frozen=True)
class TilePlan:
    """Geometry of a clip of ``lr_size`` frames: the resize factor, sizes, and the passes (:class:`PixelTile`)."""

    lr_size: tuple[int, int]
    scale: float
    upsampled_size: tuple[int, int]
    padded_size: tuple[int, int]
    tiles: tuple[PixelTile, ...]
    tile_size: int

    @property
    def latent_size(self) -> tuple[int, int]:
        return self.padded_size[0] // LATENT_FACTOR, self.padded_size[1] // LATENT_FACTOR

    @property
    def guidance_factor(self) -> float:
        """Scale of the guidance step in one pass over the whole frame (``sampling.pixel_tiling=frame``).

        The loss is a mean over the latent it is computed on, so its gradient per element is proportional to
        1 / (latent area). The authors compute it per pixel tile, whose latent is
        ``min(h, tile_size/8) × min(w, tile_size/8)``; over the whole ``h × w`` frame latent the gradient is
        smaller by that ratio, so the step is multiplied by

            factor = (h · w) / (min(h, tile_size/8) · min(w, tile_size/8))

        which makes the step per element the authors' (1 exactly for a frame that is one tile; 164/120 at
        1280×720 output, whose padded latent is 92×164). With ``decode.tile_size: auto`` (frame mode only) the
        reference is the authors' 960-px tile.
        """
        h, w = self.latent_size
        tile = self.tile_size // LATENT_FACTOR
        return (h * w) / (min(h, tile) * min(w, tile))


def padding(height: int, width: int, rule: str = "authors") -> tuple[int, int]:
    """``(pad_h, pad_w)`` added at the bottom/right of an upsampled ``height × width`` frame.

    ``authors``: when either side is not a multiple of 32, both sides are padded by ``(x // 32 + 1)·32 − x`` (an
    aligned side gains 32: 720×1280 -> 736×1312); else none. ``fixed``: each side to the next multiple of 32.
    """
    if rule == "fixed":
        return -height % PAD_MULTIPLE, -width % PAD_MULTIPLE
    if rule != "authors":
        raise ValueError(f"infer.padding must be 'authors' or 'fixed', got {rule!r}")
    if height % PAD_MULTIPLE == 0 and width % PAD_MULTIPLE == 0:
        return 0, 0
    return (height // PAD_MULTIPLE + 1) * PAD_MULTIPLE - height, (width // PAD_MULTIPLE + 1) * PAD_MULTIPLE - width


def resize_factor(height: int, width: int, infer) -> float:
    """The factor ``s = max(scale, min_short_side / min(h, w))`` LR frames of ``height × width`` are resized by
    (``infer``: :class:`mgld.config.InferConfig`), to ``(int(h·s), int(w·s))`` (:func:`plan_tiles`)."""
    return max(float(infer.scale), infer.min_short_side / min(height, width))


def plan_tiles(height: int, width: int, infer, decode, sampling) -> TilePlan:
    """Sizes and passes for LR frames of ``height × width`` under the config sections ``infer``, ``decode`` and
    ``sampling`` (:mod:`mgld.config`; module docstring)."""
    s = resize_factor(height, width, infer)
    size = (int(height * s), int(width * s))
    pad_h, pad_w = padding(*size, infer.padding)
    H, W = size[0] + pad_h, size[1] + pad_w
    whole = TileBox(0, 0, H, W)
    if decode.tile_size == "auto":  # frame mode only (the schema refuses it with pixel_tiling=authors)
        if sampling.pixel_tiling != "frame":
            raise ValueError("decode.tile_size: auto needs sampling.pixel_tiling=frame (in the authors' mode it is "
                             "the pixel tile of the whole chain); set an integer such as 960")
        tiles = [PixelTile(0, whole, whole.downscaled(LATENT_FACTOR), whole.downscaled(LATENT_FACTOR))]
        return TilePlan((height, width), s, size, (H, W), tuple(tiles), AUTHORS_PIXEL_TILE)
    boxes = pixel_tile_boxes(H, W, decode.tile_size, decode.tile_stride)
    if sampling.pixel_tiling == "frame" or len(boxes) == 1:
        tiles = [PixelTile(0, whole, whole.downscaled(LATENT_FACTOR), whole.downscaled(LATENT_FACTOR))]
    else:
        latent_boxes = [box.downscaled(LATENT_FACTOR) for box in boxes]
        if sampling.flow_tile_crop == "authors":  # their separate cut of the latent-size flows
            flow_boxes = pixel_tile_boxes(H // LATENT_FACTOR, W // LATENT_FACTOR, decode.tile_size // LATENT_FACTOR,
                                          decode.tile_stride // LATENT_FACTOR)
            if len(flow_boxes) != len(boxes):
                log.warning("at %dx%d the authors' flow tiles (%d) do not pair one to one with the pixel "
                            "tiles (%d); paired in order as they do. sampling.flow_tile_crop=fixed avoids it",
                            W, H, len(flow_boxes), len(boxes))
        else:
            flow_boxes = latent_boxes
        tiles = [PixelTile(i, box, lbox, fbox)
                 for i, (box, lbox, fbox) in enumerate(zip(boxes, latent_boxes, flow_boxes))]
    return TilePlan((height, width), s, size, (H, W), tuple(tiles), decode.tile_size)


__all__ = ["LATENT_FACTOR", "PAD_MULTIPLE", "PixelTile", "TilePlan", "padding", "plan_tiles", "resize_factor"]
