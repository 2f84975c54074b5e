"""The inference pipeline on tiny random networks: sizes, determinism, chunking, guidance, weights."""

from dataclasses import replace

import pytest
import torch

from conftest import ROOT
from mgld.config import load_config
from mgld.diffusion.guidance import warping_loss
from mgld.diffusion.noise import FrameNoise
from mgld.diffusion.sampling import MotionGuidance, sample
from mgld.diffusion.schedule import respaced_schedule
from mgld.flow import build_flow_estimator, flows_and_masks
from mgld.models import build_denoiser
from mgld.pipeline.chunks import plan_chunks
from mgld.pipeline.pipeline import MGLDPipeline
from mgld.weights.checkpoints import save_model_folder

TINY = ROOT / "configs" / "tiny.yaml"


@pytest.fixture(scope="module")
def pipe():
    return MGLDPipeline.from_config(TINY, ["sampling.steps=2"])


def _clip(t=5, h=24, w=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(t, 3, h, w, generator=g)


@pytest.mark.parametrize("n,frames,overlap,starts", [
    (3, 5, 0, [0]), (10, 5, 0, [0, 5]), (12, 5, 0, [0, 5, 7]), (12, 5, 2, [0, 3, 6, 7]), (5, 5, 2, [0]),
])
def test_plan_chunks_cover_every_frame_and_write_it_once(n, frames, overlap, starts):
    chunks = plan_chunks(n, frames, overlap)
    assert [c.start for c in chunks] == starts
    assert all(c.stop - c.start == min(frames, n) for c in chunks)
    written = [i for c in chunks for i in range(c.start + c.shared_prev, c.stop)]
    assert sorted(written) == list(range(n))  # every frame owned by exactly one chunk
    for prev, nxt in zip(chunks, chunks[1:]):
        assert prev.shared_next == nxt.shared_prev == prev.stop - nxt.start
        assert nxt.anchored == (overlap > 0) and prev.record == (prev.shared_next if overlap else 0)


@pytest.mark.parametrize("h,w", [(7, 9), (13, 21), (24, 32)])
def test_output_is_exactly_four_times_the_input(pipe, h, w):
    out = pipe(_clip(2, h, w))
    assert out.shape == (2, 3, 4 * h, 4 * w)
    assert 0 <= out.min() and out.max() <= 1


def test_short_side_upsampling_then_exact_4x(pipe):
    small = replace(pipe.config, infer=replace(pipe.config.infer, min_short_side=96))
    p = MGLDPipeline(pipe.denoiser, pipe.vae, small)
    lr = _clip(2, 12, 20)
    up, s = p.preprocess(lr)
    assert s == 8.0 and up.shape[-2:] == (96, 160)
    assert p(lr).shape == (2, 3, 48, 80)


def test_deterministic_per_seed_and_per_frame(pipe):
    lr = _clip(8)
    a, b = pipe(lr), pipe(lr)
    assert torch.equal(a, b)
    assert not torch.equal(pipe(lr, seed=7), a)
    torch.testing.assert_close(pipe(lr[:5]), a[:5])  # chunking does not change a chunk's result


def test_overlap_mode_shares_and_crossfades(pipe):
    lr = _clip(8)
    independent = pipe(lr)
    cfg = replace(pipe.config, chunk=replace(pipe.config.chunk, overlap=2))
    overlapped = MGLDPipeline(pipe.denoiser, pipe.vae, cfg)
    out = overlapped(lr)
    assert out.shape == independent.shape
    torch.testing.assert_close(out[:3], independent[:3])  # before the first shared frame nothing changes
    assert not torch.allclose(out[3:5], independent[3:5])


def test_guidance_off_needs_no_flow_weights(pipe):
    cfg = replace(pipe.config, flow=replace(pipe.config.flow, method="raft", weights="/nonexistent/raft.pth"))
    p = MGLDPipeline(pipe.denoiser, pipe.vae, cfg)
    with pytest.raises(FileNotFoundError, match="raft.pth"):
        p(_clip(2))
    assert p(_clip(2), guidance_scale=0).shape == (2, 3, 96, 128)


def test_fp16_on_cpu_is_refused(pipe):
    cfg = replace(pipe.config, infer=replace(pipe.config.infer, precision="fp16"))
    with pytest.raises(ValueError, match="needs a CUDA device"):
        MGLDPipeline(pipe.denoiser, pipe.vae, cfg)(_clip(2))


def test_corrected_guidance_lowers_the_latent_warping_error(tiny_model_cfg):
    """A translating sequence: guided sampling ends closer to motion-consistent latents than unguided."""
    torch.manual_seed(0)
    denoiser = build_denoiser(tiny_model_cfg).eval()
    base = torch.rand(3, 40, 80)
    frames = torch.stack([base[:, :, 2 * i: 2 * i + 64] for i in range(5)])  # 2 px/frame to the left
    z_lr = torch.nn.functional.avg_pool2d(frames, 4).repeat(1, 2, 1, 1)[:, :4] * 0.5  # 5 4 10 16
    flow_f, flow_b, fwd, bwd = flows_and_masks(frames, build_flow_estimator("dis"), (10, 16))
    schedule = respaced_schedule(10)
    losses = {}
    for scale in (0.0, 10.0):
        guidance = MotionGuidance((flow_f, flow_b), (fwd, bwd), scale, "fixed")
        with torch.no_grad():
            z0, _ = sample(denoiser, schedule, z_lr, FrameNoise(1, list(range(5)), (4, 10, 16)),
                           guidance=guidance, tile_size=16, tile_overlap=8)
        losses[scale] = warping_loss(z0, (flow_f, flow_b), (fwd, bwd), 5, "fixed").item()
    assert losses[10.0] < 0.9 * losses[0.0], losses


def test_from_pretrained_loads_a_converted_folder(tmp_path, pipe):
    save_model_folder(tmp_path, pipe.config.model, denoiser=pipe.denoiser, vae=pipe.vae)
    loaded = MGLDPipeline.from_pretrained(tmp_path, TINY)
    loaded.config = replace(loaded.config, sampling=pipe.config.sampling)
    lr = _clip(3)
    torch.testing.assert_close(loaded(lr), pipe(lr))


def test_missing_weights_give_the_commands(tmp_path, monkeypatch):
    monkeypatch.setenv("MGLD_HOME", str(tmp_path))
    cfg = load_config(TINY, ["infer.random_weights=false"])
    with pytest.raises(FileNotFoundError, match=r"(?s)mgld download.*mgld convert --stage1"):
        MGLDPipeline.from_config(cfg)


def test_work_split_across_processes():
    from mgld.pipeline.chunks import split_chunks, split_work

    assert [split_work(list("abcde"), r, 2) for r in (0, 1)] == [list("ace"), list("bd")]
    chunks = plan_chunks(23, 5, 0)
    parts = [split_chunks(chunks, r, 3) for r in range(3)]
    assert sum(parts, []) == chunks and all(parts)  # contiguous, complete, none empty


def test_python_api_accepts_pil_and_numpy(pipe):
    import numpy as np
    from PIL import Image

    arrays = [(np.random.default_rng(i).random((12, 16, 3)) * 255).astype(np.uint8) for i in range(2)]
    from_numpy = pipe(arrays)
    from_pil = pipe([Image.fromarray(a) for a in arrays])
    from_tensor = pipe(torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255)
    assert from_numpy.shape == (2, 3, 48, 64)
    torch.testing.assert_close(from_numpy, from_pil)
    torch.testing.assert_close(from_numpy, from_tensor)


def test_generator_seeds_like_seed(pipe):
    lr = _clip(2)
    torch.testing.assert_close(pipe(lr, generator=torch.Generator().manual_seed(7)), pipe(lr, seed=7))


def test_pixel_tiling_places_and_blends_tiles_exactly(pipe, monkeypatch):
    """With a local (tiling-invariant) stand-in VAE, feathered pixel tiles reproduce the untiled result."""
    from types import SimpleNamespace

    vae = pipe.vae

    def encode(x):  # posterior mean = 8x8 average, std = 1; no CFW features
        mean = torch.nn.functional.avg_pool2d(x, 8).repeat(1, 2, 1, 1)[:, :4]
        return SimpleNamespace(mean=mean, std=torch.ones_like(mean)), None

    def decode(z, feats, t, w):
        return torch.nn.functional.interpolate(z[:, :3], scale_factor=8, mode="nearest")

    monkeypatch.setattr(vae, "encode", encode)
    monkeypatch.setattr(vae, "decode", decode)
    up = torch.rand(2, 3, 128, 400) * 2 - 1
    noise = torch.randn(2, 4, 16, 50)
    results = []
    for tile in (512, 192):
        p = MGLDPipeline(pipe.denoiser, vae,
                         replace(pipe.config, decode=replace(pipe.config.decode, tile_size=tile,
                                                             tile_stride=tile - 64)))
        z, feats = p.encode(up, noise)
        results.append((len(p._pixel_boxes(up)), z, p.decode(z, up, feats)))
    (n_whole, z_whole, x_whole), (n_tiled, z_tiled, x_tiled) = results
    assert (n_whole, n_tiled) == (1, 3)
    torch.testing.assert_close(z_tiled, z_whole)
    torch.testing.assert_close(x_tiled, x_whole)
