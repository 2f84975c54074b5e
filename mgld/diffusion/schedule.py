"""The diffusion schedule: SD's scaled-linear DDPM respaced to N sampling steps (docs/algorithm.md §3).

Training uses 1000 steps, β = linspace(√0.00085, √0.012, 1000)². Sampling keeps the N training timesteps
``S = space_timesteps(1000, N)`` (for N = 50: 0, 20, 41, …, 979, 999) and runs DDPM on them:

* step ``k`` (respaced index, N−1 down to 0) feeds the networks the *original* timestep ``S[k]``;
* its posterior uses ``β'_k = 1 − ᾱ_{S_k}/ᾱ_{S_{k−1}}`` (``ᾱ_{S_{−1}} = 1``):
  ``x̂0 = √(1/ᾱ)·x − √(1/ᾱ − 1)·ε̂``, ``μ = c1·x̂0 + c2·x``, ``z' = μ + 1[k>0]·exp(½·log σ̃²_k)·ξ`` with
  ``log σ̃²_k = log(max(σ̃²_k, 1e-20))`` (−46.05 at k = 0, which still scales the guidance step there);
* the start is not pure noise: ``x_T = √ᾱ_999·z_lr + √(1−ᾱ_999)·ε`` with the 1000-step table.

diffusers' ``DDPMScheduler`` with ``S`` as custom timesteps is this sampler (docs/algorithm.md §3);
:func:`make_scheduler` builds it and :class:`RespacedSchedule` exposes the per-step quantities the MGLD loop
needs that diffusers keeps internal (x̂0, μ, log σ̃², the original timestep) and lets a test pass ξ
explicitly.

Precision: the authors' buffers come from a float64 ᾱ cast to float32, and the respaced tables are re-derived
from those in float32; diffusers takes the cumulative product in float32. Checked against the oracle
``schedule.json``: every quantity agrees to ≤ 3.1e-5 relative error per element (worst: the respaced
√(1/ᾱ_0 − 1) = 0.029 and the 1000-step √(1 − ᾱ_0), both cancellations near ᾱ_0 = 0.99915) and ≤ 1.3e-6
per table (Frobenius), so diffusers' ``alphas_cumprod`` is used as is. The respaced tables are derived from it
in float64 and stored as float32.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from diffusers import DDPMScheduler
from diffusers.utils.torch_utils import randn_tensor
from torch import Tensor

NUM_TRAIN_TIMESTEPS = 1000
DEFAULT_SAMPLING_STEPS = 50


def space_timesteps(num_train_timesteps: int, num_steps: int) -> list[int]:
    """Evenly spaced training timesteps kept by respacing, ascending (the authors' ``space_timesteps``).

    Stride ``(T−1)/(N−1)`` accumulated in float and rounded with Python's ``round``; includes 0 and T−1.
    """
    if not 1 <= num_steps <= num_train_timesteps:
        raise ValueError(f"num_steps must be in [1, {num_train_timesteps}], got {num_steps}")
    stride = (num_train_timesteps - 1) / (num_steps - 1) if num_steps > 1 else 1.0
    steps, position = [], 0.0
    for _ in range(num_steps):
        steps.append(round(position))
        position += stride
    return steps


def make_scheduler(num_inference_steps: int = DEFAULT_SAMPLING_STEPS) -> DDPMScheduler:
    """diffusers' ``DDPMScheduler`` of SD / MGLD, set to the respaced timesteps (descending order)."""
    scheduler = DDPMScheduler(
        num_train_timesteps=NUM_TRAIN_TIMESTEPS,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="epsilon",
        variance_type="fixed_small",
        clip_sample=False,
    )
    # custom timesteps: diffusers' own spacings ("leading", "linspace", …) are not guaranteed to equal S
    scheduler.set_timesteps(timesteps=space_timesteps(NUM_TRAIN_TIMESTEPS, num_inference_steps)[::-1])
    return scheduler


@dataclass(frozen=True)
class DDPMStepOutput:
    """One ancestral step: ``prev_sample`` = z', ``mean`` = μ, ``pred_x0`` = x̂0; all ``(b t) c h w``."""

    prev_sample: Tensor
    mean: Tensor
    pred_x0: Tensor


@dataclass(frozen=True)
class RespacedSchedule:
    """Per-step tables of the respaced DDPM, indexed by the respaced step ``k`` (0 = last sampling step).

    All tables are float32 ``(N,)``; ``timesteps`` is int64 ``(N,)`` ascending (``S``). The sampling loop runs
    ``k = N−1, …, 0``: networks get ``timesteps[k]``, :meth:`step` gives z', and guidance scales its step by
    ``posterior_log_variance_clipped[k]``. ``x_T_coefficients`` = (√ᾱ, √(1−ᾱ)) at the last training step.
    """

    timesteps: Tensor
    betas: Tensor
    alphas_cumprod: Tensor
    alphas_cumprod_prev: Tensor
    sqrt_recip_alphas_cumprod: Tensor
    sqrt_recipm1_alphas_cumprod: Tensor
    posterior_variance: Tensor
    posterior_log_variance_clipped: Tensor
    posterior_mean_coef1: Tensor
    posterior_mean_coef2: Tensor
    x_T_coefficients: tuple[float, float]

    @classmethod
    def from_scheduler(cls, scheduler: DDPMScheduler) -> RespacedSchedule:
        """Tables of ``scheduler``'s (custom) timesteps, from its 1000-step ``alphas_cumprod``."""
        timesteps = scheduler.timesteps.flip(0).to(torch.int64)
        table = scheduler.alphas_cumprod.double()
        ac = table[timesteps]
        ac_prev = torch.cat([ac.new_ones(1), ac[:-1]])
        betas = 1.0 - ac / ac_prev
        variance = betas * (1.0 - ac_prev) / (1.0 - ac)
        tables = {
            "betas": betas,
            "alphas_cumprod": ac,
            "alphas_cumprod_prev": ac_prev,
            "sqrt_recip_alphas_cumprod": (1.0 / ac).sqrt(),
            "sqrt_recipm1_alphas_cumprod": (1.0 / ac - 1.0).sqrt(),
            "posterior_variance": variance,
            "posterior_log_variance_clipped": variance.clamp(min=1e-20).log(),
            "posterior_mean_coef1": betas * ac_prev.sqrt() / (1.0 - ac),
            "posterior_mean_coef2": (1.0 - ac_prev) * (1.0 - betas).sqrt() / (1.0 - ac),
        }
        last = table[scheduler.config.num_train_timesteps - 1]
        x_T_coefficients = (last.sqrt().float().item(), (1.0 - last).sqrt().float().item())
        return cls(timesteps, **{k: v.float() for k, v in tables.items()}, x_T_coefficients=x_T_coefficients)

    @property
    def num_steps(self) -> int:
        return len(self.timesteps)

    def timestep(self, k: int) -> int:
        """The original training timestep of respaced step ``k`` (what the UNet and the encoder see)."""
        return int(self.timesteps[k])

    def log_variance(self, k: int) -> float:
        """``log(max(σ̃²_k, 1e-20))``, the factor of the guidance step at respaced step ``k``."""
        return float(self.posterior_log_variance_clipped[k])

    def predict_x0(self, eps: Tensor, k: int, x: Tensor) -> Tensor:
        """``x̂0 = √(1/ᾱ_k)·x − √(1/ᾱ_k − 1)·ε̂`` (no clipping). eps, x: ``(b t) c h w``."""
        return float(self.sqrt_recip_alphas_cumprod[k]) * x - float(self.sqrt_recipm1_alphas_cumprod[k]) * eps

    def posterior_mean(self, pred_x0: Tensor, k: int, x: Tensor) -> Tensor:
        """``μ = c1_k·x̂0 + c2_k·x``. pred_x0, x: ``(b t) c h w``."""
        return float(self.posterior_mean_coef1[k]) * pred_x0 + float(self.posterior_mean_coef2[k]) * x

    def step(
        self,
        eps: Tensor,
        k: int,
        x: Tensor,
        *,
        generator: torch.Generator | None = None,
        noise: Tensor | None = None,
    ) -> DDPMStepOutput:
        """One DDPM step from ``x`` (at respaced step ``k``) given the predicted noise ``eps``.

        ``z' = μ + 1[k>0]·exp(½·log σ̃²_k)·ξ``; ξ is ``noise`` if given, else drawn from ``generator``
        (only when k > 0, like ``DDPMScheduler.step``, which this equals for the same generator state).

        Shapes:
            eps, x, noise: ``(b t) c h w``. Returns :class:`DDPMStepOutput` of the same shape.
        """
        if not 0 <= k < self.num_steps:
            raise IndexError(f"respaced step {k} outside [0, {self.num_steps})")
        pred_x0 = self.predict_x0(eps, k, x)
        mean = self.posterior_mean(pred_x0, k, x)
        if k == 0:
            return DDPMStepOutput(mean, mean, pred_x0)
        if noise is None:
            noise = randn_tensor(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        std = torch.exp(0.5 * self.posterior_log_variance_clipped[k]).item()
        return DDPMStepOutput(mean + std * noise, mean, pred_x0)

    def initial_latents(
        self,
        z_lr: Tensor,
        *,
        generator: torch.Generator | None = None,
        noise: Tensor | None = None,
    ) -> Tensor:
        """``x_T = √ᾱ_999·z_lr + √(1−ᾱ_999)·ε`` (docs/algorithm.md §5); ε = ``noise`` or drawn from ``generator``.

        Shapes:
            z_lr, noise: ``(b t) 4 h w`` (``z_lr`` already multiplied by the VAE scale 0.18215).
        """
        if noise is None:
            noise = randn_tensor(z_lr.shape, generator=generator, device=z_lr.device, dtype=z_lr.dtype)
        signal, sigma = self.x_T_coefficients
        return signal * z_lr + sigma * noise


@functools.lru_cache(maxsize=8)
def respaced_schedule(num_inference_steps: int = DEFAULT_SAMPLING_STEPS) -> RespacedSchedule:
    """:class:`RespacedSchedule` of :func:`make_scheduler` (``num_inference_steps``); built once per step count
    (the tables are frozen and shared: treat them as read-only)."""
    return RespacedSchedule.from_scheduler(make_scheduler(num_inference_steps))


__all__ = [
    "DDPMStepOutput",
    "RespacedSchedule",
    "make_scheduler",
    "respaced_schedule",
    "space_timesteps",
]
