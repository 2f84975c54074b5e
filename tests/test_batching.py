"""Latent tiles x frames batched into denoiser calls (mgld.diffusion.batching): the same noise prediction."""

from collections import Counter

import pytest
import torch

from infer_helpers import TINY, Counting, nontrivial
from mgld.config import load_config
from mgld.diffusion import batching, sampling
from mgld.diffusion.batching import call_cost, plan_batches, predict_noise, resolve_tile_batch, tile_batch_for_pass
from mgld.models import build_denoiser


@pytest.fixture(scope="module")
def denoiser():
    torch.manual_seed(0)
    return nontrivial(build_denoiser(load_config(TINY).model))


def per_pixel(x, t, z, num_frames, context=None, cond=None):
    """A stand-in denoiser that works pixel by pixel: tiling must not change its output."""
    return 2 * x + z + t.float() / 1000


def _inputs(h=24, w=32):
    g = torch.Generator().manual_seed(1)
    return torch.randn(5, 4, h, w, generator=g), torch.randn(5, 4, h, w, generator=g)


def _blended_one_by_one(denoiser, x, timestep, z, num_frames, tile, overlap):
    """The sampler's tiled prediction before batching: one tile per call, blended with blend_tiles."""
    from mgld.diffusion.tiling import blend_tiles, tile_boxes

    t = torch.tensor([timestep])
    boxes = tile_boxes(x.shape[-2], x.shape[-1], tile, overlap)
    return blend_tiles(((b, denoiser(b.crop(x), t, b.crop(z), num_frames)) for b in boxes), tuple(x.shape[-2:]))


def test_one_tile_per_call_is_the_sampler_before_batching_bit_for_bit(denoiser):
    x, z = _inputs()  # tiles of 16 with overlap 8: 2 x 3 tiles
    with torch.no_grad():
        ref = _blended_one_by_one(denoiser, x, 500, z, 5, 16, 8)
        out = predict_noise(denoiser, x, 500, z, 5, 16, 8, 1)
    assert torch.equal(out, ref)
    assert sampling.predict_noise is predict_noise  # what the sampler calls


def test_batched_tiles_equal_one_tile_per_call_within_fp32_rounding(denoiser):
    x, z = _inputs()
    counting = Counting(denoiser)
    with torch.no_grad():
        ref = predict_noise(denoiser, x, 500, z, 5, 16, 8, 1)
        for batch in (4, 6, "auto"):
            counting.shapes.clear()
            tiles = tile_batch_for_pass(batch, counting, x, tile_size=16, tile_overlap=8)  # auto: once per pass
            out = predict_noise(counting, x, 500, z, 5, 16, 8, tiles)
            # not bit-identical: oneDNN convolutions pick their algorithm by batch size (module docstring)
            assert (out - ref).abs().max() < 1e-5, batch
            if batch == 4:  # 6 tiles in calls of at most 4, as equal as possible: 3 + 3
                assert counting.shapes == Counter({(15, 4, 16, 16): 2})
            else:
                assert counting.shapes == Counter({(30, 4, 16, 16): 1})


def test_tiling_does_not_change_a_per_pixel_network():
    x, z = _inputs(40, 56)
    expected = per_pixel(x, torch.tensor([500]), z, 5)
    for schedule in ("overlap", "shifted"):
        for batch in (1, 3, "auto"):
            counting = Counting(per_pixel)
            tiles = tile_batch_for_pass(batch, counting, x, tile_size=16, tile_overlap=8, tile_schedule=schedule,
                                        steps=8)  # auto: resolved once per pass, over steps 0..7
            out = predict_noise(counting, x, 500, z, 5, 16, 8, tiles, tile_schedule=schedule, step=7)
            if schedule == "shifted":
                assert torch.equal(out, expected), batch  # each pixel copied from the one tile that owns it
                shapes = {s[-2:] for s in counting.shapes}
                assert len(shapes) > 1  # unequal edge tiles ...
                if batch == "auto":  # ... batched by shape: one call per shape
                    assert sum(counting.shapes.values()) == len(shapes)
            else:
                torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="tile_schedule"):
        predict_noise(per_pixel, x, 500, z, 5, 16, 8, 1, tile_schedule="random")
    with pytest.raises(TypeError, match="tile_batch_for_pass"):  # auto is resolved once per pass, not per step
        predict_noise(per_pixel, x, 500, z, 5, 16, 8, "auto")


def test_plan_batches_groups_by_shape_in_balanced_calls():
    shapes = [(16, 16)] * 5 + [(8, 16)] * 2
    assert plan_batches(shapes, 3) == [[0, 1, 2], [3, 4], [5, 6]]
    assert plan_batches(shapes, 1) == [[i] for i in range(7)]
    assert plan_batches([(8, 8), (4, 8), (8, 8)], 8) == [[0, 2], [1]]
    with pytest.raises(ValueError):
        plan_batches(shapes, 0)


def test_auto_tile_batch_respects_a_memory_budget(denoiser):
    fixed, per_tile = call_cost(denoiser, (16, 16), 5, torch.float32)
    assert per_tile > 0 and fixed >= 0
    from mgld.perf.simulate import peak_bytes

    x = torch.empty(15, 4, 16, 16)
    assert peak_bytes(denoiser, denoiser, x, torch.zeros(1, dtype=torch.long), x, 5) == fixed + 3 * per_tile

    def auto(budget):
        return resolve_tile_batch("auto", denoiser, 6, (16, 16), 5, "cpu", torch.float32, budget=budget)

    assert auto(int((fixed + 3 * per_tile) / 0.8) + 1) == 3
    assert auto(int((fixed + 3 * per_tile) / 0.8) - per_tile) == 2
    assert auto(10**15) == 6 and auto(0) == 1
    assert resolve_tile_batch(4, denoiser, 6, (16, 16), 5, "cpu", torch.float32) == 4
    assert resolve_tile_batch(9, denoiser, 6, (16, 16), 5, "cpu", torch.float32) == 6
    with pytest.raises(ValueError):
        resolve_tile_batch(0, denoiser, 6, (16, 16), 5, "cpu", torch.float32)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_no_host_synchronisation_in_the_tiled_prediction(denoiser):
    net = denoiser.cuda()
    x, z = (v.cuda() for v in _inputs())
    with torch.no_grad():
        predict_noise(net, x, 500, z, 5, 16, 8, 3)  # first call builds the cached windows
        torch.cuda.set_sync_debug_mode("error")
        try:
            predict_noise(net, x, 480, z, 5, 16, 8, 3)
        finally:
            torch.cuda.set_sync_debug_mode("default")
            denoiser.cpu()


def test_module_is_importable_from_the_diffusion_package():
    assert batching.TILE_SCHEDULES == ("overlap", "shifted")
