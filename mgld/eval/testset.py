"""Test sets for evaluation: deterministic synthetic HR sequences, the RealBasicVSR-degraded LR set, and the bicubic
x4 baseline (docs/evaluation.md; the degradation: docs/training.md §2).

:func:`make_testset` degrades every HR sequence once, as one clip, with a generator seeded by (seed, sequence name)
(:func:`sequence_rng`): the same inputs and seed give the same bytes, and adding a sequence changes no other.
:func:`write_synthetic_hr` pans scikit-image photographs by a known integer motion; :func:`upscale_bicubic` is the
reference row of every table. Sequences are listed and read by :mod:`mgld.eval.inputs` (8-bit RGB) and written as
PNG by :func:`mgld.io.frames.write_png` (atomically).
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import cv2
import numpy as np

from mgld.eval.inputs import list_sequences, load_sequence, read_frame, upsample_to
from mgld.io.atomic import atomic_write
from mgld.io.frames import write_png


def panning_sequence(image: np.ndarray, num_frames: int, size: tuple[int, int],
                     velocity: tuple[int, int], start: tuple[int, int] = (0, 0)) -> np.ndarray:
    """``t h w 3`` crops of ``image`` whose window moves by ``velocity`` = (dy, dx) pixels per frame."""
    (h, w), (dy, dx), (y0, x0) = size, velocity, start
    ys, xs = [y0 + i * dy for i in range(num_frames)], [x0 + i * dx for i in range(num_frames)]
    if min(ys + xs) < 0 or max(ys) + h > image.shape[0] or max(xs) + w > image.shape[1]:
        raise ValueError(f"panning {num_frames} frames of {h}x{w} by {velocity} leaves the {image.shape[:2]} image")
    return np.stack([image[y:y + h, x:x + w] for y, x in zip(ys, xs)])


SYNTHETIC_SEQUENCES = {  # name: (scikit-image photograph, start (y, x), velocity (dy, dx) px/frame)
    "astronaut": ("astronaut", (40, 20), (2, 4)),
    "coffee": ("coffee", (60, 300), (1, -5)),
}


def write_synthetic_hr(root: str | Path, num_frames: int = 10, size: tuple[int, int] = (256, 256)) -> list[str]:
    """HR sequences panned across scikit-image photographs by a known integer motion (SYNTHETIC_SEQUENCES)."""
    try:
        from skimage import data
    except ImportError as err:
        raise ImportError("synthetic HR sequences need scikit-image (pip install scikit-image)") from err
    for name, (photo, start, velocity) in SYNTHETIC_SEQUENCES.items():
        frames = panning_sequence(getattr(data, photo)(), num_frames, size, velocity, start)
        for i, frame in enumerate(frames):
            write_png(Path(root) / name / f"{i:08d}.png", frame)
    return list(SYNTHETIC_SEQUENCES)


def sequence_rng(seed: int, name: str) -> np.random.Generator:
    """Per-sequence generator: depends on the seed and the sequence name only (not on the order)."""
    return np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(name.encode())]))


def make_testset(hr_root: str | Path, out_root: str | Path, seed: int = 0, degradation=None,
                 progress: bool = True) -> Path:
    """Degrade every HR sequence once (whole sequence = one clip); LR PNGs + ``manifest.json``.

    Same inputs and seed -> same bytes. Returns the manifest path.
    """
    import av
    from tqdm.auto import tqdm

    from mgld.data.degradations import RealBasicVSRDegradation

    degrade = degradation or RealBasicVSRDegradation()
    out = Path(out_root)
    manifest = {"seed": seed, "hr_root": str(hr_root), "config": degrade.config_dict(),
                "versions": {"av": av.__version__, "opencv": cv2.__version__, "numpy": np.__version__,
                             "ffmpeg": {k: list(v) for k, v in av.library_versions.items()}},
                "sequences": {}}
    for name, seq in tqdm(list_sequences(hr_root, "--hr").items(), desc="degrade", unit="seq", disable=not progress):
        hr = load_sequence(seq)
        lq, params = degrade(hr, sequence_rng(seed, name), return_params=True)
        for frame_name, frame in zip(seq.frame_names, lq):  # the HR stems, as PNG
            write_png(out / name / frame_name, frame)
        manifest["sequences"][name] = {"frames": [p.name for p in seq.files], "hr_size_hw": list(hr.shape[1:3]),
                                       "lr_size_hw": list(lq.shape[1:3]), "params": params}
    atomic_write(out / "manifest.json", json.dumps(manifest, indent=1, sort_keys=True))
    return out / "manifest.json"


def upscale_bicubic(lr_root: str | Path, out_root: str | Path, scale: int = 4) -> list[str]:
    """The bicubic baseline: every frame resized x``scale`` with OpenCV ``INTER_CUBIC``; same layout and stems."""
    done = []
    for name, seq in list_sequences(lr_root, "--lr").items():
        for path, frame_name in zip(seq.files, seq.frame_names):
            lr = read_frame(path)
            sr = upsample_to(lr[None], (lr.shape[0] * scale, lr.shape[1] * scale))[0]
            write_png(Path(out_root) / name / frame_name, sr)
        done.append(name)
    return done
