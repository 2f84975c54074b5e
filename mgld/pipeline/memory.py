"""Memory plan of the inference (docs/notes/perf.md): free memory, the VAE tile size, offloading, OOM retry.

* :func:`free_bytes` — what a stage may still allocate on a device.
* :func:`auto_decode_tile` — ``decode.tile_size: auto``: the largest pixel tile (the authors' 960 when it fits)
  whose VAE encode + decode activations fit a memory budget; a pure function of the budget, the frame size, the
  frame count and the compute dtype, using :data:`VAE_BYTES_PER_PIXEL` (the peak tensor bytes per pixel of one
  frame of the SD 2.1 temporal VAE, counted on the meta device by :mod:`mgld.perf.simulate`, checked against the
  peak RSS of CPU runs in docs/notes/perf.md) or a per-pixel cost given by the caller.
* :class:`Offloader` — ``infer.offload``: ``model`` (a network is on the device only during the stages that use
  it), ``sequential`` (each layer's weights are copied to the device for its own call only: the least memory, the
  slowest); with ``none`` there is no Offloader (:meth:`mgld.pipeline.runtime.Runtime.prepare` moves every
  network to the device).
* :func:`retry_on_oom` — on an out-of-memory error, one retry with a smaller value of a knob (the decode tile
  size), with a message naming the knob.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

import torch
from torch import nn

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")

AUTHORS_TILE = 960  # the authors' VAE tile (docs/algorithm.md §5)
TILE_CANDIDATES = (960, 896, 832, 768, 704, 640, 576, 512, 448, 384, 320, 256)

# Peak tensor bytes of the temporal VAE (SD 2.1 widths) per pixel and frame of a pixel tile, for the encode
# (CFW features) and the decode of the tile; the decode is the larger. Counted on the meta device
# (mgld.perf.simulate.peak_bytes, fused attention) at 736x960 x 5 frames; linear in pixels and frames.
VAE_BYTES_PER_PIXEL = {
    "fp32": 3969.25,  # weights and activations fp32
    "autocast_fp16": 2752.5,  # fp32 weights, CUDA autocast to fp16 (the authors' run): norms/SiLU stay fp32
    "autocast_bf16": 2752.5,
    "fp16": 1984.6,  # weights cast once (infer.cast_weights), activations in the compute dtype
    "bf16": 1984.6,
}
# What a decode tile also holds besides the VAE activations: the tile's LR pixels and output (fp32), the blend
# accumulators over the whole frame (fp32, 3 channels + weights) — per pixel and frame.
FRAME_BYTES_PER_PIXEL = 4 * (3 + 3 + 1)


def precision_key(dtype: torch.dtype, autocast: bool) -> str:
    """Key of :data:`VAE_BYTES_PER_PIXEL` for a compute dtype, with or without autocast."""
    name = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[dtype]
    return f"autocast_{name}" if autocast and name != "fp32" else name


# --------------------------------------------------------------------------------------------------
# Free memory
# --------------------------------------------------------------------------------------------------


def free_bytes(device: torch.device | str) -> int:
    """Bytes a stage may still allocate: on CUDA the driver's free memory plus what PyTorch's caching allocator
    holds unused; on the CPU the available system memory."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    import psutil

    return int(psutil.virtual_memory().available)


# --------------------------------------------------------------------------------------------------
# decode.tile_size: auto
# --------------------------------------------------------------------------------------------------


def decode_tile_bytes(tile: int, frame_hw: tuple[int, int], frames: int, dtype: torch.dtype = torch.float32, *,
                      autocast: bool = False, bytes_per_pixel: float | None = None) -> int:
    """Modelled peak bytes of the VAE encode/decode of one pixel tile of side ``tile`` (a tile never exceeds
    the frame: ``min(tile, H) × min(tile, W)``) over ``frames`` frames, plus the frame-sized blend buffers."""
    height, width = frame_hw
    per_pixel = VAE_BYTES_PER_PIXEL[precision_key(dtype, autocast)] if bytes_per_pixel is None else bytes_per_pixel
    tile_pixels = min(tile, height) * min(tile, width)
    return int(frames * (per_pixel * tile_pixels + FRAME_BYTES_PER_PIXEL * height * width))


def auto_decode_tile(budget: int, frame_hw: tuple[int, int], frames: int, dtype: torch.dtype = torch.float32, *,
                     autocast: bool = False, bytes_per_pixel: float | None = None,
                     candidates: Sequence[int] = TILE_CANDIDATES) -> int:
    """``decode.tile_size: auto``: the largest of ``candidates`` (960 first) whose modelled peak
    (:func:`decode_tile_bytes`) fits ``budget`` bytes; the smallest candidate when none does (logged)."""
    ordered = sorted(candidates, reverse=True)
    for tile in ordered:
        if decode_tile_bytes(tile, frame_hw, frames, dtype, autocast=autocast,
                             bytes_per_pixel=bytes_per_pixel) <= budget:
            return tile
    smallest = ordered[-1]
    need = decode_tile_bytes(smallest, frame_hw, frames, dtype, autocast=autocast, bytes_per_pixel=bytes_per_pixel)
    log.warning("decode.tile_size=auto: even %d-px tiles need about %.1f GiB, %.1f GiB free; trying %d "
                "(use infer.offload=model or a lower precision to free memory)", smallest, need / 2**30,
                budget / 2**30, smallest)
    return smallest


def tile_stride_for(tile: int, tile_size: int = AUTHORS_TILE, tile_stride: int = 750) -> int:
    """The stride of an automatically chosen tile: the configured ``tile_stride`` (of tiles of ``tile_size``)
    itself when the tile is that size, else scaled like the tile (so the overlap keeps its share), a multiple of
    8, at most the tile."""
    if tile == tile_size:
        return min(tile, tile_stride)
    return min(tile, max(8, 8 * round(tile * tile_stride / tile_size / 8)))


def smaller_tile(tile: int, candidates: Sequence[int] = TILE_CANDIDATES) -> int | None:
    """The next smaller candidate tile (about 20 % fewer pixels per step down), or None at the smallest."""
    below = [c for c in sorted(candidates, reverse=True) if c < tile]
    if not below:
        return None
    target = tile * 0.8
    return next((c for c in below if c <= target), below[-1])


# --------------------------------------------------------------------------------------------------
# Out-of-memory retry
# --------------------------------------------------------------------------------------------------


def is_out_of_memory(err: BaseException) -> bool:
    """A CUDA out-of-memory error, or a CPU allocation failure."""
    oom = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    if isinstance(err, (oom, MemoryError)):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def _release_cache() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def retry_on_oom(run: Callable[[T], R], value: T, *, knob: str, smaller: Callable[[T], T | None],
                 hint: str = "infer.offload=model") -> R:
    """``run(value)``; on an out-of-memory error, one retry with ``smaller(value)`` (logged, naming ``knob``),
    then a ``MemoryError`` naming the knob and what else frees memory."""
    try:
        return run(value)
    except Exception as err:  # noqa: BLE001 - only out-of-memory errors are handled
        if not is_out_of_memory(err):
            raise
        retry = smaller(value)
        if retry is None:
            raise MemoryError(f"out of memory with {knob}={value}, the smallest setting; free memory with {hint}"
                              ) from err
        log.warning("out of memory with %s=%s; retrying once with %s=%s (set %s=%s to skip this retry)",
                    knob, value, knob, retry, knob, retry)
    _release_cache()  # after the except block: the error (and the tensors its traceback held) is gone
    try:
        return run(retry)
    except Exception as err:  # noqa: BLE001
        if not is_out_of_memory(err):
            raise
        lower = smaller(retry)
        suggestion = f"set {knob} lower (e.g. {lower})" if lower is not None else f"{knob} is at its smallest"
        raise MemoryError(f"out of memory with {knob}={value} and again with {knob}={retry}: {suggestion}, "
                          f"or free memory with {hint}") from err


# --------------------------------------------------------------------------------------------------
# Offloading
# --------------------------------------------------------------------------------------------------

OFFLOAD_MODES = ("model", "sequential")  # infer.offload=none needs no Offloader


class Offloader:
    """Where the networks live between stages (``infer.offload``, module docstring).

    ``models``: name -> network (e.g. ``{"flow": …, "vae": …, "denoiser": …}``). Wrap each stage in
    ``with offloader.use("vae"):``; the named networks are on ``device`` inside the block. The weights keep a
    copy in (pinned) host memory, so moving a network off the device frees it without a copy back.
    """

    def __init__(self, models: dict[str, nn.Module], device: torch.device | str, mode: str = "model",
                 storage: torch.device | str = "cpu"):
        if mode not in OFFLOAD_MODES:
            raise ValueError(f"infer.offload must be one of {OFFLOAD_MODES}, got {mode!r}")
        self.models, self.mode = dict(models), mode
        self.device, self.storage = torch.device(device), torch.device(storage)
        self.resident: set[str] = set()
        self._hooks: list = []
        self._hooked: set[int] = set()  # ids of the networks with layer hooks (sequential)
        self._host: dict[tuple, torch.Tensor] = {}  # (module, kind, name) -> host copy
        self.start()

    def start(self) -> None:
        """Place the networks for the mode (done at construction; again after :meth:`close`): all in host memory
        (``sequential`` also installs the per-layer hooks)."""
        for name in list(self.models):
            self._start(name)

    def _start(self, name: str) -> None:
        module = self.models[name]
        self._to_host(module)
        self.resident.discard(name)
        if self.mode == "sequential" and id(module) not in self._hooked:
            self._install_layer_hooks(module)

    def add(self, name: str, module: nn.Module) -> None:
        """Place one more network (e.g. the flow estimator, built on first use) as the mode says."""
        self.models[name] = module
        self._start(name)

    # host copies -------------------------------------------------------------------------------
    def _slots(self, module: nn.Module, recurse: bool = True) -> Iterator[tuple[tuple, dict, str, torch.Tensor]]:
        for sub in module.modules() if recurse else (module,):
            for kind, table in (("p", sub._parameters), ("b", sub._buffers)):
                for name, tensor in table.items():
                    if tensor is not None:
                        yield (id(sub), kind, name), table, name, tensor

    @staticmethod
    def _place(table: dict, name: str, tensor: torch.Tensor, target: torch.Tensor) -> None:
        if torch._has_compatible_shallow_copy_type(tensor, target):  # CPU <-> CUDA: keep the Parameter object
            tensor.data = target
        elif isinstance(tensor, nn.Parameter):
            table[name] = nn.Parameter(target, requires_grad=tensor.requires_grad)
        else:
            table[name] = target

    def _skip(self, tensor: torch.Tensor) -> bool:
        """A ``meta`` tensor (a network counted on the meta device, :mod:`mgld.perf.simulate`) stays as it is."""
        return tensor.is_meta and self.device.type != "meta"

    def _to_host(self, module: nn.Module, recurse: bool = True) -> None:
        pin = self.device.type == "cuda" and self.storage.type == "cpu"
        for key, table, name, tensor in self._slots(module, recurse):
            if self._skip(tensor):
                continue
            host = self._host.get(key)
            if host is None:
                host = tensor.detach().to(self.storage)
                host = host.pin_memory() if pin else host
                self._host[key] = host
            if tensor.device != host.device:
                self._place(table, name, tensor, host)

    def _to_device(self, module: nn.Module, recurse: bool = True) -> None:
        for _, table, name, tensor in self._slots(module, recurse):
            if tensor.device != self.device and not self._skip(tensor):
                self._place(table, name, tensor, tensor.detach().to(self.device, non_blocking=True))

    # sequential --------------------------------------------------------------------------------
    def _install_layer_hooks(self, module: nn.Module) -> None:
        for sub in module.modules():
            if any(t is not None for t in (*sub._parameters.values(), *sub._buffers.values())):
                self._hooks.append(sub.register_forward_pre_hook(lambda m, args: self._to_device(m, False)))
                self._hooks.append(sub.register_forward_hook(lambda m, args, out: self._to_host(m, False)))
        self._hooked.add(id(module))

    # stages ------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def use(self, *names: str) -> Iterator[None]:
        """The networks ``names`` on the device for the block (``model`` mode; the others are moved off)."""
        unknown = [n for n in names if n not in self.models]
        if unknown:
            raise KeyError(f"unknown networks {unknown}; known: {sorted(self.models)}")
        if self.mode == "model":
            for name in sorted(self.resident - set(names)):
                self._to_host(self.models[name])
                self.resident.discard(name)
            for name in names:
                if name not in self.resident:
                    self._to_device(self.models[name])
                    self.resident.add(name)
        yield

    def close(self) -> None:
        """Remove the layer hooks (``sequential``) and put every network back on the device."""
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()
        self._hooked.clear()
        for module in self.models.values():
            self._to_device(module)
        self.resident = set(self.models)


__all__ = [
    "AUTHORS_TILE",
    "OFFLOAD_MODES",
    "Offloader",
    "TILE_CANDIDATES",
    "VAE_BYTES_PER_PIXEL",
    "auto_decode_tile",
    "decode_tile_bytes",
    "free_bytes",
    "is_out_of_memory",
    "precision_key",
    "retry_on_oom",
    "smaller_tile",
    "tile_stride_for",
]
