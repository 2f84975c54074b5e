"""Stage-2 training inputs: degrade GT clips and sample their stage-1 latents (docs/training.md §4).

For every segment of ``num_frames`` frames of every sequence (segments start at multiples of ``num_frames``,
as :class:`mgld.data.stage2.Stage2ClipDataset` reads them), :func:`generate_latents` writes::

    out/lq/<seq>/<frame>.png          the degraded LQ frames (RealBasicVSR degradation, seeded per segment)
    out/latents/<seq>/<frame>.npy     the final latents of the motion-guided stage-1 sampler, 4 x H/8 x W/8
    out/preview/<seq>/<frame>.png     those latents decoded (for inspection only)

The authors' script for the LQ folder is missing (docs/differences.md); here the LQ comes from the same degradation as
stage 1 (rounded to 8 bits, as a PNG must be; the latents are sampled from the frames as written), and the sampler
is the inference pipeline's (:mod:`mgld.pipeline.pipeline`) at scale exactly 4, so the latent grid is GT/8. The
config's inference sections choose how it samples; configs/stage1.yaml sets the authors' ``w_latent`` script:
guidance scale 1, 200 steps, RAFT on the upsampled 512-px frames, bilinear LQ upsampling (docs/training.md §4).
Sequences are listed as the stage-2 dataset lists them (natural order, REDS4 excluded by prefix by default).
Files are written atomically and the latents last, so a killed run resumes at the first segment whose latents
are incomplete.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from torch import Tensor

from mgld.data.degradations import RealBasicVSRDegradation
from mgld.data.reds import ExcludeBy, bicubic_downscale, list_sequences, read_clip, to_tensor
from mgld.data.stage2 import LATENT_SUFFIX
from mgld.io.atomic import atomic_write
from mgld.io.frames import FrameWriter
from mgld.pipeline.pipeline import MGLDPipeline

log = logging.getLogger(__name__)


def write_latent(path: Path, latent: np.ndarray) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.save(f, latent)

    atomic_write(path, write)


def sample_clip_latents(pipe: MGLDPipeline, lq: Tensor, frame_indices: Sequence[int]) -> tuple[Tensor, Tensor]:
    """One clip through the inference pipeline, keeping the latents: ``lq`` ``t 3 h w`` in [0, 1] ->
    (final latents ``t 4 h/2 w/2``, i.e. (4h)/8, and their decoded preview ``t 3 4h 4w`` in [0, 1])."""
    h, w = lq.shape[-2:]
    scale = max(float(pipe.config.infer.scale), pipe.config.infer.min_short_side / min(h, w))
    if scale != 4:
        raise ValueError(f"latents must be sampled at scale 4 (got {scale}); set infer.scale=4 infer.min_short_side=0")
    result = pipe.upscale_clip(lq, list(frame_indices))
    return result.latents[..., : 4 * h // 8, : 4 * w // 8], result.frames


def generate_latents(
    pipe: MGLDPipeline,
    gt_root: str | Path,
    out_root: str | Path,
    degradation: RealBasicVSRDegradation | None,
    num_frames: int = 5,
    exclude: Sequence[str] = (),
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    exclude_by: ExcludeBy = "prefix",
) -> dict[str, int]:
    """Write LQ frames, latents and previews for every segment of ``gt_root`` (module docstring).

    ``degradation`` None: clean bicubic x1/4 LQ. ``exclude``/``exclude_by``: sequences left out (the stage-2
    dataset's rule, by prefix). Returns ``{"done": n, "skipped": m}`` (segments).
    """
    out_root = Path(out_root)
    counts = {"done": 0, "skipped": 0}
    for name, seq in list_sequences(gt_root, exclude, num_frames, exclude_by).items():
        frames = seq.frames
        names = [f"{p.stem}.png" for p in frames]
        lq_writer, preview_writer = FrameWriter(out_root / "lq" / name, names), None
        for start in range(0, len(frames) - num_frames + 1, num_frames):
            segment = frames[start : start + num_frames]
            latent_paths = [out_root / "latents" / name / f"{p.stem}{LATENT_SUFFIX}" for p in segment]
            if all(p.is_file() for p in latent_paths):
                counts["skipped"] += 1
                continue
            gt = read_clip(segment)
            if gt.shape[1] % 8 or gt.shape[2] % 8:
                raise ValueError(f"{segment[0]}: GT size {gt.shape[2]}x{gt.shape[1]} is not a multiple of 8")
            rng = np.random.default_rng((seed, zlib.crc32(name.encode()), start))
            lq = degradation(gt, rng) if degradation is not None else bicubic_downscale(gt, 4)
            latents, preview = sample_clip_latents(pipe, to_tensor(lq), range(start, start + num_frames))
            preview_writer = preview_writer or FrameWriter(out_root / "preview" / name, names)
            for i in range(num_frames):
                lq_writer.write(start + i, lq[i])
                preview_writer.write(start + i, preview[i])
            for latent, path in zip(latents.cpu().numpy(), latent_paths):  # last: marks the segment done
                write_latent(path, latent)
            counts["done"] += 1
            if progress is not None:
                progress(f"{name}/{segment[0].stem}")
    return counts


__all__ = ["generate_latents", "sample_clip_latents", "write_latent"]
