"""Resumable, byte-reproducible video output: segmented encoding, stream-copy concatenation, source timing and audio.

:class:`VideoWriter` encodes the frames in *segments* (contiguous frame ranges fixed in advance, so that any
number of processes, and a resumed run, cut the video at the same frames) into a hidden work folder next to the
output (``.<name>.parts/<run>-<k>.mp4``); each finished segment is renamed into place, so a new writer on the same
path resumes after the finished ones. When every segment is there, :meth:`VideoWriter.finalize` remuxes them
(stream copy) with the source's audio (stream copy; re-encoded to AAC only if the container cannot hold the
codec) into a temporary file, writes the sidecar record ``.<name>.mgld.json`` (:mod:`mgld.io.manifest`), renames
the file onto the output and removes the work folder.

* **Timing**: every frame keeps its input presentation time (``pts`` in ``time_base``; variable frame rates stay
  variable), shifted so the first frame is at 0; the audio is shifted by the same amount, so it stays in sync.
  Frames without a source video get a constant rate.
* **Orientation**: the source's display matrix (rotation / flip side data) is written to the output stream.
* **Codecs**: ``h264`` (libx264, ``crf``, yuv420p BT.709 limited range; 10-bit yuv420p10le with
  ``bit_depth=16``) or ``ffv1`` (lossless RGB: bgr0, or gbrp16le with ``bit_depth=16``; Matroska only).
* **Reproducible bytes** (``reproducible=True``): x264 runs with one thread and without SIMD (``threads=1``,
  ``asm=0``): its output depends on the thread count (frame threads also vary run to run) and the SIMD paths
  differ from the C ones, so this is what makes the same frames give the same file on any machine. The remux is
  deterministic, so a resumed video equals an uninterrupted one byte for byte.

Odd frame sizes: yuv420p cannot store an odd width or height, so for H.264 the writer **pads** the last
row/column by edge replication (a 33x17 frame becomes a 34x18 video); the pipeline's 4x outputs are even.

Shapes: frames are float ``3 h w`` in [0, 1] or integer ``h w 3``, RGB.
"""

from __future__ import annotations

import bisect
import hashlib
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

from mgld.io.atomic import TEMP_SUFFIX, atomic_write, remove_temporaries
from mgld.io.frames import InputError, OutputError, ensure_writable, quantize_frame, remove_created
from mgld.io.manifest import RunRecord, check_existing, dumps, parse_record, read_json, read_record

logger = logging.getLogger(__name__)

VIDEO_OUTPUT_EXTENSIONS = (".mp4", ".mkv", ".mov")  # containers that hold H.264 (WebM cannot; AVI mangles B-frames)
_CONTAINER_FORMATS = {".mp4": "mp4", ".mkv": "matroska", ".mov": "mov"}
_BT709, _LIMITED_RANGE = 1, 1  # AVCOL_SPC_BT709 (= AVCOL_PRI_BT709 = AVCOL_TRC_BT709), AVCOL_RANGE_MPEG
_RGB = 0  # AVCOL_SPC_RGB


def check_video_output(path: Path, codec: str = "h264") -> None:
    """Raise :class:`InputError` unless ``path`` can become an output video (a container that holds ``codec``)."""
    suffix = path.suffix.lower()
    if suffix not in VIDEO_OUTPUT_EXTENSIONS:
        raise InputError(f"{path}: cannot write H.264 to {suffix or 'a file without extension'}; "
                         f"use {', '.join(VIDEO_OUTPUT_EXTENSIONS)}")
    if codec == "ffv1" and suffix != ".mkv":
        raise InputError(f"{path}: FFV1 (lossless) video needs a .mkv output")
    if path.is_dir():
        raise InputError(f"{path}: output video path is an existing folder")
    ensure_writable(path)


def sidecar_path(path: Path) -> Path:
    """The run record of a finished output video."""
    return path.with_name(f".{path.name}.mgld.json")


def count_packets(path: Path) -> int | None:
    """Number of video packets in ``path`` (None if it does not open): a cheap completeness check."""
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            return sum(1 for p in container.demux(stream) if p.size)
    except (av.FFmpegError, IndexError, OSError):
        return None


class VideoWriter:
    """A video at the source's timing with its audio and rotation; resumable and byte-reproducible.

    Frames are written in order within each segment (float ``3 h w`` in [0, 1] or integer ``h w 3``, RGB, all
    ``height x width``). ``segments`` lists the ``(start, stop)`` frame ranges (default: ``segment_frames``
    frames each); different processes may write different segments of one video. ``pts``/``time_base``: each
    frame's presentation time (default: constant ``rate``). ``num_frames`` defaults to ``len(pts)``; without
    either, :meth:`close` finalises whatever was written. ``record`` (:class:`~mgld.io.manifest.RunRecord`)
    identifies the run; without one, the encoder settings do.

    :meth:`done` is true for frames of finished segments of this run and for every frame of a finished output
    of this run (sidecar record, byte size and frame count match). :meth:`close` finalises once all segments are
    there; otherwise (an interruption, or other processes still writing) it keeps them for a resume. Used as a
    context manager, an exception does the same. A writer that wrote nothing removes what it created.
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
        *,
        pts: list[int] | None = None,
        time_base: Fraction | None = None,
        segments: list[tuple[int, int]] | None = None,
        codec: Literal["h264", "ffv1"] = "h264",
        bit_depth: int = 8,
        quantize: Literal["truncate", "round"] = "truncate",
        reproducible: bool = True,
        display_matrix: list[int] | None = None,
        record: RunRecord | None = None,
        clean: bool = True,
    ):
        self.path = Path(path)
        check_video_output(self.path, codec)
        self.rate = Fraction(rate).limit_denominator(1_000_000)
        self.width, self.height = width, height
        self.crf, self.preset, self.codec = crf, preset, codec
        self.bit_depth, self.quantize, self.reproducible = bit_depth, quantize, reproducible
        self.audio_source = Path(audio_source) if audio_source is not None else None
        self.display_matrix = display_matrix
        self.overwrite = overwrite
        self.time_base = Fraction(time_base) if time_base is not None else 1 / self.rate
        self.num_frames = num_frames if num_frames is not None else (len(pts) if pts is not None else None)
        self._pts = [p - pts[0] for p in pts] if pts else None
        layout = {"segments": segments} if segments is not None else {"segment_frames": segment_frames}
        if segments is None:
            segments = _fixed_segments(self.num_frames, segment_frames)
        self.segments, self.segment_frames = list(segments), segment_frames
        self._starts = [a for a, _ in self.segments]
        if (self.width % 2 or self.height % 2) and codec == "h264":
            logger.warning("%s: odd frame size %dx%d padded to even by edge replication", self.path, width, height)
        self._audio_mode = _audio_mode(self.audio_source, _CONTAINER_FORMATS[self.path.suffix.lower()])
        self._start = Fraction(pts[0]) * self.time_base if pts else None  # source time of the output's 0
        self.encoder = self._encoder_settings()
        if record is None:
            from mgld import __version__

            record = RunRecord("", [], {"video": self.encoder, "rate": str(self.rate),
                                        "audio": self._audio_mode or "none"}, __version__)
        self.record = record
        self.old = read_record(sidecar_path(self.path))
        self.parts = self.path.parent / f".{self.path.name}.parts"
        layout = json.dumps({"run": record.digest, "encoder": self.encoder, **layout}, sort_keys=True)
        self._parts_id = hashlib.sha256(layout.encode()).hexdigest()[:12]
        self.complete = not overwrite and self._output_complete()
        self._finished: dict[int, bool] = {}  # segment -> finished and intact (cache)
        self._segment: tuple | None = None  # (k, container, stream, tmp path)
        self._next: int | None = None  # next frame of the open segment
        self._written = 0
        self._created: list[Path] = []
        if clean and self.parts.is_dir():
            remove_temporaries(self.parts)

    # -- public ---------------------------------------------------------------------------

    def check(self) -> str | None:
        """:func:`~mgld.io.manifest.check_existing` for this output (read-only, before any work)."""
        present = [self.path.name] if self.path.exists() else []
        return check_existing(self.path, self.record, self.old, present, self.overwrite)

    def done(self, index: int) -> bool:
        """Frame ``index`` is finished: in a finished segment of this run, or the whole output is."""
        if self.complete:
            return True
        k = self._segment_of(index)
        return k is not None and self._segment_finished(k)

    def write(self, index: int, frame: torch.Tensor | np.ndarray) -> None:
        """Encode frame ``index``: the next frame of the open segment, or the first of a segment."""
        if self.done(index):
            return
        if self.num_frames is not None and not 0 <= index < self.num_frames:
            raise IndexError(f"{self.path}: frame {index} beyond num_frames={self.num_frames}")
        k = self._segment_of(index)
        if self._segment is None or index != self._next:
            if k is None or self.segments[k][0] != index:
                expected = self._next if self._segment is not None else "the first frame of a segment"
                raise ValueError(f"{self.path}: frames must be written in order; expected frame {expected}, "
                                 f"got {index}")
            if self._segment is not None:
                raise ValueError(f"{self.path}: segment {self._segment[0]} left unfinished at frame {self._next}")
        image = quantize_frame(frame, self.bit_depth, self.quantize)
        if image.shape[:2] != (self.height, self.width):
            raise ValueError(f"{self.path}: frame {index} is {image.shape[1]}x{image.shape[0]}, "
                             f"expected {self.width}x{self.height}")
        try:
            if self._segment is None:
                self._segment = self._open_segment(k)
                self._next = index
            self._encode(index, image)
            self._next += 1
            self._written += 1
            stop = self.segments[k][1]
            if self._next == stop:
                self._finish_segment()
        except (av.FFmpegError, OSError) as e:
            self.abort()
            raise OutputError(f"{self.path}: cannot write the video ({e}); finished segments are kept: free space "
                             "(or fix the folder) and rerun the same command to resume") from e

    def all_segments_finished(self) -> bool:
        return self.complete or (bool(self.segments) and all(self._segment_finished(k, recheck=True)
                                                              for k in range(len(self.segments))))

    def close(self, finalize: bool = True) -> None:
        """Finish: finalise the output when every segment is there (and ``finalize``), else keep the segments.

        Without a known ``num_frames`` the frames written so far (from frame 0 on) are the video.
        """
        if self.complete:
            shutil.rmtree(self.parts, ignore_errors=True)
            return
        if self.num_frames is None:
            self._end_open_ended()
        elif self._segment is not None:
            self.abort()  # interrupted inside a segment: its frames are redone on resume
        if not finalize:
            return
        if self.num_frames == 0:
            raise ValueError(f"{self.path}: no frames were written")
        if self.all_segments_finished():
            self.finalize()
        elif self._written or any(self._segment_finished(k) for k in range(len(self.segments))):
            done = sum(b - a for k, (a, b) in enumerate(self.segments) if self._segment_finished(k))
            logger.info("%s: %d of %d frames in finished segments; not finalised, kept for a resume", self.path,
                        done, self.num_frames)
        else:
            self._remove_created()

    def _end_open_ended(self) -> None:
        """Without a frame count, the video ends after the last frame written (or finished earlier)."""
        if self._segment is not None:
            k = self._segment[0]
            self.segments[k] = (self.segments[k][0], self._next)
            self._finish_segment()
        count = 0
        for k, (_, b) in enumerate(self.segments):
            if not self._segment_finished(k):
                break
            count = b
        self.segments = [(a, b) for a, b in self.segments if b <= count]
        self._starts = [a for a, _ in self.segments]
        self.num_frames = count

    def finalize(self) -> None:
        """Remux every finished segment, with the source's audio, into the output (atomic), then clean up."""
        if self.complete:
            return
        if not self.all_segments_finished():
            raise ValueError(f"{self.path}: cannot finalise, segments are missing")
        tmp = self.path.with_name(f".{self.path.name}.{self._parts_id}{TEMP_SUFFIX}")
        try:
            self._mux_output([self._part(k) for k in range(len(self.segments))], tmp)
            size = tmp.stat().st_size
            data = {**self.record.to_dict(), "video": {"size": size, "frames": self.num_frames}}
            atomic_write(sidecar_path(self.path), dumps(data))
            tmp.replace(self.path)
        except (av.FFmpegError, OSError) as e:
            if self._output_complete():  # another process finalised it meanwhile (--shard)
                self.complete = True
                return
            raise OutputError(f"{self.path}: cannot write the video ({e}); its segments are kept: free space "
                             "and rerun the same command to finish it") from e
        finally:
            tmp.unlink(missing_ok=True)
        shutil.rmtree(self.parts, ignore_errors=True)
        self.complete = True

    def abort(self) -> None:
        """Stop without finalising; finished segments stay for a later resume. Never raises."""
        if self._segment is not None:
            _, container, _, tmp = self._segment
            try:
                container.close()
            except Exception:  # noqa: BLE001 - cleaning up after an error: report that one, not this
                pass
            tmp.unlink(missing_ok=True)
            self._segment, self._next = None, None
        self._remove_created()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    # -- segments -------------------------------------------------------------------------

    def _encoder_settings(self) -> dict:
        if self.codec == "ffv1":
            pix_fmt = "gbrp16le" if self.bit_depth == 16 else "bgr0"
            options = {"threads": "1", "level": "3", "slices": "4", "context": "1"}
        else:
            pix_fmt = "yuv420p10le" if self.bit_depth == 16 else "yuv420p"
            options = {"crf": str(self.crf), "preset": self.preset}
            if self.reproducible:
                options |= {"threads": "1", "x264-params": "asm=0"}
        return {"codec": "ffv1" if self.codec == "ffv1" else "libx264", "pix_fmt": pix_fmt, "options": options,
                "width": self.width, "height": self.height, "quantize": self.quantize, "bit_depth": self.bit_depth}

    def _segment_of(self, index: int) -> int | None:
        while self.num_frames is None and (not self.segments or index >= self.segments[-1][1]):  # open-ended
            start = self.segments[-1][1] if self.segments else 0
            self.segments.append((start, start + self.segment_frames))
            self._starts.append(start)
        k = bisect.bisect_right(self._starts, index) - 1
        if k < 0 or index >= self.segments[k][1]:
            return None
        return k

    def _part(self, k: int) -> Path:
        return self.parts / f"{self._parts_id}-{k:05d}.{'mkv' if self.codec == 'ffv1' else 'mp4'}"

    def _segment_finished(self, k: int, recheck: bool = False) -> bool:
        if recheck and not self._finished.get(k):
            self._finished.pop(k, None)  # other processes may have finished it meanwhile
        if k not in self._finished:
            a, b = self.segments[k]
            self._finished[k] = not self.overwrite and count_packets(self._part(k)) == b - a
        return self._finished[k]

    def _output_complete(self) -> bool:
        """The output file is this run's finished video: sidecar digest, byte size and frame count match."""
        data = read_json(sidecar_path(self.path))  # read once: the record and the video's size and frames
        old = parse_record(data)
        video = (data or {}).get("video") or {}
        if old is None or old.digest != self.record.digest or not self.path.is_file():
            return False
        if self.path.stat().st_size != video.get("size"):
            logger.warning("%s: size differs from its record (truncated or replaced); it is redone", self.path)
            return False
        if self.num_frames is not None and video.get("frames") != self.num_frames:
            return False
        if count_packets(self.path) != video.get("frames"):
            logger.warning("%s: does not decode to its recorded frames; it is redone", self.path)
            return False
        return True

    def _open_segment(self, k: int) -> tuple:
        if not self.parts.is_dir():
            if not self._created and not self.path.parent.is_dir():
                self._created = [p for p in (self.path.parent, *self.path.parent.parents) if not p.exists()]
            self.parts.mkdir(parents=True, exist_ok=True)
        manifest = self.parts / "manifest.json"
        if (read_json(manifest) or {}).get("parts") != self._parts_id:
            atomic_write(manifest, json.dumps({"parts": self._parts_id, "run": self.record.digest,
                                               "encoder": self.encoder, "segments": self.segments}, indent=1))
        final = self._part(k)
        tmp = final.with_name(f".{final.name}{TEMP_SUFFIX}")
        container = av.open(str(tmp), "w", format="matroska" if self.codec == "ffv1" else "mp4")
        stream = container.add_stream(self.encoder["codec"], rate=self.rate)
        stream.width, stream.height = self._coded_size()
        stream.pix_fmt = self.encoder["pix_fmt"]
        stream.time_base = self.time_base
        stream.options = dict(self.encoder["options"])
        context = stream.codec_context
        context.time_base = self.time_base  # the frames' own times (variable rates), not ticks of 1/rate
        if self.codec == "ffv1":
            context.colorspace = _RGB
        else:
            context.colorspace = context.color_primaries = context.color_trc = _BT709
            context.color_range = _LIMITED_RANGE
        return k, container, stream, tmp

    def _coded_size(self) -> tuple[int, int]:
        if self.codec == "h264":
            return self.width + self.width % 2, self.height + self.height % 2
        return self.width, self.height

    def _encode(self, index: int, image: np.ndarray) -> None:
        _, container, stream, _ = self._segment
        coded_w, coded_h = self._coded_size()
        if (coded_h, coded_w) != image.shape[:2]:
            image = np.pad(image, ((0, coded_h - image.shape[0]), (0, coded_w - image.shape[1]), (0, 0)), mode="edge")
        frame = av.VideoFrame.from_ndarray(image, format="rgb48le" if image.dtype == np.uint16 else "rgb24")
        if self.codec == "ffv1":
            frame = frame.reformat(format=self.encoder["pix_fmt"])
        else:
            frame = frame.reformat(format=self.encoder["pix_fmt"], dst_colorspace="itu709", dst_color_range="MPEG")
        frame.pts = self._frame_pts(index)
        frame.time_base = self.time_base
        container.mux(stream.encode(frame))

    def _frame_pts(self, index: int) -> int:
        if self._pts is not None:
            return self._pts[index]
        return round(index / (self.rate * self.time_base))

    def _finish_segment(self) -> None:
        """Flush and close the open segment, then rename it into place (finished)."""
        k, container, stream, tmp = self._segment
        container.mux(stream.encode(None))
        container.close()
        tmp.replace(self._part(k))
        self._segment, self._next = None, None
        self._finished[k] = True

    def _remove_created(self) -> None:
        """Remove the work folder if it holds nothing but its manifest (no segment, finished or being written
        by another process), and the folders this writer created if they are empty."""
        if self.parts.is_dir() and {p.name for p in self.parts.iterdir()} <= {"manifest.json"}:
            shutil.rmtree(self.parts, ignore_errors=True)
        remove_created(self._created)

    # -- final remux ----------------------------------------------------------------------

    def _mux_output(self, segments: list[Path], tmp: Path) -> None:
        with ExitStack() as stack:
            out = stack.enter_context(av.open(str(tmp), "w", format=_CONTAINER_FORMATS[self.path.suffix.lower()]))
            with av.open(str(segments[0])) as first:
                video = out.add_stream_from_template(first.streams.video[0])
            video.time_base = self.time_base
            if self.display_matrix is not None:
                video.set_display_matrix(self.display_matrix)
            streams = [self._segment_packets(segments, video)]
            if self._audio_mode is not None:
                source = stack.enter_context(av.open(str(self.audio_source)))
                streams.append(_audio_packets(source, out, self._audio_mode, self._start))
            for packet in heapq.merge(*streams, key=lambda p: p.dts * p.time_base):  # interleave by time
                out.mux(packet)

    def _segment_packets(self, segments: list[Path], stream: av.VideoStream) -> Iterator[av.Packet]:
        """The segments' packets with the output's timestamps, retargeted to ``stream``.

        A packet's pts is the target time of its frame (its rank in presentation order within the segment).
        dts are renumbered over the whole video: the j-th packet in decode order gets the (j - d)-th smallest
        pts, with d the largest reorder depth (B-frames); the first d step back from the first pts by a frame each
        (mp4 takes each sample's duration from the dts steps).
        Per-segment dts would leave a gap at each join that the muxer turns into one long frame.
        """
        targets = [self._frame_pts(i) for i in range(self.num_frames)]
        last = targets[-1] - targets[-2] if len(targets) > 1 else max(1, round(1 / (self.rate * self.time_base)))
        durations = [b - a for a, b in zip(targets, targets[1:])] + [last]
        order = []  # (segment, presentation rank within it) per packet in decode order
        for k, path in enumerate(segments):
            with av.open(str(path)) as container:
                source = container.streams.video[0]
                pts = [p.pts for p in container.demux(source) if p.size]
            ranks = {i: r for r, i in enumerate(sorted(range(len(pts)), key=lambda i: pts[i]))}
            order += [(k, ranks[i]) for i in range(len(pts))]
        frame_of = [self.segments[k][0] + r for k, r in order]
        delay = max(0, max(j - i for j, i in enumerate(frame_of)))
        for j, packet in enumerate(_packets_of(segments)):
            packet.stream = stream  # (resets the packet's time base: set the timestamps after it)
            packet.time_base = self.time_base
            packet.pts, packet.duration = targets[frame_of[j]], durations[frame_of[j]]
            packet.dts = targets[j - delay] if j >= delay else targets[0] - (delay - j) * durations[0]
            yield packet


def _packets_of(segments: list[Path]) -> Iterator[av.Packet]:
    for path in segments:
        with av.open(str(path)) as container:
            source = container.streams.video[0]
            for packet in container.demux(source):
                if packet.size:
                    yield packet


def _fixed_segments(num_frames: int | None, segment_frames: int) -> list[tuple[int, int]]:
    """Segments of ``segment_frames`` frames (none yet when the count is unknown: they are added as written)."""
    if num_frames is None:
        return []
    return [(a, min(a + segment_frames, num_frames)) for a in range(0, num_frames, segment_frames)]


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
                   mode: Literal["copy", "aac"], start: Fraction | None = None) -> Iterator[av.Packet]:
    """Add the audio stream to ``out``; return its packets shifted by ``start`` (the source time of the video's
    first frame, default the video stream's start time), so that the output's time 0 is that frame."""
    start = _first_video_time(source) if start is None else start
    audio = source.streams.audio[0]
    if mode == "copy":
        target = out.add_stream_from_template(audio)
        return _shifted(source.demux(audio), target, round(start / audio.time_base))
    rate = audio.codec_context.sample_rate
    target = out.add_stream("aac", rate=rate, layout=audio.codec_context.layout)
    return _reencoded(source.decode(audio), target, start, rate)


def _first_video_time(source: av.container.InputContainer) -> Fraction:
    """Presentation time of the source's first video frame (what the output's time 0 is)."""
    if not source.streams.video:
        return Fraction(0)
    video = source.streams.video[0]
    if video.start_time is not None:
        return video.start_time * video.time_base
    return Fraction(0)


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
