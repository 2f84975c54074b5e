"""Stage-2 training: the temporal VAE decoder's temporal convs and CFW blocks + PatchGAN (docs/training.md §1, §5).

One step on a batch (GT ``b t 3 H W``, LQ ``b t 3 h w``, stage-1 latents ``b t 4 H/8 W/8``):

1. CFW features come from the frozen VAE encoder run on the bicubic-upsampled LQ (not clamped, as the authors');
   the decoder turns the stage-1 latents (÷0.18215) into x̂ with fusion weight ``cfw_weight`` (1.0 in training);
2. generator objective ``L_G = L_rec + w_d·L_diff + w_c·L_swc + w_g·f·(−mean D(x̂))`` with
   ``L_rec = w_1·L1 + w_p·LPIPS`` (see :mod:`mgld.training.losses`) and ``f = [step ≥ disc_start]``; with
   ``reduction="authors"`` the authors' extra divisions apply: ``L_rec / (b·T)`` and ``L_diff / (b·(T−1))``, b the
   clips on this process (docs/differences.md);
3. discriminator objective ``f·hinge(D(x), D(x̂))``, computed at every step as the authors do: before
   ``disc_start`` it is zero, and so are the discriminator's gradients, but its Adam is still stepped, so the
   bias correction has advanced by ``disc_start`` steps when the GAN starts (docs/training.md §5);
4. two Adam optimizers (5e-5, betas 0.5/0.9), stepped every ``accumulate_grad_batches`` batches through
   Lightning's manual optimisation.

Both objectives go through **one** backward pass: the generator's adversarial term sees the discriminator
through detached parameters (so it sends no gradient to them) and the discriminator's term sees x̂ detached,
so each trained weight gets exactly its own objective's gradient -- what the authors' two toggled passes give --
and every trained weight gets a gradient at every step, as plain DDP (``strategy=ddp``) requires.

The step count (``global_step``, ``max_steps``, ``disc_start``, checkpoint cadence) counts *generator* updates, as
the authors' Lightning 1.4 did: the discriminator's optimizer is stepped through the strategy directly, because
each ``LightningOptimizer.step`` would otherwise add one to ``global_step``. Accumulation boundaries follow the
batch's global micro-batch number (``batch``, from :class:`mgld.training.data.ClipStreamSampler`), so they stay
put across a resume.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor, nn
from torch.func import functional_call

from mgld.flow import FlowEstimator
from mgld.models import TemporalVAE
from mgld.training.common import TrainingSystem, prepare_clips
from mgld.training.config import LossConfig, OptimConfig
from mgld.training.losses import (
    frame_difference_loss,
    generator_adversarial_loss,
    hinge_discriminator_loss,
    l1_loss,
    structure_consistency_loss,
)


class Stage2System(TrainingSystem):
    """Lightning system of stage 2 (module docstring). Models are built by :func:`mgld.training.build_stage2`.

    ``losses``: the ``losses`` section of the config (:class:`LossConfig`); ``optim`` (required): its ``optim``
    section (``accumulate_grad_batches`` is applied here, by manual optimisation). ``lpips``
    (``pred, target -> n 1 1 1``) may be None only if ``losses.lpips == 0``; ``flow_estimator`` only if
    ``losses.consistency == 0``.
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
        losses: LossConfig | None = None,
        optim: OptimConfig,
        cfw_weight: float = 1.0,
        checkpoint_frozen: bool = True,
        image_every_n_steps: int = 1000,
    ):
        super().__init__(checkpoint_frozen, image_every_n_steps)
        losses = losses or LossConfig()
        if losses.lpips and lpips is None:
            raise ValueError("losses.lpips > 0 needs an LPIPS module")
        if losses.consistency and flow_estimator is None:
            raise ValueError("losses.consistency > 0 needs a flow estimator")
        self.automatic_optimization = False
        self.vae, self.discriminator, self.lpips, self.flow_estimator = vae, discriminator, lpips, flow_estimator
        self.vae.requires_grad_(False)
        for module in (vae.temporal, vae.fusion, discriminator):
            module.requires_grad_(True)
        self.losses, self.optim, self.cfw_weight = losses, optim, cfw_weight

    def decoder_parameters(self) -> list[nn.Parameter]:
        return [*self.vae.temporal.parameters(), *self.vae.fusion.parameters()]

    def reconstruct(self, lq: Tensor, latent: Tensor, num_frames: int) -> Tensor:
        """lq ``(b t) 3 H W`` in [-1, 1] (upsampled), latent ``(b t) 4 H/8 W/8`` ×0.18215 -> x̂ ``(b t) 3 H W``."""
        with torch.no_grad():
            _, feats = self.vae.encode(lq)
        return self.vae.decode(latent / self.vae.scaling_factor, feats, num_frames, self.cfw_weight)

    def disc_factor(self) -> float:
        """1 from ``losses.disc_start`` generator updates on, else 0 (the authors' ``adopt_weight``)."""
        return 1.0 if self.global_step >= self.losses.disc_start else 0.0

    def _judge_frozen(self, frames: Tensor) -> Tensor:
        """D(frames) through detached discriminator parameters: gradients reach ``frames`` only."""
        params = {k: v.detach() for k, v in self.discriminator.named_parameters()}
        return functional_call(self.discriminator, params, (frames,))

    def generator_loss(self, pred: Tensor, target: Tensor, num_frames: int, disc_factor: float = 0.0
                       ) -> dict[str, Tensor]:
        """The terms of ``L_G`` (unweighted, as the loss functions return them) and ``total`` (weighted).

        The adversarial term is computed at every step (the authors' discriminator also sees x̂ before
        ``disc_start``) and weighted by ``gan * disc_factor``."""
        w, clips = self.losses, pred.shape[0] // num_frames
        zero = pred.new_zeros(())
        terms = {"l1": l1_loss(pred, target)}
        terms["lpips"] = self.lpips(pred, target).mean() if w.lpips else zero
        terms["frame_difference"] = frame_difference_loss(pred, target, num_frames) if w.frame_difference else zero
        terms["consistency"] = (
            structure_consistency_loss(pred, target, num_frames, self.flow_estimator, w.sobel_weight,
                                       w.consistency_variant)
            if w.consistency else zero
        )
        terms["gan_g"] = generator_adversarial_loss(self._judge_frozen(pred)) if w.gan else zero
        rec_div, diff_div = (pred.shape[0], clips * (num_frames - 1)) if w.reduction == "authors" else (1, 1)
        terms["total"] = (
            (w.l1 * terms["l1"] + w.lpips * terms["lpips"]) / rec_div
            + w.frame_difference * terms["frame_difference"] / diff_div
            + w.consistency * terms["consistency"]
            + w.gan * disc_factor * terms["gan_g"]
        )
        return terms

    def discriminator_loss(self, real: Tensor, fake: Tensor, disc_factor: float) -> Tensor:
        """``disc_factor · hinge(D(real), D(fake))``; ``fake`` is detached (no gradient to the generator)."""
        return disc_factor * hinge_discriminator_loss(self.discriminator(real), self.discriminator(fake.detach()))

    def _micro_batch(self, batch: dict) -> int:
        if "batch" in batch:
            return int(batch["batch"].reshape(-1)[0])
        return self.trainer.fit_loop.total_batch_idx

    def training_step(self, batch: dict, batch_idx: int) -> None:
        opt_g, opt_d = self.optimizers()
        num_frames = batch["gt"].shape[1]
        x_gt, x_lq = prepare_clips(batch["gt"], batch["lq"], clamp_lq=False)
        latent = rearrange(batch["latent"], "b t c h w -> (b t) c h w")
        factor, accumulate = self.disc_factor(), self.optim.accumulate_grad_batches

        pred = self.reconstruct(x_lq, latent, num_frames)
        terms = self.generator_loss(pred, x_gt, num_frames, factor)
        terms["disc"] = self.discriminator_loss(x_gt, pred, factor)
        self.manual_backward((terms["total"] + terms["disc"]) / accumulate)
        if (self._micro_batch(batch) + 1) % accumulate == 0:
            opt_g.step()
            opt_g.zero_grad()
            # zero gradients before disc_start: Adam still counts the step (module docstring)
            self.trainer.strategy.optimizer_step(opt_d.optimizer, closure=lambda: None, model=self)
            opt_d.zero_grad()
        b = batch["gt"].shape[0]
        self.log_dict({f"train/{k}": v.detach() for k, v in terms.items()}, batch_size=b, sync_dist=True)
        self.log("train/loss", terms["total"].detach(), prog_bar=True, batch_size=b, sync_dist=True)
        if self.should_log_images():
            self.log_clip_images([x_lq, pred, x_gt], num_frames)

    def configure_optimizers(self):
        o = self.optim
        opt_g = torch.optim.Adam(self.decoder_parameters(), lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
        opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=o.lr, betas=tuple(o.betas),
                                 weight_decay=o.weight_decay)
        return [opt_g, opt_d]


__all__ = ["Stage2System"]
