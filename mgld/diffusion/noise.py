"""Where the sampler's random numbers come from (docs/algorithm.md §5).

Every random draw of one clip is asked for by name, ``source.draw(kind, step, box)``:

* ``kind="posterior"`` (``step=None``): ε of the VAE posterior sample ``z_lr = sf·(mean + std·ε)``;
* ``kind="x_T"`` (``step=None``): ε of the start ``x_T = √ᾱ_999·z_lr + √(1−ᾱ_999)·ε``;
* ``kind="xi"`` with ``step=k`` for ``k = N−1, …, 1``: ξ of the DDPM step ``z' = μ + σ_k·ξ`` (none at k = 0);

in that order for every pass (one pass per pixel tile in ``sampling.pixel_tiling=authors``, one pass over the
whole frame otherwise). ``box`` is the pass's latent box on the latent grid of the padded frame
(:class:`mgld.diffusion.tiling.TileBox`, latent pixels); the answer is a ``t c box.height box.width`` tensor
(any device; the consumer moves it).

* :class:`FrameNoise` (the default): one stream per frame, frame ``i``'s seeded by ``(seed, i)``; draw ``j`` of
  the stream is a whole-frame latent tensor and a pass gets its crop at ``box``. Overlapping pixel tiles therefore
  see the same noise where they overlap, and the output is a pure function of ``(seed, frame index)``: it does not
  depend on how a video is cut into chunks, on resuming, or on the process count.
* :class:`AuthorsNoise`: the authors' scheme — the global seed is reset at the start of every pixel tile, so tiles
  of the same size draw identical tensors; for comparing against the released script.

Any object with such a ``draw`` method can be passed to :meth:`mgld.pipeline.MGLDPipeline.upscale_clip`
(``noise=``), e.g. to inject noise recorded from another implementation.
"""

from __future__ import annotations

from typing import Literal, Protocol

import torch
from torch import Tensor

from mgld.diffusion.tiling import TileBox

NoiseKind = Literal["posterior", "x_T", "xi"]


class NoiseSource(Protocol):
    """``draw(kind, step, box) -> t c box.height box.width`` standard-normal noise (module docstring)."""

    def draw(self, kind: NoiseKind, step: int | None, box: TileBox) -> Tensor: ...


def draw_index(kind: NoiseKind, step: int | None, num_steps: int) -> int:
    """Position of a draw in a pass: posterior 0, x_T 1, ξ of step k at ``2 + (N − 1 − k)`` (k = N−1 … 1)."""
    if kind == "posterior":
        return 0
    if kind == "x_T":
        return 1
    if kind == "xi":
        if step is None or not 1 <= step < num_steps:
            raise ValueError(f"a xi draw needs a step k in [1, {num_steps}), got {step}")
        return 2 + (num_steps - 1 - step)
    raise ValueError(f"unknown noise kind {kind!r}; expected 'posterior', 'x_T' or 'xi'")


class FrameNoise:
    """Per-frame noise streams: stream ``i`` is seeded by ``(seed, i)``; draw ``j`` is ``c h w`` per frame.

    ``shape = (c, h, w)`` is the latent of the whole padded frame, ``num_steps`` the number of sampling steps
    (it fixes the draw index of each ξ, :func:`draw_index`). Draws can be asked for in any order and any number
    of times (each pixel tile asks for all of them). Whole-frame draws are generated on the CPU (identical on
    every device) and kept up to ``cache_bytes`` (1 GiB: every draw of a 5-frame 4K clip at 50 steps is about
    0.5 GiB); beyond that, the generator state before each draw (a few kB per frame and draw) is kept and the
    draw regenerated from it — the values are the same either way.
    """

    def __init__(self, seed: int, frame_indices: list[int], shape: tuple[int, ...], num_steps: int,
                 cache_bytes: int = 2**30):
        self.seed = seed
        self.frame_indices = list(frame_indices)
        self.shape = tuple(shape)
        self.num_steps = num_steps
        self.cache_bytes = cache_bytes
        self._generators = [torch.Generator().manual_seed(_mix(seed, i)) for i in self.frame_indices]
        self._states = [[g.get_state()] for g in self._generators]  # _states[f][j]: state before draw j
        self._cache: dict[int, Tensor] = {}

    def frame_draw(self, index: int, keep: bool = True) -> Tensor:
        """Draw number ``index`` of every frame's stream: ``t *shape`` float32 on the CPU (``keep``: into the cache,
        within ``cache_bytes``; the values are the same either way)."""
        if index in self._cache:
            return self._cache[index]
        frames = []
        for g, states in zip(self._generators, self._states):
            while len(states) <= index:  # skip ahead (draws are normally asked for in order)
                g.set_state(states[-1])
                torch.randn(self.shape, generator=g)
                states.append(g.get_state())
            g.set_state(states[index])
            frames.append(torch.randn(self.shape, generator=g))
            if len(states) == index + 1:
                states.append(g.get_state())
        out = torch.stack(frames)
        if keep and (len(self._cache) + 1) * out.numel() * out.element_size() <= self.cache_bytes:
            self._cache[index] = out
        return out

    def draw(self, kind: NoiseKind, step: int | None, box: TileBox) -> Tensor:
        """The crop at ``box`` of the whole-frame draw ``kind``/``step``: ``t c box.height box.width``."""
        full = self.frame_draw(draw_index(kind, step, self.num_steps))
        if box.top + box.height > full.shape[-2] or box.left + box.width > full.shape[-1]:
            raise ValueError(f"latent box {box} lies outside the noise grid {tuple(full.shape[-2:])}")
        return box.crop(full)


class AuthorsNoise:
    """The authors' noise: ``seed_everything(seed)`` at the start of every pass, then plain ``randn`` draws.

    The posterior ε comes from the CPU generator (the authors draw it on the CPU and move it), x_T's ε and every
    ξ from ``device``'s generator (their ``randn_like``/``randn(device=…)``); on a CPU both are one generator, as
    for the authors on a CPU. Tiles of equal size therefore get identical noise whatever their position. The
    authors also draw a ξ at k = 0 and multiply it by 0; that last draw changes nothing and is not made here.

    ``num_frames``, ``channels``: the ``t`` and ``c`` of each draw (``t c box.height box.width``).
    """

    def __init__(self, seed: int, num_frames: int, channels: int = 4, device: str | torch.device = "cpu"):
        self.seed, self.num_frames, self.channels = seed, num_frames, channels
        self.device = torch.device(device)
        self._cpu = torch.Generator()
        self._dev = self._cpu if self.device.type == "cpu" else torch.Generator(self.device)

    def draw(self, kind: NoiseKind, step: int | None, box: TileBox) -> Tensor:
        shape = (self.num_frames, self.channels, box.height, box.width)
        if kind == "posterior":  # first draw of a pass: re-seed, as the authors' seed_everything per tile
            self._cpu.manual_seed(self.seed)
            if self._dev is not self._cpu:
                self._dev.manual_seed(self.seed)
            return torch.randn(shape, generator=self._cpu)
        if kind not in ("x_T", "xi"):
            raise ValueError(f"unknown noise kind {kind!r}; expected 'posterior', 'x_T' or 'xi'")
        return torch.randn(shape, generator=self._dev, device=self.device)


def _mix(seed: int, index: int) -> int:
    """A 63-bit seed for frame ``index`` (splitmix64 of the pair)."""
    z = (seed * 0x9E3779B97F4A7C15 + index + 1) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return (z ^ (z >> 31)) & 0x7FFFFFFFFFFFFFFF


__all__ = ["AuthorsNoise", "FrameNoise", "NoiseKind", "NoiseSource", "draw_index"]
