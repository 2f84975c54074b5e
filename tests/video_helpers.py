"""Synthetic frames, frame folders and videos for the I/O and inference tests (test_video_io, test_infer,
test_resume, test_multiprocess)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

H, W = 24, 40


def smooth_frame(i: int, h: int = H, w: int = W) -> np.ndarray:
    """A smooth RGB uint8 frame that changes with ``i`` (codecs keep it well)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    r = 128 + 90 * np.sin(x / w * np.pi + 0.3 * i)
    g = 128 + 90 * np.cos(y / h * np.pi - 0.2 * i)
    b = np.full_like(x, 40 + 9 * i)
    return np.clip(np.stack([r, g, b], -1), 0, 255).astype(np.uint8)


def save_frames(folder: Path, names: list[str], h: int = H, w: int = W) -> list[np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    frames = [smooth_frame(i, h, w) for i in range(len(names))]
    for name, frame in zip(names, frames):
        Image.fromarray(frame).save(folder / name)
    return frames


def make_video(path: Path, n: int, audio: str | None = None, rate=Fraction(25)) -> list[np.ndarray]:
    """An H.264 video of ``smooth_frame(0..n-1)``, optionally with a 440 Hz sine audio track."""
    frames = [smooth_frame(i) for i in range(n)]
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=rate, options={"crf": "12"})
        video.width, video.height, video.pix_fmt = W, H, "yuv420p"
        stream = container.add_stream(audio, rate=48000, layout="mono") if audio else None
        for i, frame in enumerate(frames):
            out = av.VideoFrame.from_ndarray(frame, format="rgb24")
            out.pts = i
            container.mux(video.encode(out))
        container.mux(video.encode(None))
        if stream is not None:
            write_sine(container, stream, seconds=float(n / rate))
    return frames


def write_sine(container, stream, seconds: float) -> None:
    rate, size = stream.codec_context.sample_rate, 1024
    samples = 0.3 * np.sin(2 * np.pi * 440 * np.arange(int(rate * seconds)) / rate)
    for start in range(0, len(samples), size):
        chunk = samples[start:start + size]
        if stream.codec_context.format.name == "s16":
            frame = av.AudioFrame.from_ndarray((chunk * 32767).astype(np.int16)[None], format="s16", layout="mono")
        else:
            frame = av.AudioFrame.from_ndarray(chunk.astype(np.float32)[None], format="fltp", layout="mono")
        frame.sample_rate, frame.pts = rate, start
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))


def read_video(path: Path) -> tuple[list[np.ndarray], av.VideoStream, list[str]]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        return frames, stream, [s.type for s in container.streams]


def write_clip(path: Path, pts: list[int], time_base=Fraction(1, 1000), rotation=None, fmt_options=None,
               audio_seconds: float = 0):
    """An H.264 clip of smooth frames at the given presentation times (ms; variable frame rates), optionally
    rotated, with an AAC sine track of ``audio_seconds``."""
    with av.open(str(path), "w", options=fmt_options or {}) as container:
        stream = container.add_stream("libx264", rate=25, options={"crf": "12"})
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.time_base = stream.codec_context.time_base = time_base
        if rotation is not None:
            stream.set_display_rotation(rotation)
        audio = container.add_stream("aac", rate=48000, layout="mono") if audio_seconds else None
        for i, t in enumerate(pts):
            frame = av.VideoFrame.from_ndarray(smooth_frame(i), format="rgb24")
            frame.pts, frame.time_base = t, time_base
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
        if audio is not None:
            write_sine(container, audio, audio_seconds)
