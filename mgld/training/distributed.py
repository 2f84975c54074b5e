"""BatchNorm over the global batch of a multi-process run, on any backend (gloo on CPU too).

``torch.nn.SyncBatchNorm`` runs on GPUs only. :class:`GlobalBatchNorm2d` computes the per-channel sums of ``x`` and
``x²`` and the element count, adds them over all processes with the differentiable
``torch.distributed.nn.functional.all_reduce`` and normalises with the global mean and (biased) variance; running
statistics follow ``nn.BatchNorm2d`` (momentum, unbiased variance). Gradients flow back through the sums to every
process's frames, as with ``SyncBatchNorm``, so N processes x batch b compute what 1 process x batch N·b computes
(up to the order of the fp32 sums). In one process, or in eval mode, it is an ordinary ``BatchNorm2d`` that uses
the same sum formula in training (so 1 and N processes share one formula).

Used by the stage-2 PatchGAN with ``discriminator.sync_batchnorm: true`` (:func:`convert_global_batchnorm`).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn


def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` whose training statistics cover the batch of every process (module docstring)."""

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return super().forward(x)
        c = x.shape[1]
        count = torch.tensor([x.numel() // c], dtype=x.dtype, device=x.device)
        stats = torch.cat([x.sum((0, 2, 3)), (x * x).sum((0, 2, 3)), count])
        if _world_size() > 1:
            from torch.distributed.nn.functional import all_reduce

            stats = all_reduce(stats)
        n = stats[-1]
        mean = stats[:c] / n
        var = (stats[c : 2 * c] / n - mean * mean).clamp_min(0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.mul_(1 - momentum).add_(momentum * mean.detach())
                unbiased = var.detach() * (n / (n - 1).clamp_min(1))
                self.running_var.mul_(1 - momentum).add_(momentum * unbiased)
        y = (x - mean[None, :, None, None]) * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y


def convert_global_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every ``nn.BatchNorm2d`` of ``module`` (in place) by a :class:`GlobalBatchNorm2d` holding the same
    parameters and buffers; returns ``module``."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d) and not isinstance(child, GlobalBatchNorm2d):
            new = GlobalBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                    child.track_running_stats, device=child.weight.device if child.affine else None)
            new.load_state_dict(child.state_dict())
            new.train(child.training)
            for p_new, p_old in zip(new.parameters(), child.parameters()):
                p_new.requires_grad_(p_old.requires_grad)
            setattr(module, name, new)
        else:
            convert_global_batchnorm(child)
    return module


__all__ = ["GlobalBatchNorm2d", "convert_global_batchnorm"]
