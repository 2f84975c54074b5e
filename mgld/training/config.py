"""Training configuration: schemas of ``configs/stage1.yaml`` and ``configs/stage2.yaml`` (docs/training.md).

Both schemas reuse :class:`mgld.config.ModelConfig` for the networks and are loaded with
:func:`mgld.config.load_config` (``_base_`` includes and ``key=value`` overrides, every key type-checked).
:func:`load_train_config` picks the schema from the file's ``stage`` key (1 or 2).

What the YAML holds: the experiment (model, data, losses, the stage's switches, optimiser); where and how it runs
(``trainer``: devices, precision, checkpoint cadence) is also here so a run folder's ``config.yaml`` says
everything, and any key can be overridden on the command line (``trainer.devices=4``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from mgld.config import (
    ChunkConfig,
    DecodeConfig,
    FlowConfig,
    InferConfig,
    ModelConfig,
    SamplingConfig,
    check_overrides,
    load_config,
    read_yaml,
    resolve_config,
)
from mgld.data.degradations import DegradationConfig, USMConfig
from mgld.data.reds import REDS4


def _reds4() -> list[str]:
    return list(REDS4)


@dataclass
class Stage1DataConfig:
    """REDS-style clips degraded on the fly (:class:`mgld.data.reds.REDSClipDataset`)."""

    root: str = "data/REDS/train_sharp"
    exclude: list[str] = field(default_factory=_reds4)
    exclude_by: Literal["name", "prefix"] = "name"  # the authors' val_partition: exact clip names
    verify_frames: bool = True  # rank 0 checks every frame file before training (else headers only)
    interval: int = 1
    crop_size: int = 512
    use_flip: bool = True
    usm: USMConfig = field(default_factory=USMConfig)
    degrade: bool = True  # False: clean bicubic LQ instead of the RealBasicVSR degradation
    degradation: DegradationConfig = field(default_factory=DegradationConfig)
    scale: int = 4
    batch_size: int = 1
    num_workers: int = 6


@dataclass
class Stage2DataConfig:
    """GT clips + the LQ frames and stage-1 latents written by ``mgld generate-latents``."""

    root: str = "data/REDS/train_sharp_sub"
    generated_root: str = "data/REDS/stage1_generated"  # holds lq/ and latents/
    exclude: list[str] = field(default_factory=_reds4)
    exclude_by: Literal["name", "prefix"] = "prefix"  # the authors: 000 removes the sub-images 000_s001..000_s008
    verify_frames: bool = True
    batch_size: int = 1
    num_workers: int = 6


@dataclass
class InitConfig:
    """Where the weights come from. ``sd_checkpoint`` None: random frozen weights (tiny smoke runs only)."""

    sd_checkpoint: str | None = None  # SD 2.1-base: LDM .ckpt (v2-1_512-ema-pruned.ckpt) or diffusers folder
    weights: str | None = None  # converted mgld folder whose trained parts start the run (fine-tuning)


@dataclass
class OptimConfig:
    lr: float = 5e-5
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.01
    accumulate_grad_batches: int = 4


Precision = Literal["32-true", "32", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true"]


@dataclass
class TrainerConfig:
    """Lightning ``Trainer`` settings and run logistics. ``seed`` also seeds the data stream: the order of the
    clips and every per-sample draw (:class:`mgld.training.data.ClipStreamSampler`)."""

    max_steps: int = 800_000
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps", "tpu"] = "auto"
    devices: Any = "auto"  # int, list of device ids or "auto"
    num_nodes: int = 1
    strategy: str = "auto"  # any Lightning strategy name (ddp, ddp_find_unused_parameters_true, fsdp, ...)
    precision: Precision = "32-true"
    checkpoint_every_n_steps: int = 3000
    log_every_n_steps: int = 50
    image_every_n_steps: int = 1000
    seed: int = 0


@dataclass
class Stage1Options:
    """Stage-1 switches; the defaults reproduce the authors' run, configs/stage1_fixed.yaml has the fixes
    (docs/differences.md)."""

    timesteps: Literal["clip", "frame"] = "frame"  # authors: one timestep per frame; clip: one per clip (inference)
    train_temporal_norm: bool = False  # authors: the temporal attention's LayerNorm stayed frozen at its init
    mid_from_sd: bool = False  # authors: the shifted middle-block slots stayed random; True loads SD's
    gradient_checkpointing: bool = False


@dataclass
class FlowLossConfig:
    method: Literal["spynet", "raft", "dis"] = "spynet"
    weights: str | None = None  # None: the estimator's default file in torch hub's cache; "random": a randomly
    # initialised SpyNet (smoke runs without the weight file: the flow is meaningless)


@dataclass
class LossConfig:
    """Stage-2 loss weights and options (docs/training.md §5)."""

    l1: float = 1.0
    lpips: float = 0.5
    lpips_net: Literal["vgg", "alex"] = "vgg"
    lpips_backbone: str | None = None  # torchvision ImageNet weights file; None: torch hub's cache
    frame_difference: float = 0.5
    consistency: float = 0.5
    consistency_variant: Literal["authors", "fixed"] = "authors"
    sobel_weight: float = 3.0
    flow: FlowLossConfig = field(default_factory=FlowLossConfig)
    gan: float = 0.025
    disc_start: int = 501
    reduction: Literal["authors", "mean"] = "authors"


@dataclass
class DiscriminatorConfig:
    base_channels: int = 64
    num_layers: int = 3
    # False (authors): each process normalises over its own frames (their DDP); True: BatchNorm statistics over
    # the global batch (any backend, CPU too), so N processes x batch b train as 1 process x batch N*b
    sync_batchnorm: bool = False


@dataclass
class _InferenceSections:
    """The inference sections of :class:`mgld.config.Config`: configs/tiny.yaml carries them, and
    mgld generate-latents samples the stage-1 latents with them. Training itself does not read them."""

    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    chunk: ChunkConfig = field(default_factory=ChunkConfig)
    infer: InferConfig = field(default_factory=InferConfig)


@dataclass
class Stage1TrainConfig(_InferenceSections):
    """``configs/stage1.yaml``: SFT + temporal layers + time-aware encoder on a frozen SD 2.1."""

    stage: int = 1
    output_dir: str = "runs/stage1"
    model: ModelConfig = field(default_factory=ModelConfig)
    init: InitConfig = field(default_factory=InitConfig)
    stage1: Stage1Options = field(default_factory=Stage1Options)
    data: Stage1DataConfig = field(default_factory=Stage1DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)


def _stage2_optim() -> OptimConfig:
    return OptimConfig(lr=5e-5, betas=[0.5, 0.9], weight_decay=0.0, accumulate_grad_batches=8)


def _stage2_trainer() -> TrainerConfig:
    return TrainerConfig(checkpoint_every_n_steps=1500)


@dataclass
class Stage2TrainConfig(_InferenceSections):
    """``configs/stage2.yaml``: decoder temporal convs + CFW + PatchGAN on a frozen SD VAE."""

    stage: int = 2
    output_dir: str = "runs/stage2"
    model: ModelConfig = field(default_factory=ModelConfig)
    init: InitConfig = field(default_factory=InitConfig)
    cfw_weight: float = 1.0
    data: Stage2DataConfig = field(default_factory=Stage2DataConfig)
    losses: LossConfig = field(default_factory=LossConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    optim: OptimConfig = field(default_factory=_stage2_optim)
    trainer: TrainerConfig = field(default_factory=_stage2_trainer)


TrainConfig = Stage1TrainConfig | Stage2TrainConfig
SCHEMAS = {1: Stage1TrainConfig, 2: Stage2TrainConfig}


class ConfigError(ValueError):
    """A training config that cannot be loaded; the one-line message names the file and the key."""


def _tagged(err: Exception, path: Path) -> Exception:
    """``err`` marked as a config error of ``path`` (the ``mgld`` command then exits with status 2)."""
    from mgld.config import CONFIG_SOURCE

    setattr(err, CONFIG_SOURCE, str(path))
    return err


def load_train_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """A training config; the schema is chosen by the ``stage`` key of the file (after its ``_base_`` files).

    Every problem (missing file, invalid YAML, unknown key, wrong type or value, override without ``=``) raises
    :class:`ConfigError` (or ``FileNotFoundError``) with a one-line message naming the file and the key.
    """
    from omegaconf.errors import OmegaConfBaseException
    from yaml import YAMLError

    path = resolve_config(path)
    overrides = check_overrides(overrides)
    try:
        stage = read_yaml(path).get("stage")
        if stage not in SCHEMAS:
            raise _tagged(ConfigError(f"{path}: 'stage' must be 1 or 2 (got {stage!r})"), path)
        cfg = load_config(path, overrides, schema=SCHEMAS[stage])
    except YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        if mark is not None and mark.name and not str(mark.name).startswith("<"):
            where = f"{mark.name}, line {mark.line + 1}"
        else:
            where = f"{path} or an override" if overrides else str(path)
        raise _tagged(ConfigError(f"{where}: invalid YAML ({_one_line(getattr(err, 'problem', None) or err)})"),
                      path) from err
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None)
        text = _one_line(getattr(err, "msg", None) or err)
        text = text if key and text.startswith(f"{key}:") else f"{key or 'config'}: {text}"
        raise _tagged(ConfigError(f"{path}{' (with overrides)' if overrides else ''}: {text}"), path) from err
    if cfg.stage != stage:
        raise _tagged(ConfigError(f"the 'stage' key cannot be overridden ({stage} in {path}, {cfg.stage} given)"), path)
    return cfg


def _one_line(err: object) -> str:
    return " ".join(str(err).strip().splitlines()[0].split())


__all__ = [
    "ConfigError",
    "DiscriminatorConfig",
    "FlowLossConfig",
    "InitConfig",
    "LossConfig",
    "OptimConfig",
    "Stage1DataConfig",
    "Stage1Options",
    "Stage1TrainConfig",
    "Stage2DataConfig",
    "Stage2TrainConfig",
    "TrainConfig",
    "TrainerConfig",
    "USMConfig",
    "load_train_config",
]
