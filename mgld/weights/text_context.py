"""The empty-prompt text context, computed once from SD 2.1's text encoder (docs/algorithm.md §2.4).

MGLD conditions every step on the empty prompt encoded by SD 2.1's OpenCLIP ViT-H/14 text tower:
the output of the *penultimate* transformer block followed by the final LayerNorm, ``[1, 77, 1024]``.
The context is computed at conversion time and stored with the weights (``text_context``).

Two sources are supported:

* the OpenCLIP tower inside an LDM checkpoint (``cond_stage_model.model.*``; the official stage-1
  checkpoint and ``v2-1_512-ema-pruned.ckpt``), converted with diffusers' ``convert_open_clip_checkpoint``
  into a transformers ``CLIPTextModel`` that stops one block early;
* a diffusers SD 2.x folder (``text_encoder/`` already has 23 of the 24 blocks, ``tokenizer/``).

The empty prompt tokenises to ``<start> <end>`` followed by padding. OpenCLIP pads with id 0 (the
SD 2 diffusers tokenizer pads with "!", also id 0), so the ids are fixed and no tokenizer is needed.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

OPENCLIP_PREFIX = "cond_stage_model.model."
START_TOKEN, END_TOKEN, PAD_TOKEN = 49406, 49407, 0


def empty_prompt_ids(length: int = 77) -> torch.Tensor:
    """Token ids of the empty prompt, ``1 length`` int64."""
    ids = torch.full((1, length), PAD_TOKEN, dtype=torch.long)
    ids[0, 0], ids[0, 1] = START_TOKEN, END_TOKEN
    return ids


def has_openclip_tower(state_dict: dict, prefix: str = OPENCLIP_PREFIX) -> bool:
    return f"{prefix}token_embedding.weight" in state_dict


@torch.no_grad()
def context_from_openclip(state_dict: dict, prefix: str = OPENCLIP_PREFIX, head_channels: int = 64) -> torch.Tensor:
    """Empty-prompt context ``1 L D`` from an OpenCLIP text tower stored under ``prefix``.

    The number of heads is not stored in the weights; OpenCLIP text towers use 64-channel heads
    (ViT-H/14: 1024 / 64 = 16), which ``head_channels`` assumes.
    """
    from diffusers.loaders.single_file_utils import convert_open_clip_checkpoint
    from transformers import CLIPTextConfig, CLIPTextModel

    if not has_openclip_tower(state_dict, prefix):
        raise KeyError(f"no OpenCLIP text tower under {prefix!r} (expected {prefix}token_embedding.weight)")
    block = re.compile(re.escape(prefix) + r"transformer\.resblocks\.(\d+)\.")
    last = max(int(m.group(1)) for k in state_dict if (m := block.match(k)))
    # Drop the last block ("penultimate" output) and the projection, which the context does not use.
    kept = {
        k: v for k, v in state_dict.items()
        if k.startswith(prefix)
        and not k.startswith(f"{prefix}transformer.resblocks.{last}.")
        and k not in (f"{prefix}text_projection", f"{prefix}logit_scale")
    }
    token_embedding = kept[f"{prefix}token_embedding.weight"]
    width = token_embedding.shape[1]
    config = CLIPTextConfig(
        vocab_size=token_embedding.shape[0],
        hidden_size=width,
        intermediate_size=kept[f"{prefix}transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
        num_hidden_layers=last,
        num_attention_heads=width // head_channels,
        max_position_embeddings=kept[f"{prefix}positional_embedding"].shape[0],
        hidden_act="gelu",
        layer_norm_eps=1e-5,
    )
    model = CLIPTextModel(config).eval()
    converted = convert_open_clip_checkpoint(model, kept, prefix=prefix)
    expected = set(model.state_dict())
    if not any(k.startswith("text_model.") for k in expected):  # transformers >= 5 flattened the model
        converted = {k.removeprefix("text_model."): v for k, v in converted.items()}
    optional = {k for k in expected if k.endswith("position_ids")}
    missing, unexpected = sorted(expected - set(converted) - optional), sorted(set(converted) - expected)
    if missing or unexpected:
        raise KeyError(f"OpenCLIP tower conversion: missing {missing[:20]}, unexpected {unexpected[:20]}")
    model.load_state_dict(converted, strict=False)
    ids = empty_prompt_ids(config.max_position_embeddings)
    return model(input_ids=ids).last_hidden_state.float()


@torch.no_grad()
def context_from_diffusers(folder: str | Path) -> torch.Tensor:
    """Empty-prompt context ``1 77 D`` from a diffusers SD 2.x folder (``text_encoder/``)."""
    from transformers import CLIPTextModel

    model = CLIPTextModel.from_pretrained(Path(folder) / "text_encoder", local_files_only=True).eval()
    ids = empty_prompt_ids(model.config.max_position_embeddings)
    return model(input_ids=ids).last_hidden_state.float()
