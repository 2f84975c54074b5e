"""Video super-resolution input and output: sequence discovery, streaming readers, resumable writers.

Inputs (:func:`discover_sequences`) are a frame folder (one sequence), a folder of
sequences (sub-folders of frames and/or video files: the REDS4 / VideoLQ / UDM10
layout), or one video file read with PyAV. Everything is validated before any heavy
work, and every problem raises :class:`InputError` naming the file.

Readers (:meth:`Sequence.reader`) stream frames as float32 ``t 3 h w`` RGB in [0, 1].
A video is decoded forward once, keeping only the frames of the current chunk; a
backward request reopens the file and decodes again from the start.

Writers are resumable, atomic and keep run records (``mgld.io.manifest``): :class:`FrameWriter`
(a PNG folder, ``mgld.io.frames``) and :class:`VideoWriter` (H.264/FFV1 with the source's timing,
audio and rotation, ``mgld.io.video_writer``); :func:`output_kind` and :func:`output_targets`
decide what goes where, :func:`check_outputs_outside_inputs` refuses an output inside the input.
This module is the entry point of the input/output layer and re-exports both writers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Literal

import numpy as np

from mgld.io.frames import (
    IMAGE_EXTENSIONS,
    FrameReader,
    FrameWriter,
    ImageFolderReader,
    InputError,
    ensure_writable,
    natural_key,
    probe_image,
    read_image,
)
from mgld.io.video_reader import VideoReader, probe_video
from mgld.io.video_writer import VIDEO_OUTPUT_EXTENSIONS, VideoWriter, check_video_output

__all__ = [
    "IMAGE_EXTENSIONS", "VIDEO_EXTENSIONS", "VIDEO_OUTPUT_EXTENSIONS", "InputError", "Sequence", "FrameReader",
    "VideoReader", "FrameWriter", "VideoWriter", "discover_sequences", "check_output_writable", "output_kind",
    "output_targets", "check_outputs_outside_inputs", "natural_key",
]

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".mov", ".avi", ".webm")
# Side files tolerated (skipped) in input folders; any other unsupported file is an error.
_IGNORED_SUFFIXES = (".txt", ".md", ".json", ".yaml", ".yml", ".csv", ".log", ".ini", ".db")


# --------------------------------------------------------------------------------------
# Sequences
# --------------------------------------------------------------------------------------


@dataclass
class Sequence:
    """One input sequence: a frame folder or a video file.

    ``frame_names`` are the output file names: the input names as ``.png`` for frames,
    ``f"{i:08d}.png"`` for a video. ``rate`` (the exact average frame rate),
    ``time_base``/``pts`` (every frame's presentation time) and ``display_matrix`` (rotation)
    are set for videos only; ``files`` lists the image files of a frame sequence;
    ``bit_depth`` is 16 for samples deeper than 8 bits.
    """

    name: str
    source: Path
    kind: Literal["frames", "video"]
    frame_names: list[str]
    height: int
    width: int
    has_audio: bool = False
    rate: Fraction | None = None
    files: list[Path] = field(default_factory=list)
    time_base: Fraction | None = None
    pts: list[int] | None = None
    bit_depth: int = 8
    display_matrix: list[int] | None = None

    def input_files(self) -> list[Path]:
        """The files whose content makes this sequence (its identity in run records)."""
        return list(self.files) if self.kind == "frames" else [self.source]

    def __len__(self) -> int:
        return len(self.frame_names)

    def reader(self) -> FrameReader:
        """A streaming reader of this sequence (a context manager)."""
        if self.kind == "frames":
            return ImageFolderReader(self.files, self.height, self.width)
        return VideoReader(self.source, len(self), self.height, self.width)


def discover_sequences(path: str | Path, verify: bool = True, *, allow_truncated: bool = False,
                       errors: list[tuple[str, str]] | None = None, nested: bool = False) -> list[Sequence]:
    """Find and validate the sequences under ``path``, in natural order.

    A frame folder gives one sequence; a folder of sequence folders and/or video files
    gives one per entry; a video file gives one. Raises :class:`InputError` for a
    missing path, an empty or ambiguous folder (images next to sub-folders or videos),
    an unsupported file, an unreadable or truncated image (``verify``: cheap integrity
    check of every frame), frames of different sizes, a video with no decodable
    video stream, or a video that decodes to fewer frames than its container declares
    (unless ``allow_truncated``; :func:`~mgld.io.video_reader.probe_video`).

    ``errors``: a list to collect ``(name, message)`` of the broken entries of a folder of
    sequences instead of raising (``--keep-going``); the other sequences are returned.

    ``nested``: also accept a sequence folder that holds no frames but exactly one sub-folder of frames
    (``<path>/<sequence>/<frames folder>/``, SPMCS's ``<sequence>/truth/``; docs/evaluation.md); the sequence
    keeps the outer folder's name. Evaluation accepts this layout; inference does not.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_file():
        if path.suffix.lower() in IMAGE_EXTENSIONS:
            raise InputError(f"{path}: a single image is not a sequence; pass the folder that holds the frames")
        return [_video_sequence(path, allow_truncated)]
    images, videos, folders = _list_folder(path)
    if images:
        if videos or folders:
            other = (folders + videos)[0].name
            raise InputError(f"{path}: ambiguous input, holds both image frames and sequences (e.g. {other!r})")
        return [_frame_sequence(path, images, verify)]
    if not videos and not folders:
        raise InputError(f"{path}: empty folder (no image frames, videos or sequence folders)")
    sequences = []
    for entry in sorted(folders + videos, key=lambda p: natural_key(p.name)):
        try:
            sequences.append(_entry_sequence(entry, verify, allow_truncated, nested))
        except InputError as err:
            if errors is None:
                raise
            errors.append((entry.stem if entry.is_file() else entry.name, str(err)))
    _check_unique([s.name for s in sequences], path, "sequence names")
    return sequences


def _entry_sequence(entry: Path, verify: bool, allow_truncated: bool, nested: bool = False) -> Sequence:
    """The sequence of one entry of a folder of sequences: a video file or a frame folder (``nested``: or a folder
    holding exactly one frame folder)."""
    if entry.is_file():
        return _video_sequence(entry, allow_truncated)
    frames, sub_videos, sub_folders = _list_folder(entry)
    if nested and not frames and not sub_videos and sub_folders:
        with_frames = [(d, images) for d in sub_folders if (images := _list_folder(d)[0])]
        if len(with_frames) != 1:
            raise InputError(f"{entry}: sequence {entry.name!r} holds no image frames and {len(with_frames)} "
                             f"sub-folders with frames ({[d.name for d, _ in with_frames]}); expected exactly one")
        (folder, images), = with_frames
        return _frame_sequence(folder, images, verify, name=entry.name)
    if sub_videos or sub_folders:
        extra = (sub_folders + sub_videos)[0].name
        raise InputError(f"{entry}: a sequence folder must hold only image frames, found {extra!r}")
    if not frames:
        raise InputError(f"{entry}: empty sequence folder (no image frames)")
    return _frame_sequence(entry, frames, verify)


def _list_folder(folder: Path) -> tuple[list[Path], list[Path], list[Path]]:
    """``(images, videos, folders)`` in ``folder``, each in natural order; hidden entries skipped."""
    images, videos, folders = [], [], []
    for entry in folder.iterdir():
        suffix = entry.suffix.lower()
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            folders.append(entry)
        elif suffix in IMAGE_EXTENSIONS:
            images.append(entry)
        elif suffix in VIDEO_EXTENSIONS:
            videos.append(entry)
        elif suffix not in _IGNORED_SUFFIXES:
            raise InputError(
                f"{entry}: unsupported file type {suffix or '(none)'!r} "
                f"(images: {', '.join(IMAGE_EXTENSIONS)}; videos: {', '.join(VIDEO_EXTENSIONS)})"
            )
    return tuple(sorted(group, key=lambda p: natural_key(p.name)) for group in (images, videos, folders))


def _check_unique(names: list[str], where: Path, what: str) -> None:
    seen = set()
    for name in names:
        if name in seen:
            raise InputError(f"{where}: duplicate {what}: {name!r}")
        seen.add(name)


def _frame_sequence(folder: Path, files: list[Path], verify: bool, name: str | None = None) -> Sequence:
    names = [f.stem + ".png" for f in files]
    _check_unique(names, folder, "output frame names (same name with different extensions)")
    height, width = probe_image(files[0], verify)
    for f in files[1:]:
        h, w = probe_image(f, verify)
        if (h, w) != (height, width):
            raise InputError(f"{f}: frame is {w}x{h} but {files[0].name} is {width}x{height}; frames must match")
    bits = 8 if read_image(files[0]).dtype == np.uint8 else 16
    return Sequence(name or folder.name, folder, "frames", names, height, width, files=files, bit_depth=bits)


def _video_sequence(path: Path, allow_truncated: bool = False) -> Sequence:
    if path.suffix.lower() not in VIDEO_EXTENSIONS:
        raise InputError(
            f"{path}: unsupported file type {path.suffix!r} (videos: {', '.join(VIDEO_EXTENSIONS)}; "
            "or pass a folder of image frames)"
        )
    info = probe_video(path, allow_truncated)
    names = [f"{i:08d}.png" for i in range(info.num_frames)]
    return Sequence(path.stem, path, "video", names, info.height, info.width, info.has_audio, rate=info.rate,
                    time_base=info.time_base, pts=info.pts, bit_depth=info.bit_depth,
                    display_matrix=info.display_matrix)


# --------------------------------------------------------------------------------------
# Output checks
# --------------------------------------------------------------------------------------


def check_output_writable(path: str | Path) -> None:
    """Raise :class:`InputError` naming ``path`` if the output cannot be created or written there.

    A path with a video extension is an output video (one of ``VIDEO_OUTPUT_EXTENSIONS``,
    not an existing folder); any other path is an output folder. Creates nothing.
    """
    path = Path(path)
    if path.suffix.lower() in VIDEO_EXTENSIONS:
        check_video_output(path)
        return
    if path.is_file():
        raise InputError(f"{path}: output folder path is an existing file")
    ensure_writable(path)


def output_kind(output_path: str | Path, sequences: Sequence | list[Sequence],
                output_format: Literal["auto", "frames", "video"] = "auto") -> Literal["frames", "video"]:
    """What the outputs are: ``"video"`` or ``"frames"``.

    ``auto``: video when ``output_path`` has a video extension (then exactly one input sequence), else
    frames. ``video`` with a folder path writes one video per sequence into it. ``frames`` refuses a path
    with a video extension.
    """
    sequences = [sequences] if isinstance(sequences, Sequence) else list(sequences)
    is_video_path = Path(output_path).suffix.lower() in VIDEO_EXTENSIONS
    if output_format == "frames" and is_video_path:
        raise InputError(f"{output_path}: frames output needs a folder, not a path ending in a video extension")
    if not is_video_path:
        return "video" if output_format == "video" else "frames"
    if len(sequences) != 1:
        raise InputError(f"{output_path}: {len(sequences)} input sequences cannot go to one video; give a folder "
                         "(with --output-format video for one video each)")
    return "video"


def output_targets(input_path: Path, output_path: Path, sequences: list[Sequence], kind: str,
                   video_ext: str = ".mp4") -> list[Path]:
    """Where each sequence's output goes: ``output_path`` itself for an output video path, or for a frame folder
    or video given directly and written as frames; else ``output_path / name`` (a folder, or ``name + video_ext``
    with ``--output-format video``)."""
    if Path(output_path).suffix.lower() in VIDEO_EXTENSIONS:
        return [Path(output_path)] * len(sequences)  # output_kind allows one sequence only
    targets = []
    for seq in sequences:
        direct = kind == "frames" and seq.source == Path(input_path)
        targets.append(Path(output_path) if direct else Path(output_path) / (seq.name + (
            video_ext if kind == "video" else "")))
    return targets


def check_outputs_outside_inputs(input_path: Path, sequences: list[Sequence], targets: list[Path]) -> None:
    """Refuse an output that is an input, or lies inside the input folder or a sequence folder: the next run
    (and a resume) would take inputs for results, and results would land among the inputs."""
    root = Path(input_path).resolve()
    for seq, target in zip(sequences, targets):
        out = Path(target).resolve()
        source = seq.source.resolve()
        if out == source or (seq.kind == "frames" and source in out.parents) or (root.is_dir() and (
                out == root or root in out.parents)):
            raise InputError(
                f"{target}: the output is the input or lies inside it ({seq.source}); the input frames would be "
                "mistaken for results. Choose an output outside the input"
            )
