"""Video files in: probing (frame count, size, rate, audio) and a streaming forward decoder (PyAV).

:func:`probe_video` checks a video by demuxing it and decoding its first frame; :class:`VideoReader` is the
:class:`mgld.io.frames.FrameReader` of a video: it decodes forward once and keeps only the current chunk.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av

from mgld.io.frames import FrameReader, InputError

logger = logging.getLogger(__name__)


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
