"""Getting trained networks: converted folders, official checkpoints, Stable Diffusion initialisation.

* :func:`load_denoiser` / :func:`load_vae` accept a converted folder (``config.yaml`` +
  ``*.safetensors``, see :mod:`mgld.weights.checkpoints`) or an official ``.ckpt`` (converted on the fly).
* :func:`convert_official` turns the official ``mgldvsr_unet.ckpt`` / ``video_vae_cfw.ckpt`` into a
  converted folder once, including the stage-1 checkpoint's own RAFT (``flow.safetensors``).
* :func:`init_denoiser_from_sd` / :func:`init_vae_from_sd` start training from plain SD 2.1-base
  (an LDM ``.ckpt`` such as ``v2-1_512-ema-pruned.ckpt`` or a diffusers folder).

Large models are built on the ``meta`` device and their weights assigned, so nothing is randomly
initialised only to be overwritten.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from mgld.config import ModelConfig
from mgld.models import MGLDDenoiser, TemporalVAE, build_denoiser, build_vae
from mgld.weights import checkpoints as ckpt
from mgld.weights import convert
from mgld.weights.hub import STAGE1_RAFT_PREFIX

log = logging.getLogger(__name__)


@contextlib.contextmanager
def _naming(path: str | Path) -> Iterator[None]:
    """Conversion errors raised inside name ``path`` (the state-dict converters do not know the file)."""
    try:
        yield
    except (convert.ConversionError, KeyError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        if str(path) in message:
            raise
        raise convert.ConversionError(f"{path}: {message}") from None


def _diff(a: ModelConfig, b: ModelConfig) -> list[str]:
    """``"section.key: weights x vs config y"`` for every differing leaf."""

    def walk(x, y, path):
        if isinstance(x, dict):
            return [d for k in x for d in walk(x[k], y.get(k), f"{path}{k}.")]
        return [] if x == y else [f"{path[:-1]}: weights {x!r} vs config {y!r}"]

    return walk(asdict(a), asdict(b), "")


def _resolve_config(path: Path, cfg: ModelConfig | None, sections: tuple[str, ...]) -> ModelConfig:
    """The folder's model config; ``cfg`` (from the user's config file) must agree on ``sections``."""
    stored = ckpt.read_model_config(path)
    if cfg is not None:
        diffs = [d for d in _diff(stored, cfg) if d.startswith(sections)]
        if diffs:
            raise ckpt.CheckpointError(
                f"{path} does not fit the config: " + "; ".join(diffs[:10])
                + (f" ... ({len(diffs)} in all)" if len(diffs) > 10 else "")
            )
    return stored


def _materialise(build, state_dict: dict, source: str) -> nn.Module:
    """Build on ``meta``, check, then assign the weights (no wasted random init)."""
    with torch.device("meta"):
        model = build()
    ckpt.load_into(model, state_dict, source)
    leftover = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if leftover:  # non-persistent buffers are not in a state dict: build normally instead
        model = build()
        ckpt.load_into(model, state_dict, source)
    return model.eval()


def load_denoiser(
    path: str | Path, cfg: ModelConfig | None = None, context: torch.Tensor | None = None
) -> tuple[MGLDDenoiser, ModelConfig]:
    """Stage-1 denoiser from a converted folder or an official stage-1 ``.ckpt``.

    ``cfg`` is required for a ``.ckpt`` (default: the full-size model) and, for a folder, must agree
    with the folder's own config. ``context`` replaces the empty-prompt context (``.ckpt`` only).
    """
    path = Path(path)
    if path.is_dir():
        cfg = _resolve_config(path, cfg, ("unet.", "cond_encoder.", "context_length"))
        state_dict = ckpt.load_state_dict_file(path / ckpt.DENOISER_FILE)
        source = str(path / ckpt.DENOISER_FILE)
    else:
        cfg = cfg or ModelConfig()
        with _naming(path):
            state_dict = convert.official_denoiser_state_dict(ckpt.load_state_dict_file(path), cfg, context)
        source = str(path)
    return _materialise(lambda: build_denoiser(cfg), state_dict, source), cfg


def load_vae(path: str | Path, cfg: ModelConfig | None = None) -> tuple[TemporalVAE, ModelConfig]:
    """Temporal VAE from a converted folder or an official video-VAE ``.ckpt``."""
    path = Path(path)
    if path.is_dir():
        cfg = _resolve_config(path, cfg, ("vae.",))
        state_dict = ckpt.load_state_dict_file(path / ckpt.VAE_FILE)
        source = str(path / ckpt.VAE_FILE)
    else:
        cfg = cfg or ModelConfig()
        with _naming(path):
            state_dict = convert.official_vae_state_dict(ckpt.load_state_dict_file(path), cfg)
        source = str(path)
    return _materialise(lambda: build_vae(cfg), state_dict, source), cfg


def convert_official(
    out: str | Path,
    stage1: str | Path | None = None,
    vae: str | Path | None = None,
    cfg: ModelConfig | None = None,
    context: torch.Tensor | None = None,
) -> Path:
    """Convert the official checkpoints into the folder ``out`` (either or both parts).

    The stage-1 checkpoint gives ``denoiser.safetensors`` and, from its ``flownet_model.*`` tensors,
    ``flow.safetensors`` (the RAFT the authors' inference runs, checked strictly against torchvision's
    ``raft_large``). A stage-1 checkpoint without RAFT tensors converts without a flow file (and removes a
    stale one from an earlier conversion), so inference falls back to raft-things.pth.
    """
    if stage1 is None and vae is None:
        raise ValueError("nothing to convert: give the stage-1 checkpoint, the video-VAE checkpoint, or both")
    cfg = cfg or ModelConfig()
    parts, provenance = {}, {}
    if stage1 is not None:
        log.info("converting the stage-1 checkpoint %s", stage1)
        full = ckpt.load_state_dict_file(stage1)
        with _naming(stage1):
            sd = convert.official_denoiser_state_dict(full, cfg, context)
            raft = convert.official_raft_state_dict(full)
        with torch.device("meta"):
            ckpt.check_state_dict(build_denoiser(cfg), sd, str(stage1))
        parts["denoiser"], provenance["denoiser"] = sd, Path(stage1).name
        if raft is not None:
            from torchvision.models.optical_flow import raft_large

            with torch.device("meta"):
                ckpt.check_state_dict(raft_large(weights=None), raft, f"{stage1} ({STAGE1_RAFT_PREFIX}*)")
            parts["flow"] = raft
            provenance["flow"] = f"{Path(stage1).name}: {STAGE1_RAFT_PREFIX}* (RAFT, torchvision raft_large names)"
        else:
            log.warning("%s holds no %s* (RAFT) tensors: no %s written; inference will use raft-things.pth",
                        stage1, STAGE1_RAFT_PREFIX, ckpt.FLOW_FILE)
            stale = Path(out) / ckpt.FLOW_FILE
            if stale.is_file():
                stale.unlink()
    if vae is not None:
        log.info("converting the video-VAE checkpoint %s", vae)
        with _naming(vae):
            sd = convert.official_vae_state_dict(ckpt.load_state_dict_file(vae), cfg)
        with torch.device("meta"):
            ckpt.check_state_dict(build_vae(cfg), sd, str(vae))
        parts["vae"], provenance["vae"] = sd, Path(vae).name
    return ckpt.save_model_folder(out, cfg, provenance=provenance, **parts)


def _reinit_mid_slots(denoiser: MGLDDenoiser) -> None:
    """Upstream's literal behaviour: SD's mid transformer and second mid ResNet are *not* loaded
    (index shift, docs/algorithm.md §2.1) and keep a fresh init with zeroed output layers."""
    mid = denoiser.unet.base.mid_block
    for module in (mid.attentions[0], mid.resnets[1]):
        for sub in module.modules():
            if hasattr(sub, "reset_parameters") and sub is not module:
                sub.reset_parameters()
    for layer in (mid.attentions[0].proj_out, mid.resnets[1].conv2):
        nn.init.zeros_(layer.weight)
        nn.init.zeros_(layer.bias)


def init_denoiser_from_sd(
    sd_source: str | Path, cfg: ModelConfig | None = None, mid_from_sd: bool = True,
    state_dict: Mapping[str, torch.Tensor] | None = None,
) -> MGLDDenoiser:
    """A stage-1 denoiser whose SD UNet and empty-prompt context come from SD 2.x.

    ``sd_source``: an LDM checkpoint (``v2-1_512-ema-pruned.ckpt``) or a diffusers folder
    (``unet/``, ``text_encoder/``). SFT, temporal layers and the time-aware encoder keep their
    fresh init (temporal alpha = ``cfg.unet.temporal_alpha_init``). ``mid_from_sd=False``
    reproduces the authors' run, which left the shifted middle-block slots random (docs/algorithm.md §2.1).
    ``state_dict``: the weights of ``sd_source`` already read with ``load_state_dict_file`` (the whole LDM file, or
    the folder's ``unet/`` file), so that the file is not read again.
    """
    from mgld.weights.text_context import context_from_diffusers, context_from_openclip

    cfg = cfg or ModelConfig()
    sd_source = Path(sd_source)
    denoiser = build_denoiser(cfg)
    if sd_source.is_dir():
        unet_sd = state_dict if state_dict is not None else ckpt.load_state_dict_file(
            diffusers_weights_file(sd_source / "unet"))
        context = context_from_diffusers(sd_source)
    else:
        full = state_dict if state_dict is not None else ckpt.load_state_dict_file(sd_source)
        with _naming(sd_source):
            unet_sd = convert.sd_unet_state_dict(full, cfg.unet.num_res_blocks)
            context = context_from_openclip(full)
    ckpt.load_into(denoiser.unet.base, unet_sd, str(sd_source))
    denoiser.text_context.copy_(context.reshape(denoiser.text_context.shape))
    if not mid_from_sd:
        _reinit_mid_slots(denoiser)
    return denoiser


def init_vae_from_sd(
    sd_source: str | Path, cfg: ModelConfig | None = None, state_dict: Mapping[str, torch.Tensor] | None = None,
) -> TemporalVAE:
    """A temporal VAE whose SD part comes from SD 2.x (LDM checkpoint or diffusers folder ``vae/``).

    ``state_dict``: the weights of ``sd_source`` already read with ``load_state_dict_file`` (the whole LDM file, or
    the folder's ``vae/`` file), so that the file is not read again.
    """
    cfg = cfg or ModelConfig()
    sd_source = Path(sd_source)
    vae = build_vae(cfg)
    if sd_source.is_dir():
        vae_sd = state_dict if state_dict is not None else ckpt.load_state_dict_file(
            diffusers_weights_file(sd_source / "vae"))
    else:
        full = state_dict if state_dict is not None else ckpt.load_state_dict_file(sd_source)
        with _naming(sd_source):
            vae_sd = convert.sd_vae_state_dict(full, len(cfg.vae.ch_mult))
    ckpt.load_into(vae.base, vae_sd, str(sd_source))
    return vae


def diffusers_weights_file(folder: Path) -> Path:
    for name in ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"{folder}: no diffusion_pytorch_model.safetensors (is this a diffusers SD folder?)")
