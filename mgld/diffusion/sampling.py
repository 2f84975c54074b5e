"""Motion-guided DDPM sampling of one clip (docs/algorithm.md §5-6).

For k = N-1 … 0 (respaced steps; the networks see the original timestep ``S[k]``):

1. predict the noise over the latent in overlapping tiles, each tile running the time-aware encoder on
   the clean LR latent crop and the UNet on the noisy crop, stitched with the authors' Gaussian window
   (:func:`mgld.diffusion.batching.predict_noise`: tiles batched into network calls by ``tile_batch``, or the
   shifted non-overlapping schedule);
2. one DDPM ancestral step (x̂0, posterior mean, + noise for k > 0);
3. the motion-guided update ``z ← z − s·|log σ̃²_k|·∇L(z)`` with ``L`` the masked bidirectional latent
   warping loss (:mod:`mgld.diffusion.guidance`);
4. optionally pull the first frames toward the previous overlapping chunk's trajectory (:class:`Anchor`).

Random numbers come from a noise source (:mod:`mgld.diffusion.noise`), asked for ``x_T`` first, then for ξ
of k = N−1 … 1 (the VAE posterior draw, before these, is the pipeline's). A per-step ``callback(info)`` (the
k-diffusion style) sees every step's results; progress bars, trajectory recording and timing are built on it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from mgld.diffusion.batching import predict_noise
from mgld.diffusion.guidance import guidance_step
from mgld.diffusion.noise import NoiseSource
from mgld.diffusion.schedule import RespacedSchedule
from mgld.diffusion.tiling import TileBox


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

    def apply(self, latents: Tensor, log_variance: float, num_frames: int) -> tuple[Tensor, Tensor | None]:
        """The guided update of one step (:func:`mgld.diffusion.guidance.guidance_step`): latents ``t 4 h w``
        -> (updated latents, loss before the update or None when ``scale`` is 0)."""
        return guidance_step(latents, self.flows, self.masks, self.scale, log_variance, self.variant,
                             num_frames=num_frames)

    def crop(self, box: TileBox) -> MotionGuidance:
        """The same guidance on the latent tile ``box`` of the flows and masks."""
        return MotionGuidance(tuple(box.crop(f) for f in self.flows), tuple(box.crop(m) for m in self.masks),
                              self.scale, self.variant)


@dataclass
class Anchor:
    """Pull the first ``len(frames)`` frames of a clip toward another clip's trajectory of the same frames.

    ``trajectory[k]``: ``o 4 h w`` latents of the overlapping frames after step ``k`` of the previous chunk;
    after each step ``z_a ← (1 − strength)·z_a + strength·trajectory[k]`` (a gradient step on
    ``½·strength·‖z_a − trajectory‖²``; strength 1 copies the previous chunk).
    """

    trajectory: dict
    strength: float = 0.5

    @property
    def num_frames(self) -> int:
        return next(iter(self.trajectory.values())).shape[0]

    def for_tile(self, tile: int) -> Anchor:
        """The anchor of pixel tile ``tile`` when the trajectory was recorded per tile (keys ``(tile, k)``, what
        the pipeline records with several pixel tiles); the anchor itself when its keys are plain steps."""
        if not any(isinstance(key, tuple) for key in self.trajectory):
            return self
        return Anchor({k: v for (i, k), v in self.trajectory.items() if i == tile}, self.strength)

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
    tile_schedule: str = "overlap",
) -> StepResult:
    """One respaced step ``k`` from ``x`` (``t 4 h w``); ``noise`` is ξ (ignored, may be None, at k = 0).

    ``guidance`` is anything with ``apply(latents, log_variance, num_frames) -> (latents, loss)``
    (:class:`MotionGuidance`). The noise is predicted by :func:`mgld.diffusion.batching.predict_noise`:
    ``tile_batch`` latent tiles per network call (an integer; resolve ``auto`` once per pass with
    :func:`mgld.diffusion.batching.tile_batch_for_pass` on the network), ``tile_schedule`` ``overlap`` (the
    authors' Gaussian-blended tiles) or ``shifted`` (non-overlapping tiles whose grid offset is a function of
    ``k``)."""
    eps = predict_noise(denoiser, x, schedule.timestep(k), z_lr, num_frames, tile_size, tile_overlap, tile_batch,
                        tile_schedule=tile_schedule, step=k)
    out = schedule.step(eps.to(x.dtype), k, x, noise=noise if k > 0 else None)
    latents, loss = out.prev_sample, None
    if guidance is not None:
        latents, loss = guidance.apply(latents, schedule.log_variance(k), num_frames)
    if anchor is not None:
        latents = anchor.pull(latents, k)
    return StepResult(latents, out.mean, out.pred_x0, out.prev_sample, loss)


def sample(
    denoiser: Callable,
    schedule: RespacedSchedule,
    z_lr: Tensor,
    noise: NoiseSource,
    *,
    box: TileBox | None = None,
    guidance: MotionGuidance | None = None,
    anchor: Anchor | None = None,
    tile_size: int = 64,
    tile_overlap: int = 32,
    tile_batch: int = 1,
    tile_schedule: str = "overlap",
    callback: Callable[[dict], None] | None = None,
) -> Tensor:
    """Sample one clip (or one pixel tile of it): ``x_T = √ᾱ_999·z_lr + √(1−ᾱ_999)·ε``, then every step
    k = N−1 … 0.

    z_lr: ``t 4 h w`` clean LR latent (scaled by 0.18215). ``noise`` is asked for ``("x_T", None, box)``, then
    ``("xi", k, box)`` for k = N−1 … 1; ``box`` is where this latent lies on the frame's latent grid (default: the
    whole of ``z_lr``); ``tile_batch``, ``tile_schedule``: see :func:`sampling_step`. After each step ``callback``
    gets a dict: ``step`` (k), ``index`` (0 … N−1), ``num_steps``, ``latents`` (``t 4 h w`` after guidance and
    anchor), ``pred_x0``, ``mean``, ``before_guidance`` and ``guidance_loss`` (None without guidance). Returns the
    final latents ``t 4 h w``.

    Nothing in the loop waits for the device (no ``.item()``, no blocking copy) when the noise source answers
    with tensors already on the device (the pipeline's :class:`~mgld.diffusion.clip_noise.DeviceFrameNoise`).
    """
    num_frames, (h, w) = z_lr.shape[0], z_lr.shape[-2:]
    box = box or TileBox(0, 0, h, w)
    if (box.height, box.width) != (h, w):
        raise ValueError(f"latent box {box} does not match the latent of size {(h, w)}")
    x = schedule.initial_latents(z_lr, noise=noise.draw("x_T", None, box).to(z_lr.device, z_lr.dtype))
    for index, k in enumerate(reversed(range(schedule.num_steps))):
        xi = noise.draw("xi", k, box).to(z_lr.device, z_lr.dtype) if k > 0 else None
        out = sampling_step(denoiser, schedule, x, k, z_lr, num_frames, xi, guidance=guidance, anchor=anchor,
                            tile_size=tile_size, tile_overlap=tile_overlap, tile_batch=tile_batch,
                            tile_schedule=tile_schedule)
        x = out.latents
        if callback is not None:
            callback({"step": k, "index": index, "num_steps": schedule.num_steps, "latents": x,
                      "pred_x0": out.pred_x0, "mean": out.mean, "before_guidance": out.before_guidance,
                      "guidance_loss": out.guidance_loss})
    return x
