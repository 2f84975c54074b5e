"""RealBasicVSR-style clip degradation and USM sharpening (docs/training.md §2).

The low-quality clip is made from the ground-truth clip by two stages of
``blur -> resize -> noise -> JPEG -> video codec`` followed by a final resize (to the
LR size) and an optional sinc filter. Every random choice of an op is drawn **once per
clip**; the continuous parameters then take a random walk from frame to frame
(``value += U(-step, step)``, clipped to the op's range), so the degradation drifts
slowly along the clip as in RealBasicVSR.

Numeric types follow the authors' pipeline (docs/training.md §2): frames stay ``uint8``
through the stage-1 blur and resize (OpenCV rounds and saturates), become ``float32``
after noise (values may leave [0, 255]), are saturated to ``uint8`` by the JPEG encoder
and by the codec, and the codec hands back ``float32``. From there on every op works in
``float32`` without rounding (stage-2 blur and resize, the final resize, the sinc
filter); the clip is only clipped to [0, 255] at the end. ``quantize=True`` (the
default of the call, for PNG test sets) then rounds to ``uint8``; training uses the
unrounded ``float32`` as the authors do.

Randomness comes only from the ``numpy.random.Generator`` passed to the call, so the
same seed gives identical bytes. basicsr's kernel builders
(``bivariate_Gaussian``, ``bivariate_generalized_Gaussian``, ``bivariate_plateau``,
``circular_lowpass_kernel``) make the kernels; the noise is drawn here because
basicsr's noise helpers use numpy's global RNG, which would break per-clip seeding.

As the authors' code (defaults; the ``fixed`` values are options):

* generalised-Gaussian and plateau kernels use a shape β drawn uniformly between 1 and
  the walked β, afresh for every frame (``blur.beta_variant: authors``; ``fixed`` uses
  the walked β itself);
* the codec is fed BGR arrays declared as ``rgb24``, so its RGB->YUV conversion uses
  swapped channel weights (``codec.color_order: authors``; ``fixed`` feeds RGB);
* random-resize sizes are ``int(h * scale)`` floored to even;
* the resize random walk is clipped to the stage's whole scale range
  (``scale_down[0]`` .. ``scale_up[1]``), for every mode including ``keep`` (our reading of
  the authors' "clipped to their ranges"; not checked against their code line by line).

Differences from the authors' code, on purpose:

* Frames are RGB (the authors' are BGR); JPEG sees correctly ordered colours (the same
  bytes as theirs), and the gray Poisson noise keeps the authors' swapped channel weights
  (``COLOR_BGR2GRAY`` applied to RGB data, which is what their code computes).
* If an encoder is missing from the PyAV build it is dropped with a warning and the
  remaining codecs share its probability (``libx264``, ``h264`` and ``mpeg4`` are all
  present in the PyAV wheels from PyPI).

Shapes: frames are ``t h w 3`` uint8 RGB (an array or a list of ``h w 3`` arrays);
the output is ``t h/scale w/scale 3`` RGB, uint8 (``quantize=True``) or float32 in [0, 255].
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

import av
import cv2
import numpy as np

from mgld._compat import import_basicsr

logger = logging.getLogger(__name__)
_kernels = import_basicsr("basicsr.data.degradations")

KERNEL_TYPES = (
    "iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso", "sinc"
)
INTERPOLATIONS = {"bilinear": cv2.INTER_LINEAR, "area": cv2.INTER_AREA, "bicubic": cv2.INTER_CUBIC}
_ODD_SIZES = tuple(range(7, 22, 2))
_THIRD = (1 / 3, 1 / 3, 1 / 3)


# --------------------------------------------------------------------------------------------------
# Configuration (docs/training.md §2 table; defaults are the authors' stage-1 values)
# --------------------------------------------------------------------------------------------------


@dataclass
class BlurConfig:
    """Blur with one kernel per frame (kernel family and size fixed per clip)."""

    prob: float = 1.0  # probability that the clip is blurred at all
    kernel_sizes: tuple[int, ...] = _ODD_SIZES  # odd sizes, one drawn uniformly per clip
    kernel_types: tuple[str, ...] = KERNEL_TYPES  # names from KERNEL_TYPES
    kernel_probs: tuple[float, ...] = (0.405, 0.225, 0.108, 0.027, 0.108, 0.027, 0.1)
    sigma: tuple[float, float] = (0.2, 3.0)  # Gaussian std along x and y, pixels
    rotation: tuple[float, float] = (-math.pi, math.pi)  # anisotropic kernel angle, radians
    beta_gaussian: tuple[float, float] = (0.5, 4.0)  # shape of the generalized Gaussian
    beta_plateau: tuple[float, float] = (1.0, 2.0)  # shape of the plateau kernel
    omega_small: tuple[float, float] = (math.pi / 3, math.pi)  # sinc cutoff when size < 13
    omega_large: tuple[float, float] = (math.pi / 5, math.pi)  # sinc cutoff when size >= 13
    sigma_step: float = 0.02  # per-frame random-walk steps
    rotation_step: float = 0.31416
    beta_gaussian_step: float = 0.05
    beta_plateau_step: float = 0.1
    omega_step: float = 0.0628
    # authors: the kernel's shape beta is drawn uniformly between 1 and the walked beta, afresh per frame (their
    # kernel code gets the degenerate range [beta, beta]); fixed: the walked beta itself
    beta_variant: Literal["authors", "fixed"] = "authors"


@dataclass
class ResizeConfig:
    """Rescale by a factor drawn per clip (up / down / keep), random-walked per frame."""

    prob: float = 1.0
    mode_probs: tuple[float, float, float] = (0.2, 0.7, 0.1)  # up, down, keep
    scale_up: tuple[float, float] = (1.0, 1.5)
    scale_down: tuple[float, float] = (0.15, 1.0)
    interpolations: tuple[str, ...] = ("bilinear", "area", "bicubic")  # keys of INTERPOLATIONS
    interpolation_probs: tuple[float, ...] = _THIRD
    scale_step: float = 0.015
    even_size: bool = True  # floor output sizes to even numbers (the codec needs them)


@dataclass
class NoiseConfig:
    """Additive Gaussian or Poisson noise on the 0-255 scale."""

    prob: float = 1.0
    type_probs: tuple[float, float] = (0.5, 0.5)  # gaussian, poisson
    gaussian_sigma: tuple[float, float] = (1.0, 30.0)  # std in 8-bit levels
    gaussian_sigma_step: float = 0.1
    gaussian_gray_prob: float = 0.4  # one noise channel shared by R, G, B
    poisson_scale: tuple[float, float] = (0.05, 3.0)
    poisson_scale_step: float = 0.005
    poisson_gray_prob: float = 0.4
    # The authors apply Poisson noise to 0-255 data, which makes it weak (std = scale *
    # sqrt(I / v) levels, v <= 256). True applies it to [0, 1] data as Real-ESRGAN does.
    poisson_on_unit_range: bool = False


@dataclass
class JPEGConfig:
    """OpenCV JPEG round trip; float input is saturated to uint8 first."""

    prob: float = 1.0
    quality: tuple[float, float] = (30.0, 95.0)
    quality_step: float = 3.0


@dataclass
class CodecConfig:
    """Real video-codec round trip of the whole clip through PyAV (mp4, yuv420p, 1 fps)."""

    prob: float = 1.0
    codecs: tuple[str, ...] = ("libx264", "h264", "mpeg4")  # PyAV encoder names
    codec_probs: tuple[float, ...] = _THIRD
    bitrate: tuple[int, int] = (10_000, 100_000)  # bits/s, integer drawn uniformly (inclusive)
    # Extra libx264 options. libx264's SIMD mb-tree code makes the stream vary from run to run
    # (seen with PyAV 18 / x264 here: 2-3 distinct outputs in 12 runs at sizes such as 40x40 or
    # 72x100); "asm=0" makes it bit-exact at ~2-4x the x264 encode time. The stream then differs
    # slightly from the SIMD one (same algorithm, other float rounding). "" = x264 defaults.
    x264_params: str = "asm=0"
    # authors: the BGR arrays are declared rgb24 (the encoder's RGB->YUV weights land on swapped channels);
    # fixed: RGB frames as rgb24
    color_order: Literal["authors", "fixed"] = "authors"


@dataclass
class StageConfig:
    """One degradation stage: blur -> resize -> noise -> JPEG -> codec, in that order."""

    blur: BlurConfig = field(default_factory=BlurConfig)
    resize: ResizeConfig = field(default_factory=ResizeConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    jpeg: JPEGConfig = field(default_factory=JPEGConfig)
    codec: CodecConfig = field(default_factory=CodecConfig)


def _stage2() -> StageConfig:
    return StageConfig(
        blur=BlurConfig(prob=0.8, sigma=(0.2, 1.5)),
        resize=ResizeConfig(mode_probs=(0.3, 0.4, 0.3), scale_up=(1.0, 1.2), scale_down=(0.3, 1.0),
                            scale_step=0.03),
        noise=NoiseConfig(gaussian_sigma=(1.0, 25.0), poisson_scale=(0.05, 2.5)),
    )


@dataclass
class FinalConfig:
    """Final resize to the LR size, then an optional sinc filter (ringing/overshoot)."""

    size: tuple[int, int] | None = None  # (h, w); None -> input size // scale (128 for 512 crops)
    scale: int = 4
    interpolations: tuple[str, ...] = ("bilinear", "area", "bicubic")
    interpolation_probs: tuple[float, ...] = _THIRD
    sinc_prob: float = 0.8
    sinc_kernel_sizes: tuple[int, ...] = _ODD_SIZES
    sinc_omega: tuple[float, float] = (math.pi / 3, math.pi)
    sinc_omega_step: float = 0.0628


@dataclass
class DegradationConfig:
    """The whole RealBasicVSR degradation; defaults reproduce docs/training.md §2."""

    stage1: StageConfig = field(default_factory=StageConfig)
    stage2: StageConfig = field(default_factory=_stage2)
    final: FinalConfig = field(default_factory=FinalConfig)


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


def random_walk(rng: np.random.Generator, start: float, step: float, bounds: Sequence[float],
                n: int) -> list[float]:
    """``n`` values starting at ``start``; each next = previous + U(-step, step), clipped to bounds."""
    values = [float(start)]
    for _ in range(n - 1):
        nxt = values[-1] + (rng.uniform(-step, step) if step > 0 else 0.0)
        values.append(float(np.clip(nxt, bounds[0], bounds[1])))
    return values


def _choice(rng: np.random.Generator, options: Sequence, probs: Sequence[float]):
    probs = np.asarray(probs, dtype=np.float64)
    return options[int(rng.choice(len(options), p=probs / probs.sum()))]


def _to_uint8(frame: np.ndarray) -> np.ndarray:
    """Saturate like OpenCV: round half to even, clip to [0, 255]."""
    if frame.dtype == np.uint8:
        return frame
    return np.clip(np.rint(frame), 0, 255).astype(np.uint8)


def make_kernel(kind: str, size: int, sigma_x: float, sigma_y: float, rotation: float,
                beta: float, omega: float) -> np.ndarray:
    """One normalised ``size x size`` float kernel of family ``kind`` (see KERNEL_TYPES)."""
    iso = kind.endswith("iso") and not kind.endswith("aniso")
    if kind == "sinc":
        return _kernels.circular_lowpass_kernel(omega, size)
    if kind in ("iso", "aniso"):
        return _kernels.bivariate_Gaussian(size, sigma_x, sigma_y, rotation, isotropic=iso)
    if kind.startswith("generalized"):
        return _kernels.bivariate_generalized_Gaussian(size, sigma_x, sigma_y, rotation, beta, isotropic=iso)
    if kind.startswith("plateau"):
        return _kernels.bivariate_plateau(size, sigma_x, sigma_y, rotation, beta, isotropic=iso)
    raise ValueError(f"unknown kernel type {kind!r}; expected one of {KERNEL_TYPES}")


# --------------------------------------------------------------------------------------------------
# Ops: each takes a list of frames, the RNG and its config, and returns (frames, params)
# --------------------------------------------------------------------------------------------------


def _shape_beta(rng: np.random.Generator, walked: float) -> float:
    """The authors' per-frame shape: uniform between 1 and ``walked`` (their kernel code, handed the degenerate
    range [walked, walked], draws U(walked, 1) or U(1, walked) on a coin: the same distribution)."""
    lo, hi = sorted((1.0, float(walked)))
    return float(rng.uniform(lo, hi))


def apply_blur(frames: list[np.ndarray], rng: np.random.Generator, cfg: BlurConfig):
    """Filter frame i with kernel i (OpenCV reflect-101 borders). Keeps the dtype: uint8 is rounded and saturated
    by OpenCV, float32 is not."""
    n = len(frames)
    kind = _choice(rng, cfg.kernel_types, cfg.kernel_probs)
    size = int(rng.choice(cfg.kernel_sizes))
    omega_range = cfg.omega_small if size < 13 else cfg.omega_large
    beta_range, beta_step = ((cfg.beta_plateau, cfg.beta_plateau_step) if kind.startswith("plateau")
                             else (cfg.beta_gaussian, cfg.beta_gaussian_step))
    sx = random_walk(rng, rng.uniform(*cfg.sigma), cfg.sigma_step, cfg.sigma, n)
    sy = random_walk(rng, rng.uniform(*cfg.sigma), cfg.sigma_step, cfg.sigma, n)
    rot = random_walk(rng, rng.uniform(*cfg.rotation), cfg.rotation_step, cfg.rotation, n)
    walked = random_walk(rng, rng.uniform(*beta_range), beta_step, beta_range, n)
    omega = random_walk(rng, rng.uniform(*omega_range), cfg.omega_step, omega_range, n)
    shaped = kind.startswith(("generalized", "plateau"))
    if cfg.beta_variant not in ("authors", "fixed"):
        raise ValueError(f"blur.beta_variant must be 'authors' or 'fixed', got {cfg.beta_variant!r}")
    beta = [_shape_beta(rng, b) for b in walked] if shaped and cfg.beta_variant == "authors" else walked
    out = [cv2.filter2D(f, -1, make_kernel(kind, size, sx[i], sy[i], rot[i], beta[i], omega[i]))
           for i, f in enumerate(frames)]
    params = {"kernel_type": kind, "kernel_size": size}
    if kind == "sinc":
        params["omega"] = omega
    else:
        params["sigma_x"] = sx
        if "aniso" in kind:
            params.update(sigma_y=sy, rotation=rot)
        if shaped:
            params["beta"] = beta
            if cfg.beta_variant == "authors":
                params["beta_walk"] = walked
    return out, params


def _scaled_size(h: int, w: int, scale: float, even: bool) -> tuple[int, int]:
    """``int(side * scale)``, floored to even with ``even`` (the authors' sizes)."""
    nh, nw = max(1, int(h * scale)), max(1, int(w * scale))
    if even:
        nh, nw = max(2, nh - nh % 2), max(2, nw - nw % 2)
    return nh, nw


def apply_resize(frames: list[np.ndarray], rng: np.random.Generator, cfg: ResizeConfig):
    """Resize frame i by scale i (relative to its own size). Keeps the dtype (uint8 rounded by OpenCV)."""
    mode = _choice(rng, ("up", "down", "keep"), cfg.mode_probs)
    start = {"up": lambda: rng.uniform(*cfg.scale_up), "down": lambda: rng.uniform(*cfg.scale_down),
             "keep": lambda: 1.0}[mode]()
    interp = _choice(rng, cfg.interpolations, cfg.interpolation_probs)
    scales = random_walk(rng, start, cfg.scale_step, (cfg.scale_down[0], cfg.scale_up[1]), len(frames))
    out, sizes = [], []
    for f, s in zip(frames, scales):
        nh, nw = _scaled_size(f.shape[0], f.shape[1], s, cfg.even_size)
        out.append(cv2.resize(f, (nw, nh), interpolation=INTERPOLATIONS[interp]))
        sizes.append([nh, nw])
    return out, {"mode": mode, "interpolation": interp, "scale": scales, "size_hw": sizes}


def _gaussian_noise(frame, rng, sigma, gray):
    channels = 1 if gray else frame.shape[2]
    return frame + rng.standard_normal((*frame.shape[:2], channels)).astype(np.float32) * np.float32(sigma)


def _poisson_noise(frame, rng, scale, gray, unit):
    # unit = 1 works on 0-255 values as the authors do; unit = 255 works on [0, 1] values.
    base = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)[..., None] if gray else frame  # authors' weights
    base = np.clip(np.round(base), 0, 255) / unit
    levels = 2 ** np.ceil(np.log2(len(np.unique(base))))
    noise = (rng.poisson(base * levels) / levels - base) * unit
    return frame + (noise * scale).astype(np.float32)


def apply_noise(frames: list[np.ndarray], rng: np.random.Generator, cfg: NoiseConfig):
    """Add Gaussian or Poisson noise (type and gray flag per clip); returns float32 frames."""
    n = len(frames)
    kind = _choice(rng, ("gaussian", "poisson"), cfg.type_probs)
    frames = [f.astype(np.float32) for f in frames]
    if kind == "gaussian":
        gray = bool(rng.random() < cfg.gaussian_gray_prob)
        level = random_walk(rng, rng.uniform(*cfg.gaussian_sigma), cfg.gaussian_sigma_step,
                            cfg.gaussian_sigma, n)
        out = [_gaussian_noise(f, rng, s, gray) for f, s in zip(frames, level)]
        return out, {"type": kind, "gray": gray, "sigma": level}
    gray = bool(rng.random() < cfg.poisson_gray_prob)
    level = random_walk(rng, rng.uniform(*cfg.poisson_scale), cfg.poisson_scale_step, cfg.poisson_scale, n)
    unit = 255.0 if cfg.poisson_on_unit_range else 1.0
    out = [_poisson_noise(f, rng, s, gray, unit) for f, s in zip(frames, level)]
    return out, {"type": kind, "gray": gray, "scale": level}


def jpeg_round_trip(frame: np.ndarray, quality: int) -> np.ndarray:
    """Encode ``h w 3`` RGB (saturated to uint8) as JPEG at ``quality`` with OpenCV and decode it."""
    ok, buf = cv2.imencode(".jpg", _to_uint8(frame)[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError(f"OpenCV failed to JPEG-encode a frame of shape {frame.shape}")
    return np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1])


def apply_jpeg(frames: list[np.ndarray], rng: np.random.Generator, cfg: JPEGConfig):
    """JPEG each frame at its random-walked quality (rounded to an integer)."""
    walk = random_walk(rng, rng.uniform(*cfg.quality), cfg.quality_step, cfg.quality, len(frames))
    qualities = [int(round(q)) for q in walk]
    return [jpeg_round_trip(f, q) for f, q in zip(frames, qualities)], {"quality": qualities}


def available_codecs(codecs: Sequence[str]) -> list[str]:
    """The subset of ``codecs`` that this PyAV build can encode."""
    found = []
    for name in codecs:
        try:
            av.codec.Codec(name, "w")
            found.append(name)
        except Exception:  # PyAV raises UnknownCodecError (a ValueError) or FFmpeg errors
            logger.warning("video codec %r has no encoder in this PyAV build; dropped from the choice", name)
    return found


def codec_round_trip(frames: Sequence[np.ndarray], codec: str, bitrate: int,
                     x264_params: str = "asm=0",
                     color_order: Literal["authors", "fixed"] = "fixed") -> tuple[list[np.ndarray], str]:
    """Encode ``t h w 3`` RGB frames (saturated to uint8) into an in-memory mp4 with ``codec`` and decode them.

    Every frame is rescaled (swscale bilinear) to the first frame's size, rounded down to even
    numbers because yuv420p needs them. ``x264_params`` goes to libx264 only (see
    ``CodecConfig.x264_params``). ``color_order="authors"`` hands the encoder the channels reversed
    (the authors' BGR arrays declared ``rgb24``) and reverses the decoded frames back.
    Returns the decoded frames (uint8 RGB) and the encoder's name.
    """
    if color_order not in ("authors", "fixed"):
        raise ValueError(f"codec.color_order must be 'authors' or 'fixed', got {color_order!r}")
    swap = color_order == "authors"
    h, w = (frames[0].shape[0] // 2) * 2, (frames[0].shape[1] // 2) * 2
    encoder = av.codec.Codec(codec, "w").name
    options = {"x264-params": x264_params} if encoder == "libx264" and x264_params else {}
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as container:
        stream = container.add_stream(codec, rate=1, options=options)
        stream.width, stream.height, stream.pix_fmt, stream.bit_rate = w, h, "yuv420p", int(bitrate)
        stream.codec_context.thread_count = 1
        for f in frames:
            f = _to_uint8(f)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(f[..., ::-1] if swap else f), format="rgb24")
            frame = frame.reformat(width=w, height=h, format="yuv420p", interpolation="BILINEAR")
            frame.pict_type = av.video.frame.PictureType.NONE
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    buf.seek(0)
    with av.open(buf, "r", format="mp4") as container:
        out = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    if swap:
        out = [np.ascontiguousarray(f[..., ::-1]) for f in out]
    if len(out) != len(frames):
        raise RuntimeError(f"codec {codec!r} returned {len(out)} frames for {len(frames)}")
    return out, encoder


def apply_codec(frames: list[np.ndarray], rng: np.random.Generator, cfg: CodecConfig):
    """Round-trip the clip through a randomly chosen codec at a random bitrate; float32 out (as the authors')."""
    names = available_codecs(cfg.codecs)
    if not names:
        raise RuntimeError(f"none of the video codecs {cfg.codecs} can encode in this PyAV build")
    probs = [p for c, p in zip(cfg.codecs, cfg.codec_probs) if c in names]
    codec = _choice(rng, names, probs)
    bitrate = int(rng.integers(cfg.bitrate[0], cfg.bitrate[1], endpoint=True))
    out, encoder = codec_round_trip(frames, codec, bitrate, cfg.x264_params, cfg.color_order)
    return [f.astype(np.float32) for f in out], {"codec": codec, "encoder": encoder, "bitrate": bitrate}


def apply_final(frames: list[np.ndarray], rng: np.random.Generator, cfg: FinalConfig,
                size: tuple[int, int]):
    """Resize every frame to ``size`` (h, w); then, with ``sinc_prob``, a random-walked sinc filter.
    Keeps the dtype (float32 after the codec: unrounded)."""
    interp = _choice(rng, cfg.interpolations, cfg.interpolation_probs)
    out = [cv2.resize(f, (size[1], size[0]), interpolation=INTERPOLATIONS[interp]) for f in frames]
    params: dict = {"interpolation": interp, "size_hw": list(size), "sinc": None}
    if rng.random() < cfg.sinc_prob:
        ksize = int(rng.choice(cfg.sinc_kernel_sizes))
        omega = random_walk(rng, rng.uniform(*cfg.sinc_omega), cfg.sinc_omega_step, cfg.sinc_omega, len(out))
        out = [cv2.filter2D(f, -1, _kernels.circular_lowpass_kernel(o, ksize)) for f, o in zip(out, omega)]
        params["sinc"] = {"kernel_size": ksize, "omega": omega}
    return out, params


_STAGE_OPS = (("blur", apply_blur), ("resize", apply_resize), ("noise", apply_noise),
              ("jpeg", apply_jpeg), ("codec", apply_codec))


# --------------------------------------------------------------------------------------------------
# The callable
# --------------------------------------------------------------------------------------------------


class RealBasicVSRDegradation:
    """Callable RealBasicVSR degradation: ``degrade(frames, rng) -> lq`` (docs/training.md §2).

    Args:
        config: ranges and probabilities; ``None`` uses the authors' values (docs/training.md §2).

    Call:
        frames: ``t h w 3`` uint8 RGB (array or list of ``h w 3``); ``h, w`` multiples of
            ``config.final.scale`` unless ``config.final.size`` is set.
        rng: the only source of randomness (``np.random.default_rng(seed)``).
        return_params: also return the sampled parameters as a JSON-ready dict.
        quantize: round the result to uint8 (test sets written as PNG); False returns the
            authors' training LQ, float32 in [0, 255], clipped but not rounded.

    Returns:
        ``t h' w' 3`` RGB, uint8 or float32 (``quantize``),
        ``(h', w') = final.size or (h // scale, w // scale)`` (and the parameters dict when asked).
    """

    def __init__(self, config: DegradationConfig | None = None):
        self.config = config or DegradationConfig()
        for stage in (self.config.stage1, self.config.stage2):
            if not available_codecs(stage.codec.codecs):
                raise RuntimeError(f"none of the video codecs {stage.codec.codecs} can encode here")

    def output_size(self, h: int, w: int) -> tuple[int, int]:
        cfg = self.config.final
        if cfg.size is not None:
            return int(cfg.size[0]), int(cfg.size[1])
        if h % cfg.scale or w % cfg.scale:
            raise ValueError(f"frame size {h}x{w} is not a multiple of the scale {cfg.scale}")
        return h // cfg.scale, w // cfg.scale

    def __call__(self, frames, rng: np.random.Generator, *, return_params: bool = False, quantize: bool = True):
        clip = _as_frame_list(frames)
        size = self.output_size(*clip[0].shape[:2])
        params: dict = {}
        for stage_name, stage in (("stage1", self.config.stage1), ("stage2", self.config.stage2)):
            params[stage_name] = {}
            for op_name, op in _STAGE_OPS:
                op_cfg = getattr(stage, op_name)
                if rng.random() < op_cfg.prob:
                    clip, params[stage_name][op_name] = op(clip, rng, op_cfg)
                else:
                    params[stage_name][op_name] = None
        clip, params["final"] = apply_final(clip, rng, self.config.final, size)
        lq = np.clip(np.stack(clip).astype(np.float32), 0, 255)  # the authors clip once, at the end
        if quantize:
            lq = _to_uint8(lq)
        return (lq, params) if return_params else lq

    def config_dict(self) -> dict:
        """The configuration as plain Python data (for manifests)."""
        return asdict(self.config)


def _as_frame_list(frames) -> list[np.ndarray]:
    clip = list(frames)
    if not clip:
        raise ValueError("the clip has no frames")
    for i, f in enumerate(clip):
        if f.dtype != np.uint8 or f.ndim != 3 or f.shape[2] != 3:
            raise ValueError(f"frame {i}: expected h w 3 uint8 RGB, got {f.dtype} {f.shape}")
        if f.shape != clip[0].shape:
            raise ValueError(f"frame {i} has shape {f.shape}, frame 0 has {clip[0].shape}")
    return clip


@dataclass
class USMConfig:
    """Unsharp masking of the GT (docs/training.md §2); arguments of :func:`usm_sharpen`."""

    enabled: bool = True
    weight: float = 0.5
    radius: int = 51
    threshold: float = 10.0


def usm_sharpen(frames: np.ndarray, weight: float = 0.5, radius: int = 51, threshold: float = 10) -> np.ndarray:
    """Unsharp-mask the GT (docs/training.md §2: kernel 51, sigma from OpenCV, weight 0.5, threshold 10).

    Uses basicsr's ``usm_sharp``. ``frames``: ``... h w 3`` uint8 RGB (one frame or ``t h w 3``).
    Returns float32 in [0, 1] with the same shape (not re-quantised, so training keeps precision).
    """
    sharp = import_basicsr("basicsr.utils.img_process_util").usm_sharp
    arr = np.asarray(frames)
    if arr.dtype != np.uint8 or arr.shape[-1] != 3:
        raise ValueError(f"usm_sharpen expects ... h w 3 uint8, got {arr.dtype} {arr.shape}")
    flat = arr.reshape(-1, *arr.shape[-3:]).astype(np.float32) / 255.0
    out = np.stack([sharp(f, weight=weight, radius=radius, threshold=threshold) for f in flat])
    return out.reshape(arr.shape).astype(np.float32)
