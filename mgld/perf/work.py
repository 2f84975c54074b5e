"""How much UNet work a tiling does: latent-pixel evaluations per output latent pixel (docs/notes/perf.md).

The **work ratio** of a tiling is ``Σ_tiles tile area / latent area`` per sampling step (averaged over the
steps for the shifted schedule, whose tiles change every step): 1 means every latent pixel is evaluated once
per step. Frames do not enter (every tile call sees all frames of the clip).

Modes (:func:`work_ratio`):

* ``overlap`` — mgld's default: 64-latent tiles overlapping by ``overlap`` (32: the authors' setting) over the
  whole padded latent (docs/algorithm.md §5);
* ``shifted`` — ``sampling.tile_schedule: shifted`` (:func:`mgld.diffusion.tiling.shifted_tiles`);
* ``authors`` — the authors' per-pixel-tile chain: 960-px pixel tiles with stride 750, each sampled on its own
  (≤ 120×120 latent) with 64/32 latent tiles; counted over the same padded frame as mgld's, so the modes
  differ only by their tiling. ``chain="pixel_tiles"`` applies any latent tiling (overlap 16, shifted) inside
  the authors' pixel tiles.

Frame geometry follows mgld's pre-processing (:func:`padded_size`): upsample by ``max(4, 512 / short side)``,
pad each side to a multiple of 32 (or by the authors' rule, ``padding="authors"``).
"""

from __future__ import annotations

from collections.abc import Iterable
from types import SimpleNamespace

from mgld.diffusion.tiling import pixel_tile_starts, shifted_tiles, tile_boxes
from mgld.pipeline.tiles import TilePlan, plan_tiles

# LR input sizes of the standard output sizes (x4).
FRAME_SIZES = {"480p": (120, 213), "720p": (180, 320), "1080p": (270, 480), "4K": (540, 960)}
MODES = ("overlap", "shifted", "authors")


def _plan(lr_hw: tuple[int, int], scale: int, min_short_side: int, padding: str) -> TilePlan:
    """The pipeline's :func:`~mgld.pipeline.tiles.plan_tiles` for one pass over the whole frame."""
    infer = SimpleNamespace(scale=scale, min_short_side=min_short_side, padding=padding)
    return plan_tiles(*lr_hw, infer, SimpleNamespace(tile_size="auto"), SimpleNamespace(pixel_tiling="frame"))


def padded_size(lr_hw: tuple[int, int], scale: int = 4, min_short_side: int = 512, padding: str = "fixed"
                ) -> tuple[int, int]:
    """The upsampled, padded frame mgld encodes for an LR frame of ``lr_hw`` (docs/algorithm.md §5;
    :func:`mgld.pipeline.tiles.plan_tiles`).

    ``padding="fixed"``: each side padded to the next multiple of 32; ``"authors"``: when either side is not a
    multiple, both gain ``(x // 32 + 1)·32 − x`` (1280×720 -> 1312×736) (:func:`mgld.pipeline.tiles.padding`).
    """
    return _plan(lr_hw, scale, min_short_side, padding).padded_size


def latent_size(lr_hw: tuple[int, int], scale: int = 4, min_short_side: int = 512, padding: str = "fixed"
                ) -> tuple[int, int]:
    """The latent grid (1/8 of :func:`padded_size`)."""
    return _plan(lr_hw, scale, min_short_side, padding).latent_size


def tile_evaluations(height: int, width: int, mode: str = "overlap", *, tile: int = 64, overlap: int = 32,
                     steps: int = 50, min_tile: int | None = None, chain: str = "whole", pixel_tile: int = 960,
                     pixel_stride: int = 750) -> tuple[float, list[tuple[int, int]]]:
    """UNet latent-pixel evaluations per step over a ``height × width`` latent, and the tile shapes of one
    step (all steps' shapes for ``shifted``), for a tiling ``mode`` (module docstring).

    ``chain="pixel_tiles"`` tiles each of the authors' pixel tiles (``pixel_tile``/``pixel_stride`` px) on its
    own, as their chain does; ``mode="authors"`` is ``overlap`` with that chain.
    """
    if mode == "authors":
        mode, chain = "overlap", "pixel_tiles"
    if chain == "pixel_tiles":
        lat_tile = pixel_tile // 8  # a pixel tile, in latent cells
        total, shapes = 0.0, []
        for top in pixel_tile_starts(height * 8, pixel_tile, pixel_stride):
            for left in pixel_tile_starts(width * 8, pixel_tile, pixel_stride):
                th, tw = min(lat_tile, height - top // 8), min(lat_tile, width - left // 8)
                inner, inner_shapes = tile_evaluations(th, tw, mode, tile=tile, overlap=overlap, steps=steps,
                                                       min_tile=min_tile)
                total += inner
                shapes += inner_shapes
        return total, shapes
    if chain != "whole":
        raise ValueError(f"chain must be 'whole' or 'pixel_tiles', got {chain!r}")
    if mode == "overlap":
        boxes = tile_boxes(height, width, tile, overlap)
        return float(sum(b.height * b.width for b in boxes)), [(b.height, b.width) for b in boxes]
    if mode == "shifted":
        total, shapes = 0, []
        for step in range(steps):
            tiles = shifted_tiles(height, width, tile, step, min_tile)
            total += sum(t.box.height * t.box.width for t in tiles)
            shapes += [(t.box.height, t.box.width) for t in tiles]
        return total / steps, shapes
    raise ValueError(f"unknown tiling mode {mode!r}; known: {MODES}")


def work_ratio(height: int, width: int, mode: str = "overlap", **kwargs) -> float:
    """Latent-pixel evaluations per output latent pixel per step (module docstring)."""
    evaluations, _ = tile_evaluations(height, width, mode, **kwargs)
    return evaluations / (height * width)


def work_table(sizes: dict[str, tuple[int, int]] | None = None, settings: Iterable[tuple[str, dict]] | None = None,
               tflop_per_call: float | None = None, frames: int = 5, steps: int = 50, padding: str = "fixed"
               ) -> list[dict]:
    """One row per frame size: the latent grid and the work ratio of each setting (name, ``work_ratio`` kwargs).

    With ``tflop_per_call`` (one 64×64 denoiser call on ``frames`` frames), also the UNet TFLOP per output frame
    at ``steps`` steps, scaled by tile area (exact for equal 64×64 tiles, an upper bound for smaller ones).
    """
    sizes = FRAME_SIZES if sizes is None else sizes
    settings = list(settings) if settings is not None else [
        ("overlap-32", {"mode": "overlap", "overlap": 32}),
        ("overlap-16", {"mode": "overlap", "overlap": 16}),
        ("shifted", {"mode": "shifted"}),
        ("authors", {"mode": "authors"}),
        ("authors+ov16", {"mode": "overlap", "overlap": 16, "chain": "pixel_tiles"}),
        ("authors+shifted", {"mode": "shifted", "chain": "pixel_tiles"}),
    ]
    rows = []
    for name, lr in sizes.items():
        h, w = latent_size(lr, padding=padding)
        row = {"size": name, "lr": list(lr), "latent": [h, w], "work_ratio": {}, "unet_tflop_per_frame": {}}
        for label, kwargs in settings:
            evaluations, _ = tile_evaluations(h, w, **kwargs)
            row["work_ratio"][label] = evaluations / (h * w)
            if tflop_per_call is not None:
                calls = evaluations / (64 * 64)
                row["unet_tflop_per_frame"][label] = tflop_per_call * calls * steps / frames
        rows.append(row)
    return rows


def work_markdown(rows: list[dict], what: str = "work_ratio") -> str:
    """Markdown table of :func:`work_table`: ``work_ratio`` (default) or ``unet_tflop_per_frame``."""
    labels = list(rows[0][what])
    lines = ["| size | LR | latent | " + " | ".join(labels) + " |", "|---|---|---|" + "---:|" * len(labels)]
    for r in rows:
        cells = [r["size"], "x".join(map(str, r["lr"])), "x".join(map(str, r["latent"]))]
        cells += [f"{r[what][x]:.2f}" if what == "work_ratio" else f"{r[what][x]:.0f}" for x in labels]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


__all__ = ["FRAME_SIZES", "MODES", "latent_size", "padded_size", "tile_evaluations",
           "work_markdown", "work_ratio", "work_table"]
