"""Stage-2 training: the temporal VAE decoder's temporal convs and CFW blocks + PatchGAN (docs/training.md §1, §5).

One step on a batch (GT ``b t 3 H W``, LQ ``b t 3 h w``, stage-1 latents ``b t 4 H/8 W/8``):

1. CFW features come from the frozen VAE encoder run on the bicubic-upsampled LQ; the decoder turns the
   stage-1 latents (÷0.18215) into x̂ with fusion weight ``cfw_weight`` (1.0 in training);
2. generator objective ``L_G = L_rec + w_d·L_diff + w_c·L_swc + w_g·[step ≥ disc_start]·(−mean D(x̂))`` with
   ``L_rec = w_1·L1 + w_p·LPIPS`` (see :mod:`mgld.training.losses`); with ``reduction="authors"`` the authors'
   extra divisions apply: ``L_rec / (b·T)`` and ``L_diff / (b·(T−1))`` (docs/differences.md);
3. discriminator objective ``hinge(D(x), D(x̂))`` from ``disc_start`` on (the authors' discriminator is idle
   before, docs/training.md §5);
4. two Adam optimizers (5e-5, betas 0.5/0.9), stepped every ``accumulate_grad_batches`` batches through
   Lightning's manual optimisation.

The step count (``global_step``, ``max_steps``, ``disc_start``, checkpoint cadence) counts *generator* updates, as
the authors' Lightning 1.4 did: the discriminator's optimizer is stepped through the strategy directly, because
each ``LightningOptimizer.step`` would otherwise add one to ``global_step``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from einops import rearrange
from torch import Tensor, nn

from mgld.flow import FlowEstimator
from mgld.models import TemporalVAE
from mgld.training.common import TrainingSystem, prepare_clips
from mgld.training.losses import (
    frame_difference_loss,
    generator_adversarial_loss,
    hinge_discriminator_loss,
    l1_loss,
    structure_consistency_loss,
)


@dataclass(frozen=True)
class Stage2Loss:
    """Weights and options of the generator objective (module docstring); defaults = docs/training.md §5."""

    l1: float = 1.0
    lpips: float = 0.5
    frame_difference: float = 0.5
    consistency: float = 0.5
    consistency_variant: Literal["fixed", "authors"] = "fixed"
    sobel_weight: float = 3.0
    gan: float = 0.025
    disc_start: int = 501
    reduction: Literal["authors", "mean"] = "authors"


class Stage2System(TrainingSystem):
    """Lightning system of stage 2 (module docstring). Models are built by :func:`mgld.training.build_stage2`.

    ``lpips`` (``pred, target -> n 1 1 1``) may be None only if ``loss.lpips == 0``; ``flow_estimator`` only if
    ``loss.consistency == 0``.
    """

    trained_prefixes = ("vae.temporal.", "vae.fusion.", "discriminator.")
    eval_modules = ("lpips", "flow_estimator")

    def __init__(
        self,
        vae: TemporalVAE,
        discriminator: nn.Module,
        *,
        lpips: nn.Module | None = None,
        flow_estimator: FlowEstimator | None = None,
        loss: Stage2Loss | None = None,
        cfw_weight: float = 1.0,
        lr: float = 5e-5,
        betas: tuple[float, float] = (0.5, 0.9),
        weight_decay: float = 0.0,
        accumulate_grad_batches: int = 1,
        checkpoint_frozen: bool = True,
        image_every_n_steps: int = 1000,
    ):
        super().__init__(checkpoint_frozen, image_every_n_steps)
        loss = loss or Stage2Loss()
        if loss.lpips and lpips is None:
            raise ValueError("loss.lpips > 0 needs an LPIPS module")
        if loss.consistency and flow_estimator is None:
            raise ValueError("loss.consistency > 0 needs a flow estimator")
        self.automatic_optimization = False
        self.vae, self.discriminator, self.lpips, self.flow_estimator = vae, discriminator, lpips, flow_estimator
        self.vae.requires_grad_(False)
        for module in (vae.temporal, vae.fusion, discriminator):
            module.requires_grad_(True)
        self.loss, self.cfw_weight = loss, cfw_weight
        self.lr, self.betas, self.weight_decay = lr, tuple(betas), weight_decay
        self.accumulate_grad_batches = accumulate_grad_batches

    def decoder_parameters(self) -> list[nn.Parameter]:
        return [*self.vae.temporal.parameters(), *self.vae.fusion.parameters()]

    def reconstruct(self, lq: Tensor, latent: Tensor, num_frames: int) -> Tensor:
        """lq ``(b t) 3 H W`` in [-1, 1] (upsampled), latent ``(b t) 4 H/8 W/8`` ×0.18215 -> x̂ ``(b t) 3 H W``."""
        with torch.no_grad():
            _, feats = self.vae.encode(lq)
        return self.vae.decode(latent / self.vae.scaling_factor, feats, num_frames, self.cfw_weight)

    def generator_loss(self, pred: Tensor, target: Tensor, num_frames: int, adversarial: bool) -> dict[str, Tensor]:
        """The terms of ``L_G`` (unweighted, as the loss functions return them) and ``total`` (weighted)."""
        w, clips = self.loss, pred.shape[0] // num_frames
        zero = pred.new_zeros(())
        terms = {"l1": l1_loss(pred, target)}
        terms["lpips"] = self.lpips(pred, target).mean() if w.lpips else zero
        terms["frame_difference"] = frame_difference_loss(pred, target, num_frames) if w.frame_difference else zero
        terms["consistency"] = (
            structure_consistency_loss(pred, target, num_frames, self.flow_estimator, w.sobel_weight,
                                       w.consistency_variant)
            if w.consistency else zero
        )
        terms["gan_g"] = generator_adversarial_loss(self.discriminator(pred)) if adversarial and w.gan else zero
        rec_div, diff_div = (pred.shape[0], clips * (num_frames - 1)) if w.reduction == "authors" else (1, 1)
        terms["total"] = (
            (w.l1 * terms["l1"] + w.lpips * terms["lpips"]) / rec_div
            + w.frame_difference * terms["frame_difference"] / diff_div
            + w.consistency * terms["consistency"]
            + w.gan * terms["gan_g"]
        )
        return terms

    def training_step(self, batch: dict, batch_idx: int) -> None:
        opt_g, opt_d = self.optimizers()
        num_frames = batch["gt"].shape[1]
        x_gt, x_lq = prepare_clips(batch["gt"], batch["lq"])
        latent = rearrange(batch["latent"], "b t c h w -> (b t) c h w")
        adversarial = self.global_step >= self.loss.disc_start
        accumulate = self.accumulate_grad_batches

        self.toggle_optimizer(opt_g)
        pred = self.reconstruct(x_lq, latent, num_frames)
        terms = self.generator_loss(pred, x_gt, num_frames, adversarial)
        self.manual_backward(terms["total"] / accumulate)
        self.untoggle_optimizer(opt_g)
        if adversarial:
            self.toggle_optimizer(opt_d)
            terms["disc"] = hinge_discriminator_loss(self.discriminator(x_gt), self.discriminator(pred.detach()))
            self.manual_backward(terms["disc"] / accumulate)
            self.untoggle_optimizer(opt_d)
        if (self.trainer.fit_loop.total_batch_idx + 1) % accumulate == 0:
            opt_g.step()
            opt_g.zero_grad()
            if adversarial:  # not counted in global_step (module docstring)
                self.trainer.strategy.optimizer_step(opt_d.optimizer, closure=lambda: None, model=self)
                opt_d.zero_grad()
        self.log_dict({f"train/{k}": v.detach() for k, v in terms.items()}, prog_bar=False,
                      batch_size=batch["gt"].shape[0])
        self.log("train/loss", terms["total"].detach(), prog_bar=True, batch_size=batch["gt"].shape[0])
        if self.should_log_images():
            self.log_clip_images([x_lq, pred, x_gt], num_frames)

    def configure_optimizers(self):
        opt_g = torch.optim.Adam(self.decoder_parameters(), lr=self.lr, betas=self.betas,
                                 weight_decay=self.weight_decay)
        opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=self.lr, betas=self.betas,
                                 weight_decay=self.weight_decay)
        return [opt_g, opt_d]


__all__ = ["Stage2Loss", "Stage2System"]
