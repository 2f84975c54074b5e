"""Video super-resolution input and output: sequence discovery, streaming readers, resumable writers.

Inputs (:func:`discover_sequences`) are a frame folder (one sequence), a folder of
sequences (sub-folders of frames and/or video files: the REDS4 / VideoLQ / UDM10
layout), or one video file read with PyAV. Everything is validated before any heavy
work, and every problem raises :class:`InputError` naming the file.

Readers (:meth:`Sequence.reader`) stream frames as float32 ``t 3 h w`` RGB in [0, 1].
A video is decoded forward once, keeping only the frames of the current chunk; a
backward request reopens the file and decodes again from the start.

Writers are resumable and atomic. :class:`FrameWriter` (PNG folder) lives in
``mgld.data.frames``. :class:`VideoWriter` encodes H.264 (yuv420p, BT.709, limited
range) into segments of ``segment_frames`` frames in a hidden work folder next to the
output (``.<name>.parts/part-00000.mp4``); each full segment is renamed into place when
finished, so a new writer on the same path resumes after the last finished segment.
:meth:`VideoWriter.close` remuxes the segments (stream copy, shifted timestamps) with the
source's audio into a temporary file, renames it onto the output and removes the work
folder.

Odd frame sizes: yuv420p (and H.264's frame cropping, in 2-pixel units) cannot store
an odd width or height, so the writer **pads** the last row/column by edge replication
(a 33x17 frame becomes a 34x18 video). Padding keeps every pixel of the result, where
cropping would lose one; 4x outputs of the pipeline are always even, so this only
concerns other callers.
"""

from __future__ import annotations

import heapq
import io
import json
import logging
import shutil
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Literal

import av
import numpy as np
import torch

from mgld.data.frames import (
    IMAGE_EXTENSIONS,
    TEMP_SUFFIX,
    FrameReader,
    FrameWriter,
    ImageFolderReader,
    InputError,
    ensure_writable,
    frame_to_uint8,
    natural_key,
    probe_image,
    remove_temporaries,
)

__all__ = [
    "IMAGE_EXTENSIONS", "VIDEO_EXTENSIONS", "VIDEO_OUTPUT_EXTENSIONS", "InputError", "Sequence", "FrameReader",
    "VideoReader", "FrameWriter", "VideoWriter", "discover_sequences", "check_output_writable", "output_kind",
    "natural_key",
]

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".mov", ".avi", ".webm")
VIDEO_OUTPUT_EXTENSIONS = (".mp4", ".mkv", ".mov")  # containers that hold H.264 (WebM cannot; AVI mangles B-frames)
_CONTAINER_FORMATS = {".mp4": "mp4", ".mkv": "matroska", ".mov": "mov"}
# Side files tolerated (skipped) in input folders; any other unsupported file is an error.
_IGNORED_SUFFIXES = (".txt", ".md", ".json", ".yaml", ".yml", ".csv", ".log", ".ini", ".db")


# --------------------------------------------------------------------------------------
# Sequences
# --------------------------------------------------------------------------------------


@dataclass
class Sequence:
    """One input sequence: a frame folder or a video file.

    ``frame_names`` are the output file names: the input names as ``.png`` for frames,
    ``f"{i:08d}.png"`` for a video. ``fps``/``rate`` (float / exact average frame rate)
    are set for videos only; ``files`` lists the image files of a frame sequence.
    """

    name: str
    source: Path
    kind: Literal["frames", "video"]
    frame_names: list[str]
    height: int
    width: int
    fps: float | None = None
    has_audio: bool = False
    rate: Fraction | None = None
    files: list[Path] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.frame_names)

    def reader(self) -> FrameReader:
        """A streaming reader of this sequence (a context manager)."""
        if self.kind == "frames":
            return ImageFolderReader(self.files, self.height, self.width)
        return VideoReader(self.source, len(self), self.height, self.width)


def discover_sequences(path: str | Path, verify: bool = True) -> list[Sequence]:
    """Find and validate the sequences under ``path``, in natural order.

    A frame folder gives one sequence; a folder of sequence folders and/or video files
    gives one per entry; a video file gives one. Raises :class:`InputError` for a
    missing path, an empty or ambiguous folder (images next to sub-folders or videos),
    an unsupported file, an unreadable or truncated image (``verify``: cheap integrity
    check of every frame), frames of different sizes, or a video with no decodable
    video stream.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_file():
        if path.suffix.lower() in IMAGE_EXTENSIONS:
            raise InputError(f"{path}: a single image is not a sequence; pass the folder that holds the frames")
        return [_video_sequence(path)]
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
        if entry.is_file():
            sequences.append(_video_sequence(entry))
            continue
        frames, sub_videos, sub_folders = _list_folder(entry)
        if sub_videos or sub_folders:
            extra = (sub_folders + sub_videos)[0].name
            raise InputError(f"{entry}: a sequence folder must hold only image frames, found {extra!r}")
        if not frames:
            raise InputError(f"{entry}: empty sequence folder (no image frames)")
        sequences.append(_frame_sequence(entry, frames, verify))
    _check_unique([s.name for s in sequences], path, "sequence names")
    return sequences


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


def _frame_sequence(folder: Path, files: list[Path], verify: bool) -> Sequence:
    names = [f.stem + ".png" for f in files]
    _check_unique(names, folder, "output frame names (same name with different extensions)")
    height, width = probe_image(files[0], verify)
    for f in files[1:]:
        h, w = probe_image(f, verify)
        if (h, w) != (height, width):
            raise InputError(f"{f}: frame is {w}x{h} but {files[0].name} is {width}x{height}; frames must match")
    return Sequence(folder.name, folder, "frames", names, height, width, files=files)


def _video_sequence(path: Path) -> Sequence:
    if path.suffix.lower() not in VIDEO_EXTENSIONS:
        raise InputError(
            f"{path}: unsupported file type {path.suffix!r} (videos: {', '.join(VIDEO_EXTENSIONS)}; "
            "or pass a folder of image frames)"
        )
    num_frames, height, width, rate, has_audio = probe_video(path)
    names = [f"{i:08d}.png" for i in range(num_frames)]
    return Sequence(path.stem, path, "video", names, height, width, float(rate), has_audio, rate=rate)


def probe_video(path: Path) -> tuple[int, int, int, Fraction, bool]:
    """``(num_frames, height, width, rate, has_audio)`` of a video, checked by decoding its first frame.

    The frame count is the number of (non-discarded) packets of the first video stream,
    counted by demuxing without decoding; it does not trust the container's metadata.
    """
    try:
        container = av.open(str(path))
    except av.FFmpegError as e:
        raise InputError(f"{path}: cannot open video ({e})") from e
    with container:
        if not container.streams.video:
            kinds = ", ".join(s.type for s in container.streams) or "none"
            raise InputError(f"{path}: no video stream (streams: {kinds})")
        stream = container.streams.video[0]
        first, count = None, 0
        try:
            for packet in container.demux(stream):
                if first is None:
                    first = next(iter(packet.decode()), None)
                count += bool(packet.size) and not packet.is_discard
        except av.FFmpegError as e:
            raise InputError(f"{path}: cannot decode video ({e})") from e
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        has_audio = bool(container.streams.audio)
    if first is None or count == 0:
        raise InputError(f"{path}: the video stream has no decodable frame")
    if not rate:
        raise InputError(f"{path}: unknown frame rate")
    if first.rotation:
        logger.warning("%s: rotation metadata (%s deg) ignored; frames are processed as stored", path, first.rotation)
    return count, first.height, first.width, Fraction(rate), has_audio


class VideoReader(FrameReader):
    """:class:`FrameReader` decoding a video forward once, buffering only the current chunk.

    Frames deeper than 8 bits are converted to 16-bit RGB (no truncation to 8 bits).
    Colour conversion follows the stream's tags (matrix and range; untagged = BT.601).
    """

    def __init__(self, path: str | Path, num_frames: int, height: int, width: int):
        super().__init__(Path(path), num_frames, height, width)
        self._container = None
        self._frames: Iterator[av.VideoFrame] | None = None
        self._next = 0  # index of the next frame the decoder will return

    def _open(self) -> None:
        self.close()
        try:
            self._container = av.open(str(self.source))
        except av.FFmpegError as e:
            raise InputError(f"{self.source}: cannot open video ({e})") from e
        stream = self._container.streams.video[0]
        stream.thread_type = "AUTO"
        self._frames = self._container.decode(stream)
        self._next = 0

    def _fill(self, start: int, stop: int) -> None:
        missing = [i for i in range(start, min(stop, self._next)) if i not in self._cache]
        if self._frames is None or missing:
            self._open()  # first call, or a backward request: decode again from the start
        while self._next < stop:
            try:
                frame = next(self._frames)
            except StopIteration:
                raise InputError(
                    f"{self.source}: video ended after {self._next} frames, expected {len(self)} (truncated?)"
                ) from None
            except av.FFmpegError as e:
                raise InputError(f"{self.source}: cannot decode frame {self._next} ({e})") from e
            if self._next >= start:
                fmt = "rgb48le" if frame.format.components[0].bits > 8 else "rgb24"
                self._cache[self._next] = self._check_size(frame.to_ndarray(format=fmt), f"{self.source}#{self._next}")
            self._next += 1

    def close(self) -> None:
        super().close()
        if self._container is not None:
            self._container.close()
        self._container, self._frames, self._next = None, None, 0


# --------------------------------------------------------------------------------------
# Output checks
# --------------------------------------------------------------------------------------


def check_output_writable(path: str | Path) -> None:
    """Raise :class:`InputError` naming ``path`` if the output cannot be created or written there.

    A path with a video extension is an output video (one of ``VIDEO_OUTPUT_EXTENSIONS``,
    not an existing folder); any other path is an output folder. Creates nothing.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in VIDEO_EXTENSIONS:
        if suffix not in VIDEO_OUTPUT_EXTENSIONS:
            raise InputError(f"{path}: cannot write H.264 to {suffix}; use {', '.join(VIDEO_OUTPUT_EXTENSIONS)}")
        if path.is_dir():
            raise InputError(f"{path}: output video path is an existing folder")
    elif path.is_file():
        raise InputError(f"{path}: output folder path is an existing file")
    ensure_writable(path)


def output_kind(output_path: str | Path, sequences: Sequence | list[Sequence]) -> Literal["frames", "video"]:
    """``"video"`` when ``output_path`` has a video extension, else ``"frames"``.

    A video output needs exactly one video input (its frame rate and audio); a frame
    input, or several sequences, with a video output path raises :class:`InputError`.
    """
    sequences = [sequences] if isinstance(sequences, Sequence) else list(sequences)
    if Path(output_path).suffix.lower() not in VIDEO_EXTENSIONS:
        return "frames"
    if len(sequences) != 1:
        raise InputError(f"{output_path}: {len(sequences)} input sequences cannot go to one video; give a folder")
    if sequences[0].kind != "video":
        raise InputError(
            f"{output_path}: a video output needs a video input ({sequences[0].source} is a frame folder); "
            "give an output folder"
        )
    return "video"


# --------------------------------------------------------------------------------------
# Video writing
# --------------------------------------------------------------------------------------

_BT709, _LIMITED_RANGE = 1, 1  # AVCOL_SPC_BT709 (= AVCOL_PRI_BT709 = AVCOL_TRC_BT709), AVCOL_RANGE_MPEG


class VideoWriter:
    """H.264 video at the input's frame rate with the source's audio stream copied; resumable.

    Frames are written in order (float ``3 h w`` in [0, 1] or uint8 ``h w 3``, RGB, all
    ``height x width``). Finished segments survive an interruption: a new writer on the
    same path (same settings) reports them with :meth:`done` and continues after them.
    If the output file already exists (and not ``overwrite``) every frame is done and
    :meth:`close` leaves the file alone. Used as a context manager, an exception leaves
    the finished segments for a later resume instead of finalising the output.
    """

    def __init__(
        self,
        path: str | Path,
        rate: Fraction | float,
        width: int,
        height: int,
        crf: int = 18,
        audio_source: str | Path | None = None,
        overwrite: bool = False,
        segment_frames: int = 64,
        preset: str = "medium",
    ):
        self.path = Path(path)
        check_output_writable(self.path)
        self.rate = Fraction(rate).limit_denominator(1_000_000)
        self.width, self.height = width, height
        self.crf, self.preset, self.segment_frames = crf, preset, segment_frames
        self.audio_source = Path(audio_source) if audio_source is not None else None
        self.overwrite = overwrite
        self.parts = self.path.parent / f".{self.path.name}.parts"
        self._segment: tuple[av.container.OutputContainer, av.VideoStream, Path] | None = None
        if width % 2 or height % 2:
            logger.warning("%s: odd frame size %dx%d padded to even by edge replication", self.path, width, height)
        self._audio_mode = _audio_mode(self.audio_source, _CONTAINER_FORMATS[self.path.suffix.lower()])
        self.complete = self.path.is_file() and not overwrite
        self._next = 0
        if not self.complete:
            self._next = self._resume()

    # -- public ---------------------------------------------------------------------------

    def done(self, index: int) -> bool:
        """Frame ``index`` was already written (a finished segment, earlier in this run, or a complete output)."""
        return self.complete or index < self._next

    def write(self, index: int, frame: torch.Tensor | np.ndarray) -> None:
        """Encode frame ``index`` (the next one in order); frames already :meth:`done` are ignored."""
        if self.done(index):
            return
        if index != self._next:
            raise ValueError(f"{self.path}: frames must be written in order; expected frame {self._next}, got {index}")
        image = frame_to_uint8(frame)
        if image.shape[:2] != (self.height, self.width):
            raise ValueError(f"{self.path}: frame {index} is {image.shape[1]}x{image.shape[0]}, "
                             f"expected {self.width}x{self.height}")
        if self.height % 2 or self.width % 2:
            image = np.pad(image, ((0, self.height % 2), (0, self.width % 2), (0, 0)), mode="edge")
        if self._segment is None:
            self._segment = self._open_segment(self._next // self.segment_frames)
        container, stream, _ = self._segment
        video_frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        video_frame = video_frame.reformat(format="yuv420p", dst_colorspace="itu709", dst_color_range="MPEG")
        video_frame.pts = self._next % self.segment_frames
        container.mux(stream.encode(video_frame))
        self._next += 1
        if self._next % self.segment_frames == 0:
            tmp = self._finish_segment()
            tmp.replace(self._part(self._next // self.segment_frames - 1))

    def close(self) -> None:
        """Finalise: remux all segments with the source audio into the output file (atomic)."""
        if self.complete:
            shutil.rmtree(self.parts, ignore_errors=True)
            return
        if self._next == 0:
            raise ValueError(f"{self.path}: no frames were written")
        full = self._next // self.segment_frames
        segments = [self._part(k) for k in range(full)]
        if self._segment is not None:
            segments.append(self._finish_segment())
        tmp = self.path.with_name(f".{self.path.name}{TEMP_SUFFIX}")
        try:
            self._mux_output(segments, tmp)
            tmp.replace(self.path)
        finally:
            tmp.unlink(missing_ok=True)
        shutil.rmtree(self.parts, ignore_errors=True)
        self.complete = True

    def abort(self) -> None:
        """Stop without finalising; finished segments stay for a later resume."""
        if self._segment is not None:
            container, _, tmp = self._segment
            container.close()
            tmp.unlink(missing_ok=True)
            self._segment = None

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    # -- segments -------------------------------------------------------------------------

    def _part(self, k: int) -> Path:
        return self.parts / f"part-{k:05d}.mp4"

    def _resume(self) -> int:
        """Prepare the work folder; return the number of frames in finished segments."""
        settings = {
            "width": self.width, "height": self.height, "rate": str(self.rate), "crf": self.crf,
            "preset": self.preset, "segment_frames": self.segment_frames, "codec": "libx264", "pix_fmt": "yuv420p",
        }
        manifest = self.parts / "settings.json"
        if self.overwrite or not manifest.is_file() or json.loads(manifest.read_text()) != settings:
            if self.parts.exists():
                logger.info("%s: discarding segments of an earlier run (overwrite or other settings)", self.path)
            shutil.rmtree(self.parts, ignore_errors=True)
            self.parts.mkdir(parents=True)
            manifest.write_text(json.dumps(settings))
        remove_temporaries(self.parts)
        finished = 0
        while self._part(finished).is_file():
            finished += 1
        if finished:
            logger.info("%s: resuming after %d finished frames", self.path, finished * self.segment_frames)
        return finished * self.segment_frames

    def _open_segment(self, k: int) -> tuple[av.container.OutputContainer, av.VideoStream, Path]:
        tmp = self.parts / f"part-{k:05d}.mp4{TEMP_SUFFIX}"
        container = av.open(str(tmp), "w", format="mp4")
        stream = container.add_stream("libx264", rate=self.rate)
        stream.width, stream.height = self.width + self.width % 2, self.height + self.height % 2
        stream.pix_fmt = "yuv420p"
        stream.time_base = 1 / self.rate
        stream.options = {"crf": str(self.crf), "preset": self.preset}
        context = stream.codec_context
        context.colorspace = context.color_primaries = context.color_trc = _BT709
        context.color_range = _LIMITED_RANGE
        return container, stream, tmp

    def _finish_segment(self) -> Path:
        """Flush and close the open segment; return its (still temporary) path."""
        container, stream, tmp = self._segment
        container.mux(stream.encode(None))
        container.close()
        self._segment = None
        return tmp

    # -- final remux ----------------------------------------------------------------------

    def _mux_output(self, segments: list[Path], tmp: Path) -> None:
        with ExitStack() as stack:
            out = stack.enter_context(av.open(str(tmp), "w", format=_CONTAINER_FORMATS[self.path.suffix.lower()]))
            with av.open(str(segments[0])) as first:
                video = out.add_stream_from_template(first.streams.video[0])
            streams = [_segment_packets(segments, video, self.rate, self.segment_frames)]
            if self._audio_mode is not None:
                source = stack.enter_context(av.open(str(self.audio_source)))
                streams.append(_audio_packets(source, out, self._audio_mode))
            for packet in heapq.merge(*streams, key=lambda p: p.dts * p.time_base):  # interleave by time
                out.mux(packet)


def _segment_packets(segments: list[Path], stream: av.VideoStream, rate: Fraction, segment_frames: int) -> Iterator:
    """The segments' video packets, retimed for their place in the output and retargeted to ``stream``.

    pts move by the segment's start time. dts are renumbered in decode order, ``delay``
    frames before the frame index: each segment's encoder starts with its own (B-frame)
    delay, a short last segment with less, and keeping those per-segment dts would leave
    a gap that the muxer turns into one long frame (a wrong average frame rate).
    """
    delay = max(_decoder_delay(path, rate) for path in segments)
    decoded = 0
    for k, path in enumerate(segments):
        with av.open(str(path)) as container:
            source = container.streams.video[0]
            ticks = 1 / (rate * source.time_base)  # one frame in the segment's time base
            for packet in container.demux(source):
                if packet.dts is None:
                    continue
                packet.pts += round(k * segment_frames * ticks)
                packet.dts = round((decoded - delay) * ticks)
                packet.stream = stream
                decoded += 1
                yield packet


def _decoder_delay(segment: Path, rate: Fraction) -> int:
    """How many frames the first dts of a segment precedes its first pts (0)."""
    with av.open(str(segment)) as container:
        source = container.streams.video[0]
        first = next(p for p in container.demux(source) if p.dts is not None)
        return max(0, round(-first.dts * source.time_base * rate))


def _audio_mode(source: Path | None, container_format: str) -> Literal["copy", "aac"] | None:
    """How the source's audio gets into the output: stream copy, AAC re-encode (codec not
    storable in the container), or ``None`` (no source or no audio stream)."""
    if source is None:
        return None
    try:
        container = av.open(str(source))
    except (av.FFmpegError, OSError) as e:
        raise InputError(f"{source}: cannot open the audio source ({e})") from e
    with container:
        if not container.streams.audio:
            return None
        audio = container.streams.audio[0]
        try:  # dry run: write a header with this stream into memory
            with av.open(io.BytesIO(), "w", format=container_format) as probe:
                probe.add_stream_from_template(audio)
                probe.start_encoding()
            return "copy"
        except (av.FFmpegError, ValueError):
            logger.warning("%s: audio codec %s cannot be copied into %s; re-encoding it to AAC",
                           source, audio.codec_context.name, container_format)
            return "aac"


def _audio_packets(source: av.container.InputContainer, out: av.container.OutputContainer,
                   mode: Literal["copy", "aac"]) -> Iterator[av.Packet]:
    """Add the audio stream to ``out``; return its packets, shifted so the first video frame is time 0."""
    audio = source.streams.audio[0]
    video = source.streams.video[0] if source.streams.video else None
    start = video.start_time * video.time_base if video is not None and video.start_time else Fraction(0)
    if mode == "copy":
        target = out.add_stream_from_template(audio)
        return _shifted(source.demux(audio), target, round(start / audio.time_base))
    rate = audio.codec_context.sample_rate
    target = out.add_stream("aac", rate=rate, layout=audio.codec_context.layout)
    return _reencoded(source.decode(audio), target, start, rate)


def _shifted(packets: Iterator[av.Packet], target: av.stream.Stream, offset: int) -> Iterator[av.Packet]:
    for packet in packets:
        if packet.dts is not None:
            packet.pts -= offset
            packet.dts -= offset
            packet.stream = target
            yield packet


def _reencoded(frames: Iterator[av.AudioFrame], target: av.AudioStream, start: Fraction, rate: int) -> Iterator:
    for frame in frames:
        frame.pts = round((frame.time - start) * rate)
        frame.time_base = Fraction(1, rate)
        yield from target.encode(frame)
    yield from target.encode(None)
