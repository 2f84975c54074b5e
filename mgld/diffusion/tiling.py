"""Tiling: overlapping tiles over a latent or an image and their weighted blending (docs/algorithm.md §5).

The sampler runs the UNet tile by tile over the latent and stitches the noise predictions as
``ε̂ = Σ G·ε̂_tile / Σ G`` with the authors' Gaussian window :func:`gaussian_weights`; decoding to pixels can be
tiled the same way with a smooth window (:func:`feather_weights` or a Gaussian) in the whole-frame mode
(``sampling.pixel_tiling=frame``); the authors' per-pixel-tile mode averages its tiles uniformly instead.

Tile placement per axis (:func:`tile_starts`, latent tiles): stride ``tile − overlap``, starts 0, stride,
2·stride, …, the last tile snapped to the end (``length − tile``); one tile covering everything when
``length ≤ tile``, so a latent smaller than the tile is processed whole. Pixel tiles follow the authors' own rule
(:func:`pixel_tile_starts`): starts ``range(0, length, stride)`` clamped to ``length − size``.

Typical use::

    boxes = tile_boxes(h, w, tile=64, overlap=32)
    eps = blend_tiles(((box, unet(box.crop(x))) for box in boxes), (h, w))  # Gaussian-weighted by default
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class TileBox:
    """A tile ``[top, top + height) × [left, left + width)`` of a 2-D grid."""

    top: int
    left: int
    height: int
    width: int

    def crop(self, x: Tensor) -> Tensor:
        """The tile of ``x``: ``(..., H, W)`` → ``(..., height, width)`` (a view)."""
        return x[..., self.top : self.top + self.height, self.left : self.left + self.width]

    def downscaled(self, factor: int) -> TileBox:
        """The tile on a grid ``factor`` times coarser, starts floored (pixels → latent with 8: a pixel tile
        starting at 750 starts at latent 93)."""
        return TileBox(self.top // factor, self.left // factor, self.height // factor, self.width // factor)


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of the tiles along one axis of ``length`` (docs/algorithm.md §5).

    ``n = 1`` if ``length ≤ tile``, else ``ceil((length − tile) / stride) + 1`` with ``stride = tile − overlap``;
    starts ``k·stride``, the last one snapped to ``length − tile``.
    """
    if tile <= 0 or not 0 <= overlap < tile:
        raise ValueError(f"need tile > 0 and 0 <= overlap < tile, got tile={tile}, overlap={overlap}")
    if length <= tile:
        return [0]
    stride = tile - overlap
    count = math.ceil((length - tile) / stride) + 1
    return [min(k * stride, length - tile) for k in range(count)]


def tile_boxes(height: int, width: int, tile: int, overlap: int) -> list[TileBox]:
    """All tiles over a ``height × width`` grid, row by row; tiles are ``min(tile, side)`` on each side."""
    return [
        TileBox(top, left, min(tile, height), min(tile, width))
        for top in tile_starts(height, tile, overlap)
        for left in tile_starts(width, tile, overlap)
    ]


def pixel_tile_starts(length: int, size: int, stride: int) -> list[int]:
    """Start offsets of the authors' pixel tiles along one axis (their ``ImageSpliterTh``, docs/algorithm.md §5).

    ``length ≤ size``: one tile at 0 (covering the axis). Otherwise ``range(0, length, stride)`` with every start
    clamped to ``length − size`` and repeated values dropped, first occurrence kept (so every tile is ``size``
    long and the last one ends at ``length``): ``pixel_tile_starts(1312, 960, 750) == [0, 352]``.
    """
    if size <= 0 or stride <= 0:
        raise ValueError(f"need size > 0 and stride > 0, got size={size}, stride={stride}")
    if length <= size:
        return [0]
    return list(dict.fromkeys(min(start, length - size) for start in range(0, length, stride)))


def pixel_tile_boxes(height: int, width: int, size: int, stride: int) -> list[TileBox]:
    """The authors' pixel tiles over a ``height × width`` frame, in their order (the row index runs fastest);
    every tile is ``min(size, height) × min(size, width)``."""
    return [
        TileBox(top, left, min(size, height), min(size, width))
        for left in pixel_tile_starts(width, size, stride)
        for top in pixel_tile_starts(height, size, stride)
    ]


def gaussian_weights(
    height: int, width: int, var: float = 0.01, *, device=None, dtype: torch.dtype = torch.float32
) -> Tensor:
    """The authors' Gaussian tile window ``G(y, x) = g(y; H/2, H)·g(x; (W−1)/2, W)`` (docs/algorithm.md §5).

    ``g(u; m, L) = exp(−(u − m)² / (2·var·L²)) / √(2π·var)``. The x centre is ``(W−1)/2`` (symmetric) but the
    y centre ``H/2`` (half a pixel low), as in the released code. Computed in float64.

    Shapes:
        returns ``(height, width)``; broadcast over frames and channels.
    """

    def profile(length: int, centre: float) -> Tensor:
        u = torch.arange(length, dtype=torch.float64, device=device)
        return torch.exp(-((u - centre) ** 2) / (2 * var * length**2)) / math.sqrt(2 * math.pi * var)

    return torch.outer(profile(height, height / 2), profile(width, (width - 1) / 2)).to(dtype)


def feather_weights(
    box: TileBox, height: int, width: int, overlap: int, *, device=None, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Linear ramps over ``overlap`` pixels on the sides of ``box`` that border another tile.

    Sides on the edge of the ``height × width`` grid are not ramped, so a lone tile weighs 1 everywhere.
    Weights lie in ``(0, 1]``: blending never divides by zero.

    Shapes:
        returns ``(box.height, box.width)``.
    """

    def profile(start: int, size: int, length: int) -> Tensor:
        u = torch.arange(size, dtype=torch.float64, device=device)
        ramp = torch.ones_like(u)
        if overlap > 0 and start > 0:
            ramp = torch.minimum(ramp, (u + 1) / (overlap + 1))
        if overlap > 0 and start + size < length:
            ramp = torch.minimum(ramp, (size - u) / (overlap + 1))
        return ramp

    return torch.outer(profile(box.top, box.height, height), profile(box.left, box.width, width)).to(dtype)


def blend_tiles(
    tiles: Iterable[tuple[TileBox, Tensor]],
    size: tuple[int, int],
    weights: Callable[[TileBox], Tensor] | None = None,
) -> Tensor:
    """``Σ w·tile / Σ w`` over (possibly overlapping) tiles placed on a ``size = (H, W)`` grid.

    ``weights(box)`` gives each tile's ``(box.height, box.width)`` window; default: the authors' Gaussian
    of the box size (:func:`gaussian_weights`). ``tiles`` may be a generator, so tiles can be computed one at
    a time. Every grid position must be covered.

    Shapes:
        each tile: ``(..., box.height, box.width)``, all with the same leading dims. Returns ``(..., H, W)``.
    """
    if weights is None:
        weights = lambda box: gaussian_weights(box.height, box.width)  # noqa: E731
    total = norm = None
    for box, tile in tiles:
        if tile.shape[-2:] != (box.height, box.width):
            raise ValueError(f"tile of shape {tuple(tile.shape)} does not match its box {box}")
        if total is None:
            total = tile.new_zeros((*tile.shape[:-2], *size))
            norm = tile.new_zeros(size)
        w = weights(box).to(device=tile.device, dtype=tile.dtype)
        box.crop(total).add_(tile * w)
        box.crop(norm).add_(w)
    if total is None:
        raise ValueError("blend_tiles got no tiles")
    if not bool((norm > 0).all()):
        raise ValueError(f"the tiles do not cover the whole {size} grid")
    return total / norm


__all__ = [
    "TileBox",
    "blend_tiles",
    "feather_weights",
    "gaussian_weights",
    "pixel_tile_boxes",
    "pixel_tile_starts",
    "tile_boxes",
    "tile_starts",
]


# --------------------------------------------------------------------------------------------------
# Shifted non-overlapping tiles (``sampling.tile_schedule: shifted``, docs/algorithm.md §5)
# --------------------------------------------------------------------------------------------------

# R2 low-discrepancy sequence (Roberts 2018): successive steps get offsets spread evenly over the tile.
_PLASTIC = 1.324717957244746025960908854


@dataclass(frozen=True)
class ShiftedTile:
    """A tile the network is run on (``box``) and the part of the grid whose prediction it provides (``own``).

    ``own`` lies inside ``box``; the ``own`` regions of one step partition the grid. ``box`` is ``own`` grown
    inwards to at least ``min_tile`` per side where ``own`` is a short edge piece, so the network never runs on a
    sliver.
    """

    box: TileBox
    own: TileBox

    def own_in_box(self) -> TileBox:
        """``own`` in the coordinates of ``box`` (to crop the network's output)."""
        return TileBox(self.own.top - self.box.top, self.own.left - self.box.left, self.own.height, self.own.width)


def shift_offsets(step: int, tile: int) -> tuple[int, int]:
    """Grid offsets ``(dy, dx)`` in ``[0, tile)`` for sampling step ``step``: a pure function of the step.

    ``frac(0.5 + step·a)·tile`` with ``a = (1/g, 1/g²)``, ``g`` the plastic number (the R2 sequence), so the
    seams of consecutive steps land far apart and, over many steps, evenly over the tile.
    """
    if tile <= 0:
        raise ValueError(f"need tile > 0, got {tile}")
    a1, a2 = 1.0 / _PLASTIC, 1.0 / (_PLASTIC * _PLASTIC)
    return int(((0.5 + a1 * step) % 1.0) * tile), int(((0.5 + a2 * step) % 1.0) * tile)


def shifted_segments(length: int, tile: int, offset: int, min_tile: int) -> list[tuple[int, int, int, int]]:
    """One axis of the shifted grid: ``(eval_start, eval_len, own_start, own_len)`` per tile.

    Cuts at ``offset + k·tile`` inside ``(0, length)``; each piece is owned by one tile. A piece shorter than
    ``min_tile`` (an edge piece) is evaluated on ``min(min_tile, length)`` cells grown towards the inside of the
    grid. ``length <= tile``: one tile, the whole axis.
    """
    if tile <= 0 or not 0 < min_tile <= tile:
        raise ValueError(f"need tile > 0 and 0 < min_tile <= tile, got tile={tile}, min_tile={min_tile}")
    if length <= tile:
        return [(0, length, 0, length)]
    offset %= tile
    cuts = [0, *range(offset if offset else tile, length, tile), length]
    cuts = sorted(set(cuts))
    out = []
    for start, stop in zip(cuts, cuts[1:]):
        size = stop - start
        grown = min(max(size, min_tile), length)
        eval_start = start if start + grown <= length else length - grown
        out.append((eval_start, grown, start, size))
    return out


def shifted_tiles(height: int, width: int, tile: int, step: int, min_tile: int | None = None) -> list[ShiftedTile]:
    """Non-overlapping tiles of step ``step`` over a ``height × width`` grid, row by row (docs/algorithm.md §5).

    The grid of ``tile``-sized cells is shifted by :func:`shift_offsets` ``(step, tile)``; each grid position is
    owned by exactly one tile. ``min_tile`` (default ``tile // 4``) is the smallest side the network runs on.
    """
    min_tile = max(1, tile // 4) if min_tile is None else min_tile
    dy, dx = shift_offsets(step, tile)
    rows = shifted_segments(height, tile, dy, min_tile)
    cols = shifted_segments(width, tile, dx, min_tile)
    return [
        ShiftedTile(TileBox(ey, ex, eh, ew), TileBox(oy, ox, oh, ow))
        for ey, eh, oy, oh in rows
        for ex, ew, ox, ow in cols
    ]


__all__ += ["ShiftedTile", "shift_offsets", "shifted_segments", "shifted_tiles"]
