"""How a pipeline's networks run (docs/notes/perf.md): precision, weights cast once, channels_last, compile, and
where the networks live between stages.

:class:`Runtime` holds, for one :class:`~mgld.pipeline.pipeline.MGLDPipeline`, the networks as its stages call
them — the networks themselves, or :class:`~mgld.models.efficiency.InferenceDenoiser` /
:class:`~mgld.models.efficiency.InferenceVAE` wrappers when an option needs one — the autocast dtype, and the
:class:`~mgld.pipeline.memory.Offloader` of ``infer.offload``. :meth:`Runtime.prepare` applies ``config.infer``
for a device (what :meth:`MGLDPipeline.to` does):

* ``infer.precision``: ``auto`` is the authors' fp16 autocast on CUDA and fp32 on the CPU (:func:`pipeline_precision`);
* ``infer.cast_weights`` (``auto``: for bf16), ``infer.channels_last``, ``infer.compile``/``compile_mode``
  (:func:`mgld.models.efficiency.prepare_for_inference`, in place on the networks: another pipeline built on the
  same network objects sees the cast weights, the layout and the compiled code too — copy them first);
* ``infer.offload``: ``none`` moves every network to the device; ``model``/``sequential`` hand them to an
  :class:`~mgld.pipeline.memory.Offloader` (each stage asks for its networks with :meth:`Runtime.use`).

With every option at its default the networks are called as they are: the output is bit for bit the one of a
pipeline without these options.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import torch
from torch import nn

from mgld.models.efficiency import DTYPES, prepare_for_inference, resolve_precision, use_cast_weights
from mgld.pipeline.memory import Offloader, is_out_of_memory

log = logging.getLogger(__name__)

SAMPLING_OOM_HINT = ("set sampling.tile_batch lower (e.g. 1), or free memory with infer.offload=model or "
                     "--precision bf16 (weights cast once)")
AUTHORS_VAE_OOM_HINT = ("in sampling.pixel_tiling=authors the VAE tile is the chain's pixel tile (decode.tile_size); "
                        "free memory with infer.offload=model or --precision bf16, or use sampling.pixel_tiling=frame "
                        "with decode.tile_size=auto (VAE tiles chosen from the free memory)")


def pipeline_precision(precision: str, device: torch.device, *, cpu_bf16: bool = True) -> str:
    """The precision a pipeline on ``device`` runs: ``auto`` -> fp16 on CUDA, fp32 elsewhere
    (:func:`mgld.models.efficiency.resolve_precision`). fp16 needs CUDA; bf16 also runs on the CPU (PyTorch's
    CPU bf16 kernels) for a pipeline moved there directly — what the tests and the GPU check's CPU smoke use.
    ``cpu_bf16=False``: bf16 needs CUDA too — the check a run's settings make before any network is built
    (:meth:`MGLDPipeline.from_config`, the runner; the schema refuses fp16/bf16 with ``infer.device: cpu``)."""
    resolved = resolve_precision(precision, device)
    if resolved != "fp32" and device.type != "cuda" and not (cpu_bf16 and resolved == "bf16" and device.type == "cpu"):
        raise ValueError(f"infer.precision={precision} needs a CUDA device; use fp32 on {device.type}")
    return resolved


def autocast(device: torch.device, dtype: torch.dtype | None):
    """``torch.autocast`` to ``dtype`` on ``device``'s type, or a no-op for None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


@contextlib.contextmanager
def oom_hint(what: str, device: torch.device, hint: str) -> Iterator[None]:
    """An out-of-memory error inside becomes a ``MemoryError`` naming the stage and the knobs that help."""
    try:
        yield
    except Exception as err:  # noqa: BLE001 - only out-of-memory errors are turned into a message
        if not is_out_of_memory(err):
            raise
        raise MemoryError(f"out of memory in the {what} on {device}: {hint}") from err


class Runtime:
    """The networks of a pipeline as its stages run them (module docstring).

    ``denoiser``/``vae``: what the stages call (the networks, or their inference wrappers); ``amp``: the autocast
    dtype (None: no autocast — fp32, or weights already in the compute dtype); ``cast_dtype``: the dtype the
    weights were cast to (None: not cast); ``precision``: the resolved precision; ``offloader``: the
    :class:`~mgld.pipeline.memory.Offloader` of ``infer.offload`` (None for ``none``).
    """

    def __init__(self, denoiser: nn.Module, vae: nn.Module):
        self.denoiser, self.vae = denoiser, vae
        self.amp: torch.dtype | None = None
        self.cast_dtype: torch.dtype | None = None
        self.precision: str | None = None
        self.offloader: Offloader | None = None
        self._key: tuple | None = None

    def prepare(self, infer, device: torch.device, networks: dict[str, nn.Module]) -> None:
        """Apply ``infer`` (:class:`mgld.config.InferConfig`) for ``device`` to ``networks`` (``denoiser``,
        ``vae`` and, once built, ``flow``); once per device, precision and offload mode."""
        precision = pipeline_precision(infer.precision, device)
        key = (device, precision, infer.offload)
        if self._key == key:
            return
        cast = DTYPES[precision] if use_cast_weights(infer.cast_weights, precision) else None
        if self.cast_dtype is not None and cast != self.cast_dtype:
            raise ValueError(f"infer.precision={infer.precision}: the weights were already cast to {self.cast_dtype} "
                             f"(infer.cast_weights) and cannot run as {precision}; build a new pipeline")
        # cast before placing: a network cast on the host is copied to the device at its smaller size
        self.denoiser, self.vae, self.amp = prepare_for_inference(
            networks["denoiser"], networks["vae"], precision=precision, cast=infer.cast_weights,
            channels_last=infer.channels_last, compile=infer.compile, compile_mode=infer.compile_mode)
        self.cast_dtype, self.precision = cast, precision
        if self.offloader is not None:
            self.offloader.close()
            self.offloader = None
        if infer.offload == "none":
            for module in networks.values():
                module.to(device)
        else:
            self.offloader = Offloader(networks, device, infer.offload)
        self._key = key

    def add(self, name: str, module) -> None:
        """A network built later (the flow estimator): placed by the offloader when there is one."""
        if self.offloader is not None and isinstance(module, nn.Module):
            self.offloader.add(name, module)

    def use(self, *names: str):
        """The networks ``names`` on the device for a stage (``infer.offload``; a no-op without offloading)."""
        names = tuple(n for n in names if self.offloader is not None and n in self.offloader.models)
        if not names:  # no offloading, or a stage without a placed network (e.g. the DIS flow): leave them
            return contextlib.nullcontext()
        return self.offloader.use(*names)

    def flow_amp(self, flow_precision: str) -> torch.dtype | None:
        """The flow's autocast: the compute dtype of the precision (``flow.precision=autocast``; the flow network
        is never cast), or none (``fp32``)."""
        if flow_precision != "autocast" or self.precision in (None, "fp32"):
            return None
        return DTYPES[self.precision]

    def options(self, infer) -> dict:
        """What runs: precision, autocast dtype, weights' dtype, channels_last, compile (mode), attention, offload."""
        def name(dtype):
            return str(dtype).replace("torch.", "") if dtype is not None else None

        return {"precision": self.precision, "autocast": name(self.amp), "cast_weights": name(self.cast_dtype),
                "channels_last": infer.channels_last, "compile": infer.compile and infer.compile_mode,
                "attention": infer.attention, "offload": infer.offload}


__all__ = ["AUTHORS_VAE_OOM_HINT", "SAMPLING_OOM_HINT", "Runtime", "autocast", "oom_hint", "pipeline_precision"]
