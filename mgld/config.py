"""Typed configuration: dataclass schemas, YAML files and ``key=value`` overrides.

``load_config(path, overrides)`` merges, in order: the schema defaults, the YAML files listed under
``_base_`` in the file (paths relative to it, merged first to last), the file itself, then the
dotlist overrides (``model.unet.model_channels=64``). OmegaConf validates every key and type against
the schema, so a typo fails with ``Key 'num_frame' not in 'ModelConfig'. Did you mean: 'num_frames'?``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

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
    """Time-aware condition encoder (spec §3)."""

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
    """Temporal VAE: SD KL-VAE + decoder temporal convs + CFW (spec §4)."""

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
class Config:
    """Top-level config file: ``model`` (networks); later sections configure inference and training."""

    model: ModelConfig = field(default_factory=ModelConfig)


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> Any:
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
    merged = [_read_yaml(path.parent / str(b), seen + (path,)) for b in bases]
    return OmegaConf.merge(*merged, node) if merged else node


def load_config(path: str | Path | None = None, overrides: list[str] | None = None, schema: type[T] = Config) -> T:
    """Schema defaults <- YAML (with ``_base_``) <- ``key=value`` overrides -> a typed dataclass."""
    cfg = OmegaConf.structured(schema)
    if path is not None:
        cfg = OmegaConf.merge(cfg, _read_yaml(Path(path)))
    if overrides:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
    return OmegaConf.to_object(cfg)


def to_yaml(cfg: Any) -> str:
    """YAML text of a config dataclass (what run folders and converted weights store)."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def model_config_from_dict(data: dict) -> ModelConfig:
    """A :class:`ModelConfig` from a plain dict (e.g. the ``model`` section of a weights folder)."""
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ModelConfig), data))
