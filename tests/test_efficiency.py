"""Inference efficiency options of the networks (mgld.models.efficiency): same fp32 numerics, close in bf16."""

import copy

import pytest
import torch

from infer_helpers import TINY, nontrivial
from mgld.config import load_config
from mgld.models import build_denoiser, build_vae
from mgld.models.efficiency import (
    FP32GroupNorm,
    FP32LayerNorm,
    InferenceDenoiser,
    InferenceVAE,
    attention_backend,
    attention_backends,
    cast_weights,
    compile_module,
    prepare_for_inference,
    resolve_precision,
    to_channels_last,
    use_cast_weights,
)


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    model = load_config(TINY).model
    return nontrivial(build_denoiser(model)), nontrivial(build_vae(model))


def _inputs():
    g = torch.Generator().manual_seed(3)
    return torch.randn(10, 4, 16, 24, generator=g), torch.tensor([500]), torch.randn(10, 4, 16, 24, generator=g)


def _rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def test_weights_cast_once_match_autocast_in_bf16(nets):
    denoiser, _ = nets
    x, t, z = _inputs()
    with torch.no_grad():
        ref = denoiser(x, t, z, 5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            amp = denoiser(x, t, z, 5)
        cast = copy.deepcopy(denoiser)
        cast_weights(cast, torch.bfloat16)
        out = InferenceDenoiser(cast, torch.bfloat16)(x, t, z, 5)
    assert out.dtype == torch.float32 and out.shape == ref.shape
    # both are bf16 computations of the same network: each within bf16 rounding of fp32 and of each other
    assert _rel(amp, ref) < 0.05 and _rel(out, ref) < 0.05 and _rel(out, amp) < 0.05
    norms = [m for m in cast.modules() if isinstance(m, (torch.nn.GroupNorm, torch.nn.LayerNorm))]
    assert norms and all(isinstance(m, (FP32GroupNorm, FP32LayerNorm)) for m in norms)
    assert all(p.dtype == torch.float32 for m in norms for p in m.parameters())
    norm_params = {id(p) for m in norms for p in m.parameters()}
    assert all(p.dtype == torch.bfloat16 for p in cast.parameters() if id(p) not in norm_params)
    assert list(cast.state_dict()) == list(denoiser.state_dict())  # same checkpoint keys


def test_fp32_norms_normalise_in_fp32():
    norm = torch.nn.GroupNorm(4, 8)
    torch.nn.init.normal_(norm.weight)
    x = (torch.randn(2, 8, 5, 5) * 100 + 1000).bfloat16()  # large mean: the variance needs fp32 sums
    fp32 = norm(x.float())
    cast_weights(norm, torch.bfloat16)
    out = norm(x)
    assert out.dtype == torch.bfloat16 and norm.weight.dtype == torch.float32
    assert _rel(out, fp32) < 4e-3  # only the output is rounded to bf16


def test_channels_last_keeps_the_fp32_output(nets):
    denoiser, vae = nets
    x, t, z = _inputs()
    frames = torch.rand(5, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        ref = denoiser(x, t, z, 5)
        posterior, feats = vae.encode(frames)
        ref_frames = vae.decode(posterior.mean, feats, 5)
        den_cl, vae_cl = to_channels_last(copy.deepcopy(denoiser)), to_channels_last(copy.deepcopy(vae))
        out = InferenceDenoiser(den_cl, None, channels_last=True)(x, t, z, 5)
        wrapped = InferenceVAE(vae_cl, None, channels_last=True)
        p2, f2 = wrapped.encode(frames)
        out_frames = wrapped.decode(p2.mean, f2, 5)
    assert den_cl.unet.base.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    # fp32 rounding only (other convolution kernels); the random tiny VAE amplifies rounding ~10x (see bf16 below)
    assert _rel(out, ref) < 1e-5 and _rel(out_frames, ref_frames) < 1e-4


def test_cast_vae_returns_fp32_posterior_and_frames(nets):
    _, vae = nets
    frames = torch.rand(5, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        posterior, feats = vae.encode(frames)
        ref = vae.decode(posterior.mean, feats, 5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            p1, f1 = vae.encode(frames)
            amp = vae.decode(p1.mean, f1, 5)
        wrapped = InferenceVAE(cast_weights(copy.deepcopy(vae), torch.bfloat16), torch.bfloat16)
        p2, f2 = wrapped.encode(frames)
        out = wrapped.decode(p2.mean, f2, 5)
    assert p2.mean.dtype == torch.float32 and f2[0].dtype == torch.bfloat16 and out.dtype == torch.float32
    # the random tiny VAE amplifies bf16 rounding (about 10 % for autocast too): no worse than autocast
    assert _rel(p2.mean, posterior.mean) < 1.25 * _rel(p1.mean, posterior.mean) + 1e-3
    assert _rel(out, ref) < 1.25 * _rel(amp, ref) + 1e-3 < 0.2
    assert wrapped.scaling_factor == vae.scaling_factor


def test_prepare_for_inference_leaves_fp32_alone(nets):
    denoiser, vae = nets
    d, v, amp = prepare_for_inference(denoiser, vae, precision="fp32")
    assert d is denoiser and v is vae and amp is None
    d, v, amp = prepare_for_inference(copy.deepcopy(denoiser), copy.deepcopy(vae), precision="bf16", cast=False)
    assert amp == torch.bfloat16 and not isinstance(d, InferenceDenoiser)  # the authors' way: autocast
    d, v, amp = prepare_for_inference(copy.deepcopy(denoiser), copy.deepcopy(vae), precision="bf16")
    assert amp is None and isinstance(d, InferenceDenoiser) and d.dtype == torch.bfloat16


def test_precision_resolution_on_cpu():
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16"
    with pytest.raises(ValueError):
        resolve_precision("fp8", "cpu")
    assert use_cast_weights("auto", "bf16") and not use_cast_weights("auto", "fp16")
    assert use_cast_weights(True, "fp16") and not use_cast_weights(True, "fp32")


def test_precision_auto_is_the_authors_fp16_on_cuda_and_fast_asks_for_bf16(monkeypatch):
    import mgld.models.efficiency as E

    assert resolve_precision("auto", "cuda") == "fp16"  # the default is the authors' autocast, on every GPU
    assert E.fast_overrides("cpu") == ["sampling.tile_batch=auto"]
    for native, precision in ((True, "bf16"), (False, "fp16")):
        monkeypatch.setattr(E, "has_native_bf16", lambda device, native=native: native)
        assert E.fast_overrides("cuda:1") == [f"infer.precision={precision}", "infer.cast_weights=true",
                                              "infer.channels_last=true", "sampling.tile_batch=auto"]
    from mgld.config import load_config

    cfg = load_config("infer", E.fast_overrides("cuda") + ["infer.channels_last=false"])  # later ones win
    assert (cfg.infer.precision, cfg.infer.cast_weights, cfg.infer.channels_last, cfg.sampling.tile_batch) == (
        "fp16", True, False, "auto")


def test_attention_kernels_are_reported_and_can_be_forced(nets):
    denoiser, _ = nets
    x, t, z = _inputs()
    report = attention_backends(denoiser, x, t, z, 5)
    known = {"flash", "efficient", "cudnn", "flash_cpu", "overrideable", "math"}
    # tiny config: 3 encoder attentions, UNet self + cross attention at level 0, the temporal attention ... x 1
    assert sum(report["kernels"].values()) >= 5 and set(report["kernels"]) <= known
    assert all(call["dtype"] == "float32" for call in report["calls"])
    with attention_backend("math"):
        forced = attention_backends(denoiser, x, t, z, 5)
    assert set(forced["kernels"]) == {"math"}
    assert sum(forced["kernels"].values()) == sum(report["kernels"].values())
    with pytest.raises(ValueError):
        attention_backend("fastest")


def test_compile_is_in_place_and_keeps_the_keys(nets):
    denoiser, _ = nets
    compiled = compile_module(copy.deepcopy(denoiser), "default")  # compiled lazily: nothing runs here
    assert compiled._compiled_call_impl is not None
    assert list(compiled.state_dict()) == list(denoiser.state_dict())
    with pytest.raises(ValueError):
        compile_module(denoiser, "fast")
