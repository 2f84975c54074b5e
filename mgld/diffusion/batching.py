"""Latent tiles × frames batched into denoiser calls (docs/algorithm.md §5; docs/notes/perf.md).

:func:`predict_noise` is the tiled noise prediction of one sampling step with the tiles grouped into as few
denoiser calls as the memory allows (``sampling.tile_batch``: an integer, or ``auto``):

* tiles are grouped by shape (``(height, width)``), so tiles of unequal size — the edge tiles of the shifted
  schedule — are batched with their equals instead of running one at a time; in the overlapping schedule every
  tile has the same shape (the last tile of an axis is snapped to the end, docs/algorithm.md §5);
* ``auto`` takes the largest batch whose activations fit in the free memory, from the call's peak tensor memory
  counted on the meta device (:mod:`mgld.perf.simulate`) for 1 and 2 tiles (it grows linearly), resolved once
  per sampling pass (:func:`tile_batch_for_pass`; :func:`predict_noise` takes the integer);
* the Gaussian window and its normalisation are built once per geometry and device (no host→device copy and no
  host synchronisation per step); the timestep tensor is made on the device;
* overlapping tiles are accumulated in fp32 in tile order (the same sums as one tile per call);
  ``tile_schedule="shifted"`` copies each tile's owned part (:func:`mgld.diffusion.tiling.shifted_tiles`).

Batching changes the result only by floating-point rounding. Measured on the CPU (docs/notes/perf.md), each
layer re-run on a 2-tile batch: in the full-size denoiser only the ``Linear`` layers' matrix products differ
(the GEMM's blocking depends on the number of rows; ≤ 5e-7), convolutions (2-D, the temporal ``Conv3d``), norms and
attention do not; in the tiny test network small 1×1/3×3 convolutions differ too (oneDNN picks its algorithm by
batch). One full-size call on 2 tiles differs from 2 calls by at most 1.6e-6 (|ε̂| up to 1.75); the tests bound
the tiled prediction by 1e-5 (tests/test_batching.py).
"""

from __future__ import annotations

import functools
import math
import weakref
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from mgld.diffusion.tiling import TileBox, gaussian_weights, shifted_tiles, tile_boxes

TILE_SCHEDULES = ("overlap", "shifted")


def plan_batches(shapes: Sequence[tuple[int, int]], batch: int) -> list[list[int]]:
    """Indices of tiles per denoiser call: tiles grouped by shape (first-seen order, tile order inside a group),
    each group cut into calls of at most ``batch`` tiles, of sizes as equal as possible."""
    if batch < 1:
        raise ValueError(f"tile batch must be >= 1, got {batch}")
    groups: dict[tuple[int, int], list[int]] = {}
    for index, shape in enumerate(shapes):
        groups.setdefault(tuple(shape), []).append(index)
    calls = []
    for members in groups.values():
        count = math.ceil(len(members) / batch)
        size = math.ceil(len(members) / count)
        for start in range(0, len(members), size):
            calls.append(members[start:start + size])
    return calls


@functools.lru_cache(maxsize=32)
def _gaussian_blend(height: int, width: int, boxes: tuple[TileBox, ...], device: torch.device, dtype: torch.dtype):
    """The Gaussian windows of ``boxes`` (one per distinct tile shape) and ``1 / Σ window`` over the grid."""
    windows = {(b.height, b.width): gaussian_weights(b.height, b.width) for b in boxes}
    norm = torch.zeros(height, width, dtype=torch.float32)
    for b in boxes:
        b.crop(norm).add_(windows[(b.height, b.width)])
    if not bool((norm > 0).all()):
        raise ValueError(f"the tiles do not cover the whole {height}x{width} grid")
    windows = {shape: _to_device(w, device, dtype) for shape, w in windows.items()}
    return windows, _to_device(norm, device, dtype)


def _to_device(t: Tensor, device: torch.device, dtype: torch.dtype) -> Tensor:
    """``t`` on ``device``; to a GPU from pinned memory without waiting (the first step of a pass does not
    synchronise either)."""
    t = t.to(dtype)
    if torch.device(device).type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


# ---------------------------------------------------------------------------------------------------------
# tile_batch: auto
# ---------------------------------------------------------------------------------------------------------

_CALL_COST: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # denoiser -> {(shape, dtype): (a, b)}


def call_cost(denoiser: torch.nn.Module, tile: tuple[int, int], num_frames: int, dtype: torch.dtype,
              channels: int = 4, autocast: torch.dtype | None = None) -> tuple[int, int]:
    """``(fixed, per_tile)`` bytes so that one call on ``n`` tiles of ``tile`` (inputs of ``dtype``, under
    ``autocast`` to that dtype if given) peaks at ``fixed + n·per_tile`` bytes of activations; counted on the
    meta device for 1 and 2 tiles, cached per network and shape."""
    from mgld.perf.simulate import peak_bytes

    key = (tuple(tile), num_frames, dtype, channels, autocast)
    cache = _CALL_COST.setdefault(denoiser, {})
    if key not in cache:
        t = torch.zeros(1, dtype=torch.long)

        def peak(n: int) -> int:
            x = torch.empty(n * num_frames, channels, *tile, dtype=dtype)
            return peak_bytes(denoiser, denoiser, x, t, x, num_frames, autocast=autocast)

        one, two = peak(1), peak(2)
        cache[key] = (max(0, 2 * one - two), max(1, two - one))
    return cache[key]


def resolve_tile_batch(
    tile_batch: int | str,
    denoiser: torch.nn.Module,
    tiles: int,
    tile: tuple[int, int],
    num_frames: int,
    device: torch.device | str,
    dtype: torch.dtype,
    *,
    budget: int | None = None,
    fraction: float = 0.8,
) -> int:
    """The number of tiles per denoiser call: ``tile_batch`` itself, or for ``auto`` the most tiles whose
    activations fit in ``fraction`` of the free memory of ``device`` (or of ``budget`` bytes), between 1 and
    ``tiles``. Resolve once per clip so that every step batches alike."""
    if tile_batch != "auto":
        if not isinstance(tile_batch, int) or tile_batch < 1:
            raise ValueError(f"sampling.tile_batch must be an integer >= 1 or 'auto', got {tile_batch!r}")
        return min(tile_batch, max(tiles, 1))
    if budget is None:
        from mgld.pipeline.memory import free_bytes

        budget = free_bytes(device)
    device = torch.device(device)
    amp = torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else None
    fixed, per_tile = call_cost(denoiser, tile, num_frames, dtype, autocast=amp)
    fits = int((fraction * budget - fixed) // per_tile)
    return max(1, min(tiles, fits))


def tile_batch_for_pass(tile_batch: int | str, denoiser: torch.nn.Module, latent: Tensor, *, tile_size: int,
                        tile_overlap: int, tile_schedule: str = "overlap", steps: int = 1) -> int:
    """``sampling.tile_batch`` for one sampling pass over ``latent`` (``t 4 h w``; its device and dtype, under
    the caller's autocast): the integer, or for ``auto`` :func:`resolve_tile_batch` on ``denoiser`` for the tiles
    of the schedule (``shifted``: the most tiles of any of the ``steps`` steps, whose offsets differ) — once per
    pass, so that every step batches alike."""
    if tile_batch != "auto":
        return tile_batch
    t, _, h, w = latent.shape
    if tile_schedule == "overlap":
        boxes = tile_boxes(h, w, tile_size, tile_overlap)
        count, largest = len(boxes), max(boxes, key=lambda b: b.height * b.width)
        shape = (largest.height, largest.width)
    else:
        count = max(len(shifted_tiles(h, w, tile_size, k)) for k in range(steps))
        shape = (min(tile_size, h), min(tile_size, w))
    return 1 if count == 1 else resolve_tile_batch("auto", denoiser, count, shape, t, latent.device, latent.dtype)


# ---------------------------------------------------------------------------------------------------------
# The tiled noise prediction
# ---------------------------------------------------------------------------------------------------------


def predict_noise(
    denoiser: Callable,
    x: Tensor,
    timestep: int,
    z_lr: Tensor,
    num_frames: int,
    tile_size: int = 64,
    tile_overlap: int = 32,
    tile_batch: int = 1,
    *,
    tile_schedule: str = "overlap",
    step: int | None = None,
) -> Tensor:
    """ε̂ over the whole latent from tiles batched into denoiser calls (module docstring).

    x, z_lr: ``t 4 h w`` (one clip of ``num_frames`` frames) -> ``t 4 h w`` (fp32 when tiled).
    ``tile_schedule``: ``overlap`` (tiles of ``tile_size`` overlapping by ``tile_overlap``, Gaussian-blended;
    the authors' scheme) or ``shifted`` (non-overlapping tiles on a grid shifted at each step, every latent pixel
    owned by one tile; ``step`` (default: ``timestep``) picks the offsets, :func:`mgld.diffusion.tiling.shifted_tiles`).
    ``tile_batch``: tiles per call, an integer (``sampling.tile_batch: auto`` is resolved once per pass by
    :func:`tile_batch_for_pass`, so that every step batches alike).
    """
    if isinstance(tile_batch, bool) or not isinstance(tile_batch, int):
        raise TypeError(f"predict_noise takes tile_batch as an integer, got {tile_batch!r} "
                        "(resolve 'auto' once per pass with tile_batch_for_pass)")
    if tile_schedule not in TILE_SCHEDULES:
        raise ValueError(f"sampling.tile_schedule must be one of {TILE_SCHEDULES}, got {tile_schedule!r}")
    height, width = x.shape[-2:]
    t = torch.full((1,), timestep, device=x.device, dtype=torch.long)  # made on the device: no copy, no sync
    if tile_schedule == "overlap":
        boxes = tile_boxes(height, width, tile_size, tile_overlap)
        shifted = None
    else:
        shifted = shifted_tiles(height, width, tile_size, timestep if step is None else step)
        boxes = [s.box for s in shifted]
    if len(boxes) == 1:
        return denoiser(x, t, z_lr, num_frames)
    out_dtype = torch.promote_types(x.dtype, torch.float32)
    out = torch.zeros(x.shape, device=x.device, dtype=out_dtype)
    if shifted is None:
        windows, norm = _gaussian_blend(height, width, tuple(boxes), x.device, out_dtype)
    frames = x.shape[0]
    for call in plan_batches([(b.height, b.width) for b in boxes], tile_batch):
        xs = torch.cat([boxes[i].crop(x) for i in call]) if len(call) > 1 else boxes[call[0]].crop(x)
        zs = torch.cat([boxes[i].crop(z_lr) for i in call]) if len(call) > 1 else boxes[call[0]].crop(z_lr)
        eps = denoiser(xs, t, zs, num_frames)
        for i, e in zip(call, eps.split(frames)):
            if shifted is None:
                box = boxes[i]
                box.crop(out).add_(e.to(out_dtype) * windows[(box.height, box.width)])
            else:
                shifted[i].own.crop(out).copy_(shifted[i].own_in_box().crop(e))
    return out / norm if shifted is None else out


__all__ = ["TILE_SCHEDULES", "call_cost", "plan_batches", "predict_noise", "resolve_tile_batch", "tile_batch_for_pass"]
