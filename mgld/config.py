"""Typed configuration: dataclass schemas, YAML files and ``key=value`` overrides.

``load_config(path, overrides)`` merges, in order: the schema defaults, the YAML files listed under
``_base_`` in the file (paths relative to it, merged first to last), the file itself, then the
dotlist overrides (``model.unet.model_channels=64``). OmegaConf validates every key and type against
the schema, so a typo fails with ``Key 'num_frame' not in 'ModelConfig'. Did you mean: 'num_frames'?``.
"""

from __future__ import annotations

import math
import re
import typing
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

T = TypeVar("T")


@dataclass
class UNetConfig:
    """Stage-1 UNet: SD 2.1-base's UNet (LDM-style description) + SFT + middle-block temporal layers."""

    in_channels: int = 4
    out_channels: int = 4
    model_channels: int = 320
    channel_mult: list[int] = field(default_factory=lambda: [1, 2, 4, 4])
    num_res_blocks: int = 2
    attention_resolutions: list[int] = field(default_factory=lambda: [4, 2, 1])
    num_head_channels: int = 64
    num_heads: int = -1
    context_dim: int = 1024
    transformer_depth: int = 1
    use_linear_projection: bool = True
    upcast_attention: bool = False
    cond_channels: int = 256
    sft_hidden: int = 128
    temporal_head_channels: int = 64
    temporal_alpha_init: float = 0.0


@dataclass
class CondEncoderConfig:
    """Time-aware condition encoder (docs/algorithm.md §2.2)."""

    in_channels: int = 4
    model_channels: int = 256
    out_channels: int = 256
    channel_mult: list[int] = field(default_factory=lambda: [1, 1, 2, 2])
    num_res_blocks: int = 2
    attention_resolutions: list[int] = field(default_factory=lambda: [4, 2, 1])
    num_heads: int = 4
    num_head_channels: int = -1
    dropout: float = 0.0


@dataclass
class VAEConfig:
    """Temporal VAE: SD KL-VAE + decoder temporal convs + CFW (docs/algorithm.md §2.3)."""

    in_channels: int = 3
    out_channels: int = 3
    latent_channels: int = 4
    ch: int = 128
    ch_mult: list[int] = field(default_factory=lambda: [1, 2, 4, 4])
    num_res_blocks: int = 2
    num_fuse_blocks: int = 2
    fusion_levels: list[int] = field(default_factory=lambda: [1, 2])
    scaling_factor: float = 0.18215
    temporal_alpha_init: float = 0.0


@dataclass
class ModelConfig:
    """Everything that fixes the shapes of the networks."""

    unet: UNetConfig = field(default_factory=UNetConfig)
    cond_encoder: CondEncoderConfig = field(default_factory=CondEncoderConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    context_length: int = 77
    num_frames: int = 5

    def __post_init__(self) -> None:
        validate_model_config(self)


def validate_model_config(cfg: ModelConfig) -> None:
    """Cross-field checks that the schema types cannot express."""
    unet, enc = cfg.unet, cfg.cond_encoder
    if enc.out_channels != unet.cond_channels:
        raise ValueError(
            f"cond_encoder.out_channels ({enc.out_channels}) must equal unet.cond_channels ({unet.cond_channels})"
        )
    if len(enc.channel_mult) != len(unet.channel_mult):
        raise ValueError(
            "the condition encoder must have one level per UNet level: "
            f"cond_encoder.channel_mult={list(enc.channel_mult)} vs unet.channel_mult={list(unet.channel_mult)}"
        )
    mid = unet.model_channels * unet.channel_mult[-1]
    if mid % unet.temporal_head_channels != 0:
        raise ValueError(f"unet.temporal_head_channels ({unet.temporal_head_channels}) must divide {mid}")


@dataclass
class SamplingConfig:
    """Motion-guided DDPM sampling (docs/algorithm.md §5-6)."""

    steps: int = 50
    guidance_scale: float = 10.0
    guidance_variant: Literal["authors", "fixed"] = "authors"
    pixel_tiling: Literal["authors", "frame"] = "authors"
    flow_tile_crop: Literal["authors", "fixed"] = "authors"
    latent_tile_size: int = 64
    latent_tile_overlap: int = 32
    tile_batch: Union[int, Literal["auto"]] = 1  # noqa: UP007 (OmegaConf reads typing.Union, not X | Y)
    seed: int = 42
    tile_schedule: Literal["overlap", "shifted"] = "overlap"

    def __post_init__(self) -> None:
        _check_choices(self, "sampling")
        _require(1 <= self.steps <= 1000, "sampling.steps", "must be in [1, 1000]", self.steps)
        _require(math.isfinite(self.guidance_scale) and self.guidance_scale >= 0, "sampling.guidance_scale",
                 "must be finite and >= 0 (0 disables guidance; the authors' -10 is 10 here)", self.guidance_scale)
        _require(self.latent_tile_size > 0, "sampling.latent_tile_size", "must be > 0", self.latent_tile_size)
        _require(0 <= self.latent_tile_overlap < self.latent_tile_size, "sampling.latent_tile_overlap",
                 f"must be in [0, sampling.latent_tile_size = {self.latent_tile_size})", self.latent_tile_overlap)
        _require(self.tile_batch == "auto" or (isinstance(self.tile_batch, int) and self.tile_batch >= 1),
                 "sampling.tile_batch", "must be >= 1 or auto", self.tile_batch)


@dataclass
class FlowConfig:
    """Optical flow on the LR frames and the occlusion check (docs/algorithm.md §4)."""

    method: Literal["raft", "spynet", "dis"] = "raft"
    weights: str | None = None
    raft_iters: int = 10
    raft_input_range: Literal["unit", "symmetric"] = "unit"
    occlusion_alpha: float = 0.01
    occlusion_beta: float = 0.5
    precision: Literal["autocast", "fp32"] = "autocast"
    resolution: Literal["lr", "upsampled"] = "lr"

    def __post_init__(self) -> None:
        _check_choices(self, "flow")
        _require(self.raft_iters >= 1, "flow.raft_iters", "must be >= 1", self.raft_iters)
        for key in ("occlusion_alpha", "occlusion_beta"):
            value = getattr(self, key)
            _require(math.isfinite(value) and value >= 0, f"flow.{key}", "must be finite and >= 0", value)


@dataclass
class DecodeConfig:
    """Pixel tiles (the authors' 960/750 tiles; VAE encode/decode), CFW weight, colour fix (docs/algorithm.md §5,
    §7)."""

    cfw_weight: float = 1.0
    tile_size: Union[int, Literal["auto"]] = 960  # noqa: UP007 (OmegaConf reads typing.Union, not X | Y)
    tile_stride: int = 750
    color_fix: Literal["adain", "wavelet", "none"] = "adain"

    def __post_init__(self) -> None:
        _check_choices(self, "decode")
        _require(math.isfinite(self.cfw_weight), "decode.cfw_weight", "must be finite", self.cfw_weight)
        size = 960 if self.tile_size == "auto" else self.tile_size  # auto: chosen from free memory at run time
        _require(self.tile_size == "auto" or (isinstance(size, int) and size > 0 and size % 8 == 0),
                 "decode.tile_size", "must be auto or a positive multiple of 8 (a whole number of latent pixels)",
                 self.tile_size)
        _require(0 < self.tile_stride <= size, "decode.tile_stride",
                 f"must be in [1, decode.tile_size = {size}]", self.tile_stride)


@dataclass
class ChunkConfig:
    """How a long video is cut into clips the temporal layers see together."""

    frames: int = 5
    overlap: int = 0
    anchor_strength: float = 0.5
    short_sequences: Literal["repeat", "short"] = "repeat"
    tail: Literal["repeat", "shift"] = "repeat"

    def __post_init__(self) -> None:
        _check_choices(self, "chunk")
        _require(self.frames >= 1, "chunk.frames", "must be >= 1", self.frames)
        _require(0 <= self.overlap < self.frames, "chunk.overlap", f"must be in [0, chunk.frames = {self.frames})",
                 self.overlap)
        _require(0.0 <= self.anchor_strength <= 1.0, "chunk.anchor_strength", "must be in [0, 1]",
                 self.anchor_strength)


@dataclass
class InferConfig:
    """Where the weights come from, pre-processing, and how the run uses the hardware."""

    weights: str | None = None
    unet: str | None = None
    vae: str | None = None
    random_weights: bool = False
    scale: int = 4
    min_short_side: int = 512
    upsample_mode: Literal["bicubic", "bilinear"] = "bicubic"
    padding: Literal["authors", "fixed"] = "authors"
    device: str = "auto"
    devices: int = 1
    precision: Literal["auto", "fp32", "fp16", "bf16"] = "auto"
    overwrite: bool = False
    num_nodes: int = 1
    cast_weights: Union[bool, Literal["auto"]] = "auto"  # noqa: UP007
    channels_last: bool = False
    compile: bool = False
    compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = "default"
    attention: Literal["auto", "flash", "efficient", "cudnn", "math"] = "auto"
    offload: Literal["none", "model", "sequential"] = "none"

    def __post_init__(self) -> None:
        _check_choices(self, "infer")
        _require(self.scale >= 1, "infer.scale", "must be >= 1", self.scale)
        _require(self.min_short_side >= 0, "infer.min_short_side", "must be >= 0", self.min_short_side)
        _require(re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", self.device) is not None, "infer.device",
                 "must be auto, cpu, mps, cuda or cuda:N", self.device)
        _require(self.devices >= 1, "infer.devices", "must be >= 1", self.devices)
        _require(self.num_nodes >= 1, "infer.num_nodes", "must be >= 1", self.num_nodes)
        _require(self.cast_weights in (True, False, "auto"), "infer.cast_weights", "must be true, false or auto",
                 self.cast_weights)
        if self.precision in ("fp16", "bf16") and self.device in ("cpu", "mps"):
            raise ValueError(f"infer.precision: {self.precision} needs a CUDA device, but infer.device is "
                             f"{self.device!r}; use infer.precision=fp32 (or auto)")


@dataclass
class OutputConfig:
    """How results are written (mgld/io): frames or video, bit depth, 8-bit quantisation, video encoding."""

    format: Literal["auto", "frames", "video"] = "auto"  # auto: by the output path (video extension -> video)
    quantize: Literal["truncate", "round"] = "truncate"  # truncate: the authors' (x·255).astype(uint8) after clamping
    bit_depth: int | None = 8  # 8 | 16 (16-bit PNG, 10-bit H.264, 16-bit FFV1) | null: 16 when the input is deeper
    codec: Literal["h264", "ffv1"] = "h264"  # h264 (lossy, crf) | ffv1 (lossless RGB, .mkv)
    crf: int = 18  # H.264 quality 0-51 (lower = better)
    fps: float | None = None  # frame rate of a video made from frames (needed for frames -> video)
    reproducible: bool = True  # single-threaded x264 without SIMD: the same frames give the same bytes anywhere
    segment_frames: int = 64  # frames per video segment: the unit of resume and of splitting a video over processes

    def __post_init__(self) -> None:
        _check_choices(self, "output")
        _require(self.bit_depth in (8, 16, None), "output.bit_depth", "must be 8, 16 or null (as deep as the input)",
                 self.bit_depth)
        _require(0 <= self.crf <= 51, "output.crf", "must be in [0, 51] (H.264)", self.crf)
        _require(self.segment_frames >= 1, "output.segment_frames", "must be >= 1", self.segment_frames)
        _require(self.fps is None or 0 < self.fps <= 1000, "output.fps", "must be in (0, 1000]", self.fps)


@dataclass
class Config:
    """A config file: ``model`` (networks) and the inference sections."""

    model: ModelConfig = field(default_factory=ModelConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    chunk: ChunkConfig = field(default_factory=ChunkConfig)
    infer: InferConfig = field(default_factory=InferConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def __post_init__(self) -> None:
        # checks across sections
        _require(self.decode.tile_size != "auto" or self.sampling.pixel_tiling == "frame", "decode.tile_size",
                 "auto needs sampling.pixel_tiling=frame (with authors it is the pixel tile of the whole chain, so "
                 "choosing it from memory would change the sampling); set an integer such as 960",
                 self.decode.tile_size)


INFERENCE_SECTIONS = ("sampling", "flow", "decode", "chunk", "infer")


def _require(ok: bool, key: str, rule: str, value: Any) -> None:
    """Raise ``ValueError("key: rule, got value")`` unless ``ok``."""
    if not ok:
        raise ValueError(f"{key}: {rule}, got {value!r}")


def _check_choices(section: Any, name: str) -> None:
    """Every ``Literal[...]`` field of a section dataclass holds one of its values.

    OmegaConf checks the same annotations when a config is loaded from YAML or overrides; this covers
    sections built directly (``SamplingConfig(guidance_variant=...)``, ``dataclasses.replace``)."""
    hints = typing.get_type_hints(type(section))
    for f in fields(section):
        allowed = typing.get_args(hints[f.name]) if typing.get_origin(hints[f.name]) is Literal else ()
        if allowed and getattr(section, f.name) not in allowed:
            raise ValueError(f"{name}.{f.name}: must be one of {list(allowed)}, got {getattr(section, f.name)!r}")


def read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> Any:
    """A YAML file with its ``_base_`` files merged underneath it."""
    path = path.resolve()
    if path in seen:
        raise ValueError(f"{path}: _base_ cycle through {[str(p) for p in seen]}")
    with config_source(str(path)):
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        node = OmegaConf.load(path)
    bases = node.pop("_base_", []) if isinstance(node, dict) or OmegaConf.is_dict(node) else []
    if isinstance(bases, str):
        bases = [bases]
    merged = [read_yaml(path.parent / str(b), seen + (path,)) for b in bases]
    return OmegaConf.merge(*merged, node) if merged else node


def configs_dir() -> Path:
    """The folder of the configs that ship with mgld: ``configs/`` of a source checkout, else the copy
    installed in the wheel as ``mgld.configs`` (the same files)."""
    source = Path(__file__).resolve().parents[1]
    if (source / "pyproject.toml").is_file() and (source / "configs").is_dir():
        return source / "configs"
    # installed: the wheel maps configs/ to mgld/configs/, next to this file. (Not importlib.resources: for
    # this namespace package (no __init__.py) it returns a MultiplexedPath, whose str() is not a path.)
    return Path(__file__).resolve().parent / "configs"


def packaged_configs() -> list[str]:
    """Names accepted by ``--config NAME`` (``tiny``, ``infer``, ``stage1``, ``model/mgld_sd21``, …)."""
    root = configs_dir()
    return sorted(str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.yaml"))


def resolve_config(name: str | Path) -> Path:
    """A config file from a path, or from the name of a packaged config (``tiny`` -> ``configs/tiny.yaml``).

    An existing path wins; otherwise ``name`` (with or without ``.yaml``, with or without a leading
    ``configs/``) is looked up among the packaged configs.
    """
    path = Path(name).expanduser()
    if path.is_file():
        return path
    rel = Path(*path.parts[1:]) if path.parts[:1] == ("configs",) else path
    candidate = configs_dir() / (rel if rel.suffix in (".yaml", ".yml") else rel.with_suffix(".yaml"))
    if not path.is_absolute() and candidate.is_file():
        return candidate
    with config_source(str(name)):
        raise FileNotFoundError(f"config not found: {name} (neither a file nor a packaged config; "
                                f"packaged: {', '.join(packaged_configs())})")


def load_config(path: str | Path | None = None, overrides: list[str] | None = None, schema: type[T] = Config) -> T:
    """Schema defaults <- YAML (with ``_base_``) <- ``key=value`` overrides -> a typed dataclass.

    ``path`` is a file or the name of a packaged config (:func:`resolve_config`)."""
    overrides = check_overrides(overrides)
    cfg = OmegaConf.structured(schema)
    source = "config"
    if path is not None:
        source = str(resolve_config(path))
        with config_source(source), _one_line():
            cfg = OmegaConf.merge(cfg, read_yaml(Path(source)))
    for override in overrides:  # one at a time, so that an error names its override
        with config_source(f"override {override!r}"), _one_line():
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist([override]))
    final = source + (" + overrides" if overrides else "")
    with config_source(final), _one_line():
        return OmegaConf.to_object(cfg)


@contextmanager
def _one_line() -> Iterator[None]:
    """An OmegaConf error about a key becomes one line ``key: problem`` (same exception type; the source is
    tagged by :func:`config_source`, and the ``mgld`` command prints it first)."""
    try:
        yield
    except OmegaConfBaseException as err:
        if not getattr(err, "full_key", None):
            raise
        first = str(getattr(err, "msg", err)).splitlines()[0]
        raise type(err)(f"{err.full_key}: {first}") from None


CONFIG_SOURCE = "mgld_config_source"


@contextmanager
def config_source(source: str) -> Iterator[None]:
    """Tag any error raised inside with the config file or override it comes from (attribute
    :data:`CONFIG_SOURCE`, first tag wins; the exception type is unchanged). The ``mgld`` command prints a
    tagged error as one line naming that source and exits with status 2 (mgld/cli/_errors.py)."""
    try:
        yield
    except Exception as err:
        if getattr(err, CONFIG_SOURCE, None) is None:
            try:
                setattr(err, CONFIG_SOURCE, source)
            except AttributeError:  # an exception type with __slots__
                pass
        raise


def check_overrides(overrides: list[str] | None) -> list[str]:
    """``key=value`` overrides as a list; one without ``=`` (or without a key) raises naming it."""
    overrides = list(overrides or [])
    for override in overrides:
        key, sep, _ = override.partition("=")
        if not sep or not key.strip():
            with config_source(f"override {override!r}"):
                raise ValueError("not key=value (e.g. sampling.steps=20)")
    return overrides


def to_yaml(cfg: Any) -> str:
    """YAML text of a config dataclass (what run folders and converted weights store)."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def model_config_from_dict(data: dict) -> ModelConfig:
    """A :class:`ModelConfig` from a plain dict (e.g. the ``model`` section of a weights folder)."""
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ModelConfig), data))


def config_from_dict(data: dict) -> Config:
    """A validated :class:`Config` from plain nested dicts (missing sections and keys take the defaults)."""
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Config), data))
