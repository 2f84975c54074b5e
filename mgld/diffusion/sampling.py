"""Motion-guided DDPM sampling of one clip (docs/algorithm.md §5-6).

For k = N-1 … 0 (respaced steps; the networks see the original timestep ``S[k]``):

1. predict the noise over the latent in overlapping tiles, each tile running the time-aware encoder on
   the clean LR latent crop and the UNet on the noisy crop, stitched with the authors' Gaussian window;
2. one DDPM ancestral step (x̂0, posterior mean, + noise for k > 0);
3. the motion-guided update ``z ← z − s·|log σ̃²_k|·∇L(z)`` with ``L`` the masked bidirectional latent
   warping loss (:mod:`mgld.diffusion.guidance`);
4. optionally pull the first frames toward the previous overlapping chunk's trajectory (:class:`Anchor`).

Randomness is drawn per frame (:class:`FrameNoise`): the noise of frame ``i`` depends only on the seed and
``i``, so results do not depend on how a video is cut into chunks, on resuming, or on the device count.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from mgld.diffusion.guidance import guidance_step
from mgld.diffusion.noise import FrameNoise
from mgld.diffusion.schedule import RespacedSchedule
from mgld.diffusion.tiling import blend_tiles, tile_boxes
from mgld.perf.profiler import StageProfiler, stage


@dataclass
class MotionGuidance:
    """What the guided update needs for one clip, computed once per clip (not per step).

    flows ``(flow_f, flow_b)``: ``1 (t-1) 2 h w`` and masks ``(fwd_occ, bwd_occ)``: ``1 (t-1) 1 h w`` on the
    latent grid (:func:`mgld.flow.flows_and_masks`).
    """

    flows: tuple[Tensor, Tensor]
    masks: tuple[Tensor, Tensor]
    scale: float = 10.0
    variant: str = "authors"


@dataclass
class Anchor:
    """Pull the first ``len(frames)`` frames of a clip toward another clip's trajectory of the same frames.

    ``trajectory[k]``: ``o 4 h w`` latents of the overlapping frames after step ``k`` of the previous chunk;
    after each step ``z_a ← (1 − strength)·z_a + strength·trajectory[k]`` (a gradient step on
    ``½·strength·‖z_a − trajectory‖²``; strength 1 copies the previous chunk).
    """

    trajectory: dict[int, Tensor]
    strength: float = 0.5

    @property
    def num_frames(self) -> int:
        return next(iter(self.trajectory.values())).shape[0]

    def pull(self, x: Tensor, k: int) -> Tensor:
        o = self.num_frames
        target = self.trajectory[k].to(device=x.device, dtype=x.dtype)
        return torch.cat([torch.lerp(x[:o], target, self.strength), x[o:]])


@dataclass
class StepResult:
    """Everything one sampling step computed; latents are ``t 4 h w``."""

    latents: Tensor
    mean: Tensor
    pred_x0: Tensor
    before_guidance: Tensor
    guidance_loss: Tensor | None


def predict_noise(
    denoiser: Callable,
    x: Tensor,
    timestep: int,
    z_lr: Tensor,
    num_frames: int,
    tile_size: int = 64,
    tile_overlap: int = 32,
    tile_batch: int = 1,
) -> Tensor:
    """ε̂ over the whole latent from overlapping tiles (docs/algorithm.md §5); ``tile_batch`` tiles per network call.

    x, z_lr: ``t 4 h w`` (one clip) -> ``t 4 h w``.
    """
    boxes = tile_boxes(x.shape[-2], x.shape[-1], tile_size, tile_overlap)
    t = torch.tensor([timestep], device=x.device)

    def tiles():
        for start in range(0, len(boxes), tile_batch):
            group = boxes[start:start + tile_batch]
            if len({(b.height, b.width) for b in group}) > 1:  # edge tiles of unequal size: one at a time
                for box in group:
                    yield box, denoiser(box.crop(x), t, box.crop(z_lr), num_frames)
                continue
            eps = denoiser(torch.cat([b.crop(x) for b in group]), t, torch.cat([b.crop(z_lr) for b in group]),
                           num_frames)
            yield from zip(group, eps.split(x.shape[0]))

    if len(boxes) == 1:
        return denoiser(x, t, z_lr, num_frames)
    return blend_tiles(tiles(), tuple(x.shape[-2:]))


def sampling_step(
    denoiser: Callable,
    schedule: RespacedSchedule,
    x: Tensor,
    k: int,
    z_lr: Tensor,
    num_frames: int,
    noise: Tensor | None,
    *,
    guidance: MotionGuidance | None = None,
    anchor: Anchor | None = None,
    tile_size: int = 64,
    tile_overlap: int = 32,
    tile_batch: int = 1,
    profiler: StageProfiler | None = None,
) -> StepResult:
    """One respaced step ``k`` from ``x`` (``t 4 h w``); ``noise`` is ξ (ignored, may be None, at k = 0)."""
    with stage(profiler, "encoder+unet"):
        eps = predict_noise(denoiser, x, schedule.timestep(k), z_lr, num_frames, tile_size, tile_overlap,
                            tile_batch)
    out = schedule.step(eps.to(x.dtype), k, x, noise=noise if k > 0 else None)
    latents, loss = out.prev_sample, None
    if guidance is not None and guidance.scale != 0:
        with stage(profiler, "guidance"):
            latents, loss = guidance_step(latents, guidance.flows, guidance.masks, guidance.scale,
                                          schedule.log_variance(k), guidance.variant, num_frames=num_frames)
    if anchor is not None:
        latents = anchor.pull(latents, k)
    return StepResult(latents, out.mean, out.pred_x0, out.prev_sample, loss)


def sample(
    denoiser: Callable,
    schedule: RespacedSchedule,
    z_lr: Tensor,
    noise: FrameNoise,
    *,
    guidance: MotionGuidance | None = None,
    anchor: Anchor | None = None,
    record: int = 0,
    tile_size: int = 64,
    tile_overlap: int = 32,
    tile_batch: int = 1,
    progress: Callable[[int], None] | None = None,
    profiler: StageProfiler | None = None,
) -> tuple[Tensor, dict[int, Tensor]]:
    """Sample one clip: ``x_T = √ᾱ_999·z_lr + √(1−ᾱ_999)·ε``, then every step (k = N-1 … 0).

    z_lr: ``t 4 h w`` clean LR latent (scaled by 0.18215) of the ``t`` frames ``noise`` was made for.
    Returns the final latents ``t 4 h w`` and, when ``record > 0``, the trajectory of the last ``record``
    frames (``{k: record 4 h w}``, what the next overlapping chunk anchors to).
    """
    num_frames = z_lr.shape[0]
    x = schedule.initial_latents(z_lr, noise=noise.draw(z_lr.device, z_lr.dtype))
    trajectory = {}
    for k in reversed(range(schedule.num_steps)):
        xi = noise.draw(z_lr.device, z_lr.dtype) if k > 0 else None
        x = sampling_step(denoiser, schedule, x, k, z_lr, num_frames, xi, guidance=guidance, anchor=anchor,
                          tile_size=tile_size, tile_overlap=tile_overlap, tile_batch=tile_batch,
                          profiler=profiler).latents
        if record:
            trajectory[k] = x[-record:].detach().clone()
        if progress is not None:
            progress(1)
    return x, trajectory
