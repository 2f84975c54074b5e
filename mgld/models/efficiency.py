"""Inference-only efficiency options for the networks (docs/notes/perf.md): none changes the fp32 numerics.

* :func:`resolve_precision` — ``infer.precision: auto`` is the authors' fp16 autocast on CUDA (fp32 weights under
  ``torch.autocast``), fp32 on the CPU; bf16 is asked for by name (``--precision bf16``) or by the ``--fast``
  preset (:func:`fast_overrides`: bf16 on GPUs with native bf16, fp16 on others).
* :func:`cast_weights` — weights stored once in the compute dtype (``infer.cast_weights``), instead of autocast
  re-casting every weight on every call (autocast caches casts only for weights that require grad, and the
  inference networks do not). GroupNorm/LayerNorm keep fp32 parameters and normalise in fp32 inside the op
  (:class:`FP32GroupNorm`, :class:`FP32LayerNorm`), returning the input dtype. :class:`InferenceDenoiser` and
  :class:`InferenceVAE` wrap the cast networks: inputs are cast on the way in, the noise prediction, the posterior
  moments and the decoded frames come back in fp32, so the sampler's state stays fp32.
* :func:`to_channels_last` — 2-D convolution weights (and the wrappers' inputs) in NHWC (``infer.channels_last``).
* :func:`compile_module` — ``torch.compile`` (``infer.compile``, ``infer.compile_mode``; ``reduce-overhead``
  replays CUDA graphs for repeated shapes).
* :func:`attention_backends` reports which scaled-dot-product-attention kernel each attention call ran
  (flash, memory-efficient, cuDNN, CPU flash or the unfused math path); :func:`attention_backend` restricts it
  (``infer.attention``).
* :func:`prepare_for_inference` applies the configured options to a denoiser and a VAE (what
  :meth:`mgld.pipeline.pipeline.MGLDPipeline.to` calls).
* :func:`fast_overrides` — the ``mgld infer --fast`` preset: the output-changing speed options together.
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

log = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


# --------------------------------------------------------------------------------------------------
# Precision
# --------------------------------------------------------------------------------------------------


def has_native_bf16(device: torch.device | str) -> bool:
    """True on CUDA devices whose tensor cores do bf16 (compute capability 8.0+: A100, H100, RTX 30xx, ...)."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return False
    try:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # older torch: no including_emulation argument
        return torch.cuda.get_device_capability(device)[0] >= 8


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """``fp32`` | ``fp16`` | ``bf16`` for ``infer.precision`` on ``device``: ``auto`` is fp16 (the authors'
    autocast) on CUDA and fp32 elsewhere; the others are returned as they are."""
    device = torch.device(device)
    if precision == "auto":
        return "fp16" if device.type == "cuda" else "fp32"
    if precision not in DTYPES:
        raise ValueError(f"infer.precision must be auto, fp32, fp16 or bf16, got {precision!r}")
    return precision


def use_cast_weights(cast: bool | str, precision: str) -> bool:
    """``infer.cast_weights``: ``auto`` casts once for bf16 and keeps the authors' autocast for fp16."""
    if cast == "auto":
        return precision == "bf16"
    return bool(cast) and precision != "fp32"


# --------------------------------------------------------------------------------------------------
# Weights cast once, norms in fp32
# --------------------------------------------------------------------------------------------------


def _fp32(p: torch.Tensor | None) -> torch.Tensor | None:
    return p if p is None or p.dtype == torch.float32 else p.float()


class FP32GroupNorm(nn.GroupNorm):
    """GroupNorm that normalises in fp32 (fp32 parameters) and returns the input dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.group_norm(x.float(), self.num_groups, _fp32(self.weight), _fp32(self.bias), self.eps).to(x.dtype)


class FP32LayerNorm(nn.LayerNorm):
    """LayerNorm that normalises in fp32 (fp32 parameters) and returns the input dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.layer_norm(x.float(), self.normalized_shape, _fp32(self.weight), _fp32(self.bias), self.eps)
        return out.to(x.dtype)


_FP32_NORMS = {nn.GroupNorm: FP32GroupNorm, nn.LayerNorm: FP32LayerNorm}


def cast_weights(module: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Cast ``module``'s floating parameters and buffers to ``dtype`` in place, except those of its norms,
    which stay fp32 and become :class:`FP32GroupNorm` / :class:`FP32LayerNorm` (same state-dict keys)."""
    module.to(dtype)
    for sub in module.modules():
        fp32_class = _FP32_NORMS.get(type(sub))
        if fp32_class is not None or isinstance(sub, tuple(_FP32_NORMS.values())):
            sub.float()
            if fp32_class is not None:
                sub.__class__ = fp32_class
    return module


def _cast(x, dtype: torch.dtype, channels_last: bool = False):
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        return x
    x = x.to(dtype)
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.ndim == 4 else x


class InferenceDenoiser(nn.Module):
    """A denoiser as the sampler calls it, with the inference options around the call.

    ``dtype`` (weights cast once to it, :func:`cast_weights`): ``x_t``, ``z_lr``, ``context`` and ``cond`` are cast
    on the way in and ε̂ comes back in fp32. ``channels_last``: 4-D inputs in NHWC. ``mark_steps``: tell CUDA-graph
    trees before each call that earlier outputs are consumed (compile mode ``reduce-overhead``). Same call as
    :class:`~mgld.models.denoiser.MGLDDenoiser`; the wrapped network is ``.denoiser``.
    """

    def __init__(self, denoiser: nn.Module, dtype: torch.dtype | None = None, channels_last: bool = False,
                 mark_steps: bool = False):
        super().__init__()
        self.denoiser, self.dtype, self.channels_last, self.mark_steps = denoiser, dtype, channels_last, mark_steps

    def forward(self, x_t, timesteps, z_lr, num_frames: int, context=None, cond=None) -> torch.Tensor:
        """x_t, z_lr: ``(b t) 4 h w`` -> ε̂ ``(b t) 4 h w`` (float32 when ``dtype`` is set)."""
        if self.mark_steps:
            mark_cudagraph_step()
        d, cl = self.dtype, self.channels_last
        if d is None and not cl:
            return self.denoiser(x_t, timesteps, z_lr, num_frames, context, cond)
        d = d or x_t.dtype
        cond = None if cond is None else [_cast(c, d, cl) for c in cond]
        eps = self.denoiser(_cast(x_t, d, cl), timesteps, _cast(z_lr, d, cl), num_frames, _cast(context, d), cond)
        return eps.float().contiguous() if self.dtype is not None else eps.contiguous()


class InferenceVAE(nn.Module):
    """A temporal VAE with the inference options: weights cast once to ``dtype`` (frames/latents cast on the way
    in; the posterior, built from fp32 moments, and the decoded frames returned in fp32; CFW features stay in
    ``dtype``) and/or ``channels_last`` inputs. Same ``encode``/``decode`` as
    :class:`~mgld.models.vae.TemporalVAE`; the wrapped network is ``.vae``."""

    def __init__(self, vae: nn.Module, dtype: torch.dtype | None = None, channels_last: bool = False):
        super().__init__()
        self.vae, self.dtype, self.channels_last = vae, dtype, channels_last

    @property
    def scaling_factor(self) -> float:
        return self.vae.scaling_factor

    def encode(self, x: torch.Tensor):
        """x: ``(b t) 3 H W`` -> (posterior over ``(b t) 4 H/8 W/8``, CFW features)."""
        from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

        posterior, feats = self.vae.encode(_cast(x, self.dtype or x.dtype, self.channels_last))
        if self.dtype is None:
            return posterior, feats
        return DiagonalGaussianDistribution(posterior.parameters.float()), feats

    def decode(self, z: torch.Tensor, enc_feats, num_frames: int, cfw_weight: float = 1.0) -> torch.Tensor:
        """z: ``(b t) 4 h w`` / scaling_factor -> ``(b t) 3 8h 8w``."""
        out = self.vae.decode(_cast(z, self.dtype or z.dtype, self.channels_last), enc_feats, num_frames, cfw_weight)
        return out.float().contiguous() if self.dtype is not None else out.contiguous()


# --------------------------------------------------------------------------------------------------
# channels_last, torch.compile
# --------------------------------------------------------------------------------------------------


def to_channels_last(module: nn.Module) -> nn.Module:
    """Store every 2-D convolution weight in channels_last (NHWC) order, in place (3-D temporal convolutions and
    linear layers are left as they are)."""
    for sub in module.modules():
        if isinstance(sub, (nn.Conv2d, nn.ConvTranspose2d)):
            sub.weight.data = sub.weight.data.contiguous(memory_format=torch.channels_last)
    return module


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def compile_module(module: nn.Module, mode: str = "default", dynamic: bool | None = None) -> nn.Module:
    """``module.compile(mode=...)`` in place (keeps the module and its state-dict keys); returns ``module``.

    ``dynamic=None`` lets torch mark shapes dynamic after the first recompile (the shifted tile schedule gives
    several tile shapes per step); ``reduce-overhead`` also records CUDA graphs per shape.
    """
    if mode not in COMPILE_MODES:
        raise ValueError(f"infer.compile_mode must be one of {COMPILE_MODES}, got {mode!r}")
    module.compile(mode=mode, dynamic=dynamic)
    return module


def mark_cudagraph_step() -> None:
    """Tell CUDA-graph trees (compile mode ``reduce-overhead``) that the outputs of earlier calls are consumed, so
    the next replay may reuse their memory. Call before each denoiser call; a no-op without compiled graphs."""
    mark = getattr(getattr(torch, "compiler", None), "cudagraph_mark_step_begin", None)
    if mark is not None:
        mark()


# --------------------------------------------------------------------------------------------------
# Scaled-dot-product attention kernels
# --------------------------------------------------------------------------------------------------

_SDPA_KERNELS = {
    "_scaled_dot_product_flash_attention": "flash",
    "_scaled_dot_product_efficient_attention": "efficient",
    "_scaled_dot_product_cudnn_attention": "cudnn",
    "_scaled_dot_product_flash_attention_for_cpu": "flash_cpu",
    "_scaled_dot_product_fused_attention_overrideable": "overrideable",
}


class _AttentionCalls(TorchFunctionMode):
    def __init__(self, record: list):
        super().__init__()
        self.record = record

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is F.scaled_dot_product_attention:
            q = args[0]
            self.record.append({"shape": tuple(q.shape), "dtype": str(q.dtype).replace("torch.", ""), "kernel": "math"})
        return func(*args, **(kwargs or {}))


class _AttentionKernels(TorchDispatchMode):
    def __init__(self, record: list):
        super().__init__()
        self.record = record

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kernel = _SDPA_KERNELS.get(func.overloadpacket.__name__)
        if kernel is not None and self.record:
            self.record[-1]["kernel"] = kernel
        return func(*args, **(kwargs or {}))


def attention_backends(fn: Callable, *args, **kwargs) -> dict:
    """Run ``fn(*args, **kwargs)`` once and report the SDPA kernel of every attention call.

    Returns ``{"kernels": {kernel: calls}, "calls": [{"shape": q shape, "dtype", "kernel"}, ...] (distinct)}``;
    ``math`` means no fused kernel accepted the inputs (the unfused path materialises ``L × L`` scores).
    """
    record: list[dict] = []
    with torch.no_grad(), _AttentionCalls(record), _AttentionKernels(record):
        fn(*args, **kwargs)
    distinct = {(c["shape"], c["dtype"], c["kernel"]): c for c in record}
    return {"kernels": dict(Counter(c["kernel"] for c in record)), "calls": list(distinct.values())}


ATTENTION_BACKENDS = ("auto", "flash", "efficient", "cudnn", "math")


def attention_backend(name: str):
    """Context restricting SDPA to one kernel (``infer.attention``); ``auto`` leaves PyTorch's choice."""
    if name not in ATTENTION_BACKENDS:
        raise ValueError(f"infer.attention must be one of {ATTENTION_BACKENDS}, got {name!r}")
    if name == "auto":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
               "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}[name]
    return sdpa_kernel([backend])


# --------------------------------------------------------------------------------------------------
# All options together
# --------------------------------------------------------------------------------------------------


def prepare_for_inference(
    denoiser: nn.Module,
    vae: nn.Module,
    *,
    precision: str,
    cast: bool | str = "auto",
    channels_last: bool = False,
    compile: bool = False,
    compile_mode: str = "default",
    extra: Sequence[nn.Module] = (),
) -> tuple[nn.Module, nn.Module, torch.dtype | None]:
    """Apply the efficiency options to a denoiser and a VAE (in place where they are cast or re-laid out).

    ``precision`` is a resolved one (:func:`resolve_precision`). Returns ``(denoiser, vae, autocast_dtype)``:
    the networks to call (:class:`InferenceDenoiser`/:class:`InferenceVAE` when an option needs a wrapper) and the
    dtype the caller should autocast to (None: no autocast; the weights are already in the compute dtype, or it is
    fp32).
    """
    dtype = DTYPES[precision]
    amp = None if precision == "fp32" else dtype
    if channels_last:
        for module in (denoiser, vae, *extra):
            to_channels_last(module)
    cast_dtype = None
    if use_cast_weights(cast, precision):
        cast_weights(denoiser, dtype)
        cast_weights(vae, dtype)
        cast_dtype, amp = dtype, None
    if compile and getattr(denoiser, "_compiled_call_impl", None) is None:  # once (applying again is a no-op)
        compile_module(denoiser, compile_mode)
    graphs = compile and compile_mode in ("reduce-overhead", "max-autotune")  # the modes that record CUDA graphs
    if cast_dtype is not None or channels_last or graphs:
        denoiser = InferenceDenoiser(denoiser, cast_dtype, channels_last, mark_steps=graphs)
    if cast_dtype is not None or channels_last:
        vae = InferenceVAE(vae, cast_dtype, channels_last)
    return denoiser, vae, amp


# --------------------------------------------------------------------------------------------------
# The --fast preset
# --------------------------------------------------------------------------------------------------

FAST_HELP = ("turn on the speed options that change the output (by float rounding, or by bf16): on CUDA "
             "infer.precision=bf16 (fp16 on GPUs without native bf16) with weights cast once and norms in fp32 "
             "(infer.cast_weights=true), infer.channels_last=true, sampling.tile_batch=auto; on the CPU only "
             "sampling.tile_batch=auto. Flags and key=value overrides given with it win; add --compile for "
             "torch.compile")


def fast_overrides(device: torch.device | str) -> list[str]:
    """The ``--fast`` preset as ``key=value`` overrides for ``device`` (:data:`FAST_HELP`): the speed options
    that change the output, which the defaults (the authors' behaviour) leave off. Put them before any override
    that should win, e.g. ``load_config(path, fast_overrides("cuda") + ["sampling.tile_batch=1"])``."""
    device = torch.device(device)
    out = ["sampling.tile_batch=auto"]
    if device.type == "cuda":
        precision = "bf16" if has_native_bf16(device) else "fp16"
        out = [f"infer.precision={precision}", "infer.cast_weights=true", "infer.channels_last=true"] + out
    return out


__all__ = [
    "ATTENTION_BACKENDS",
    "FAST_HELP",
    "COMPILE_MODES",
    "InferenceDenoiser",
    "InferenceVAE",
    "DTYPES",
    "FP32GroupNorm",
    "FP32LayerNorm",
    "attention_backend",
    "attention_backends",
    "cast_weights",
    "compile_module",
    "fast_overrides",
    "has_native_bf16",
    "mark_cudagraph_step",
    "prepare_for_inference",
    "resolve_precision",
    "to_channels_last",
    "use_cast_weights",
]
