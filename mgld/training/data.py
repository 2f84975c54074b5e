"""Data plumbing for training: the data stream, the ``LightningDataModule``, synthetic clip folders for tests.

:class:`ClipStreamSampler` is the run's data order: an endless stream of global micro-batches of ``B`` clips
(``B = batch_size x processes``). Epoch ``e`` is the permutation ``default_rng([seed, e])`` of the dataset (an
incomplete last global batch is dropped); global micro-batch ``k`` holds the clips at epoch positions
``kB .. kB + B - 1`` and process ``r`` takes its ``batch_size`` consecutive ones. Each clip is handed to the
dataset as a :class:`mgld.data.reds.Draw` carrying its global sample number ``kB + r·batch_size + j``, from which
the dataset derives the crop, flip and degradation and the training step its noise and timesteps. Hence

* 2 processes x batch b see the same clips with the same draws, in the same optimizer steps, as 1 process x
  batch 2b (DDP averages the two halves' gradients: the same mean), and
* the stream starts at micro-batch ``global_step x accumulate_grad_batches``, so a resumed run continues with
  exactly the clips and draws an uninterrupted run would have used.

:func:`write_synthetic_sequences` writes a REDS-like folder (``root/<seq>/<frame:08d>.png``) of moving textures:
a smooth random texture with sharp-edged shapes, translated by a constant sub-pixel velocity per sequence, so
flows, temporal layers and Sobel edges all have something to see. :func:`write_synthetic_stage2` adds the LQ
frames and stage-1-like latents that :class:`mgld.data.stage2.Stage2ClipDataset` reads (bicubic LQ and random
latents: enough to exercise stage 2, not a substitute for ``mgld generate-latents``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytorch_lightning as pl
from torch.utils.data import DataLoader, Dataset, Sampler

from mgld.data.reds import Draw, bicubic_downscale, list_sequences, read_frame
from mgld.data.stage2 import LATENT_SUFFIX
from mgld.io.frames import FrameWriter, InputError


class ClipStreamSampler(Sampler):
    """The endless stream of :class:`Draw` of one process (module docstring).

    ``start_batch``: the first global micro-batch to yield (set on resume).
    """

    def __init__(self, num_items: int, batch_size: int, rank: int = 0, world_size: int = 1, seed: int = 0,
                 start_batch: int = 0):
        global_batch = batch_size * world_size
        if num_items < global_batch:
            raise InputError(f"{num_items} clips are fewer than one global batch of {global_batch} "
                             f"(data.batch_size={batch_size} x {world_size} processes)")
        self.num_items, self.batch_size, self.rank, self.world_size = num_items, batch_size, rank, world_size
        self.seed, self.start_batch = seed, start_batch
        self.batches_per_epoch = num_items // global_batch

    def permutation(self, epoch: int) -> np.ndarray:
        """The clip order of ``epoch`` (cached: one epoch at a time)."""
        if getattr(self, "_epoch", None) != epoch:
            self._epoch, self._order = epoch, np.random.default_rng([self.seed, epoch]).permutation(self.num_items)
        return self._order

    def draws(self, batch: int) -> list[Draw]:
        """This process's clips of global micro-batch ``batch``."""
        epoch, k = divmod(batch, self.batches_per_epoch)
        order = self.permutation(epoch)
        global_batch = self.batch_size * self.world_size
        first = self.rank * self.batch_size
        return [Draw(int(order[k * global_batch + first + j]), self.seed, batch * global_batch + first + j, batch)
                for j in range(self.batch_size)]

    def __iter__(self) -> Iterator[Draw]:
        batch = self.start_batch
        while True:
            yield from self.draws(batch)
            batch += 1


class ClipDataModule(pl.LightningDataModule):
    """Training batches ``b t c h w`` of a clip dataset in the order of :class:`ClipStreamSampler`.

    The stream is split by the trainer's rank and world size and starts at micro-batch
    ``trainer.global_step x accumulate_grad_batches`` (0 on a fresh run). Used with
    ``Trainer(use_distributed_sampler=False)``: the sampler does the split itself.
    """

    def __init__(self, dataset: Dataset, batch_size: int = 1, num_workers: int = 0, seed: int = 0,
                 accumulate_grad_batches: int = 1):
        super().__init__()
        self.dataset, self.batch_size, self.num_workers = dataset, batch_size, num_workers
        self.seed, self.accumulate_grad_batches = seed, accumulate_grad_batches
        self.sampler: ClipStreamSampler | None = None

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        start = trainer.global_step * self.accumulate_grad_batches if trainer is not None else 0
        self.sampler = ClipStreamSampler(len(self.dataset), self.batch_size, rank, world, self.seed, start)
        return DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            sampler=self.sampler,
            num_workers=self.num_workers,
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
        writer = FrameWriter(root / f"{first_index + k:03d}", [f"{i:08d}.png" for i in range(num_frames)])
        for i, frame in enumerate(moving_texture(num_frames, size, rng)):
            writer.write(i, frame)
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
    for name, seq in list_sequences(gt_root, exclude).items():
        (latent_root / name).mkdir(parents=True, exist_ok=True)
        writer = FrameWriter(lq_root / name, [f"{p.stem}.png" for p in seq.frames])
        for i, path in enumerate(seq.frames):
            gt = read_frame(path)
            h, w = gt.shape[:2]
            writer.write(i, bicubic_downscale(gt[None], scale)[0])
            latent = rng.standard_normal((latent_channels, h // 8, w // 8)).astype(np.float32)
            np.save(latent_root / name / f"{path.stem}{LATENT_SUFFIX}", latent)
    return lq_root, latent_root


__all__ = ["ClipDataModule", "ClipStreamSampler", "moving_texture", "write_synthetic_sequences",
           "write_synthetic_stage2"]
