"""Video files in: probing (frame count, size, rate, audio) and a streaming forward decoder (PyAV).

:func:`probe_video` decodes a video once and checks its frame count against the container's; it returns the
frames' timestamps and the rotation side data that a video output keeps. :class:`VideoReader` is the
:class:`mgld.io.frames.FrameReader` of a video: it decodes forward once and keeps only the current chunk.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from mgld.io.frames import FrameReader, InputError

logger = logging.getLogger(__name__)


@dataclass
class VideoInfo:
    """What :func:`probe_video` found: decodable frames, their timing, and what the output must keep.

    ``pts``: presentation time of every decodable frame in ``time_base`` units (variable frame rates kept);
    ``declared``: the container's frame count (its index, or duration x rate), None if it gives none;
    ``display_matrix``: the rotation/flip side data (9 int32, FFmpeg's layout), None if absent.
    """

    num_frames: int
    declared: int | None
    height: int
    width: int
    rate: Fraction
    time_base: Fraction
    pts: list[int]
    has_audio: bool
    bit_depth: int
    display_matrix: list[int] | None


def probe_video(path: Path, allow_truncated: bool = False) -> VideoInfo:
    """Open ``path``, decode every frame of its first video stream, and check the count against the container.

    A video that decodes to fewer frames than its container declares (a truncated download, a file cut while
    copying: an index at the front still lists the lost frames), or that fails to decode part-way, raises
    :class:`InputError` naming the file and both counts, unless ``allow_truncated`` (then the decodable
    frames are the sequence).
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
        stream.thread_type = "AUTO"
        first, pts, packets, error = None, [], 0, None
        try:
            for packet in container.demux(stream):
                packets += bool(packet.size)
                for frame in packet.decode():
                    first = first or frame
                    pts.append(frame.pts)
        except av.FFmpegError as e:
            error = e
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        has_audio = bool(container.streams.audio)
        declared, indexed = _declared_frames(container, stream, Fraction(rate) if rate else None)
        time_base = stream.time_base or (1 / Fraction(rate) if rate else Fraction(1, 25))
    if first is None:
        counts = f" (its container declares {declared} frames)" if declared else ""
        raise InputError(f"{path}: the video stream has no decodable frame{counts}" + (f": {error}" if error else ""))
    if not rate:
        raise InputError(f"{path}: unknown frame rate")
    rate = Fraction(rate)
    problem = None
    if error is not None:
        problem = f"decoding fails after frame {len(pts)} ({error})"
    elif indexed and packets < declared:
        problem = f"the file holds {packets} of the {declared} frames its index lists"
    elif not indexed and declared is not None and len(pts) < declared - 1:  # a duration: about a frame
        problem = f"{len(pts)} frames decode but the container's duration makes {declared}"
    if problem:
        if not allow_truncated:
            raise InputError(f"{path}: damaged or truncated video: {problem}; --allow-truncated processes the "
                             f"{len(pts)} decodable frames")
        logger.warning("%s: damaged or truncated video (%s); processing the %d decodable frames", path, problem,
                       len(pts))
    if any(p is None for p in pts) or any(b <= a for a, b in zip(pts, pts[1:])):
        ticks = 1 / (rate * time_base)  # no usable timestamps: a constant rate from the first one
        pts = [round((pts[0] or 0) + i * ticks) for i in range(len(pts))]
    matrix = _display_matrix(first)
    if matrix is not None and first.rotation:
        logger.info("%s: rotation metadata (%s deg) kept in video outputs; frames are processed as stored",
                    path, first.rotation)
    bits = 16 if first.format.components[0].bits > 8 else 8
    return VideoInfo(len(pts), declared, first.height, first.width, rate, Fraction(time_base), pts, has_audio,
                     bits, matrix)


def _declared_frames(container, stream, rate: Fraction | None) -> tuple[int | None, bool]:
    """``(count, from_index)``: the frame count the container declares, from its index (mp4/mov: exact), else
    from the stream's duration x rate; ``(None, False)`` when it declares neither."""
    if stream.frames:
        return int(stream.frames), True
    if rate is None:
        return None, False
    seconds = None
    if stream.duration and stream.time_base:
        seconds = stream.duration * stream.time_base
    elif "DURATION" in stream.metadata:  # Matroska writes each track's duration as a tag
        try:
            h, m, sec = stream.metadata["DURATION"].split(":")
            seconds = Fraction(int(h) * 3600 + int(m) * 60) + Fraction(sec)
        except ValueError:
            seconds = None
    elif container.duration and len(container.streams) == 1:
        seconds = Fraction(container.duration, av.time_base)
    return (None if seconds is None else round(seconds * rate)), False


def _display_matrix(frame: av.VideoFrame) -> list[int] | None:
    side_data = frame.side_data
    for i in range(len(side_data)):
        item = side_data[i]
        if "DISPLAYMATRIX" in str(item.type):
            return [int(v) for v in np.frombuffer(bytes(item), np.int32)]
    return None


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
