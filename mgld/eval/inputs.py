"""What an evaluation reads: sequence folders listed by mgld.io, matched by file stem, read as 8-bit RGB
(docs/evaluation.md, Inputs).

Layouts: a root holds one folder per sequence (REDS4 ``000/00000000.png``, UDM10, VideoLQ), or one more level
with a single frame folder per sequence (SPMCS ``<seq>/truth/``), or the frames themselves (one sequence). The
listing is the project's one, :func:`mgld.io.sequences.discover_sequences` with ``nested=True``: natural order
(``2.png`` before ``10.png``), the image extensions of :data:`mgld.io.frames.IMAGE_EXTENSIONS`, every frame's
integrity and size checked before anything is computed, errors naming the file. Videos are refused (evaluation
reads frame folders).

Frames are read as inference reads them (:func:`mgld.io.frames.read_image`: gray repeated to RGB, alpha dropped,
EXIF orientation ignored, the stored sample type kept); the metrics are defined on 8-bit frames, so a deeper frame
is scaled by its type (:func:`mgld.io.frames.frames_to_tensor`: ``v / 65535``) and rounded to 8 bits
(:func:`mgld.io.frames.quantize_frame`): a 16-bit ``v·257`` reads as ``v``.

Shapes: a frame is ``h w 3`` uint8 RGB, a sequence ``t h w 3``.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from mgld.io.frames import InputError, frames_to_tensor, quantize_frame, read_image
from mgld.io.sequences import Sequence, discover_sequences


def list_sequences(root: str | Path, who: str = "") -> dict[str, Sequence]:
    """Sequence name -> :class:`~mgld.io.sequences.Sequence` of frames under ``root`` (layouts in the module
    docstring), in natural order. ``who`` (e.g. ``"method 'mgld'"``) prefixes the error message."""
    try:
        sequences = discover_sequences(Path(root).expanduser(), verify=True, nested=True)
        for seq in sequences:
            if seq.kind != "frames":
                raise InputError(f"{seq.source}: evaluation reads frame folders, not videos (write frames, e.g. "
                                 "mgld infer --output-format frames)")
    except InputError as err:
        raise InputError(f"{who}: {err}" if who else str(err)) from None
    return {seq.name: seq for seq in sequences}


def match_sequences(pred: dict[str, Sequence], gt: dict[str, Sequence], method: str, what: str = "predicted",
                    who: str | None = None) -> None:
    """Refuse a prediction (or the LR input: ``what="LR"``, ``who="--lr ROOT"``) whose sequences or frame names
    differ from the GT's."""
    who = who or f"method {method!r}"
    missing, extra = sorted(set(gt) - set(pred)), sorted(set(pred) - set(gt))
    if missing or extra:
        raise ValueError(f"{who}: sequences missing {missing[:5]}, unexpected {extra[:5]} "
                         f"(GT has {len(gt)}, {what} {len(pred)})")
    for name in gt:
        p_stems, g_stems = frame_stems(pred[name]), frame_stems(gt[name])
        if p_stems != g_stems:
            lacking = sorted(set(g_stems) - set(p_stems))[:3]
            surplus = sorted(set(p_stems) - set(g_stems))[:3]
            raise ValueError(f"{who}, sequence {name!r}: {len(p_stems)} {what} frames for "
                             f"{len(g_stems)} GT frames; missing {lacking}, unexpected {surplus}")


def frame_stems(seq: Sequence) -> list[str]:
    """The file stems of a sequence's frames (what frames are matched by)."""
    return [p.stem for p in seq.files]


def read_frame(path: str | Path) -> np.ndarray:
    """One image as ``h w 3`` uint8 RGB (module docstring); :class:`InputError` naming the file if unreadable."""
    image = read_image(Path(path))
    if image.dtype == np.uint8:
        return image
    return quantize_frame(frames_to_tensor([image])[0], 8, "round")


def load_sequence(seq: Sequence) -> np.ndarray:
    """``t h w 3`` uint8 RGB frames of a listed sequence; frames of different sizes are refused."""
    frames = [read_frame(p) for p in seq.files]
    for path, frame in zip(seq.files, frames):
        if frame.shape != frames[0].shape:
            raise InputError(f"{path}: sequence {seq.name!r}: frame is {frame.shape[:2]}, {seq.files[0].name} is "
                             f"{frames[0].shape[:2]}")
    return np.stack(frames)


def upsample_to(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``t h w 3`` uint8 frames resized to ``size = (H, W)`` with OpenCV bicubic (``INTER_CUBIC``): the bicubic
    baseline and the LR flow source of E*warp."""
    h, w = size
    return np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_CUBIC) for f in frames])
