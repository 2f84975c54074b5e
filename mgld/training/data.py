"""Data plumbing for training: the ``LightningDataModule`` and synthetic clip folders for tests and smoke runs.

:func:`write_synthetic_sequences` writes a REDS-like folder (``root/<seq>/<frame:08d>.png``) of moving textures:
a smooth random texture with sharp-edged shapes, translated by a constant sub-pixel velocity per sequence, so
flows, temporal layers and Sobel edges all have something to see. :func:`write_synthetic_stage2` adds the LQ
frames and stage-1-like latents that :class:`mgld.data.stage2.Stage2ClipDataset` reads (bicubic LQ and random
latents: enough to exercise stage 2, not a substitute for ``mgld generate-latents``).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytorch_lightning as pl
from torch.utils.data import DataLoader, Dataset

from mgld.data.reds import list_sequences, read_frame
from mgld.data.stage2 import LATENT_SUFFIX


class ClipDataModule(pl.LightningDataModule):
    """Shuffled training batches ``b t c h w`` of a clip dataset (incomplete last batches dropped)."""

    def __init__(self, dataset: Dataset, batch_size: int = 1, num_workers: int = 0):
        super().__init__()
        self.dataset, self.batch_size, self.num_workers = dataset, batch_size, num_workers

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            shuffle=True,
            num_workers=self.num_workers,
            drop_last=True,
            persistent_workers=self.num_workers > 0,
        )


def moving_texture(num_frames: int, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """``t h w 3`` uint8 frames of a textured canvas moving at a constant random velocity (|v| <= 2 px/frame)."""
    h, w = size
    margin = 2 * num_frames + 4
    ch, cw = h + 2 * margin, w + 2 * margin
    coarse = rng.uniform(0, 255, (ch // 8 + 2, cw // 8 + 2, 3)).astype(np.float32)
    canvas = cv2.resize(coarse, (cw, ch), interpolation=cv2.INTER_CUBIC)
    for _ in range(6):  # sharp-edged shapes give Sobel edges and trackable corners
        y, x = int(rng.integers(0, ch)), int(rng.integers(0, cw))
        r = int(rng.integers(2, max(3, min(h, w) // 4)))
        colour = [float(c) for c in rng.uniform(0, 255, 3)]
        if rng.random() < 0.5:
            cv2.rectangle(canvas, (x - r, y - r), (x + r, y + r), colour, -1)
        else:
            cv2.circle(canvas, (x, y), r, colour, -1)
    vx, vy = rng.uniform(-2, 2, 2)
    frames = []
    for i in range(num_frames):
        shift = np.float32([[1, 0, -(margin + vx * i)], [0, 1, -(margin + vy * i)]])
        frame = cv2.warpAffine(canvas, shift, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        frames.append(np.clip(np.rint(frame), 0, 255).astype(np.uint8))
    return np.stack(frames)


def write_synthetic_sequences(
    root: str | Path,
    num_sequences: int = 3,
    num_frames: int = 10,
    size: tuple[int, int] = (64, 64),
    seed: int = 0,
    first_index: int = 100,
) -> Path:
    """Write ``num_sequences`` folders of ``num_frames`` PNG frames (``h w = size``) under ``root``.

    Sequence names are ``f"{first_index + k:03d}"`` (the default avoids the REDS4 names 000/011/015/020).
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    for k in range(num_sequences):
        folder = root / f"{first_index + k:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        for i, frame in enumerate(moving_texture(num_frames, size, rng)):
            cv2.imwrite(str(folder / f"{i:08d}.png"), frame[..., ::-1])
    return root


def write_synthetic_stage2(
    gt_root: str | Path, out_root: str | Path, scale: int = 4, latent_channels: int = 4, seed: int = 0,
    exclude: tuple[str, ...] = (),
) -> tuple[Path, Path]:
    """Write ``out_root/lq`` (bicubic ``1/scale`` PNGs) and ``out_root/latents`` (N(0, 1) ``.npy``, ``c H/8 W/8``)
    for every frame of ``gt_root``; returns ``(lq_root, latent_root)``."""
    out_root = Path(out_root)
    lq_root, latent_root = out_root / "lq", out_root / "latents"
    rng = np.random.default_rng(seed)
    for name, frames in list_sequences(gt_root, exclude).items():
        (lq_root / name).mkdir(parents=True, exist_ok=True)
        (latent_root / name).mkdir(parents=True, exist_ok=True)
        for path in frames:
            gt = read_frame(path)
            h, w = gt.shape[:2]
            lq = cv2.resize(gt, (w // scale, h // scale), interpolation=cv2.INTER_CUBIC)
            cv2.imwrite(str(lq_root / name / f"{path.stem}.png"), lq[..., ::-1])
            latent = rng.standard_normal((latent_channels, h // 8, w // 8)).astype(np.float32)
            np.save(latent_root / name / f"{path.stem}{LATENT_SUFFIX}", latent)
    return lq_root, latent_root


__all__ = ["ClipDataModule", "moving_texture", "write_synthetic_sequences", "write_synthetic_stage2"]
