"""Image frames on disk: natural ordering, checked reading, atomic PNG writing.

A *frame folder* holds one sequence as image files (``IMAGE_EXTENSIONS``) ordered by
:func:`natural_key` (``2.png`` before ``10.png``). Every image becomes RGB: gray is
repeated over three channels and **alpha is dropped** (not composited). Samples keep
their stored type until :func:`frames_to_tensor` scales them to float32 in [0, 1]
(``uint8 / 255``, ``uint16 / 65535``, float32 clipped), so an 8-bit frame and the
same frame stored at 16 bits (``v * 257``) read to the same floats. JPEG EXIF
orientation is ignored (frames are processed as stored, like the authors' PIL loader).

:class:`FrameReader` is the streaming interface shared with videos
(``mgld.io.sequences``): ``read(start, stop)`` returns ``t 3 h w`` float32 and keeps
only the frames of the current chunk. :class:`FrameWriter` writes a sequence folder
of PNGs, each one atomically (temporary file, then rename), so a frame that exists is
complete and an interrupted run can resume with :meth:`FrameWriter.done`.

Shapes: arrays are ``h w 3`` (RGB); tensors are ``t 3 h w`` (read) or ``3 h w`` (write).
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from mgld.io.atomic import atomic_write, remove_temporaries

# The bundled 8-frame LR clip (``mgld infer --input sample``; recipe in its README).
SAMPLE_CLIP = Path(__file__).resolve().parents[1] / "assets" / "sample_lr"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
_SCALES = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0, np.dtype(np.float32): 1.0}
_DIGITS = re.compile(r"(\d+)")
_JPEG_END = b"\xff\xd9"


class InputError(ValueError):
    """Bad input or output location; the message names the file or folder and the problem."""


def natural_key(name: str) -> tuple:
    """Sort key that orders digit runs by value, case-insensitively: ``2.png < 10.png < B.png``.

    Ties (names equal but for case) are broken by the exact name, so the order is total.
    """
    parts = _DIGITS.split(str(name))
    return tuple(int(p) if i % 2 else p.casefold() for i, p in enumerate(parts)), str(name)


# --------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------


def probe_image(path: Path, verify: bool = True) -> tuple[int, int]:
    """``(height, width)`` of an image from its header, with a cheap integrity check.

    ``verify`` checks PNG chunk CRCs (PIL ``verify()``, no decompression), that a JPEG
    ends with its end-of-image marker, and fully decodes other formats. Raises
    :class:`InputError` naming the file when it is unreadable or truncated.
    """
    try:
        with Image.open(path) as im:
            width, height = im.size
            kind = im.format
            if verify and kind == "PNG":
                im.verify()
        if verify and kind == "JPEG":
            _check_jpeg_end(path)
        elif verify and kind != "PNG":
            height, width = read_image(path).shape[:2]
    except InputError:
        raise
    except Image.UnidentifiedImageError:
        height, width = read_image(path).shape[:2]  # e.g. float TIFF: OpenCV reads what PIL cannot
    except Exception as e:
        raise InputError(f"{path}: unreadable or truncated image ({type(e).__name__}: {e})") from e
    return height, width


def _check_jpeg_end(path: Path) -> None:
    size = path.stat().st_size
    with open(path, "rb") as f:
        f.seek(max(size - 1024, 0))
        if _JPEG_END not in f.read():
            raise InputError(f"{path}: truncated JPEG (no end-of-image marker)")


def read_image(path: Path) -> np.ndarray:
    """One image as ``h w 3`` RGB in its stored sample type (uint8, uint16 or float32).

    Gray is repeated to three channels; alpha (gray+alpha, RGBA, transparent palette)
    is dropped.
    """
    try:
        image = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error:  # e.g. an empty file
        image = None
    if image is None:
        raise InputError(f"{path}: cannot decode image (unreadable, truncated or unsupported format)")
    if image.dtype not in _SCALES:
        raise InputError(f"{path}: unsupported sample type {image.dtype} (expected 8/16-bit integer or float32)")
    channels = 1 if image.ndim == 2 else image.shape[2]
    codes = {1: cv2.COLOR_GRAY2RGB, 3: cv2.COLOR_BGR2RGB, 4: cv2.COLOR_BGRA2RGB}
    if channels not in codes:
        raise InputError(f"{path}: unsupported number of channels ({channels})")
    return cv2.cvtColor(image, codes[channels])


def frames_to_tensor(frames: list[np.ndarray]) -> torch.Tensor:
    """``h w 3`` arrays (uint8, uint16 or float32) -> float32 ``t 3 h w`` in [0, 1]."""
    out = [torch.from_numpy(f.transpose(2, 0, 1).astype(np.float32) / np.float32(_SCALES[f.dtype])) for f in frames]
    return torch.stack(out).clamp_(0.0, 1.0)


class FrameReader:
    """Frames of one sequence as float32 ``t 3 h w`` RGB in [0, 1]; a context manager.

    Calls to :meth:`read` come in non-decreasing ``start`` order and may overlap the
    previous call (chunks with overlap). The reader keeps only the frames of the
    current chunk, so memory is bounded by the chunk size. Subclasses fill
    ``self._cache`` (index -> ``h w 3`` array) in :meth:`_fill`.
    """

    def __init__(self, source: Path, num_frames: int, height: int, width: int):
        self.source = Path(source)
        self.height, self.width = height, width
        self._num_frames = num_frames
        self._cache: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return self._num_frames

    def read(self, start: int, stop: int) -> torch.Tensor:
        """Frames ``[start, stop)`` as float32 ``t 3 h w`` in [0, 1] (RGB; alpha dropped)."""
        if not 0 <= start < stop <= len(self):
            raise IndexError(f"{self.source}: frames [{start}, {stop}) out of range for {len(self)} frames")
        self._cache = {i: f for i, f in self._cache.items() if start <= i < stop}
        self._fill(start, stop)
        return frames_to_tensor([self._cache[i] for i in range(start, stop)])

    def _fill(self, start: int, stop: int) -> None:
        raise NotImplementedError

    def _check_size(self, frame: np.ndarray, where: str) -> np.ndarray:
        if frame.shape[:2] != (self.height, self.width):
            raise InputError(
                f"{where}: frame is {frame.shape[1]}x{frame.shape[0]}, "
                f"expected {self.width}x{self.height} like the rest of the sequence"
            )
        return frame

    def close(self) -> None:
        self._cache = {}

    def __enter__(self) -> FrameReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ImageFolderReader(FrameReader):
    """:class:`FrameReader` over a list of image files (one frame each, in order)."""

    def __init__(self, files: list[Path], height: int, width: int):
        files = [Path(f) for f in files]
        super().__init__(files[0].parent if files else Path(), len(files), height, width)
        self.files = files

    def _fill(self, start: int, stop: int) -> None:
        for i in range(start, stop):
            if i not in self._cache:
                self._cache[i] = self._check_size(read_image(self.files[i]), str(self.files[i]))


# --------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------


def ensure_writable(path: Path) -> None:
    """Raise :class:`InputError` unless ``path`` (file or folder) can be created or written.

    Creates nothing: the nearest existing folder is probed with a temporary file.
    """
    path = Path(path).absolute()
    existing = path
    while not existing.exists():
        existing = existing.parent
    if existing != path and not existing.is_dir():
        raise InputError(f"{path}: cannot create output, {existing} is a file, not a folder")
    folder = existing if existing.is_dir() else existing.parent
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise InputError(f"{path}: cannot write output, {folder} is not writable ({e.strerror})") from e
    if existing == path and path.is_file() and not os.access(path, os.W_OK):
        raise InputError(f"{path}: cannot write output, the file is read-only")


def frame_to_uint8(frame: torch.Tensor | np.ndarray) -> np.ndarray:
    """A frame as ``h w 3`` uint8 RGB.

    Accepts float ``3 h w`` in [0, 1] (tensor or array; clamped and rounded) or uint8 ``h w 3``.
    """
    if isinstance(frame, torch.Tensor):
        if frame.dtype == torch.uint8:
            frame = frame.cpu().numpy()
        else:
            frame = frame.detach().float().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
    elif frame.dtype != np.uint8:
        frame = np.clip(np.asarray(frame, np.float32), 0, 1).transpose(1, 2, 0) * 255
        frame = np.rint(frame).astype(np.uint8)
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"expected a float 3 h w or uint8 h w 3 frame, got shape {tuple(frame.shape)}")
    return np.ascontiguousarray(frame)


class FrameWriter:
    """One sequence folder of 8-bit RGB PNGs, written atomically; resumable.

    ``done(i)`` is true when frame ``i`` is already on disk (from an earlier run, unless
    ``overwrite``) or was written by this writer. Temporary files of an interrupted
    run are removed when the writer opens the folder.
    """

    def __init__(self, folder: str | Path, frame_names: list[str], overwrite: bool = False):
        self.folder = Path(folder)
        self.frame_names = list(frame_names)
        self.overwrite = overwrite
        ensure_writable(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        remove_temporaries(self.folder)
        self._written: set[int] = set()

    def path(self, index: int) -> Path:
        return self.folder / self.frame_names[index]

    def done(self, index: int) -> bool:
        """Frame ``index`` is complete on disk (atomic writes: existing means complete)."""
        if index in self._written:
            return True
        path = self.path(index)
        return not self.overwrite and path.is_file() and path.stat().st_size > 0

    def write(self, index: int, frame: torch.Tensor | np.ndarray) -> None:
        """Write frame ``index``: float ``3 h w`` in [0, 1] or uint8 ``h w 3`` (RGB)."""
        ok, png = cv2.imencode(".png", cv2.cvtColor(frame_to_uint8(frame), cv2.COLOR_RGB2BGR))
        if not ok:
            raise OSError(f"{self.path(index)}: PNG encoding failed")
        atomic_write(self.path(index), png.tobytes())
        self._written.add(index)

    def close(self) -> None:
        pass

    def __enter__(self) -> FrameWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
