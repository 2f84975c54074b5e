"""All the noise of a clip drawn once, moved to the device in one transfer (docs/notes/perf.md).

The per-frame streams (:class:`mgld.diffusion.noise.FrameNoise`) are CPU generators, so that the noise of a frame
is the same on every device; drawing them step by step costs a CPU draw and a blocking host→device copy inside
the step loop. :func:`draw_clip_noise` makes the same draws up front, in the same order, into one (pinned) host
buffer and copies it once, asynchronously; :class:`DeviceFrameNoise` answers the sampler's requests from them
(:func:`frame_noise_on_device`, what the pipeline uses on a GPU). The values are those of the step-by-step draws,
bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor


def draw_clip_noise(draw: Callable[[], Tensor], count: int, device: torch.device | str | None = None,
                    dtype: torch.dtype = torch.float32) -> Tensor:
    """``count`` successive results of ``draw()`` (a CPU tensor each, e.g. ``FrameNoise.draw``) stacked as
    ``count *shape`` and moved to ``device`` in one copy (from pinned memory, without blocking, on CUDA)."""
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    device = torch.device(device) if device is not None else torch.device("cpu")
    first = draw()
    if first.device.type != "cpu":
        raise ValueError("draw() must return CPU tensors (the per-frame streams are CPU generators)")
    pinned = device.type == "cuda" and torch.cuda.is_available()
    buffer = torch.empty((count, *first.shape), dtype=first.dtype, pin_memory=pinned)
    buffer[0] = first
    for i in range(1, count):
        buffer[i] = draw()
    return buffer.to(device=device, dtype=dtype, non_blocking=pinned)


class DeviceFrameNoise:
    """A noise source answering ``draw(kind, step, box)`` from whole-frame draws kept on the device.

    ``frame_draw(j)`` gives whole-frame draw ``j`` of every frame's stream (``t c H W`` on the CPU, e.g.
    ``FrameNoise.frame_draw``), ``count`` draws are made up front (one transfer), and ``index(kind, step)`` maps a
    request to its draw (e.g. ``lambda kind, step: draw_index(kind, step, num_steps)``); the answer is the crop of
    that draw at ``box`` (any object with ``crop``, a :class:`~mgld.diffusion.tiling.TileBox`), on the device — the
    values of the CPU streams.
    """

    def __init__(self, frame_draw: Callable[[int], Tensor], count: int, index: Callable[[str, int | None], int],
                 device: torch.device | str | None = None, dtype: torch.dtype = torch.float32):
        draws = iter(range(count))
        self.draws = draw_clip_noise(lambda: frame_draw(next(draws)), count, device, dtype)
        self.index = index

    def draw(self, kind: str, step: int | None, box) -> Tensor:
        j = self.index(kind, step)
        if not 0 <= j < self.draws.shape[0]:
            raise IndexError(f"noise draw {j} ({kind}, step {step}) was not made up front ({self.draws.shape[0]})")
        return box.crop(self.draws[j])


def frame_noise_on_device(source, device: torch.device | str, max_bytes: int):
    """``source`` as a :class:`DeviceFrameNoise` on ``device`` when it is a
    :class:`~mgld.diffusion.noise.FrameNoise` whose draws for one clip (``num_steps + 1`` whole-frame draws of
    ``t c H W`` float32) fit in ``max_bytes``; else ``source`` itself (drawn step by step, the same values).
    What :meth:`mgld.pipeline.pipeline.MGLDPipeline.upscale_clip` does with its noise on a GPU. The draws are made
    without filling ``source``'s host cache, and the device copy keeps no reference to ``source``."""
    from mgld.diffusion.noise import FrameNoise, draw_index

    if not isinstance(source, FrameNoise):
        return source
    count = source.num_steps + 1
    size = count * len(source.frame_indices) * math.prod(source.shape) * 4
    if size > max_bytes:
        return source
    num_steps = source.num_steps  # bound here: the index must not keep ``source`` (and its cache) alive
    return DeviceFrameNoise(lambda j: source.frame_draw(j, keep=False), count,
                            lambda kind, step: draw_index(kind, step, num_steps), device)


__all__ = ["DeviceFrameNoise", "draw_clip_noise", "frame_noise_on_device"]
