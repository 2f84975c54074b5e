"""Resumable H.264 video output: segmented encoding, stream-copy concatenation, source audio.

:class:`VideoWriter` encodes H.264 (yuv420p, BT.709, limited range) into segments of
``segment_frames`` frames in a hidden work folder next to the output
(``.<name>.parts/part-00000.mp4``); each full segment is renamed into place when
finished, so a new writer on the same path resumes after the last finished segment.
:meth:`VideoWriter.close` remuxes the segments (stream copy, retimed packets) with the
source's audio (stream copy; re-encoded to AAC only if the container cannot hold the
codec) into a temporary file, renames it onto the output and removes the work folder.

Odd frame sizes: yuv420p (and H.264's frame cropping, in 2-pixel units) cannot store
an odd width or height, so the writer **pads** the last row/column by edge replication
(a 33x17 frame becomes a 34x18 video). Padding keeps every pixel of the result where
cropping would lose one; the pipeline's 4x outputs are always even, so this only
concerns other callers.

Shapes: frames are float ``3 h w`` in [0, 1] or uint8 ``h w 3``, RGB.
"""

from __future__ import annotations

import heapq
import io
import json
import logging
import shutil
from collections.abc import Iterator
from contextlib import ExitStack
from fractions import Fraction
from pathlib import Path
from typing import Literal

import av
import numpy as np
import torch

from mgld.io.atomic import TEMP_SUFFIX, remove_temporaries
from mgld.io.frames import InputError, ensure_writable, frame_to_uint8

logger = logging.getLogger(__name__)

VIDEO_OUTPUT_EXTENSIONS = (".mp4", ".mkv", ".mov")  # containers that hold H.264 (WebM cannot; AVI mangles B-frames)
_CONTAINER_FORMATS = {".mp4": "mp4", ".mkv": "matroska", ".mov": "mov"}


def check_video_output(path: Path) -> None:
    """Raise :class:`InputError` unless ``path`` can become an output video (a supported container)."""
    suffix = path.suffix.lower()
    if suffix not in VIDEO_OUTPUT_EXTENSIONS:
        raise InputError(f"{path}: cannot write H.264 to {suffix or 'a file without extension'}; "
                         f"use {', '.join(VIDEO_OUTPUT_EXTENSIONS)}")
    if path.is_dir():
        raise InputError(f"{path}: output video path is an existing folder")
    ensure_writable(path)


_BT709, _LIMITED_RANGE = 1, 1  # AVCOL_SPC_BT709 (= AVCOL_PRI_BT709 = AVCOL_TRC_BT709), AVCOL_RANGE_MPEG


class VideoWriter:
    """H.264 video at the input's frame rate with the source's audio stream copied; resumable.

    Frames are written in order (float ``3 h w`` in [0, 1] or uint8 ``h w 3``, RGB, all
    ``height x width``). Finished segments survive an interruption: a new writer on the
    same path (same settings) reports them with :meth:`done` and continues after them.
    If the output file already exists (and not ``overwrite``) every frame is done and
    :meth:`close` leaves the file alone. Give ``num_frames`` (the sequence length) so
    that :meth:`close` after an interruption keeps the segments for a resume instead of
    finalising a short video; used as a context manager, an exception does the same.
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
        num_frames: int | None = None,
    ):
        self.path = Path(path)
        check_video_output(self.path)
        self.rate = Fraction(rate).limit_denominator(1_000_000)
        self.width, self.height = width, height
        self.crf, self.preset, self.segment_frames = crf, preset, segment_frames
        self.audio_source = Path(audio_source) if audio_source is not None else None
        self.overwrite, self.num_frames = overwrite, num_frames
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
        if self.num_frames is not None and index >= self.num_frames:
            raise IndexError(f"{self.path}: frame {index} beyond num_frames={self.num_frames}")
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
        """Finalise: remux all segments with the source audio into the output file (atomic).

        With ``num_frames`` given and not all written, keep the segments for a resume instead.
        """
        if self.complete:
            shutil.rmtree(self.parts, ignore_errors=True)
            return
        if self.num_frames is not None and self._next < self.num_frames:
            logger.warning("%s: only %d of %d frames written; not finalised, finished segments kept for a resume",
                           self.path, self._next, self.num_frames)
            self.abort()
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
        self._next -= self._next % self.segment_frames  # frames of the unfinished segment are lost

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
        if self.overwrite or _read_json(manifest) != settings:
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


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


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
            packet.dts -= offset
            packet.pts = None if packet.pts is None else packet.pts - offset
            packet.stream = target
            yield packet


def _reencoded(frames: Iterator[av.AudioFrame], target: av.AudioStream, start: Fraction, rate: int) -> Iterator:
    for frame in frames:
        frame.pts = round((frame.time - start) * rate)
        frame.time_base = Fraction(1, rate)
        yield from target.encode(frame)
    yield from target.encode(None)
