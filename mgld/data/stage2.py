"""Stage-2 training clips: GT frames, their LQ frames and the stage-1 latents sampled from them (docs/training.md §4).

Three parallel folders of sequences with the same frame names::

    gt_root/<seq>/<frame>.png        GT frames (H x W)
    lq_root/<seq>/<frame>.png        degraded LQ frames (H/s x W/s), as mgld generate-latents writes them
    latent_root/<seq>/<frame>.npy    stage-1 latents, 4 x H/8 x W/8 float, in diffusion space (x 0.18215)

A clip is one generated segment: ``num_frames`` consecutive frames starting at a multiple of ``num_frames`` (the
authors' ``load_fix_indices_only``), since the stage-1 sampler produced each segment's latents together. As in
the authors' ``REDSAutoencoderDataset`` there is no crop and no flip (the latents fix the geometry), and the
REDS4 test clips are left out by name *prefix* (``exclude_by="prefix"``), which also removes their sub-image
folders ``000_s001`` … ``000_s008``. Missing LQ or latent files are reported when the dataset is built, naming
the first missing files.

Items are ``{"gt": t 3 H W, "lq": t 3 h w, "latent": t 4 H/8 W/8, "key"}`` (+ ``batch``, the global micro-batch
number, when addressed by a :class:`mgld.data.reds.Draw`), images float32 in [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from mgld.data.reds import REDS4, ExcludeBy, list_sequences, read_clip, split_item, to_tensor
from mgld.io.frames import InputError

LATENT_SUFFIX = ".npy"


def read_latent(path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """A ``c h w`` float32 latent from an ``.npy`` file; :class:`InputError` naming the file if it is unreadable or
    its grid is not ``size = (h, w)``."""
    try:
        latent = np.load(path, allow_pickle=False)
    except Exception as err:
        raise InputError(f"cannot read latent {path} ({type(err).__name__}: {err})") from err
    if latent.ndim != 3 or (size is not None and tuple(latent.shape[1:]) != tuple(size)):
        raise InputError(f"{path}: latent of shape {latent.shape} does not fit (expected c x {size[0]} x {size[1]})")
    return latent.astype(np.float32, copy=False)


class Stage2ClipDataset(Dataset):
    """(GT clip, LQ clip, stage-1 latents) per generated segment (module docstring)."""

    def __init__(
        self,
        gt_root: str | Path,
        lq_root: str | Path,
        latent_root: str | Path,
        num_frames: int = 5,
        exclude: Sequence[str] = REDS4,
        exclude_by: ExcludeBy = "prefix",
        verify: bool = False,
    ):
        self.num_frames = num_frames
        self.lq_root, self.latent_root = Path(lq_root), Path(latent_root)
        for root in (self.lq_root, self.latent_root):
            if not root.is_dir():
                raise InputError(f"stage-2 data folder not found: {root} (data.generated_root)")
        listed = list_sequences(gt_root, exclude, num_frames, exclude_by, verify)
        self.sequences = {name: seq.frames for name, seq in listed.items()}
        self.segments = [
            (name, start)
            for name, frames in self.sequences.items()
            for start in range(0, len(frames) - num_frames + 1, num_frames)
        ]
        missing = [str(p) for name, start in self.segments for f in self.sequences[name][start : start + num_frames]
                   for p in self._pair(name, f) if not p.is_file()]
        if missing:
            raise InputError(
                f"{len(missing)} LQ/latent files are missing for the GT frames of {gt_root}, e.g. {missing[:5]} "
                "(run mgld generate-latents over the GT folder first)"
            )

    def _pair(self, name: str, frame: Path) -> tuple[Path, Path]:
        return self.lq_root / name / f"{frame.stem}.png", self.latent_root / name / f"{frame.stem}{LATENT_SUFFIX}"

    def __len__(self) -> int:
        return len(self.segments)

    @classmethod
    def from_config(cls, data, num_frames: int, verify: bool = False) -> Stage2ClipDataset:
        """From the ``data`` section of a stage-2 training config (:class:`mgld.training.config.Stage2DataConfig`)."""
        generated = Path(data.generated_root)
        return cls(data.root, generated / "lq", generated / "latents", num_frames, data.exclude, data.exclude_by,
                   verify)

    def __getitem__(self, item) -> dict:
        index, draw = split_item(item)
        name, start = self.segments[index]
        paths = self.sequences[name][start : start + self.num_frames]
        gt = read_clip(paths)
        lq = read_clip([self._pair(name, p)[0] for p in paths])
        h, w = gt.shape[1:3]
        if h % 8 or w % 8 or h % lq.shape[1] or w % lq.shape[2]:
            raise InputError(f"{name}/{paths[0].stem}: GT {h}x{w} is not a multiple of 8 and of the LQ size "
                             f"{lq.shape[1]}x{lq.shape[2]}")
        latent = np.stack([read_latent(self._pair(name, p)[1], (h // 8, w // 8)) for p in paths])
        out = {"gt": to_tensor(gt), "lq": to_tensor(lq), "latent": torch.from_numpy(latent),
               "key": f"{name}/{paths[0].stem}"}
        if draw is not None:
            out["batch"] = draw.batch
        return out


__all__ = ["LATENT_SUFFIX", "Stage2ClipDataset", "read_latent"]
