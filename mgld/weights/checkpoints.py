"""Reading and writing weights safely; the only module that opens weight files.

* ``.safetensors`` files are read with safetensors; everything else with
  ``torch.load(weights_only=True)``. The official MGLD-VSR ``.ckpt`` files are PyTorch-Lightning 1.x
  checkpoints whose ``callbacks`` dict is keyed by the ``ModelCheckpoint`` *class*, which the
  weights-only unpickler refuses. :func:`load_torch_file` therefore lists the globals the pickle
  needs and lets through only Lightning names, each replaced by an inert stub class that keeps no
  state and runs no code; any other global is refused with its name. Files in torch's legacy
  (pre-1.6, non-zip) format, such as old ``.pth`` releases, go through the plain weights-only
  unpickler. Nothing is ever unpickled without restriction, and an unreadable file gives one line
  naming it and saying what is wrong (never torch's advice to retry with ``weights_only=False``).
* Loading into a module is strict: missing keys, unexpected keys and shape mismatches raise
  :class:`CheckpointError`, naming the file, the first 20 offending keys and their count.
* A converted model is a folder: ``config.yaml`` (the ``model`` config section plus provenance),
  ``denoiser.safetensors`` (stage-1 UNet, time-aware encoder, empty-prompt context), ``flow.safetensors``
  (the stage-1 checkpoint's own RAFT, ``flownet_model.*``, in torchvision ``raft_large`` names; what the
  authors' inference runs) and/or ``vae.safetensors`` (temporal VAE). Files are written to a temporary name
  and renamed.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file, save_file
from torch import nn

from mgld.config import ModelConfig, model_config_from_dict
from mgld.io.atomic import atomic_write
from mgld.weights.files import CONFIG_FILE, DENOISER_FILE, FLOW_FILE, VAE_FILE

__all__ = ["CONFIG_FILE", "DENOISER_FILE", "FLOW_FILE", "VAE_FILE", "CheckpointError", "check_state_dict",
           "load_into", "load_state_dict_file", "load_torch_file", "read_model_config", "save_model_folder"]
# Modules whose globals may appear in a Lightning checkpoint; each is replaced by an inert stub.
_STUBBED_MODULE_PREFIXES = ("pytorch_lightning.", "lightning.", "lightning_fabric.")


class CheckpointError(RuntimeError):
    """A weight file is unreadable or does not fit the model."""


class _DroppedObject:
    """Stands in for a Lightning object inside a checkpoint: accepts and forgets its state."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass


def _stub_for(name: str) -> type:
    return type(f"Dropped[{name}]", (_DroppedObject,), {"__module__": __name__})


# Sentences of torch's own error messages that advise an unsafe load; never shown to the user.
_UNSAFE_ADVICE = re.compile(r"weights.only|safe_globals|trusted source|arbitrary code|file an issue", re.IGNORECASE)
_ZIP_MAGIC = b"PK\x03\x04"


def _reason(err: BaseException) -> str:
    """A one-line account of ``err`` without torch's advice to load with ``weights_only=False``."""
    text = " ".join(str(err).split())
    unsupported = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if unsupported:
        return f"it needs the non-tensor object {unsupported.group(1)}, which is refused"
    kept, length = [], 0
    for sentence in re.split(r"(?<=[.!?])\s+", text):
        if sentence and not _UNSAFE_ADVICE.search(sentence) and length + len(sentence) <= 200:
            kept.append(sentence)
            length += len(sentence)
    detail = " ".join(kept) or "damaged, or not a PyTorch weights file"
    return f"{type(err).__name__}: {detail}"


def load_torch_file(path: str | Path) -> dict:
    """``torch.load(weights_only=True)``, letting Lightning globals through as inert stubs.

    Raises ``FileNotFoundError`` for a missing file and :class:`CheckpointError` (one line naming the file)
    for an empty, truncated, foreign or otherwise unreadable one.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file (0 bytes); an interrupted download or copy?")
    if not zipfile.is_zipfile(path):
        with path.open("rb") as f:
            if f.read(4) == _ZIP_MAGIC:
                raise CheckpointError(f"{path}: truncated or damaged (a zip archive without its central "
                                      "directory; an interrupted download or copy?)")
        return _load_legacy(path)
    try:
        needed = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception as err:  # a damaged zip archive
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({_reason(err)})") from None
    refused = [g for g in needed if not g.startswith(_STUBBED_MODULE_PREFIXES)]
    if refused:
        raise CheckpointError(
            f"{path}: refusing to unpickle objects other than tensors and plain containers: {refused[:20]}"
        )
    stubs = [(_stub_for(g), g) for g in needed]
    try:
        with torch.serialization.safe_globals(stubs):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({_reason(err)})") from None


def _load_legacy(path: Path) -> dict:
    """A file in torch's legacy (non-zip) format, or not a torch file at all: weights-only unpickler only."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        reason = _reason(err)
        if "refused" in reason:
            raise CheckpointError(f"{path}: refusing to unpickle objects other than tensors and plain "
                                  f"containers ({reason})") from None
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({reason})") from None


def load_state_dict_file(path: str | Path, nested_keys: tuple[str, ...] = ("state_dict",)) -> dict[str, torch.Tensor]:
    """The tensors of a weight file: safetensors, or a torch/Lightning checkpoint.

    When the checkpoint is a dict holding one of ``nested_keys`` (Lightning's ``state_dict``, basicsr's
    ``params``), that entry is returned.
    """
    path = Path(path).expanduser()
    if path.suffix == ".safetensors":
        if not path.is_file():
            raise FileNotFoundError(f"weights not found: {path}")
        try:
            return load_file(path)
        except Exception as err:
            raise CheckpointError(f"{path}: not a readable safetensors file ({_reason(err)})") from None
    data = load_torch_file(path)
    for key in nested_keys:
        if isinstance(data, Mapping) and key in data:
            data = data[key]
            break
    if not isinstance(data, Mapping) or not all(torch.is_tensor(v) for v in data.values()):
        raise CheckpointError(f"{path}: holds no state dict of tensors")
    return dict(data)


def _first(keys: list[str], n: int = 20) -> str:
    return f"{keys[:n]}" + (f" ... ({len(keys)} in all)" if len(keys) > n else f" ({len(keys)})")


def check_state_dict(module: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise :class:`CheckpointError` unless ``state_dict`` has exactly the module's keys and shapes."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    mismatched = sorted(
        f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(expected) & set(state_dict)
        if tuple(state_dict[k].shape) != tuple(expected[k].shape)
    )
    problems = []
    if missing:
        problems.append(f"missing keys {_first(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_first(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches {_first(mismatched)}")
    if problems:
        raise CheckpointError(f"{source} does not fit {type(module).__name__}: " + "; ".join(problems))


def load_into(module: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> nn.Module:
    """Strictly load ``state_dict`` into ``module`` (after :func:`check_state_dict`)."""
    check_state_dict(module, state_dict, source)
    assign = any(p.device.type == "meta" for p in module.parameters())
    module.load_state_dict(state_dict, strict=True, assign=assign)
    return module


def save_model_folder(
    folder: str | Path,
    model_config: ModelConfig,
    denoiser: nn.Module | Mapping[str, torch.Tensor] | None = None,
    vae: nn.Module | Mapping[str, torch.Tensor] | None = None,
    provenance: dict | None = None,
    flow: nn.Module | Mapping[str, torch.Tensor] | None = None,
) -> Path:
    """Write ``config.yaml`` and the given parts' ``*.safetensors`` (modules or state dicts) into ``folder``.

    ``flow``: the RAFT weights (torchvision ``raft_large`` names) written as ``flow.safetensors``."""
    folder = Path(folder)
    parts = {DENOISER_FILE: denoiser, VAE_FILE: vae, FLOW_FILE: flow}
    for name, module in parts.items():
        if module is not None:
            state = module.state_dict() if isinstance(module, nn.Module) else module
            tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
            atomic_write(folder / name, lambda tmp, t=tensors: save_file(t, tmp, metadata={"format": "pt"}))
    text = OmegaConf.to_yaml(
        {"model": OmegaConf.structured(model_config), "provenance": provenance or {}}
    )
    atomic_write(folder / CONFIG_FILE, lambda tmp: Path(tmp).write_text(text))
    return folder


def read_model_config(folder: str | Path) -> ModelConfig:
    """The ``model`` section of a converted folder's ``config.yaml``."""
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; is {folder} a converted mgld weights folder?")
    data = OmegaConf.to_container(OmegaConf.load(path))
    if "model" not in data:
        raise CheckpointError(f"{path}: has no 'model' section")
    return model_config_from_dict(data["model"])
