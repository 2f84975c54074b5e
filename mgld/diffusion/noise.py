"""Per-frame noise streams: the noise of frame ``i`` depends only on ``(seed, i)``.

So results do not depend on how a video is cut into chunks, on resuming, or on the process count.
"""

from __future__ import annotations

import torch
from torch import Tensor


class FrameNoise:
    """Standard-normal noise with one random stream per frame: stream ``i`` is seeded by ``(seed, i)``.

    Each :meth:`draw` returns the next sample of every requested frame, ``t c h w``; frames drawn in two
    chunks (overlap) or in two runs (resume) get the same values at the same draw.
    """

    def __init__(self, seed: int, frame_indices: list[int], shape: tuple[int, ...]):
        self.shape = tuple(shape)
        self._generators = [torch.Generator().manual_seed(_mix(seed, i)) for i in frame_indices]

    def draw(self, device=None, dtype=torch.float32) -> Tensor:
        """``t *shape`` noise, generated on the CPU (identical on every device) then moved."""
        noise = torch.stack([torch.randn(self.shape, generator=g) for g in self._generators])
        return noise.to(device=device, dtype=dtype)


def _mix(seed: int, index: int) -> int:
    """A 63-bit seed for frame ``index`` (splitmix64 of the pair)."""
    z = (seed * 0x9E3779B97F4A7C15 + index + 1) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return (z ^ (z >> 31)) & 0x7FFFFFFFFFFFFFFF
