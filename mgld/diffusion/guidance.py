"""Motion guidance: the masked bidirectional warping loss and one guided latent update (docs/algorithm.md §6).

For latent frames ``z_0 .. z_{t-1}``, flows ``W`` (``flow_f``) and ``B`` (``flow_b``) and occlusion masks
``O^a`` (``fwd_occ``, grid i) and ``O^b`` (``bwd_occ``, grid i+1) as :mod:`mgld.flow` defines them, with
``ℓ`` the mean absolute value over one frame's ``(b, c, h, w)``:

* ``variant="fixed"`` (the *intended* loss, docs/differences.md)::

      L = Σ_{i=0}^{t-2} ℓ((1−O^a_i)·(warp(z_{i+1}, B_i) − z_i))
        + Σ_{i=1}^{t-1} ℓ((1−O^b_{i-1})·(warp(z_{i-1}, W_{i-1}) − z_i))

* ``variant="authors"`` (the authors' ``compute_temporal_condition_v4`` *as implemented*, which the released
  model was sampled with): the same sums, but each frame is warped with the flow of the *neighbouring* pair —
  ``B_{i+1}`` instead of ``B_i``, ``W_{i-2}`` instead of ``W_{i-1}`` — and where that pair does not exist
  (``i = t-2`` in the first sum, ``i = 1`` in the second) the warped frame is replaced by zeros, so those
  terms penalise ``|z_i|`` itself. On identical static frames with empty masks the loss is ``2·mean|z|``.

The guided update after each DDPM step is ``z ← z − s·|log σ̃²_k|·∇_z L`` with guidance scale ``s`` (10 by
default; the authors write ``guidance_scale = −10`` and ``z − guidance_scale·log σ̃²_k·∇L``, the same update
since ``log σ̃²_k < 0``).
"""

from __future__ import annotations

from typing import Literal

import torch
from einops import rearrange
from torch import Tensor

from mgld.flow import flow_warp

GuidanceVariant = Literal["authors", "fixed"]
DEFAULT_GUIDANCE_SCALE = 10.0


def _warp_neighbours(frames: Tensor, flows: Tensor, flow_shift: int) -> Tensor:
    """Warp ``frames[:, j]`` with ``flows[:, j + flow_shift]``; zeros where that flow index does not exist.

    Shapes:
        frames: ``b n c h w``; flows: ``b n 2 h w``. Returns ``b n c h w``.
    """
    n = frames.shape[1]
    warped = torch.zeros_like(frames)
    src = range(max(0, -flow_shift), min(n, n - flow_shift))  # j with 0 <= j + flow_shift < n
    if len(src) == 0:
        return warped
    j = slice(src.start, src.stop)
    k = slice(src.start + flow_shift, src.stop + flow_shift)
    b = frames.shape[0]
    out = flow_warp(
        rearrange(frames[:, j], "b n c h w -> (b n) c h w"),
        rearrange(flows[:, k], "b n c h w -> (b n) c h w"),
    )
    warped[:, j] = rearrange(out, "(b n) c h w -> b n c h w", b=b)
    return warped


def warping_loss(
    latents: Tensor,
    flows: tuple[Tensor, Tensor],
    masks: tuple[Tensor, Tensor],
    num_frames: int,
    variant: GuidanceVariant = "authors",
) -> Tensor:
    """The masked bidirectional warping loss ``L`` of the module docstring (a scalar).

    Shapes:
        latents: ``(b t) c h w``; flows ``(flow_f, flow_b)``: ``b (t-1) 2 h w`` (W and B at latent scale);
        masks ``(fwd_occ, bwd_occ)``: ``b (t-1) 1 h w``, 1 = occluded.
    """
    if variant not in ("authors", "fixed"):
        raise ValueError(f"variant must be 'authors' or 'fixed', got {variant!r}")
    z = rearrange(latents, "(b t) c h w -> b t c h w", t=num_frames)
    flow_f, flow_b = flows
    fwd_occ, bwd_occ = masks
    b, _, _, h, w = z.shape
    for name, x in (("flow_f", flow_f), ("flow_b", flow_b), ("fwd_occ", fwd_occ), ("bwd_occ", bwd_occ)):
        if x.ndim != 5 or (x.shape[0], x.shape[1], x.shape[3], x.shape[4]) != (b, num_frames - 1, h, w):
            raise ValueError(
                f"{name}: expected b (t-1) c h w = ({b}, {num_frames - 1}, c, {h}, {w}), got {tuple(x.shape)}"
            )
    shift = 1 if variant == "authors" else 0
    # frame i+1 aligned to frame i (kept where fwd_occ_i = 0); frame i-1 to frame i (bwd_occ_{i-1} = 0)
    onto_prev = _warp_neighbours(z[:, 1:], flow_b, +shift)  # targets for frames 0..t-2
    onto_next = _warp_neighbours(z[:, :-1], flow_f, -shift)  # targets for frames 1..t-1
    loss_b = ((1 - fwd_occ) * (onto_prev - z[:, :-1])).abs().mean(dim=(0, 2, 3, 4)).sum()
    loss_f = ((1 - bwd_occ) * (onto_next - z[:, 1:])).abs().mean(dim=(0, 2, 3, 4)).sum()
    return loss_b + loss_f


def guidance_step(
    latents: Tensor,
    flows: tuple[Tensor, Tensor],
    masks: tuple[Tensor, Tensor],
    scale: float = DEFAULT_GUIDANCE_SCALE,
    log_variance: float | Tensor | None = None,
    variant: GuidanceVariant = "authors",
    *,
    num_frames: int | None = None,
) -> tuple[Tensor, Tensor | None]:
    """One motion-guided update ``z ← z − scale·|log_variance|·∇_z L`` (docs/algorithm.md §6), gradient in fp32.

    Works under ``torch.no_grad``; ``latents`` is not modified in place. ``scale == 0`` returns ``(latents,
    None)`` without touching the flows. ``log_variance`` is the clipped posterior log-variance of the current
    respaced step (:attr:`mgld.diffusion.schedule.RespacedSchedule.posterior_log_variance_clipped`); ``num_frames``
    defaults to ``flows[0].shape[1] + 1``.

    Shapes:
        latents: ``(b t) c h w`` (b = 1 in the sampler); flows ``b (t-1) 2 h w``; masks ``b (t-1) 1 h w``.
        Returns the updated latents (same shape and dtype) and the loss before the update (fp32 scalar).
    """
    if scale == 0:
        return latents, None
    if log_variance is None:
        raise ValueError("guidance_step needs log_variance, the clipped posterior log-variance of the step")
    if num_frames is None:
        num_frames = flows[0].shape[1] + 1
    with torch.enable_grad():
        z = latents.detach().float().requires_grad_(True)
        flows32 = tuple(f.detach().float() for f in flows)
        masks32 = tuple(m.detach().float() for m in masks)
        loss = warping_loss(z, flows32, masks32, num_frames, variant)
        (grad,) = torch.autograd.grad(loss, z)
    if isinstance(log_variance, Tensor) and log_variance.device.type != "cpu":
        step = scale * log_variance.detach().float().abs()
    else:  # a float32 value as a Python number: no host-to-device copy (and no wait) in the step loop
        step = (scale * torch.as_tensor(log_variance, dtype=torch.float32).abs()).item()
    updated = z.detach() - step * grad
    return updated.to(latents.dtype), loss.detach()


__all__ = ["DEFAULT_GUIDANCE_SCALE", "GuidanceVariant", "guidance_step", "warping_loss"]
