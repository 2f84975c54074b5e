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
only the frames of the current chunk. :func:`quantize_frame` is the one float -> uint8/uint16
converter (the authors' truncation by default), :func:`encode_png` the one PNG encoder and :func:`write_png`
the one PNG file writer (atomic: temporary file, then rename). :class:`FrameWriter` writes a sequence folder
of PNGs with it, and records each finished frame
(:mod:`mgld.io.manifest`), so a resumed run trusts only intact frames of the same run.

Shapes: arrays are ``h w 3`` (RGB); tensors are ``t 3 h w`` (read) or ``3 h w`` (write).
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import zlib
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import torch
from PIL import Image

from mgld.io.atomic import TEMP_SUFFIX, atomic_write, remove_temporaries
from mgld.io.errors import InputError, OutputError  # noqa: F401  (re-exported)
from mgld.io.manifest import RECORD_DIR, FrameRecords, RunRecord

logger = logging.getLogger(__name__)

# The bundled 8-frame LR clip (``mgld infer --input sample``; recipe in its README).
SAMPLE_CLIP = Path(__file__).resolve().parents[1] / "assets" / "sample_lr"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
_SCALES = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0, np.dtype(np.float32): 1.0}
_DIGITS = re.compile(r"(\d+)")
_JPEG_END = b"\xff\xd9"


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


def quantize_frame(frame: torch.Tensor | np.ndarray, bit_depth: int = 8,
                   quantize: Literal["truncate", "round"] = "truncate") -> np.ndarray:
    """A frame as ``h w 3`` RGB ``uint8`` (``bit_depth`` 8) or ``uint16`` (16): the project's one converter.

    Float ``3 h w`` in [0, 1] (tensor or array) is clamped, multiplied by 255 (65535) in float32 and
    ``truncate``-d (the authors' ``(x·255).astype(uint8)``) or ``round``-ed (half to even). Integer ``h w 3``
    frames pass through when they already have the type asked for; uint8 -> 16 bits is exact (``v·257``).
    """
    if bit_depth not in (8, 16):
        raise ValueError(f"bit_depth must be 8 or 16, got {bit_depth}")
    if quantize not in ("truncate", "round"):
        raise ValueError(f"quantize must be 'truncate' or 'round', got {quantize!r}")
    dtype, peak = (np.uint8, 255) if bit_depth == 8 else (np.uint16, 65535)
    if isinstance(frame, torch.Tensor):
        frame = frame.detach().cpu()
        frame = frame.numpy() if frame.dtype in (torch.uint8, torch.int16, torch.int32) else frame.float().numpy()
    frame = np.asarray(frame)
    if frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3:
        out = frame if bit_depth == 8 else frame.astype(np.uint16) * 257
    elif frame.dtype == np.uint16 and frame.ndim == 3 and frame.shape[2] == 3 and bit_depth == 16:
        out = frame
    elif np.issubdtype(frame.dtype, np.floating) and frame.ndim == 3 and frame.shape[0] == 3:
        scaled = np.clip(frame.astype(np.float32, copy=False), 0, 1).transpose(1, 2, 0) * np.float32(peak)
        out = (np.rint(scaled) if quantize == "round" else scaled).astype(dtype)
    else:
        raise ValueError(f"expected a float 3 h w frame in [0, 1] or an integer h w 3 frame, got {frame.dtype} "
                         f"of shape {tuple(frame.shape)}")
    return np.ascontiguousarray(out)


def encode_png(frame: np.ndarray, compression: int | None = None) -> bytes:
    """PNG bytes of an ``h w 3`` RGB uint8/uint16 array (8 or 16 bits per sample): the project's one PNG encoder.

    ``compression``: zlib level 0-9 (``None``: OpenCV's default); the pixels are the same at every level.
    """
    params = [] if compression is None else [cv2.IMWRITE_PNG_COMPRESSION, int(compression)]
    ok, png = cv2.imencode(".png", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise ValueError("PNG encoding failed")
    return png.tobytes()


def write_png(path: str | Path, frame: torch.Tensor | np.ndarray, bit_depth: int = 8,
              quantize: Literal["truncate", "round"] = "truncate", compression: int | None = None) -> int:
    """Write one frame (float ``3 h w`` in [0, 1] or integer ``h w 3`` RGB, :func:`quantize_frame`) as a PNG,
    atomically; returns its size in bytes. A sequence with run records and resume is :class:`FrameWriter`."""
    png = encode_png(quantize_frame(frame, bit_depth, quantize), compression)
    atomic_write(Path(path), png)
    return len(png)


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_problem(path: Path, size: int | None = None, shape: tuple[int, int, int] | None = None) -> str | None:
    """Why ``path`` is not a complete PNG (of ``size`` bytes and ``(height, width, bits)``), or None if it is.

    Checks the signature, every chunk's CRC, the header and the end chunk; reads the file, decodes nothing.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        return f"unreadable ({e.strerror})"
    if size is not None and len(data) != size:
        return f"{len(data)} bytes where {size} were written (truncated or replaced)"
    if data[:8] != _PNG_SIGNATURE:
        return "not a PNG file"
    pos, header = 8, None
    while pos + 12 <= len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        kind, end = data[pos + 4:pos + 8], pos + 12 + length
        if end > len(data):
            break
        if zlib.crc32(data[pos + 4:pos + 8 + length]) != int.from_bytes(data[end - 4:end], "big"):
            return f"damaged (bad CRC in its {kind.decode('latin-1')} chunk)"
        if kind == b"IHDR":
            header = (int.from_bytes(data[pos + 12:pos + 16], "big"), int.from_bytes(data[pos + 8:pos + 12], "big"),
                      data[pos + 16])  # (height, width, bits per sample)
        if kind == b"IEND":
            if header is None:
                return "no header chunk"
            if shape is not None and header != tuple(shape):
                return (f"holds a {header[1]}x{header[0]} {header[2]}-bit image, "
                        f"expected {shape[1]}x{shape[0]} {shape[2]}-bit")
            return None
        pos = end
    return "truncated (no end chunk)"


class FrameWriter:
    """One sequence folder of RGB PNGs (8 or 16 bits), each written atomically, with run records; resumable.

    ``done(i)`` is true when frame ``i`` was written by this writer, or an earlier run of the same
    :class:`~mgld.io.manifest.RunRecord` recorded it and the file is intact (its recorded size, every PNG chunk's
    CRC, the expected size and depth; else it is redone, with a warning). ``record`` defaults to an anonymous
    record, so writers without one resume among themselves. The folder (and its missing parents) is created on
    the first write; a writer closed without having written anything removes the folders it created. Temporary
    files of an interrupted run are removed when the writer opens an existing folder (``clean``; the runner
    does it itself before several processes start writing). A write that fails (disk full) raises
    :class:`OutputError` naming the file.
    """

    def __init__(self, folder: str | Path, frame_names: list[str], overwrite: bool = False, *, record=None,
                 bit_depth: int = 8, quantize: Literal["truncate", "round"] = "truncate",
                 size: tuple[int, int] | None = None, clean: bool = True):
        self.folder = Path(folder)
        self.frame_names = list(frame_names)
        self.overwrite = overwrite
        self.bit_depth, self.quantize, self.size = bit_depth, quantize, size
        ensure_writable(self.folder)
        if record is None:
            from mgld import __version__

            record = RunRecord("", [], {"bit_depth": bit_depth, "quantize": quantize}, __version__)
        self.records = FrameRecords(self.folder, record, self.frame_names, overwrite)
        if clean and self.folder.is_dir():
            remove_temporaries(self.folder)
        self._written: set[int] = set()
        self._checked: dict[int, bool] = {}
        self._created: list[Path] = []

    def path(self, index: int) -> Path:
        return self.folder / self.frame_names[index]

    def check(self) -> str | None:
        """May this folder receive the outputs? :func:`mgld.io.manifest.check_existing` (read-only)."""
        return self.records.check()

    def done(self, index: int) -> bool:
        """Frame ``index`` is finished: written by this writer, or recorded by this run and intact on disk."""
        if index in self._written:
            return True
        if index not in self._checked:
            size = self.records.recorded(self.frame_names[index])
            ok = size is not None and self.path(index).is_file()
            if ok:
                shape = None if self.size is None else (*self.size, self.bit_depth)
                problem = png_problem(self.path(index), size, shape)
                if problem:
                    logger.warning("%s: %s; it is redone", self.path(index), problem)
                ok = problem is None
            self._checked[index] = ok
        return self._checked[index]

    def write(self, index: int, frame: torch.Tensor | np.ndarray) -> None:
        """Write frame ``index``: float ``3 h w`` in [0, 1] or integer ``h w 3`` (RGB)."""
        path = self.path(index)
        if not self._created and not self.folder.is_dir():
            missing = [p for p in (self.folder, *self.folder.parents) if not p.exists()]
            self._created = missing  # innermost first
        try:
            size = write_png(path, frame, self.bit_depth, self.quantize)
            self.records.add(self.frame_names[index], size)
        except OSError as e:
            raise OutputError(f"{path}: cannot write the output ({e.strerror or e}); frames already finished are "
                             "kept: free space (or fix the folder) and rerun the same command to resume") from e
        self._written.add(index)
        self._checked[index] = True

    def close(self) -> None:
        try:
            self.records.close()
        except OSError as e:
            logger.warning("%s: could not update the run records (%s)", self.folder, e)
        if not self._written:
            remove_created(self._created)

    def __enter__(self) -> FrameWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def remove_created(folders: list[Path]) -> None:
    """Remove ``folders`` (innermost first) that this run created, where they hold nothing else."""
    for folder in folders:
        try:
            for leftover in folder.glob(".*"):
                if leftover.is_file() and leftover.name.endswith(TEMP_SUFFIX):
                    leftover.unlink()
            records = folder / RECORD_DIR
            if records.is_dir() and not any(records.glob("journal-*")):
                for f in records.iterdir():
                    f.unlink()
                records.rmdir()
            folder.rmdir()
        except OSError:
            return  # not empty (or gone): stop at the first folder that holds something
