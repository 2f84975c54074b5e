"""What both training systems share: input preparation, lean checkpoints and TensorBoard image strips.

* :func:`prepare_clips`: dataset batches ``b t 3 H W`` in [0, 1] -> frames ``(b t) 3 H W`` in [-1, 1], the LQ
  bicubic-upsampled to the GT size; clamped to [-1, 1] in stage 1, not in stage 2 (as the authors,
  docs/training.md §3, §5).
* :class:`TrainingSystem`: a ``LightningModule`` whose checkpoints leave out the loss networks (LPIPS, flow) and,
  when the frozen weights come from a file (``checkpoint_frozen=False``), the frozen weights too: a full-size
  stage-1 checkpoint then holds the 122 M trained parameters and their optimizer state instead of ~1.1 B. The
  frozen part is rebuilt from the same SD checkpoint on resume; loading checks that every saved key is present.
* :func:`clip_strip` / :func:`temporal_profile`: the images logged during training — rows LQ / output / GT of the
  first clip, and each row's middle scan line stacked over time (flicker shows as horizontal streaks).
"""

from __future__ import annotations

from collections.abc import Sequence

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor


def prepare_clips(gt: Tensor, lq: Tensor, clamp_lq: bool = True) -> tuple[Tensor, Tensor]:
    """gt ``b t 3 H W``, lq ``b t 3 h w`` in [0, 1] -> (gt, bicubic-upsampled lq), each ``(b t) 3 H W`` in [-1, 1]
    (the upsampled LQ overshoots that range a little unless ``clamp_lq``)."""
    if gt.ndim != 5 or lq.ndim != 5 or gt.shape[:3] != lq.shape[:3]:
        raise ValueError(f"expected gt and lq as b t 3 h w clips, got {tuple(gt.shape)} and {tuple(lq.shape)}")
    x_gt = rearrange(gt, "b t c h w -> (b t) c h w") * 2 - 1
    x_lq = rearrange(lq, "b t c h w -> (b t) c h w")
    x_lq = F.interpolate(x_lq, size=gt.shape[-2:], mode="bicubic", align_corners=False)
    x_lq = x_lq * 2 - 1
    return x_gt.clamp(-1, 1), x_lq.clamp(-1, 1) if clamp_lq else x_lq


def clip_strip(rows: Sequence[Tensor]) -> Tensor:
    """Rows of frames -> one image: each row ``t 3 H W`` in [-1, 1] side by side -> ``3 (rows H) (t W)`` in [0, 1]."""
    grid = torch.stack([r.detach().float().cpu() for r in rows])  # r t c h w
    return rearrange((grid.clamp(-1, 1) + 1) / 2, "r t c h w -> c (r h) (t w)")


def temporal_profile(rows: Sequence[Tensor]) -> Tensor:
    """Each row's middle scan line over time: rows of ``t 3 H W`` -> ``3 (rows t) W`` in [0, 1]."""
    lines = torch.stack([r.detach().float().cpu()[:, :, r.shape[-2] // 2] for r in rows])  # r t c w
    return rearrange((lines.clamp(-1, 1) + 1) / 2, "r t c w -> c (r t) w")


class TrainingSystem(pl.LightningModule):
    """Base of :class:`Stage1System` and :class:`Stage2System`: lean checkpoints and image logging.

    Subclasses set ``trained_prefixes`` (state-dict prefixes of the trained modules) and ``eval_modules``
    (attributes kept in eval mode while training: frozen networks, whose BatchNorm or dropout must not switch
    to training behaviour, e.g. RAFT's).
    """

    trained_prefixes: tuple[str, ...] = ()
    loss_prefixes: tuple[str, ...] = ("lpips.", "flow_estimator.")
    eval_modules: tuple[str, ...] = ()

    def __init__(self, checkpoint_frozen: bool = True, image_every_n_steps: int = 1000):
        super().__init__()
        self.checkpoint_frozen = checkpoint_frozen
        self.image_every_n_steps = image_every_n_steps
        self.strict_loading = False  # on_load_checkpoint checks the keys instead

    def train(self, mode: bool = True):
        super().train(mode)
        for name in self.eval_modules:
            module = getattr(self, name, None)
            if isinstance(module, torch.nn.Module):
                module.eval()
        return self

    def _saved_key(self, key: str) -> bool:
        if key.startswith(self.loss_prefixes):
            return False
        return self.checkpoint_frozen or key.startswith(self.trained_prefixes)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if self._saved_key(k)}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        expected = {k for k in self.state_dict() if self._saved_key(k)}
        found = set(checkpoint["state_dict"])
        missing, unexpected = sorted(expected - found), sorted(found - expected)
        if missing or unexpected:
            raise RuntimeError(
                f"checkpoint does not fit {type(self).__name__}: missing {missing[:10]} ({len(missing)}), "
                f"unexpected {unexpected[:10]} ({len(unexpected)}); was it written with the same config?"
            )

    def should_log_images(self) -> bool:
        step = self.global_step
        return (
            self.image_every_n_steps > 0 and step % self.image_every_n_steps == 0 and self.trainer.is_global_zero
            and self.logger is not None and hasattr(self.logger.experiment, "add_image")
        )

    def log_clip_images(self, rows: Sequence[Tensor], num_frames: int) -> None:
        """Log LQ / output / GT of the first clip: rows of ``(b t) 3 H W`` in [-1, 1]."""
        first = [r[:num_frames] for r in rows]
        writer, step = self.logger.experiment, self.global_step
        writer.add_image("images/lq_output_gt", clip_strip(first), step)
        writer.add_image("images/temporal_profile", temporal_profile(first), step)


__all__ = ["TrainingSystem", "clip_strip", "prepare_clips", "temporal_profile"]
