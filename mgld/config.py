"""Typed configuration: dataclass schemas, YAML files and ``key=value`` overrides.

``load_config(path, overrides)`` merges, in order: the schema defaults, the YAML files listed under
``_base_`` in the file (paths relative to it, merged first to last), the file itself, then the
dotlist overrides (``model.unet.model_channels=64``). OmegaConf validates every key and type against
the schema, so a typo fails with ``Key 'num_frame' not in 'ModelConfig'. Did you mean: 'num_frames'?``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

from omegaconf import OmegaConf

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
    guidance_variant: str = "authors"
    latent_tile_size: int = 64
    latent_tile_overlap: int = 32
    tile_batch: Union[int, Literal["auto"]] = 1  # noqa: UP007 (OmegaConf reads typing.Union, not X | Y)
    seed: int = 42
    tile_schedule: str = "overlap"

    def __post_init__(self) -> None:
        _choice("sampling.guidance_variant", self.guidance_variant, ("authors", "fixed"))
        _choice("sampling.tile_schedule", self.tile_schedule, ("overlap", "shifted"))
        if self.steps < 1 or (self.tile_batch != "auto" and self.tile_batch < 1):
            raise ValueError("sampling.steps and sampling.tile_batch must be >= 1 (tile_batch may be 'auto')")


@dataclass
class FlowConfig:
    """Optical flow on the LR frames and the occlusion check (docs/algorithm.md §4)."""

    method: str = "raft"
    weights: str | None = None
    raft_iters: int = 10
    raft_input_range: str = "unit"
    occlusion_alpha: float = 0.01
    occlusion_beta: float = 0.5

    def __post_init__(self) -> None:
        _choice("flow.method", self.method, ("raft", "spynet", "dis"))
        _choice("flow.raft_input_range", self.raft_input_range, ("unit", "symmetric"))


@dataclass
class DecodeConfig:
    """Temporal-VAE encoding/decoding in pixel tiles, and the colour fix (docs/algorithm.md §5, §7)."""

    cfw_weight: float = 1.0
    tile_size: Union[int, Literal["auto"]] = 960  # noqa: UP007
    tile_stride: int = 768
    color_fix: str = "adain"

    def __post_init__(self) -> None:
        _choice("decode.color_fix", self.color_fix, ("adain", "wavelet", "none"))
        size = 960 if self.tile_size == "auto" else self.tile_size  # auto: the stride scales with the chosen tile
        if size % 8 or self.tile_stride % 8 or not 0 < self.tile_stride <= size:
            raise ValueError("decode.tile_size and decode.tile_stride must be multiples of 8, 0 < stride <= size "
                             "(tile_size may be 'auto')")


@dataclass
class ChunkConfig:
    """How a long video is cut into clips the temporal layers see together."""

    frames: int = 5
    overlap: int = 0
    anchor_strength: float = 0.5

    def __post_init__(self) -> None:
        if self.frames < 1 or not 0 <= self.overlap < self.frames:
            raise ValueError(f"need chunk.frames >= 1 and 0 <= chunk.overlap < chunk.frames, got {self}")
        if not 0.0 <= self.anchor_strength <= 1.0:
            raise ValueError("chunk.anchor_strength must be in [0, 1]")


@dataclass
class InferConfig:
    """Where the weights come from and how the run uses the hardware."""

    weights: str | None = None
    unet: str | None = None
    vae: str | None = None
    random_weights: bool = False
    scale: int = 4
    min_short_side: int = 512
    device: str = "auto"
    devices: int = 1
    precision: str = "auto"
    crf: int = 18
    overwrite: bool = False
    cast_weights: Union[bool, Literal["auto"]] = "auto"  # noqa: UP007
    channels_last: bool = False
    compile: bool = False
    compile_mode: str = "default"
    attention: str = "auto"
    offload: str = "none"

    def __post_init__(self) -> None:
        _choice("infer.precision", self.precision, ("auto", "fp32", "fp16", "bf16"))
        _choice("infer.compile_mode", self.compile_mode,
                ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"))
        _choice("infer.attention", self.attention, ("auto", "flash", "efficient", "cudnn", "math"))
        _choice("infer.offload", self.offload, ("none", "model", "sequential"))


@dataclass
class Config:
    """A config file: ``model`` (networks) and the inference sections."""

    model: ModelConfig = field(default_factory=ModelConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    chunk: ChunkConfig = field(default_factory=ChunkConfig)
    infer: InferConfig = field(default_factory=InferConfig)


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


def read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> Any:
    """A YAML file with its ``_base_`` files merged underneath it."""
    path = path.resolve()
    if path in seen:
        raise ValueError(f"{path}: _base_ cycle through {[str(p) for p in seen]}")
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
    from importlib.resources import files

    return Path(str(files("mgld.configs")))


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
    raise FileNotFoundError(f"config not found: {name} (neither a file nor a packaged config; "
                            f"packaged: {', '.join(packaged_configs())})")


def load_config(path: str | Path | None = None, overrides: list[str] | None = None, schema: type[T] = Config) -> T:
    """Schema defaults <- YAML (with ``_base_``) <- ``key=value`` overrides -> a typed dataclass.

    ``path`` is a file or the name of a packaged config (:func:`resolve_config`)."""
    cfg = OmegaConf.structured(schema)
    if path is not None:
        cfg = OmegaConf.merge(cfg, read_yaml(resolve_config(path)))
    if overrides:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
    return OmegaConf.to_object(cfg)


def to_yaml(cfg: Any) -> str:
    """YAML text of a config dataclass (what run folders and converted weights store)."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def model_config_from_dict(data: dict) -> ModelConfig:
    """A :class:`ModelConfig` from a plain dict (e.g. the ``model`` section of a weights folder)."""
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ModelConfig), data))
