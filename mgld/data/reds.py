"""Stage-1 training clips from a folder of frame sequences (REDS ``train_sharp`` layout; docs/training.md §2).

``root/<sequence>/<frame>.png`` (any of :data:`IMAGE_EXTENSIONS`; frames sorted by name). A clip is
``num_frames`` frames ``interval`` apart, starting at a *key* frame; every frame of every kept sequence is a key,
and a clip that would run past the end of its sequence starts at a random earlier frame instead (the authors'
``RealVSRRecurrentDataset``). Per clip, one random crop and one horizontal flip are shared by all frames; the LQ
clip is degraded from the crop *before* the GT is USM-sharpened (docs/training.md §2: ``lqs`` is a copy taken
before USM).

Sequences listed in ``exclude`` (REDS4 by default: 000, 011, 015, 020, the test clips) are skipped, and so,
with a warning, are sequences too short for one clip. An unreadable frame raises ``OSError`` naming the file.

Items are ``{"gt": t 3 H W, "lq": t 3 H/s W/s, "key": "seq/frame"}``, float32 RGB in [0, 1] (a DataLoader
batch is then ``b t c h w``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from mgld.data.degradations import RealBasicVSRDegradation, usm_sharpen

logger = logging.getLogger(__name__)

REDS4 = ("000", "011", "015", "020")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def list_sequences(
    root: str | Path, exclude: Sequence[str] = (), min_frames: int = 1
) -> dict[str, list[Path]]:
    """``{sequence name: sorted frame paths}`` for the sub-folders of ``root`` with at least ``min_frames`` frames.

    Raises ``FileNotFoundError`` if ``root`` is not a folder and ``ValueError`` if no sequence is left.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {root}")
    excluded = set(exclude)
    sequences, short = {}, []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if folder.name in excluded:
            continue
        frames = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        if len(frames) < min_frames:
            short.append(f"{folder.name} ({len(frames)})")
            continue
        sequences[folder.name] = frames
    if short:
        logger.warning("%s: skipped %d sequences shorter than one %d-frame clip: %s",
                       root, len(short), min_frames, ", ".join(short[:20]))
    if not sequences:
        raise ValueError(
            f"{root}: no sequence folder with at least {min_frames} frames "
            f"(expected {root}/<sequence>/<frame>{IMAGE_EXTENSIONS[0]}; excluded: {sorted(excluded)})"
        )
    return sequences


def read_frame(path: str | Path) -> np.ndarray:
    """One image as ``H W 3`` uint8 RGB; ``OSError`` naming the file if it cannot be decoded."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise OSError(f"cannot read frame {path} (missing, truncated or not an image)")
    return np.ascontiguousarray(image[..., ::-1])


def read_clip(paths: Sequence[Path]) -> np.ndarray:
    """Frames of one clip as ``t H W 3`` uint8 RGB; ``ValueError`` naming the file whose size differs."""
    frames = [read_frame(p) for p in paths]
    for path, frame in zip(paths, frames):
        if frame.shape != frames[0].shape:
            raise ValueError(f"{path}: {frame.shape[1]}x{frame.shape[0]} differs from {paths[0].name} "
                             f"({frames[0].shape[1]}x{frames[0].shape[0]})")
    return np.stack(frames)


def crop_and_flip(frames: np.ndarray, crop_size: int | None, flip: bool, rng: np.random.Generator) -> np.ndarray:
    """One random ``crop_size``² crop and (if ``flip``) a horizontal flip with p = 0.5, shared by all frames.

    Shapes: ``t H W 3`` -> ``t crop crop 3``.
    """
    h, w = frames.shape[1:3]
    if crop_size is not None:
        if h < crop_size or w < crop_size:
            raise ValueError(f"frames of {h}x{w} are smaller than the crop size {crop_size}")
        top, left = int(rng.integers(0, h - crop_size + 1)), int(rng.integers(0, w - crop_size + 1))
        frames = frames[:, top : top + crop_size, left : left + crop_size]
    if flip and rng.random() < 0.5:
        frames = frames[:, :, ::-1]
    return np.ascontiguousarray(frames)


def to_tensor(frames: np.ndarray) -> torch.Tensor:
    """``t H W 3`` uint8 (or float in [0, 1]) -> ``t 3 H W`` float32 in [0, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
    return x.float() / 255.0 if x.dtype == torch.uint8 else x.float()


def bicubic_downscale(frames: np.ndarray, scale: int) -> np.ndarray:
    """Clean ``1/scale`` bicubic downscaling (the LQ when no degradation is configured). ``t H W 3`` uint8."""
    h, w = frames.shape[1:3]
    return np.stack([cv2.resize(f, (w // scale, h // scale), interpolation=cv2.INTER_CUBIC) for f in frames])


class REDSClipDataset(Dataset):
    """Clips of a sequence folder with shared crop/flip, USM-sharpened GT and a degraded LQ (module docstring).

    Args:
        root: folder of sequence folders.
        num_frames, interval: frames per clip and the step between them.
        crop_size: square crop in pixels (None: whole frames).
        exclude: sequence names to leave out (REDS4 by default).
        use_flip: random horizontal flip shared by the clip.
        usm: sharpen the GT (kernel ``usm_radius``, weight ``usm_weight``, threshold ``usm_threshold``).
        degradation: makes the LQ clip; None -> clean bicubic ``1/scale``.
        scale: LQ downscaling factor (must match the degradation's).
        seed: fixes every item's randomness (item i always the same); None -> drawn from torch's RNG,
            which Lightning seeds per worker.
    """

    def __init__(
        self,
        root: str | Path,
        num_frames: int = 5,
        interval: int = 1,
        crop_size: int | None = 512,
        exclude: Sequence[str] = REDS4,
        use_flip: bool = True,
        usm: bool = True,
        usm_weight: float = 0.5,
        usm_radius: int = 51,
        usm_threshold: float = 10.0,
        degradation: RealBasicVSRDegradation | None = None,
        scale: int = 4,
        seed: int | None = None,
    ):
        if num_frames < 1 or interval < 1:
            raise ValueError(f"num_frames and interval must be >= 1, got {num_frames}, {interval}")
        if crop_size is not None and crop_size % (8 * scale) != 0:
            raise ValueError(f"crop_size {crop_size} must be a multiple of 8 x scale = {8 * scale}")
        self.span = (num_frames - 1) * interval + 1
        self.sequences = list_sequences(root, exclude, min_frames=self.span)
        self.keys = [(name, i) for name, frames in self.sequences.items() for i in range(len(frames))]
        self.num_frames, self.interval, self.crop_size, self.use_flip = num_frames, interval, crop_size, use_flip
        self.usm = (usm_weight, usm_radius, usm_threshold) if usm else None
        self.degradation, self.scale, self.seed = degradation, scale, seed

    def __len__(self) -> int:
        return len(self.keys)

    def _rng(self, index: int) -> np.random.Generator:
        if self.seed is not None:
            return np.random.default_rng((self.seed, index))
        return np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))

    def clip_paths(self, index: int, rng: np.random.Generator) -> list[Path]:
        """Frame paths of the clip keyed by item ``index`` (moved earlier at random if it overruns)."""
        name, start = self.keys[index]
        frames = self.sequences[name]
        if start + self.span > len(frames):
            start = int(rng.integers(0, len(frames) - self.span + 1))
        return frames[start : start + self.span : self.interval]

    def __getitem__(self, index: int) -> dict:
        rng = self._rng(index)
        paths = self.clip_paths(index, rng)
        frames = read_clip(paths)
        frames = crop_and_flip(frames, self.crop_size, self.use_flip, rng)
        if self.degradation is None:
            lq = bicubic_downscale(frames, self.scale)
        else:
            lq = self.degradation(frames, rng)  # from the un-sharpened crop
        gt = usm_sharpen(frames, *self.usm) if self.usm is not None else frames
        name = paths[0].parent.name
        return {"gt": to_tensor(gt), "lq": to_tensor(lq), "key": f"{name}/{paths[0].stem}"}


__all__ = [
    "IMAGE_EXTENSIONS",
    "REDS4",
    "REDSClipDataset",
    "bicubic_downscale",
    "crop_and_flip",
    "list_sequences",
    "read_clip",
    "read_frame",
    "to_tensor",
]
