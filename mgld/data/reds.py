"""Stage-1 training clips from a folder of frame sequences (REDS ``train_sharp`` layout; docs/training.md §2).

``root/<sequence>/<frame>.png``: the sequences and their frames are listed by :mod:`mgld.io.sequences` (the
listing inference and evaluation use: natural order ``2.png`` before ``10.png``, every image extension of
:data:`mgld.io.frames.IMAGE_EXTENSIONS`). A clip is ``num_frames`` frames ``interval`` apart, starting at a
*key* frame; every frame of every kept sequence is a key, and a clip that would run past the end of its
sequence starts at a random earlier frame instead (the authors' ``RealVSRRecurrentDataset``). Per clip, one
random crop and one horizontal flip are shared by all frames; the LQ clip is degraded from the crop *before*
the GT is USM-sharpened (docs/training.md §2: ``lqs`` is a copy taken before USM).

Sequences listed in ``exclude`` (REDS4 by default: 000, 011, 015, 020, the test clips) are skipped: by exact
name (``exclude_by="name"``, stage 1 as the authors) or by name prefix (``"prefix"``: the stage-2 sub-image
folders ``000_s001`` … as the authors). Sequences too short for one clip are skipped with a warning. Every
problem with the data raises :class:`mgld.io.frames.InputError` naming the folder or file, when the dataset is
built (missing or empty folder, frames smaller than the crop, damaged frames with ``verify``) or when a frame
is read.

Randomness: an item is addressed either by a plain index (its draws then come from ``(seed, index)``, or from
torch's RNG without a seed) or by a :class:`Draw` from :class:`mgld.training.data.ClipStreamSampler`, whose
``(seed, sample)`` -- the sample's place in the run's global sample stream -- fixes the crop, flip and
degradation, and whose ``model_seed`` (returned as the item's ``seed``) fixes the training step's noise and
timesteps. So a sample gets the same draws whatever the number of processes and after a resume.

Items are ``{"gt": t 3 H W, "lq": t 3 H/s W/s, "key": "seq/frame"}`` (+ ``seed``, ``batch`` with a
:class:`Draw`), float32 RGB in [0, 1] (a DataLoader batch is then ``b t c h w``). The LQ is the authors'
unrounded float degradation output.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, NamedTuple

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from mgld.data.degradations import RealBasicVSRDegradation, USMConfig, usm_sharpen
from mgld.io.frames import IMAGE_EXTENSIONS, InputError, frames_to_tensor, read_image
from mgld.io.sequences import discover_sequences

logger = logging.getLogger(__name__)

REDS4 = ("000", "011", "015", "020")
ExcludeBy = Literal["name", "prefix"]
DEFAULT_USM = USMConfig()


class Draw(NamedTuple):
    """What :class:`mgld.training.data.ClipStreamSampler` hands the dataset for one sample.

    ``index``: the dataset item; ``seed``: the run's data seed; ``sample``: the sample's number in the global
    stream (``batch * global_batch + rank * batch_size + j``); ``batch``: the global micro-batch number.
    """

    index: int
    seed: int
    sample: int
    batch: int

    def data_rng(self) -> np.random.Generator:
        """The generator of the sample's crop, flip and degradation."""
        return np.random.default_rng([self.seed, self.sample, 0])

    def model_seed(self) -> int:
        """A 63-bit seed of the sample's draws in the training step (noise, timesteps, posterior samples)."""
        return int(np.random.SeedSequence([self.seed, self.sample, 1]).generate_state(1, np.uint64)[0] >> 1)


# ---------------------------------------------------------------------------------------------------------
# Sequences and frames
# ---------------------------------------------------------------------------------------------------------


class TrainingSequence(NamedTuple):
    """A frame folder of a training set: its frames in natural order and their size."""

    name: str
    frames: list[Path]
    height: int
    width: int


def is_excluded(name: str, exclude: Sequence[str], exclude_by: ExcludeBy = "name") -> bool:
    """Whether sequence ``name`` is left out: equal to an entry of ``exclude`` (``"prefix"``: starting with one)."""
    if exclude_by not in ("name", "prefix"):
        raise ValueError(f"exclude_by must be 'name' or 'prefix', got {exclude_by!r}")
    if exclude_by == "prefix":
        return any(name.startswith(e) for e in exclude)
    return name in set(exclude)


def list_sequences(
    root: str | Path,
    exclude: Sequence[str] = (),
    min_frames: int = 1,
    exclude_by: ExcludeBy = "name",
    verify: bool = False,
) -> dict[str, TrainingSequence]:
    """``{name: TrainingSequence}`` of the frame folders under ``root`` with at least ``min_frames`` frames.

    The listing is :func:`mgld.io.sequences.discover_sequences` (natural order; ``verify`` checks every frame's
    integrity, otherwise only the headers are read). Raises :class:`InputError` naming the folder when ``root``
    is missing or empty, holds videos (training reads frame folders) or keeps no sequence.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"dataset folder not found: {root}")
    found = discover_sequences(root, verify=verify)
    sequences, short = {}, []
    for seq in found:
        if seq.kind != "frames":
            raise InputError(f"{seq.source}: training reads frame folders, not videos (extract its frames first)")
        if is_excluded(seq.name, exclude, exclude_by):
            continue
        if len(seq.files) < min_frames:
            short.append(f"{seq.name} ({len(seq.files)})")
            continue
        sequences[seq.name] = TrainingSequence(seq.name, list(seq.files), seq.height, seq.width)
    if short:
        logger.warning("%s: skipped %d sequences shorter than one %d-frame clip: %s",
                       root, len(short), min_frames, ", ".join(short[:20]))
    if not sequences:
        raise InputError(
            f"{root}: no sequence folder with at least {min_frames} frames "
            f"(expected {root}/<sequence>/<frame>{IMAGE_EXTENSIONS[0]}; excluded by {exclude_by}: {sorted(exclude)})"
        )
    return sequences


def read_frame(path: str | Path) -> np.ndarray:
    """One 8-bit frame as ``H W 3`` uint8 RGB; :class:`InputError` naming the file if it cannot be decoded."""
    image = read_image(Path(path))
    if image.dtype != np.uint8:
        raise InputError(f"{path}: training reads 8-bit frames, this one is {image.dtype}")
    return image


def read_clip(paths: Sequence[Path]) -> np.ndarray:
    """Frames of one clip as ``t H W 3`` uint8 RGB; :class:`InputError` naming the file whose size differs."""
    frames = [read_frame(p) for p in paths]
    for path, frame in zip(paths, frames):
        if frame.shape != frames[0].shape:
            raise InputError(f"{path}: {frame.shape[1]}x{frame.shape[0]} differs from {paths[0].name} "
                             f"({frames[0].shape[1]}x{frames[0].shape[0]})")
    return np.stack(frames)


def to_tensor(frames: np.ndarray, value_range: float | None = None) -> torch.Tensor:
    """``t H W 3`` frames -> ``t 3 H W`` float32 in [0, 1] (:func:`mgld.io.frames.frames_to_tensor`).

    ``value_range``: divide float frames by it first (255 for the degradation's float LQ)."""
    if value_range is not None:
        frames = np.asarray(frames, np.float32) / np.float32(value_range)
    return frames_to_tensor(list(frames))


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


def bicubic_downscale(frames: np.ndarray, scale: int) -> np.ndarray:
    """Clean ``1/scale`` bicubic downscaling (the LQ when no degradation is configured). ``t H W 3`` uint8."""
    h, w = frames.shape[1:3]
    return np.stack([cv2.resize(f, (w // scale, h // scale), interpolation=cv2.INTER_CUBIC) for f in frames])


def split_item(item: int | Draw) -> tuple[int, Draw | None]:
    """A dataset address -> ``(index, draw or None)``."""
    if isinstance(item, tuple):
        draw = Draw(*item)
        return draw.index, draw
    return int(item), None


# ---------------------------------------------------------------------------------------------------------
# The dataset
# ---------------------------------------------------------------------------------------------------------


class REDSClipDataset(Dataset):
    """Clips of a sequence folder with shared crop/flip, USM-sharpened GT and a degraded LQ (module docstring).

    Args:
        root: folder of sequence folders.
        num_frames, interval: frames per clip and the step between them.
        crop_size: square crop in pixels (None: whole frames); larger than a sequence's frames is an error.
        exclude, exclude_by: sequences to leave out, by exact name or by prefix (REDS4 names by default).
        use_flip: random horizontal flip shared by the clip.
        usm: sharpen the GT (:class:`USMConfig`; None or ``enabled=False``: no sharpening).
        degradation: makes the LQ clip; None -> clean bicubic ``1/scale``.
        scale: LQ downscaling factor (must match the degradation's).
        seed: the draws of a plain index ``i`` come from ``(seed, i)``; None -> from torch's RNG.
        verify: check every frame file's integrity while listing (else headers only).
    """

    def __init__(
        self,
        root: str | Path,
        num_frames: int = 5,
        interval: int = 1,
        crop_size: int | None = 512,
        exclude: Sequence[str] = REDS4,
        use_flip: bool = True,
        usm: USMConfig | None = DEFAULT_USM,
        degradation: RealBasicVSRDegradation | None = None,
        scale: int = 4,
        seed: int | None = None,
        exclude_by: ExcludeBy = "name",
        verify: bool = False,
    ):
        if num_frames < 1 or interval < 1:
            raise ValueError(f"num_frames and interval must be >= 1, got {num_frames}, {interval}")
        if crop_size is not None and crop_size % (8 * scale) != 0:
            raise ValueError(f"data.crop_size {crop_size} must be a multiple of 8 x scale = {8 * scale}")
        self.span = (num_frames - 1) * interval + 1
        self.sequences = list_sequences(root, exclude, self.span, exclude_by, verify)
        for seq in self.sequences.values():
            if crop_size is not None and min(seq.height, seq.width) < crop_size:
                raise InputError(f"{Path(root) / seq.name}: frames of {seq.width}x{seq.height} are smaller than "
                                 f"data.crop_size={crop_size}")
        self.keys = [(name, i) for name, seq in self.sequences.items() for i in range(len(seq.frames))]
        self.num_frames, self.interval, self.crop_size, self.use_flip = num_frames, interval, crop_size, use_flip
        self.usm = usm if usm is not None and usm.enabled else None
        self.degradation, self.scale, self.seed = degradation, scale, seed

    @classmethod
    def from_config(cls, data, num_frames: int, verify: bool = False) -> REDSClipDataset:
        """From the ``data`` section of a stage-1 training config (:class:`mgld.training.config.Stage1DataConfig`)."""
        degradation = RealBasicVSRDegradation(data.degradation) if data.degrade else None
        return cls(data.root, num_frames, data.interval, data.crop_size, data.exclude, data.use_flip, data.usm,
                   degradation, data.scale, exclude_by=data.exclude_by, verify=verify)

    def __len__(self) -> int:
        return len(self.keys)

    def _rng(self, index: int, draw: Draw | None) -> np.random.Generator:
        if draw is not None:
            return draw.data_rng()
        if self.seed is not None:
            return np.random.default_rng((self.seed, index))
        return np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))

    def clip_paths(self, index: int, rng: np.random.Generator) -> list[Path]:
        """Frame paths of the clip keyed by item ``index`` (moved earlier at random if it overruns)."""
        name, start = self.keys[index]
        frames = self.sequences[name].frames
        if start + self.span > len(frames):
            start = int(rng.integers(0, len(frames) - self.span + 1))
        return frames[start : start + self.span : self.interval]

    def __getitem__(self, item: int | Draw) -> dict:
        index, draw = split_item(item)
        rng = self._rng(index, draw)
        paths = self.clip_paths(index, rng)
        frames = read_clip(paths)
        frames = crop_and_flip(frames, self.crop_size, self.use_flip, rng)
        if self.degradation is None:
            lq = to_tensor(bicubic_downscale(frames, self.scale))
        else:
            lq = to_tensor(self.degradation(frames, rng, quantize=False), 255)  # from the un-sharpened crop
        usm = self.usm
        gt = usm_sharpen(frames, usm.weight, usm.radius, usm.threshold) if usm is not None else frames
        out = {"gt": to_tensor(gt), "lq": lq, "key": f"{paths[0].parent.name}/{paths[0].stem}"}
        if draw is not None:
            out.update(seed=draw.model_seed(), batch=draw.batch)
        return out


__all__ = [
    "REDS4",
    "Draw",
    "REDSClipDataset",
    "TrainingSequence",
    "bicubic_downscale",
    "crop_and_flip",
    "is_excluded",
    "list_sequences",
    "read_clip",
    "read_frame",
    "split_item",
    "to_tensor",
]
