"""From a training config to a finished run: explicit builders, up-front checks, run folder, Lightning trainer.

``build_stage1(cfg)`` / ``build_stage2(cfg)`` return ``(system, datamodule)``. They check everything that can be
wrong with the inputs *before* any network is built, in this order: the dataset (folder exists, holds usable
sequences, enough clips for one batch), the SD checkpoint (file or diffusers folder exists and its tensors fit
the configured networks, checked against models on the ``meta`` device), an ``init.weights`` folder, then the
loss networks' weight files (stage 2).

``train(cfg, resume)`` runs a config in its run folder ``cfg.output_dir``::

    output_dir/config.yaml                    the resolved config
    output_dir/checkpoints/stepNNNNNNNN.ckpt  every trainer.checkpoint_every_n_steps steps and at the end
    output_dir/checkpoints/last.ckpt          the latest; --resume continues from it (same step, optimizer state)
    output_dir/tb/                            TensorBoard: losses, learning rate, image strips
    output_dir/weights/                       the trained model as a converted mgld folder (mgld.weights.checkpoints)

Multi-GPU / multi-node: ``trainer.devices``, ``trainer.num_nodes``, ``trainer.strategy`` go to Lightning as they
are (e.g. ``devices=8 strategy=ddp``; stage 2 needs ``ddp_find_unused_parameters_true`` before ``disc_start``).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.utilities import rank_zero_only

from mgld.config import ModelConfig, to_yaml
from mgld.data.degradations import RealBasicVSRDegradation
from mgld.data.reds import REDSClipDataset
from mgld.data.stage2 import Stage2ClipDataset
from mgld.models import build_denoiser, build_vae
from mgld.models.discriminator import PatchDiscriminator
from mgld.models.unet import sd_unet_kwargs
from mgld.training.config import Stage1TrainConfig, Stage2TrainConfig, TrainConfig
from mgld.training.data import ClipDataModule
from mgld.training.losses import LPIPSLoss, build_loss_flow_estimator
from mgld.training.stage1 import Stage1System
from mgld.training.stage2 import Stage2Loss, Stage2System
from mgld.weights import checkpoints as ckpt
from mgld.weights import convert
from mgld.weights.loading import (
    diffusers_weights_file,
    init_denoiser_from_sd,
    init_vae_from_sd,
    load_denoiser,
    load_vae,
)

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------------
# Checks that run before any network is built
# ---------------------------------------------------------------------------------------------------------


def _check_batches(dataset, batch_size: int, what: str) -> None:
    if len(dataset) < batch_size:
        raise ValueError(f"{what}: {len(dataset)} clips, fewer than one batch of {batch_size}")


def check_sd_checkpoint(source: str | Path, model: ModelConfig, parts: tuple[str, ...]) -> None:
    """Raise unless ``source`` (LDM ``.ckpt``/``.safetensors`` or diffusers folder) has ``parts`` that fit ``model``.

    ``parts`` from ``"unet"`` (with the text encoder the empty-prompt context needs) and ``"vae"``.
    """
    from diffusers import UNet2DConditionModel

    from mgld.weights.text_context import has_openclip_tower

    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"SD checkpoint not found: {path} (init.sd_checkpoint)")
    state_dicts = {}
    try:
        if path.is_dir():
            for part in parts:
                state_dicts[part] = ckpt.load_state_dict_file(diffusers_weights_file(path / part))
            if "unet" in parts and not (path / "text_encoder").is_dir():
                raise FileNotFoundError(f"{path}: no text_encoder/ folder (needed for the empty-prompt context)")
        else:
            full = ckpt.load_state_dict_file(path)
            if "unet" in parts:
                if not has_openclip_tower(full):
                    raise ckpt.CheckpointError(f"{path}: no OpenCLIP text tower (cond_stage_model.*); is it SD 2.x?")
                state_dicts["unet"] = convert.sd_unet_state_dict(full, model.unet.num_res_blocks)
            if "vae" in parts:
                state_dicts["vae"] = convert.sd_vae_state_dict(full, len(model.vae.ch_mult))
    except (KeyError, ValueError) as err:
        raise ckpt.CheckpointError(f"{path} does not look like an SD 2.x checkpoint: {err}") from err
    with torch.device("meta"):
        if "unet" in state_dicts:
            names = inspect.signature(sd_unet_kwargs).parameters
            unet = UNet2DConditionModel(**sd_unet_kwargs(**{k: v for k, v in vars(model.unet).items() if k in names}))
            ckpt.check_state_dict(unet, state_dicts["unet"], str(path))
        if "vae" in state_dicts:
            ckpt.check_state_dict(build_vae(model).base, state_dicts["vae"], str(path))


def check_weights_folder(folder: str | Path, model: ModelConfig, part: str) -> None:
    """Raise unless ``folder`` is a converted mgld folder with ``part`` ("denoiser"/"vae") made for ``model``."""
    folder = Path(folder)
    name = ckpt.DENOISER_FILE if part == "denoiser" else ckpt.VAE_FILE
    if not (folder / name).is_file():
        raise FileNotFoundError(f"init.weights: {folder / name} not found")
    stored = ckpt.read_model_config(folder)
    sections = ("unet", "cond_encoder") if part == "denoiser" else ("vae",)
    differing = [s for s in sections if getattr(stored, s) != getattr(model, s)]
    if differing:
        raise ckpt.CheckpointError(f"init.weights: {folder} was made for another model config (differs in {differing})")


def _check_init(cfg: TrainConfig, parts: tuple[str, ...], weights_part: str) -> None:
    if cfg.init.sd_checkpoint is not None:
        check_sd_checkpoint(cfg.init.sd_checkpoint, cfg.model, parts)
    else:
        log.warning("init.sd_checkpoint is not set: the frozen networks keep random weights (smoke runs only)")
    if cfg.init.weights is not None:
        check_weights_folder(cfg.init.weights, cfg.model, weights_part)


# ---------------------------------------------------------------------------------------------------------
# Builders
# ---------------------------------------------------------------------------------------------------------


def build_stage1_dataset(cfg: Stage1TrainConfig) -> REDSClipDataset:
    data = cfg.data
    dataset = REDSClipDataset(
        data.root, num_frames=cfg.model.num_frames, interval=data.interval, crop_size=data.crop_size,
        exclude=data.exclude, use_flip=data.use_flip, usm=data.usm.enabled, usm_weight=data.usm.weight,
        usm_radius=data.usm.radius, usm_threshold=data.usm.threshold,
        degradation=RealBasicVSRDegradation(data.degradation) if data.degrade else None,
        scale=data.scale, seed=data.seed,
    )
    _check_batches(dataset, data.batch_size, f"data.root={data.root}")
    return dataset


def build_stage1(cfg: Stage1TrainConfig) -> tuple[Stage1System, ClipDataModule]:
    """Stage-1 system (denoiser from SD 2.1 or ``init.weights``, frozen VAE) and its data."""
    dataset = build_stage1_dataset(cfg)
    _check_init(cfg, ("vae",) if cfg.init.weights else ("unet", "vae"), "denoiser")  # init.weights has the UNet
    sd, opts = cfg.init.sd_checkpoint, cfg.stage1
    if cfg.init.weights is not None:
        denoiser, _ = load_denoiser(cfg.init.weights, cfg.model)
    elif sd is not None:
        denoiser = init_denoiser_from_sd(sd, cfg.model, mid_from_sd=opts.mid_from_sd)
    else:
        denoiser = build_denoiser(cfg.model)
    vae = init_vae_from_sd(sd, cfg.model) if sd is not None else build_vae(cfg.model)
    system = Stage1System(
        denoiser, vae, lr=cfg.optim.lr, betas=tuple(cfg.optim.betas), weight_decay=cfg.optim.weight_decay,
        timesteps=opts.timesteps, train_temporal_norm=opts.train_temporal_norm,
        gradient_checkpointing=opts.gradient_checkpointing, checkpoint_frozen=sd is None,
        image_every_n_steps=cfg.trainer.image_every_n_steps,
    )
    return system, ClipDataModule(dataset, cfg.data.batch_size, cfg.data.num_workers)


def build_stage2_dataset(cfg: Stage2TrainConfig) -> Stage2ClipDataset:
    data = cfg.data
    generated = Path(data.generated_root)
    dataset = Stage2ClipDataset(data.root, generated / "lq", generated / "latents", cfg.model.num_frames, data.exclude)
    _check_batches(dataset, data.batch_size, f"data.root={data.root}")
    return dataset


def build_stage2(cfg: Stage2TrainConfig) -> tuple[Stage2System, ClipDataModule]:
    """Stage-2 system (temporal VAE from SD 2.1 or ``init.weights``, PatchGAN, loss networks) and its data."""
    dataset = build_stage2_dataset(cfg)
    _check_init(cfg, ("vae",), "vae")
    losses = cfg.losses
    lpips = LPIPSLoss(losses.lpips_net, losses.lpips_backbone) if losses.lpips else None
    flow = None
    if losses.consistency:
        differentiable = losses.consistency_variant == "authors"
        flow = build_loss_flow_estimator(losses.flow.method, losses.flow.weights, differentiable)
    sd = cfg.init.sd_checkpoint
    if cfg.init.weights is not None:
        vae, _ = load_vae(cfg.init.weights, cfg.model)
    else:
        vae = init_vae_from_sd(sd, cfg.model) if sd is not None else build_vae(cfg.model)
    loss = Stage2Loss(
        l1=losses.l1, lpips=losses.lpips, frame_difference=losses.frame_difference, consistency=losses.consistency,
        consistency_variant=losses.consistency_variant, sobel_weight=losses.sobel_weight, gan=losses.gan,
        disc_start=losses.disc_start, reduction=losses.reduction,
    )
    system = Stage2System(
        vae, PatchDiscriminator(3, cfg.discriminator.base_channels, cfg.discriminator.num_layers),
        lpips=lpips, flow_estimator=flow, loss=loss, cfw_weight=cfg.cfw_weight, lr=cfg.optim.lr,
        betas=tuple(cfg.optim.betas), weight_decay=cfg.optim.weight_decay,
        accumulate_grad_batches=cfg.optim.accumulate_grad_batches,
        checkpoint_frozen=sd is None and cfg.init.weights is None,
        image_every_n_steps=cfg.trainer.image_every_n_steps,
    )
    return system, ClipDataModule(dataset, cfg.data.batch_size, cfg.data.num_workers)


def build_system(cfg: TrainConfig) -> tuple[Stage1System | Stage2System, ClipDataModule]:
    return build_stage1(cfg) if cfg.stage == 1 else build_stage2(cfg)


# ---------------------------------------------------------------------------------------------------------
# Run folder and trainer
# ---------------------------------------------------------------------------------------------------------


class FinalCheckpoint(Callback):
    """Writes ``stepNNNNNNNN.ckpt`` and ``last.ckpt`` when training ends between two periodic checkpoints.

    Decided from the step count, not from the files, so every rank makes the same (collective) calls.
    """

    def __init__(self, dirpath: Path, every_n_steps: int):
        self.dirpath, self.every_n_steps = dirpath, every_n_steps

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_step % self.every_n_steps != 0:  # else the periodic checkpoint already has this step
            trainer.save_checkpoint(self.dirpath / f"step{trainer.global_step:08d}.ckpt", weights_only=False)
            trainer.save_checkpoint(self.dirpath / "last.ckpt", weights_only=False)


def last_checkpoint(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints" / "last.ckpt"


def prepare_run_dir(cfg: TrainConfig, resume: bool) -> Path | None:
    """Create the run folder and write ``config.yaml``; return the checkpoint to resume from (or None)."""
    run_dir = Path(cfg.output_dir)
    last = last_checkpoint(run_dir)
    if resume and not last.is_file():
        raise FileNotFoundError(f"--resume: {last} not found (nothing to resume in output_dir={run_dir})")
    if not resume and last.exists():
        raise FileExistsError(f"{run_dir} already holds a run ({last}); pass --resume or choose another output_dir")
    _write_config(run_dir, to_yaml(cfg))
    return last if resume else None


@rank_zero_only
def _write_config(run_dir: Path, text: str) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "config.yaml"
    if path.is_file() and path.read_text() != text:
        log.warning("%s changed since the previous start; the old one is kept as config.previous.yaml", path)
        path.replace(run_dir / "config.previous.yaml")
    path.write_text(text)


def build_trainer(cfg: TrainConfig, run_dir: Path, callbacks: Sequence[Callback] = (), **overrides) -> pl.Trainer:
    """Lightning trainer: periodic + final checkpoints, TensorBoard, LR monitor, plus ``callbacks``;
    ``overrides`` replace ``Trainer`` arguments."""
    t = cfg.trainer
    ckpt_dir = run_dir / "checkpoints"
    periodic = ModelCheckpoint(
        dirpath=ckpt_dir, filename="step{step:08d}", auto_insert_metric_name=False,
        every_n_train_steps=t.checkpoint_every_n_steps, save_top_k=-1, save_last=True,
        enable_version_counter=False,  # overwrite last.ckpt (never write last-v1.ckpt)
    )
    kwargs = dict(
        default_root_dir=run_dir, max_steps=t.max_steps, max_epochs=-1, accelerator=t.accelerator, devices=t.devices,
        num_nodes=t.num_nodes, strategy=t.strategy, precision=t.precision, log_every_n_steps=t.log_every_n_steps,
        accumulate_grad_batches=cfg.optim.accumulate_grad_batches if cfg.stage == 1 else 1,
        logger=TensorBoardLogger(run_dir, name="tb", version=""),
        callbacks=[*callbacks, FinalCheckpoint(ckpt_dir, t.checkpoint_every_n_steps),
                   LearningRateMonitor(logging_interval="step"), periodic],
        num_sanity_val_steps=0,
    )
    kwargs.update(overrides)
    return pl.Trainer(**kwargs)


@rank_zero_only
def export_weights(system: Stage1System | Stage2System, cfg: TrainConfig, step: int) -> Path:
    """Save the trained model as a converted mgld folder ``output_dir/weights`` (loadable by mgld.weights.loading)."""
    folder = Path(cfg.output_dir) / "weights"
    provenance = {"trained": f"stage {cfg.stage}", "step": step, "run": str(Path(cfg.output_dir).resolve())}
    if cfg.stage == 1:
        return ckpt.save_model_folder(folder, cfg.model, denoiser=system.denoiser, provenance=provenance)
    return ckpt.save_model_folder(folder, cfg.model, vae=system.vae, provenance=provenance)


def train(cfg: TrainConfig, resume: bool = False, callbacks: Sequence[Callback] = (), **trainer_overrides) -> Path:
    """Check, build and fit; returns the run folder. ``callbacks`` and ``trainer_overrides`` go to the trainer."""
    resume_from = prepare_run_dir(cfg, resume)
    pl.seed_everything(cfg.trainer.seed, workers=True)
    system, datamodule = build_system(cfg)
    run_dir = Path(cfg.output_dir)
    trainer = build_trainer(cfg, run_dir, callbacks, **trainer_overrides)
    trainer.fit(system, datamodule=datamodule, ckpt_path=resume_from)
    export_weights(system, cfg, trainer.global_step)
    return run_dir


__all__ = [
    "FinalCheckpoint",
    "build_stage1",
    "build_stage1_dataset",
    "build_stage2",
    "build_stage2_dataset",
    "build_system",
    "build_trainer",
    "check_sd_checkpoint",
    "check_weights_folder",
    "export_weights",
    "last_checkpoint",
    "prepare_run_dir",
    "train",
]
