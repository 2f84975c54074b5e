"""Official MGLD-VSR / Stable Diffusion checkpoints -> mgld state dicts (docs/checkpoints.md).

The SD parts go through diffusers' own LDM->diffusers converters
(``convert_ldm_unet_checkpoint``, ``convert_ldm_vae_checkpoint``, ``convert_open_clip_checkpoint``);
what MGLD adds is mapped here explicitly:

* UNet: MGLD numbers its middle block ``0..5`` (ResNet, temporal conv, transformer, temporal
  attention, ResNet, temporal conv) where SD has ``0..2`` (ResNet, transformer, ResNet). The SD slots
  are renumbered ``0, 2, 4 -> 0, 1, 2`` before diffusers' converter runs, the temporal slots
  ``1, 3, 5`` go to ``temporal.conv0 / attention / conv1``, and every ``*.spade.*`` key follows its
  ResNet block and is moved to ``sft.{down,mid,up}...``. Whatever is stored in the shifted slots is
  copied as is (docs/algorithm.md §2.1).
* Time-aware encoder: same names, prefix stripped.
* RAFT (``flownet_model.*``, the authors' RAFT_SR, whose keys are those of the original raft-things
  release): renamed to torchvision ``raft_large`` names by :func:`mgld.flow.convert_raft_things_state_dict`
  and written to the converted folder as ``flow.safetensors`` (docs/checkpoints.md).
* Video VAE: LDM decoder levels are reversed in diffusers (``up.{i}`` -> ``up_blocks.{L-1-i}``);
  ``decoder.temporal_mixing`` / ``decoder.up.{i}.temporal_mixing.{j}`` -> ``temporal.mid`` /
  ``temporal.up.{L-1-i}.{j}``; ``decoder.fusion_layer_{k}.encode_enc_{1,2,3}`` ->
  ``fusion.{k}.{fuse_in,dense,fuse_out}``.

Every converter checks that each input tensor lands somewhere (a key the diffusers converter would
silently drop raises) and the caller loads the result strictly.
"""

from __future__ import annotations

import re

import torch

from mgld.weights.hub import STAGE1_RAFT_PREFIX

UNET_PREFIX = "model.diffusion_model."
COND_ENCODER_PREFIX = "structcond_stage_model."
FIRST_STAGE_PREFIX = "first_stage_model."

# MGLD middle-block index -> SD middle-block index (the spatial ResNets and transformer)
_MID_SD_SLOT = {0: 0, 2: 1, 4: 2}
# MGLD middle-block index -> our temporal module
_MID_TEMPORAL_SLOT = {1: "conv0", 3: "attention", 5: "conv1"}


# upstream CFW sub-module names -> ours (``encode_enc_1/3`` are ResNet blocks, ``_2`` the dense blocks)
_CFW_NAMES = {
    "encode_enc_1.conv_out.": "fuse_in.conv_shortcut.",
    "encode_enc_1.": "fuse_in.",
    "encode_enc_2.": "dense.",
    "encode_enc_3.": "fuse_out.",
}


class ConversionError(ValueError):
    """A state dict does not have the layout the converter expects."""


def _check_all_used(source: dict, converted: dict, what: str) -> None:
    """Raise unless every tensor of ``source`` has exactly one converted key.

    The converters map keys one to one, so a count mismatch means a key was dropped (diffusers'
    converters skip keys they do not know). Dropped keys are named by tensor identity, or by
    storage when the converter reshaped a tensor (attention 1x1 convs -> linear).
    """
    if len(converted) == len(source):
        return

    def storage(t):
        return (t.device.type, t.untyped_storage().data_ptr()) if t.device.type != "meta" else id(t)

    used = {id(v) for v in converted.values()} | {storage(v) for v in converted.values()}
    dropped = [k for k, v in source.items() if id(v) not in used and storage(v) not in used]
    raise ConversionError(
        f"{what}: {len(source)} keys in, {len(converted)} out; not converted (first 20 of "
        f"{len(dropped)}): {dropped[:20]}"
    )


def strip_prefix(state_dict: dict, prefix: str) -> dict:
    """Keys under ``prefix`` with the prefix removed."""
    return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}


def convert_unet(unet_sd: dict, num_res_blocks: int) -> dict:
    """MGLD UNet keys (``input_blocks...``, no prefix) -> :class:`~mgld.models.unet.VideoUNet` keys."""
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    sd_layout: dict[str, torch.Tensor] = {}
    converted: dict[str, torch.Tensor] = {}
    for key, value in unet_sd.items():
        match = re.match(r"middle_block\.(\d+)\.(.*)", key)
        if match is None:
            sd_layout[UNET_PREFIX + key] = value
            continue
        index, rest = int(match.group(1)), match.group(2)
        if index in _MID_SD_SLOT:
            sd_layout[f"{UNET_PREFIX}middle_block.{_MID_SD_SLOT[index]}.{rest}"] = value
        elif index in _MID_TEMPORAL_SLOT:
            if "temporal" not in rest and not rest.startswith("norm."):
                raise ConversionError(
                    f"UNet key {key!r} is not a temporal layer: this looks like a plain Stable Diffusion UNet "
                    "(middle block 0..2), not an MGLD-VSR one; initialise training from SD instead"
                )
            converted[f"temporal.{_MID_TEMPORAL_SLOT[index]}.{rest}"] = value
        else:
            raise ConversionError(f"unexpected middle-block slot {index} in UNet key {key!r}")
    if not converted:
        raise ConversionError(
            "the UNet state dict has no temporal middle-block keys (middle_block.1/3/5); "
            "is this a plain Stable Diffusion UNet rather than an MGLD-VSR one?"
        )

    for key, value in convert_ldm_unet_checkpoint(sd_layout, {"layers_per_block": num_res_blocks}).items():
        match = re.match(r"(down_blocks|up_blocks)\.(\d+)\.resnets\.(\d+)\.spade\.(.*)", key)
        mid = re.match(r"mid_block\.resnets\.(\d+)\.spade\.(.*)", key)
        if match:
            side = "down" if match.group(1) == "down_blocks" else "up"
            converted[f"sft.{side}.{match.group(2)}.{match.group(3)}.{match.group(4)}"] = value
        elif mid:
            converted[f"sft.mid.{mid.group(1)}.{mid.group(2)}"] = value
        else:
            converted["base." + key] = value
    _check_all_used(unet_sd, converted, "UNet")
    return converted


def convert_vae(vae_sd: dict, num_levels: int) -> dict:
    """Video-VAE keys (``encoder.*``, ``decoder.*``, ``quant_conv.*``, ``post_quant_conv.*``, no
    ``loss.*``) -> :class:`~mgld.models.vae.TemporalVAE` keys. A plain SD VAE converts too (no
    temporal / fusion keys come out)."""
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    sd_layout, converted = {}, {}
    for key, value in vae_sd.items():
        temporal_mid = re.match(r"decoder\.temporal_mixing\.(.*)", key)
        temporal_up = re.match(r"decoder\.up\.(\d+)\.temporal_mixing\.(\d+)\.(.*)", key)
        fusion = re.match(r"decoder\.fusion_layer_(\d+)\.(.*)", key)
        if temporal_mid:
            converted[f"temporal.mid.{temporal_mid.group(1)}"] = value
        elif temporal_up:
            level = num_levels - 1 - int(temporal_up.group(1))
            converted[f"temporal.up.{level}.{temporal_up.group(2)}.{temporal_up.group(3)}"] = value
        elif fusion:
            rest = fusion.group(2)
            for old, new in _CFW_NAMES.items():
                rest = rest.replace(old, new)
            converted[f"fusion.{fusion.group(1)}.{rest}"] = value
        else:
            sd_layout[key] = value
    # diffusers' converter needs the level count from the config
    config = {
        "down_block_types": ("DownEncoderBlock2D",) * num_levels,
        "up_block_types": ("UpDecoderBlock2D",) * num_levels,
    }
    for key, value in convert_ldm_vae_checkpoint(sd_layout, config).items():
        converted["base." + key] = value
    _check_all_used(vae_sd, converted, "VAE")
    return converted


# ----------------------------------------------------------------------------------------------
# Whole checkpoints
# ----------------------------------------------------------------------------------------------

VAE_PREFIXES = ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.")


def official_denoiser_state_dict(ckpt_sd: dict, cfg, context: torch.Tensor | None = None) -> dict:
    """Official stage-1 checkpoint state dict -> :class:`~mgld.models.MGLDDenoiser` state dict.

    ``context`` (``1 L D``) overrides the empty-prompt context, which is otherwise computed from the
    checkpoint's OpenCLIP tower (``cond_stage_model.model.*``). The SD VAE, RAFT and schedule
    buffers of the checkpoint are not part of the denoiser and are ignored.
    """
    from mgld.weights.text_context import context_from_openclip, has_openclip_tower

    unet_sd = strip_prefix(ckpt_sd, UNET_PREFIX)
    encoder_sd = strip_prefix(ckpt_sd, COND_ENCODER_PREFIX)
    if not unet_sd or not encoder_sd:
        raise ConversionError(
            f"not an MGLD-VSR stage-1 checkpoint: {len(unet_sd)} keys under {UNET_PREFIX!r}, "
            f"{len(encoder_sd)} under {COND_ENCODER_PREFIX!r} (both are needed)"
        )
    out = {f"unet.{k}": v for k, v in convert_unet(unet_sd, cfg.unet.num_res_blocks).items()}
    out.update({f"cond_encoder.{k}": v for k, v in encoder_sd.items()})
    if context is None:
        if not has_openclip_tower(ckpt_sd):
            raise ConversionError(
                "the checkpoint has no OpenCLIP text tower (cond_stage_model.model.*) to compute the "
                "empty-prompt context from; pass the context explicitly (or an SD 2.1 checkpoint/folder)"
            )
        context = context_from_openclip(ckpt_sd)
    out["text_context"] = context.detach().float().reshape(1, *context.shape[-2:])
    return out


def official_raft_state_dict(ckpt_sd: dict) -> dict | None:
    """The stage-1 checkpoint's RAFT (``flownet_model.*``) in torchvision ``raft_large`` names; None if absent.

    The authors' inference loads these tensors over raft-things.pth, so they are the flow weights the
    released results were computed with (docs/checkpoints.md). The caller checks the result strictly
    against ``raft_large``.
    """
    from mgld.flow import convert_raft_things_state_dict

    raft_sd = strip_prefix(ckpt_sd, STAGE1_RAFT_PREFIX)
    if not raft_sd:
        return None
    try:
        return convert_raft_things_state_dict(raft_sd)
    except ValueError as err:
        raise ConversionError(f"the {STAGE1_RAFT_PREFIX}* tensors: {err}") from None


def official_vae_state_dict(ckpt_sd: dict, cfg) -> dict:
    """Official video-VAE checkpoint state dict -> :class:`~mgld.models.TemporalVAE` state dict.

    Training-only ``loss.*`` keys (LPIPS, SpyNet, discriminator) are dropped.
    """
    vae_sd = {k: v for k, v in ckpt_sd.items() if k.startswith(VAE_PREFIXES)}
    other = sorted(k for k in ckpt_sd if not k.startswith(VAE_PREFIXES) and not k.startswith("loss."))
    if other:
        raise ConversionError(f"unexpected keys in a video-VAE checkpoint (first 20 of {len(other)}): {other[:20]}")
    if not vae_sd:
        raise ConversionError("not a video-VAE checkpoint: no encoder./decoder. keys")
    return convert_vae(vae_sd, len(cfg.vae.ch_mult))


def sd_unet_state_dict(ckpt_sd: dict, num_res_blocks: int) -> dict:
    """A plain SD 2.x LDM checkpoint's UNet -> diffusers ``UNet2DConditionModel`` keys."""
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    unet_sd = {k: v for k, v in ckpt_sd.items() if k.startswith(UNET_PREFIX)}
    if not unet_sd:
        raise ConversionError(f"no {UNET_PREFIX}* keys: not a Stable Diffusion checkpoint")
    converted = convert_ldm_unet_checkpoint(unet_sd, {"layers_per_block": num_res_blocks})
    _check_all_used(unet_sd, converted, "SD UNet")
    return converted


def sd_vae_state_dict(ckpt_sd: dict, num_levels: int) -> dict:
    """A plain SD LDM checkpoint's ``first_stage_model`` -> diffusers ``AutoencoderKL`` keys."""
    vae_sd = strip_prefix(ckpt_sd, FIRST_STAGE_PREFIX)
    if not vae_sd:
        raise ConversionError(f"no {FIRST_STAGE_PREFIX}* keys: not a Stable Diffusion checkpoint")
    return {k.removeprefix("base."): v for k, v in convert_vae(vae_sd, num_levels).items()}
