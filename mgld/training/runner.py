"""From a training config to a finished run: explicit builders, up-front checks, run folder, Lightning trainer.

``build_stage1(cfg)`` / ``build_stage2(cfg)`` return ``(system, datamodule)``. They check everything that can be
wrong with the inputs *before* any network is built, in this order: the dataset (folder exists, holds usable
sequences whose frames decode (``data.verify_frames``, on rank 0) and are not smaller than the crop, enough clips
for one batch), the SD checkpoint (file or diffusers folder exists and its tensors fit the configured networks,
checked against models on the ``meta`` device), an ``init.weights`` folder, then the loss networks' weight files
(stage 2). Every problem raises an exception whose one-line message names the file or the config key.

``train(cfg, resume)`` runs a config in its run folder ``cfg.output_dir``::

    output_dir/config.yaml                    the resolved config
    output_dir/checkpoints/stepNNNNNNNN.ckpt  every trainer.checkpoint_every_n_steps steps and at the end
    output_dir/checkpoints/last.ckpt          the latest
    output_dir/tb/                            TensorBoard: losses, learning rate, image strips
    output_dir/weights/                       the trained model as a converted mgld folder (mgld.weights.checkpoints)

Checkpoints are written atomically (:mod:`mgld.training.checkpointing`); ``resume=True`` continues from the newest
one that loads (saying which it skipped and why) with the same step, optimizer state and data stream, so the run
goes on as if it had never stopped (:mod:`mgld.training.data`). The run folder is created only once every input
has been checked and the networks are built; a run that fails before its first checkpoint removes it again.
Only global rank 0 writes the run folder, checkpoints and TensorBoard.

Multi-GPU / multi-node: ``trainer.devices``, ``trainer.num_nodes``, ``trainer.strategy`` go to Lightning as they
are (e.g. ``devices=8 strategy=ddp``, both stages); launch lines for torchrun and SLURM: docs/training.md.
"""

from __future__ import annotations

import inspect
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.utilities import rank_zero_only

from mgld.config import ModelConfig, to_yaml
from mgld.data.reds import REDSClipDataset
from mgld.data.stage2 import Stage2ClipDataset
from mgld.io.atomic import atomic_write
from mgld.io.frames import InputError
from mgld.models import build_denoiser, build_vae
from mgld.models.discriminator import PatchDiscriminator
from mgld.models.unet import sd_unet_kwargs
from mgld.training.checkpointing import (
    AtomicCheckpointIO,
    checkpoint_candidates,
    find_resume_checkpoint,
    remove_stale_temporaries,
)
from mgld.training.config import Stage1TrainConfig, Stage2TrainConfig, TrainConfig
from mgld.training.data import ClipDataModule
from mgld.training.distributed import convert_global_batchnorm
from mgld.training.losses import LPIPSLoss, build_loss_flow_estimator
from mgld.training.stage1 import Stage1System
from mgld.training.stage2 import Stage2System
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
        raise InputError(f"{what}: {len(dataset)} clips, fewer than one batch of data.batch_size={batch_size}")


def _verify_here(data) -> bool:
    """Full frame checks on global rank 0 only (the other processes read the headers)."""
    return bool(data.verify_frames) and rank_zero_only.rank == 0


def check_sd_checkpoint(source: str | Path, model: ModelConfig, parts: tuple[str, ...]) -> dict[str, dict]:
    """Raise unless ``source`` (LDM ``.ckpt``/``.safetensors`` or diffusers folder) has ``parts`` that fit ``model``.

    ``parts`` from ``"unet"`` (with the text encoder the empty-prompt context needs) and ``"vae"``. Returns, per
    part, the weights as read (the whole LDM file, or the part's file of a diffusers folder): the ``state_dict`` that
    :func:`init_denoiser_from_sd` / :func:`init_vae_from_sd` take, so that the file is read once.
    """
    from diffusers import UNet2DConditionModel

    from mgld.weights.text_context import has_openclip_tower

    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"SD checkpoint not found: {path} (init.sd_checkpoint)")
    state_dicts, loaded = {}, {}
    try:
        if path.is_dir():
            for part in parts:
                state_dicts[part] = loaded[part] = ckpt.load_state_dict_file(diffusers_weights_file(path / part))
            if "unet" in parts and not (path / "text_encoder").is_dir():
                raise FileNotFoundError(f"{path}: no text_encoder/ folder (needed for the empty-prompt context)")
        else:
            full = ckpt.load_state_dict_file(path)
            loaded = dict.fromkeys(parts, full)
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
    return loaded


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


def _check_init(cfg: TrainConfig, parts: tuple[str, ...], weights_part: str) -> dict[str, dict]:
    """Check the init sources; returns the SD weights read for ``parts`` (:func:`check_sd_checkpoint`), or ``{}``."""
    loaded = {}
    if cfg.init.sd_checkpoint is not None:
        loaded = check_sd_checkpoint(cfg.init.sd_checkpoint, cfg.model, parts)
    else:
        log.warning("init.sd_checkpoint is not set: the frozen networks keep random weights (smoke runs only)")
    if cfg.init.weights is not None:
        check_weights_folder(cfg.init.weights, cfg.model, weights_part)
    return loaded


# ---------------------------------------------------------------------------------------------------------
# Builders
# ---------------------------------------------------------------------------------------------------------


def build_stage1_dataset(cfg: Stage1TrainConfig) -> REDSClipDataset:
    dataset = REDSClipDataset.from_config(cfg.data, cfg.model.num_frames, verify=_verify_here(cfg.data))
    _check_batches(dataset, cfg.data.batch_size, f"data.root={cfg.data.root}")
    return dataset


def _datamodule(cfg: TrainConfig, dataset) -> ClipDataModule:
    return ClipDataModule(dataset, cfg.data.batch_size, cfg.data.num_workers, cfg.trainer.seed,
                          cfg.optim.accumulate_grad_batches)


def build_stage1(cfg: Stage1TrainConfig) -> tuple[Stage1System, ClipDataModule]:
    """Stage-1 system (denoiser from SD 2.1 or ``init.weights``, frozen VAE) and its data."""
    dataset = build_stage1_dataset(cfg)
    loaded = _check_init(cfg, ("vae",) if cfg.init.weights else ("unet", "vae"), "denoiser")  # weights: the UNet
    sd, opts = cfg.init.sd_checkpoint, cfg.stage1
    if cfg.init.weights is not None:
        denoiser, _ = load_denoiser(cfg.init.weights, cfg.model)
    elif sd is not None:
        denoiser = init_denoiser_from_sd(sd, cfg.model, mid_from_sd=opts.mid_from_sd, state_dict=loaded["unet"])
    else:
        denoiser = build_denoiser(cfg.model)
    vae = init_vae_from_sd(sd, cfg.model, state_dict=loaded["vae"]) if sd is not None else build_vae(cfg.model)
    del loaded
    system = Stage1System(denoiser, vae, optim=cfg.optim, options=opts, checkpoint_frozen=sd is None,
                          image_every_n_steps=cfg.trainer.image_every_n_steps)
    return system, _datamodule(cfg, dataset)


def build_stage2_dataset(cfg: Stage2TrainConfig) -> Stage2ClipDataset:
    dataset = Stage2ClipDataset.from_config(cfg.data, cfg.model.num_frames, verify=_verify_here(cfg.data))
    _check_batches(dataset, cfg.data.batch_size, f"data.root={cfg.data.root}")
    return dataset


def build_stage2(cfg: Stage2TrainConfig) -> tuple[Stage2System, ClipDataModule]:
    """Stage-2 system (temporal VAE from SD 2.1 or ``init.weights``, PatchGAN, loss networks) and its data."""
    dataset = build_stage2_dataset(cfg)
    loaded = _check_init(cfg, ("vae",), "vae")
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
        vae = init_vae_from_sd(sd, cfg.model, state_dict=loaded["vae"]) if sd is not None else build_vae(cfg.model)
    del loaded
    disc = PatchDiscriminator(3, cfg.discriminator.base_channels, cfg.discriminator.num_layers)
    if cfg.discriminator.sync_batchnorm:
        convert_global_batchnorm(disc)
    system = Stage2System(
        vae, disc, lpips=lpips, flow_estimator=flow, losses=losses, optim=cfg.optim, cfw_weight=cfg.cfw_weight,
        checkpoint_frozen=sd is None and cfg.init.weights is None, image_every_n_steps=cfg.trainer.image_every_n_steps,
    )
    return system, _datamodule(cfg, dataset)


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


def holds_run(run_dir: Path) -> bool:
    """Whether ``run_dir`` already holds a run (its config or a checkpoint folder)."""
    return (run_dir / "config.yaml").exists() or (run_dir / "checkpoints").exists()


def prepare_run_dir(cfg: TrainConfig, resume: bool) -> Path | None:
    """Check the run folder against ``resume`` (creating nothing); return the checkpoint to resume from or None.

    Without ``resume`` a folder that already holds a run is refused; with it, the newest checkpoint that loads
    is chosen (:func:`mgld.training.checkpointing.find_resume_checkpoint`). Processes other than global rank 0
    of a multi-process run skip the first check (rank 0 has created the folder by the time they start).
    """
    run_dir = Path(cfg.output_dir)
    if resume:
        if not run_dir.is_dir():
            raise FileNotFoundError(f"--resume: {run_dir} not found (nothing to resume in output_dir={run_dir})")
        path, _ = find_resume_checkpoint(run_dir / "checkpoints")
        return path
    if rank_zero_only.rank == 0 and holds_run(run_dir):
        raise FileExistsError(f"{run_dir} already holds a run (config.yaml, checkpoints/); pass --resume to "
                              "continue it or choose another output_dir")
    return None


@rank_zero_only
def create_run_dir(cfg: TrainConfig) -> None:
    """Create the run folder, write ``config.yaml`` and remove stale temporary checkpoint files."""
    run_dir = Path(cfg.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    _write_config(run_dir, to_yaml(cfg))
    remove_stale_temporaries(run_dir / "checkpoints")


def _write_config(run_dir: Path, text: str) -> None:
    path = run_dir / "config.yaml"
    if path.is_file() and path.read_text() != text:
        log.warning("%s changed since the previous start; the old one is kept as config.previous.yaml", path)
        path.replace(run_dir / "config.previous.yaml")
    atomic_write(path, text)


@rank_zero_only
def _remove_failed_run(run_dir: Path) -> None:
    if run_dir.is_dir() and not checkpoint_candidates(run_dir / "checkpoints"):
        shutil.rmtree(run_dir, ignore_errors=True)
        log.warning("the run failed before its first checkpoint; removed %s", run_dir)


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
        plugins=[AtomicCheckpointIO()],
        use_distributed_sampler=False,  # ClipDataModule splits the data stream by rank itself
        num_sanity_val_steps=0,
    )
    kwargs.update(overrides)
    return pl.Trainer(**kwargs)


def _worker_error(err: BaseException) -> BaseException | None:
    """A DataLoader worker's exception arrives with the worker's traceback in its message; the same exception
    type with the original one-line message (e.g. the damaged frame's InputError), or None for other errors."""
    text = str(err)
    if not (text.startswith("Caught ") and "Original Traceback" in text):
        return None
    last = text.strip().splitlines()[-1]
    message = last.split(": ", 1)[1] if ": " in last else last
    try:
        return type(err)(message)
    except Exception:
        return RuntimeError(message)


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
    if resume_from is not None:
        log.info("resuming from %s", resume_from)
    pl.seed_everything(cfg.trainer.seed, workers=True)
    system, datamodule = build_system(cfg)
    run_dir = Path(cfg.output_dir)
    trainer = build_trainer(cfg, run_dir, callbacks, **trainer_overrides)
    fresh = resume_from is None and not run_dir.exists()
    create_run_dir(cfg)
    try:
        trainer.fit(system, datamodule=datamodule, ckpt_path=resume_from)
    except BaseException as err:
        if fresh:
            _remove_failed_run(run_dir)
        one_line = _worker_error(err)
        if one_line is not None:
            raise one_line from err
        raise
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
    "create_run_dir",
    "holds_run",
    "check_weights_folder",
    "export_weights",
    "last_checkpoint",
    "prepare_run_dir",
    "train",
]
