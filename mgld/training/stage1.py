"""Stage-1 training: time-aware encoder, SFT layers and UNet temporal layers on frozen SD 2.1 (docs/training.md §1, §3).

One step on a batch of clips (GT ``b t 3 H W``, LQ ``b t 3 H/4 W/4``, both in [0, 1]):

1. the LQ is bicubic-upsampled to the GT size; both are mapped to [-1, 1] and encoded by the frozen VAE into
   *sampled* posteriors ×0.18215: ``z_gt``, ``z_lr`` (``(b t) 4 H/8 W/8``);
2. a timestep ``t ~ U{0..999}`` per clip (``timesteps="clip"``, as at inference), or per frame as the authors
   trained (``"frame"``, docs/differences.md); ``x_t = √ᾱ_t·z_gt + √(1−ᾱ_t)·ε``;
3. ``ε̂ = denoiser(x_t, t, z_lr)``: the encoder sees the clean LR latent and t, its maps drive the SFT layers;
4. loss = MSE(ε̂, ε) over everything; AdamW (5e-5, weight decay 0.01) over the trained parameters only.

Trained: every parameter but the SD UNet's (``MGLDDenoiser.set_stage1_trainable``); the temporal attention's
LayerNorm too unless ``train_temporal_norm=False`` (the authors', docs/differences.md). The VAE is frozen and in
eval mode.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from mgld.diffusion.schedule import NUM_TRAIN_TIMESTEPS, make_scheduler
from mgld.models import MGLDDenoiser, TemporalVAE
from mgld.training.common import TrainingSystem, prepare_clips


class Stage1System(TrainingSystem):
    """Lightning system of stage 1 (module docstring). Models are built by :func:`mgld.training.build_stage1`."""

    trained_prefixes = ("denoiser.unet.sft.", "denoiser.unet.temporal.", "denoiser.cond_encoder.")
    eval_modules = ("vae",)

    def __init__(
        self,
        denoiser: MGLDDenoiser,
        vae: TemporalVAE,
        *,
        lr: float = 5e-5,
        betas: tuple[float, float] = (0.9, 0.999),
        weight_decay: float = 0.01,
        timesteps: Literal["clip", "frame"] = "clip",
        train_temporal_norm: bool = True,
        gradient_checkpointing: bool = False,
        checkpoint_frozen: bool = True,
        image_every_n_steps: int = 1000,
    ):
        super().__init__(checkpoint_frozen, image_every_n_steps)
        if timesteps not in ("clip", "frame"):
            raise ValueError(f"timesteps must be 'clip' or 'frame', got {timesteps!r}")
        self.denoiser, self.vae = denoiser, vae
        self.vae.requires_grad_(False).eval()
        self.trainable = denoiser.set_stage1_trainable(train_temporal_norm)
        denoiser.unet.gradient_checkpointing = gradient_checkpointing
        self.lr, self.betas, self.weight_decay, self.timesteps = lr, tuple(betas), weight_decay, timesteps
        alphas = make_scheduler().alphas_cumprod.float()
        self.register_buffer("alphas_cumprod", alphas, persistent=False)

    @torch.no_grad()
    def encode(self, x: Tensor) -> Tensor:
        """``(b t) 3 H W`` in [-1, 1] -> sampled latents ×scaling_factor ``(b t) 4 H/8 W/8``."""
        posterior, _ = self.vae.encode(x)
        return posterior.sample() * self.vae.scaling_factor

    def sample_timesteps(self, clips: int, num_frames: int) -> Tensor:
        """``(b t)`` int64 timesteps: one per clip repeated over its frames, or one per frame."""
        if self.timesteps == "frame":
            return torch.randint(0, NUM_TRAIN_TIMESTEPS, (clips * num_frames,), device=self.device)
        per_clip = torch.randint(0, NUM_TRAIN_TIMESTEPS, (clips,), device=self.device)
        return per_clip.repeat_interleave(num_frames)

    def add_noise(self, z: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """``√ᾱ_t·z + √(1−ᾱ_t)·ε`` with the 1000-step scaled-linear schedule."""
        a = self.alphas_cumprod[t].view(-1, 1, 1, 1).to(z.dtype)
        return a.sqrt() * z + (1 - a).sqrt() * noise

    def compute_loss(self, batch: dict) -> dict[str, Tensor]:
        """The step's loss and what it was computed from: ``loss`` (scalar), ``x_gt``, ``x_lq`` (``(b t) 3 H W``),
        ``x_t``, ``eps`` (``(b t) 4 h w``), ``t`` (``(b t)``)."""
        gt, lq = batch["gt"], batch["lq"]  # b t 3 H W, b t 3 h w
        b, num_frames = gt.shape[:2]
        x_gt, x_lq = prepare_clips(gt, lq)
        z_gt, z_lr = self.encode(x_gt), self.encode(x_lq)
        t = self.sample_timesteps(b, num_frames)
        noise = torch.randn_like(z_gt)
        x_t = self.add_noise(z_gt, noise, t)
        eps = self.denoiser(x_t, t, z_lr, num_frames)
        loss = F.mse_loss(eps.float(), noise.float())
        return {"loss": loss, "x_gt": x_gt, "x_lq": x_lq, "x_t": x_t, "eps": eps, "t": t}

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        out = self.compute_loss(batch)
        b, num_frames = batch["gt"].shape[:2]
        self.log("train/loss", out["loss"], prog_bar=True, batch_size=b)
        if self.should_log_images():
            self._log_prediction(out["x_lq"], out["x_gt"], out["x_t"], out["eps"], out["t"], num_frames)
        return out["loss"]

    @torch.no_grad()
    def _log_prediction(self, x_lq, x_gt, x_t, eps, t, num_frames) -> None:
        """Images of the first clip; "output" is the one-step x̂0 = (x_t − √(1−ᾱ)ε̂)/√ᾱ decoded by the SD VAE."""
        n = num_frames
        a = self.alphas_cumprod[t[:n]].view(-1, 1, 1, 1)
        x0 = (x_t[:n].float() - (1 - a).sqrt() * eps[:n].float()) / a.sqrt()
        output = self.vae.decode(x0 / self.vae.scaling_factor, None, n)
        self.log_clip_images([x_lq[:n], output, x_gt[:n]], n)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.trainable, lr=self.lr, betas=self.betas, weight_decay=self.weight_decay)


__all__ = ["Stage1System"]
