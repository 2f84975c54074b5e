"""Counting without computing: FLOPs and peak tensor memory of a network call, on PyTorch's ``meta`` device.

A call is replayed with every parameter, buffer and input replaced by a ``meta`` tensor of the same shape and
dtype (no data, no arithmetic), so the full-size networks can be counted at any frame size in about a second,
on any machine:

* :func:`count_flops` — ``torch.utils.flop_counter.FlopCounterMode`` over the call (multiply-add = 2 FLOP);
* :func:`peak_bytes` — the largest total size of the tensors alive at once during the call (what a caching
  allocator must hold at least; the call's inputs and the weights are not included). Attention is counted as a
  fused kernel (flash / memory-efficient: only its output is materialised) unless ``attention="math"``, which
  counts the ``L × L`` score matrix of the unfused path. ``autocast=torch.float16`` emulates CUDA autocast:
  matrix ops run on fp16 copies of their inputs (weights re-cast on every call, as autocast does when the
  weights do not require grad) and norms/softmax in fp32.

The counts are exact for the eager program; a real run adds allocator rounding, cuDNN/cuBLAS workspaces and,
on the CPU, oneDNN reorder buffers (docs/notes/perf.md compares both).
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map
from torch.utils.flop_counter import FlopCounterMode


@contextlib.contextmanager
def on_meta(*modules: nn.Module, dtype: torch.dtype | None = None) -> Iterator[None]:
    """Within the block, every parameter and buffer of ``modules`` is a ``meta`` tensor (optionally of ``dtype``
    for floating tensors); the real tensors are put back afterwards. Nothing is copied."""
    saved = []
    try:
        for module in modules:
            if not isinstance(module, nn.Module):  # a plain function: nothing to replace
                continue
            for sub in module.modules():
                for table in (sub._parameters, sub._buffers):
                    for name, tensor in table.items():
                        if tensor is None:
                            continue
                        saved.append((table, name, tensor))
                        target = dtype if dtype is not None and tensor.is_floating_point() else tensor.dtype
                        meta = torch.empty_like(tensor, device="meta", dtype=target)
                        table[name] = nn.Parameter(meta, requires_grad=False) if isinstance(tensor, nn.Parameter) \
                            else meta
        yield
    finally:
        for table, name, tensor in reversed(saved):
            table[name] = tensor


def meta_like(x, dtype: torch.dtype | None = None):
    """A ``meta`` tensor of ``x``'s shape (and dtype, or ``dtype`` for floating tensors); non-tensors unchanged."""
    if not isinstance(x, torch.Tensor):
        return x
    target = dtype if dtype is not None and x.is_floating_point() else x.dtype
    return torch.empty(x.shape, device="meta", dtype=target)


class _LeanAttention(TorchFunctionMode):
    """Replace ``F.scaled_dot_product_attention`` by its output shape (a fused kernel keeps no score matrix)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            q, v = args[0], args[2] if len(args) > 2 else kwargs["value"]
            return torch.empty((*q.shape[:-1], v.shape[-1]), device=q.device, dtype=q.dtype)
        return func(*args, **kwargs)


# Functions CUDA autocast runs in the lower precision, and those it runs in fp32 (the ones these networks use).
_AUTOCAST_LOW = (F.conv1d, F.conv2d, F.conv3d, F.conv_transpose2d, F.linear, F.scaled_dot_product_attention,
                 torch.matmul, torch.mm, torch.bmm, torch.baddbmm, torch.addmm, torch.Tensor.__matmul__)
_AUTOCAST_FP32 = (F.group_norm, F.layer_norm, F.softmax, torch.softmax, torch.Tensor.softmax)


class _EmulatedAutocast(TorchFunctionMode):
    """CUDA autocast's casts, on any device: floating inputs of matrix ops to ``dtype``, of norms to fp32."""

    def __init__(self, dtype: torch.dtype):
        super().__init__()
        self.dtype = dtype

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        target = self.dtype if func in _AUTOCAST_LOW else torch.float32 if func in _AUTOCAST_FP32 else None
        if target is not None:
            def cast(t):
                return t.to(target) if isinstance(t, torch.Tensor) and t.is_floating_point() else t

            args, kwargs = tree_map(cast, args), tree_map(cast, kwargs)
        return func(*args, **kwargs)


class LiveBytes(TorchDispatchMode):
    """Tracks the bytes of tensor storages created inside the mode while they are alive; ``peak`` is the most."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self._storages: dict[int, list[int]] = {}  # storage id -> [bytes, live tensors]
        self._tensors: set[int] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self._track(t)
        return out

    def _track(self, t: torch.Tensor) -> None:
        if id(t) in self._tensors:
            return
        key = t.untyped_storage()._cdata
        entry = self._storages.get(key)
        if entry is None:
            size = t.untyped_storage().nbytes()
            self._storages[key] = [size, 1]
            self.live += size
            self.peak = max(self.peak, self.live)
        else:
            entry[1] += 1
        self._tensors.add(id(t))
        weakref.finalize(t, self._release, id(t), key)

    def _release(self, tensor_id: int, key: int) -> None:
        self._tensors.discard(tensor_id)
        entry = self._storages.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            self.live -= entry[0]
            del self._storages[key]


def _meta_args(args, kwargs, dtype):
    return tree_map(lambda x: meta_like(x, dtype), args), tree_map(lambda x: meta_like(x, dtype), kwargs or {})


def count_flops(fn: Callable, modules: nn.Module | tuple[nn.Module, ...], *args, dtype: torch.dtype | None = None,
                **kwargs) -> int:
    """FLOPs of ``fn(*args, **kwargs)`` (``fn`` uses ``modules``), counted on the meta device."""
    modules = modules if isinstance(modules, tuple) else (modules,)
    args, kwargs = _meta_args(args, kwargs, dtype)
    with torch.no_grad(), _eager(), on_meta(*modules, dtype=dtype), FlopCounterMode(display=False) as counter:
        fn(*args, **kwargs)
    return counter.get_total_flops()


def peak_bytes(fn: Callable, modules: nn.Module | tuple[nn.Module, ...], *args, dtype: torch.dtype | None = None,
               attention: str = "fused", autocast: torch.dtype | None = None, **kwargs) -> int:
    """Peak bytes of the tensors ``fn(*args, **kwargs)`` creates (inputs and weights excluded), on meta.

    ``attention``: ``fused`` (flash / memory-efficient kernels) or ``math`` (the unfused path's score matrix).
    ``autocast``: emulate CUDA autocast to this dtype (module docstring).
    """
    if attention not in ("fused", "math"):
        raise ValueError(f"attention must be 'fused' or 'math', got {attention!r}")
    modules = modules if isinstance(modules, tuple) else (modules,)
    args, kwargs = _meta_args(args, kwargs, dtype)
    lean = _LeanAttention() if attention == "fused" else contextlib.nullcontext()
    amp = _EmulatedAutocast(autocast) if autocast is not None else contextlib.nullcontext()
    with torch.no_grad(), _eager(), on_meta(*modules, dtype=dtype), lean, amp, LiveBytes() as mode:
        out = fn(*args, **kwargs)
        del out
    return mode.peak


def _eager():
    """Run compiled modules eagerly (a ``torch.compile``d network is replayed op by op on meta tensors)."""
    set_stance = getattr(getattr(torch, "compiler", None), "set_stance", None)
    return set_stance("force_eager") if set_stance is not None else contextlib.nullcontext()


__all__ = ["LiveBytes", "count_flops", "meta_like", "on_meta", "peak_bytes"]
