"""The performance options as the pipeline applies them (issue 13, phase 2; docs/notes/perf.md): off = the
default output bit for bit; tiles batched within float rounding; the shifted schedule; weights cast once; offload;
the automatic VAE tile and the out-of-memory retry; encoder features reused; noise on the device; the flags."""

import copy
import logging
from collections import Counter

import pytest
import torch

import mgld.diffusion.sampling as sampling_module
import mgld.pipeline.pipeline as P
from infer_helpers import TINY, TWO_TILES, Counting, clip, nontrivial
from mgld.config import load_config
from mgld.diffusion.clip_noise import frame_noise_on_device
from mgld.diffusion.noise import FrameNoise
from mgld.diffusion.tiling import blend_tiles, tile_boxes
from mgld.models import build_denoiser, build_vae
from mgld.pipeline.pipeline import MGLDPipeline

# LR 16x24 -> 64x96 px: pixel tiles at x = 0, 32 (64 px) with 2x2 latent tiles of 6 each (authors); in frame mode
# two VAE tiles and 2x3 latent tiles over the 8x12 latent
SMALL = ["sampling.steps=2"] + TWO_TILES
FRAME = SMALL + ["sampling.pixel_tiling=frame"]


@pytest.fixture(scope="module")
def nets():
    """Tiny random networks with the zero-initialised layers (UNet output, CFW, temporal alphas) made non-trivial,
    so that tiling, batching and the CFW features change the output."""
    model = load_config(TINY).model
    torch.manual_seed(0)
    den, vae = build_denoiser(model), build_vae(model)
    return nontrivial(den), nontrivial(vae)


def _cfg(overrides):
    return load_config(TINY, list(overrides))


def _run(nets, overrides, lr=None, **kwargs):
    den, vae = nets
    pipe = MGLDPipeline(den, vae, _cfg(overrides))
    lr = clip(5, 16, 24) if lr is None else lr
    return pipe.upscale_clip(lr, list(range(len(lr))), **kwargs).frames


class CountingVAE(torch.nn.Module):
    """The VAE, counting its encodes; ``oom`` decodes raise CUDA's out-of-memory error first."""

    def __init__(self, vae, oom=0):
        super().__init__()
        self.vae, self.encodes, self.decodes, self.oom = vae, [], [], oom

    @property
    def scaling_factor(self):
        return self.vae.scaling_factor

    def encode(self, x):
        self.encodes.append(tuple(x.shape[-2:]))
        return self.vae.encode(x)

    def decode(self, z, feats, num_frames, cfw_weight=1.0):
        self.decodes.append(tuple(z.shape[-2:]))
        if self.oom:
            self.oom -= 1
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")
        return self.vae.decode(z, feats, num_frames, cfw_weight)


# --------------------------------------------------------------------------- defaults: the output of before


def _old_predict_noise(denoiser, x, timestep, z_lr, num_frames, tile_size=64, tile_overlap=32, tile_batch=1, **_):
    """The sampler's tiled prediction before the wiring (one tile per call, blended by blend_tiles)."""
    boxes = tile_boxes(x.shape[-2], x.shape[-1], tile_size, tile_overlap)
    t = torch.tensor([timestep], device=x.device)
    if len(boxes) == 1:
        return denoiser(x, t, z_lr, num_frames)
    return blend_tiles(((b, denoiser(b.crop(x), t, b.crop(z_lr), num_frames)) for b in boxes), tuple(x.shape[-2:]))


def _old_guidance_step(latents, flows, masks, scale=10.0, log_variance=None, variant="authors", *, num_frames=None):
    """The guided update before the wiring (its step size a tensor made on the latents' device)."""
    from mgld.diffusion.guidance import warping_loss

    if scale == 0:
        return latents, None
    num_frames = flows[0].shape[1] + 1 if num_frames is None else num_frames
    with torch.enable_grad():
        z = latents.detach().float().requires_grad_(True)
        loss = warping_loss(z, tuple(f.float() for f in flows), tuple(m.float() for m in masks), num_frames, variant)
        (grad,) = torch.autograd.grad(loss, z)
    step = scale * torch.as_tensor(log_variance, dtype=torch.float32, device=z.device).abs()
    return (z.detach() - step * grad).to(latents.dtype), loss.detach()


@pytest.mark.parametrize("overrides", [SMALL, FRAME], ids=["authors-2-tiles", "frame-2-vae-tiles"])
def test_default_output_is_the_output_before_the_wiring(nets, monkeypatch, overrides):
    """Every option at its default: the sampler's new tiled prediction, the guidance step without a device copy
    and the encoder features kept for the decode give the frames of the code before, bit for bit."""
    new = _run(nets, overrides)
    monkeypatch.setattr(sampling_module, "predict_noise", _old_predict_noise)
    monkeypatch.setattr(sampling_module, "guidance_step", _old_guidance_step)
    monkeypatch.setattr(P, "FEATURES_SHARE", 0.0)  # no features kept: every decode tile encoded again
    assert torch.equal(new, _run(nets, overrides))


def test_options_that_keep_the_output_are_bit_identical(nets, monkeypatch):
    """Offload (model, sequential), tile_batch 1, the noise drawn up front, explicit off values."""
    reference = _run(nets, SMALL)
    off = ["infer.cast_weights=false", "infer.channels_last=false", "infer.compile=false", "sampling.tile_batch=1",
           "sampling.tile_schedule=overlap", "infer.offload=none", "infer.precision=fp32", "infer.attention=auto"]
    assert torch.equal(_run(nets, SMALL + off), reference)
    noise = frame_noise_on_device(FrameNoise(42, list(range(5)), (4, 8, 12), 2), "cpu", 2**30)
    assert type(noise).__name__ == "DeviceFrameNoise"
    assert torch.equal(_run(nets, SMALL, noise=noise), reference)  # the pipeline's GPU path, on the CPU
    from mgld.pipeline.memory import Offloader

    stages = []
    use = Offloader.use

    def spy(self, *names):
        stages.append(names)
        return use(self, *names)

    monkeypatch.setattr(Offloader, "use", spy)
    for mode in ("model", "sequential"):
        stages.clear()
        assert torch.equal(_run(nets, SMALL + [f"infer.offload={mode}"]), reference), mode
        # per pixel tile: encode (vae), sampling (denoiser), decode (vae); the DIS flow is not a network
        assert stages == [("vae",), ("denoiser",), ("vae",)] * 2, mode


def test_tiles_batched_equal_one_tile_per_call_within_float_rounding(nets):
    den, vae = nets
    counting = Counting(den)
    frames = {}
    for batch, calls in ((1, {(5, 4, 6, 6): 12}), (4, {(15, 4, 6, 6): 4}), ("auto", {(30, 4, 6, 6): 2})):
        counting.shapes.clear()
        pipe = MGLDPipeline(counting, vae, _cfg(FRAME + [f"sampling.tile_batch={batch}"]))
        frames[batch] = pipe.upscale_clip(clip(5, 16, 24), list(range(5))).frames
        assert counting.shapes == Counter(calls), batch  # 6 tiles x 2 steps: 1, 3 + 3, or all 6 per call
    assert torch.equal(frames[1], _run(nets, FRAME))
    for batch in (4, "auto"):
        # equal up to float rounding: batched matrix products (Linear layers; small convolutions of the tiny network)
        # may pick other kernels by batch size (mgld/diffusion/batching.py)
        assert (frames[batch] - frames[1]).abs().max() < 1e-5, batch


def test_shifted_schedule_reaches_the_sampler_and_covers_every_latent_pixel_once_per_step(nets, monkeypatch):
    import mgld.diffusion.batching as batching

    seen = []
    real = batching.shifted_tiles

    def recording(height, width, tile, step, min_tile=None):
        tiles = real(height, width, tile, step, min_tile)
        owned = torch.zeros(height, width, dtype=torch.int64)
        for t in tiles:
            t.own.crop(owned).add_(1)
        seen.append((step, (height, width), bool((owned == 1).all())))
        return tiles

    monkeypatch.setattr(batching, "shifted_tiles", recording)
    out = _run(nets, FRAME + ["sampling.steps=3", "sampling.tile_schedule=shifted", "sampling.tile_batch=2"])
    assert [s[0] for s in seen] == [2, 1, 0] and all(s[1] == (8, 12) and s[2] for s in seen)
    assert out.shape == (5, 3, 64, 96) and not torch.equal(out, _run(nets, FRAME + ["sampling.steps=3"]))


def test_tile_batch_auto_is_resolved_once_per_pass_for_the_schedule(nets, monkeypatch):
    import mgld.diffusion.batching as batching
    from mgld.diffusion.tiling import shifted_tiles

    asked = []
    monkeypatch.setattr(batching, "resolve_tile_batch", lambda mode, net, count, shape, *a: asked.append(
        (mode, count, shape)) or 2)
    latent = torch.zeros(5, 4, 8, 12)
    common = dict(tile_size=6, tile_overlap=3)
    assert batching.tile_batch_for_pass(3, nets[0], latent, **common) == 3 and not asked  # an integer as it is
    assert batching.tile_batch_for_pass("auto", nets[0], latent, **common) == 2
    most = max(len(shifted_tiles(8, 12, 6, k)) for k in range(4))
    assert batching.tile_batch_for_pass("auto", nets[0], latent, tile_schedule="shifted", steps=4, **common) == 2
    assert asked == [("auto", 6, (6, 6)), ("auto", most, (6, 6))]  # the most tiles of any step
    assert batching.tile_batch_for_pass("auto", nets[0], torch.zeros(5, 4, 6, 6), **common) == 1  # one tile


# --------------------------------------------------------------------------- networks: precision, layout


def test_bf16_casts_the_weights_once_with_fp32_norms(nets):
    den, vae = (copy.deepcopy(n) for n in nets)
    cfg = _cfg(FRAME + ["infer.cast_weights=auto"])
    cfg.infer.precision = "bf16"  # bf16 on the CPU stands in for a GPU's (the schema refuses it with device cpu)
    pipe = MGLDPipeline(den, vae, cfg).to("cpu")
    assert pipe.options["precision"] == "bf16" and pipe.options["cast_weights"] == "bfloat16"
    assert pipe.options["autocast"] is None  # weights in the compute dtype: no per-call re-cast
    assert den.unet.base.conv_in.weight.dtype == torch.bfloat16
    norm = vae.base.decoder.conv_norm_out
    assert type(norm).__name__ == "FP32GroupNorm" and norm.weight.dtype == torch.float32
    out = pipe.upscale_clip(clip(5, 16, 24), list(range(5))).frames
    reference = _run(nets, FRAME)
    assert out.dtype == torch.float32 and 0 < (out - reference).abs().mean() < 0.02
    with pytest.raises(ValueError, match="cast_weights"):
        pipe.save_pretrained("/nonexistent/never-written")


def test_channels_last_changes_only_the_rounding(nets):
    den, vae = (copy.deepcopy(n) for n in nets)
    pipe = MGLDPipeline(den, vae, _cfg(FRAME + ["infer.channels_last=true"])).to("cpu")
    assert den.unet.base.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    out = pipe.upscale_clip(clip(5, 16, 24), list(range(5))).frames
    assert (out - _run(nets, FRAME)).abs().max() < 1e-4


def test_default_precision_is_the_authors_fp16_on_cuda_and_fp16_needs_cuda():
    from mgld.pipeline.runtime import pipeline_precision

    assert pipeline_precision("auto", torch.device("cuda")) == "fp16"
    assert pipeline_precision("auto", torch.device("cpu")) == "fp32"
    assert pipeline_precision("bf16", torch.device("cpu")) == "bf16"
    with pytest.raises(ValueError, match="infer.precision=fp16 needs a CUDA device"):
        pipeline_precision("fp16", torch.device("cpu"))


def test_an_attention_kernel_the_device_lacks_is_named(nets):
    assert (_run(nets, SMALL + ["infer.attention=math"]) - _run(nets, SMALL)).abs().max() < 1e-5
    with pytest.raises(RuntimeError, match="infer.attention=efficient: PyTorch has no such attention kernel"):
        _run(nets, SMALL + ["infer.attention=efficient"])  # the memory-efficient kernel is CUDA-only


# --------------------------------------------------------------------------- memory: VAE tiles, features, OOM

WIDE = ["sampling.steps=1", "sampling.pixel_tiling=frame", "sampling.latent_tile_size=8",
        "sampling.latent_tile_overlap=4"]  # LR 16x80 -> 64x320 px, one pass


def test_auto_vae_tile_follows_the_free_memory(nets, monkeypatch):
    import mgld.pipeline.memory as memory

    den, vae = nets
    lr = clip(5, 16, 80)
    for budget, widths in ((10 * 2**30, [320]), (350e6, [256, 256])):  # 960 fits; then only 256 (stride 200)
        counting = CountingVAE(vae)
        monkeypatch.setattr(memory, "free_bytes", lambda device, budget=budget: int(budget))
        pipe = MGLDPipeline(den, counting, _cfg(WIDE + ["decode.tile_size=auto", "decode.tile_stride=750"]))
        out = pipe.upscale_clip(lr, list(range(5))).frames
        assert [w for _, w in counting.encodes] == widths, budget  # encoded once per tile (features kept)
        assert [w * 8 for _, w in counting.decodes] == widths
        assert out.shape == (5, 3, 64, 320)
    with pytest.raises(ValueError, match="decode.tile_size: auto needs sampling.pixel_tiling=frame"):
        _cfg(["decode.tile_size=auto"])  # the authors' mode: it is the chain's pixel tile


def test_frame_mode_keeps_the_encoder_features_for_the_decode(nets, monkeypatch):
    den, vae = nets
    results = {}
    for share in (P.FEATURES_SHARE, 0.0):
        monkeypatch.setattr(P, "FEATURES_SHARE", share)
        counting = CountingVAE(vae)
        results[share] = MGLDPipeline(den, counting, _cfg(FRAME)).upscale_clip(clip(5, 16, 24), list(range(5))).frames
        assert len(counting.encodes) == (2 if share else 4)  # two VAE tiles: encoded once, or again to decode
    assert torch.equal(*results.values())


def test_out_of_memory_retries_smaller_vae_tiles_in_frame_mode_and_names_the_knobs(nets, caplog):
    den, vae = nets
    lr = clip(5, 16, 80)
    reference = _run(nets, WIDE + ["decode.tile_size=512", "decode.tile_stride=400"], lr=lr)
    counting = CountingVAE(vae, oom=1)
    pipe = MGLDPipeline(den, counting, _cfg(WIDE + ["decode.tile_size=512", "decode.tile_stride=400"]))
    with caplog.at_level(logging.WARNING):
        out = pipe.upscale_clip(lr, list(range(5))).frames
    assert "out of memory with decode.tile_size=512; retrying once with decode.tile_size=384" in caplog.text
    assert torch.equal(out, reference)  # 384 px still covers the 64x320 frame in one tile
    authors = MGLDPipeline(den, CountingVAE(vae, oom=1), _cfg(SMALL))
    with pytest.raises(MemoryError, match="VAE decode of a pixel tile.*infer.offload=model.*decode.tile_size=auto"):
        authors.upscale_clip(clip(5, 16, 24), list(range(5)))


# --------------------------------------------------------------------------- the step loop on a GPU


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_no_host_synchronisation_in_the_step_loop(nets):
    from mgld.diffusion.sampling import MotionGuidance, sample
    from mgld.diffusion.schedule import respaced_schedule
    from mgld.diffusion.tiling import TileBox

    den = copy.deepcopy(nets[0]).cuda()
    z_lr = torch.randn(5, 4, 12, 16, device="cuda")
    flows = tuple(torch.randn(1, 4, 2, 12, 16, device="cuda") for _ in range(2))
    masks = tuple(torch.zeros(1, 4, 1, 12, 16, device="cuda") for _ in range(2))
    guidance = MotionGuidance(flows, masks, 10.0)
    noise = frame_noise_on_device(FrameNoise(0, list(range(5)), (4, 12, 16), 3), "cuda", 2**30)
    kwargs = dict(box=TileBox(0, 0, 12, 16), guidance=guidance, tile_size=8, tile_overlap=4, tile_batch=3)
    with torch.no_grad():
        sample(den, respaced_schedule(3), z_lr, noise, **kwargs)  # warm-up: windows, kernels, allocator
        torch.cuda.set_sync_debug_mode("error")
        try:
            for schedule in ("overlap", "shifted"):
                sample(den, respaced_schedule(3), z_lr, noise, tile_schedule=schedule, **kwargs)
        finally:
            torch.cuda.set_sync_debug_mode("default")


# --------------------------------------------------------------------------- mgld infer flags


def test_infer_flags_set_their_keys_and_fast_gives_way_to_them(capsys):
    import yaml

    from mgld.cli.infer import main

    def printed(*args):
        assert main(["--config", "tiny", "--print-config", *args]) == 0
        return yaml.safe_load(capsys.readouterr().out)

    cfg = printed("--tile-batch", "3", "--tile-schedule", "shifted", "--compile", "--offload", "model")
    assert (cfg["sampling"]["tile_batch"], cfg["sampling"]["tile_schedule"], cfg["infer"]["compile"],
            cfg["infer"]["offload"]) == (3, "shifted", True, "model")
    assert printed("--fast")["sampling"]["tile_batch"] == "auto"  # on the CPU the preset only batches tiles
    assert printed("--fast", "--tile-batch", "1")["sampling"]["tile_batch"] == 1  # a flag given with it wins
    assert printed("--fast", "sampling.tile_batch=2")["sampling"]["tile_batch"] == 2  # and an override
    default = printed()
    assert (default["sampling"]["tile_batch"], default["infer"]["precision"], default["infer"]["compile"]) == (
        1, "auto", False)
    cfg = printed("--decode-tile-size", "auto", "sampling.pixel_tiling=frame")
    assert cfg["decode"]["tile_size"] == "auto"


def test_fast_help_is_the_presets():
    from mgld.cli.infer import FAST_HELP
    from mgld.models.efficiency import FAST_HELP as PRESET

    assert FAST_HELP == PRESET
