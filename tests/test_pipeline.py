"""The inference pipeline on tiny random networks: sizes, determinism, chunking, guidance, weights."""

from dataclasses import replace

import pytest
import torch

from infer_helpers import TINY, TWO_TILES, clip
from mgld.config import load_config
from mgld.diffusion.guidance import warping_loss
from mgld.diffusion.noise import FrameNoise
from mgld.diffusion.sampling import MotionGuidance, sample
from mgld.diffusion.schedule import respaced_schedule
from mgld.diffusion.tiling import TileBox
from mgld.flow import build_flow_estimator, flows_and_masks
from mgld.models import build_denoiser
from mgld.pipeline.chunks import plan_chunks
from mgld.pipeline.pipeline import MGLDPipeline
from mgld.weights.checkpoints import save_model_folder


@pytest.fixture(scope="module")
def pipe():
    return MGLDPipeline.from_config(TINY, ["sampling.steps=2"])


@pytest.mark.parametrize("n,frames,overlap,starts", [
    (3, 5, 0, [0]), (10, 5, 0, [0, 5]), (12, 5, 0, [0, 5, 7]), (12, 5, 2, [0, 3, 6, 7]), (5, 5, 2, [0]),
])
def test_plan_chunks_cover_every_frame_and_write_it_once(n, frames, overlap, starts):
    chunks = plan_chunks(n, frames, overlap, tail="shift")
    assert [c.start for c in chunks] == starts
    assert all(c.stop - c.start == min(frames, n) for c in chunks)
    written = [i for c in chunks for i in range(c.start + c.shared_prev, c.stop)]
    assert sorted(written) == list(range(n))  # every frame owned by exactly one chunk
    for prev, nxt in zip(chunks, chunks[1:]):
        assert prev.shared_next == nxt.shared_prev == prev.stop - nxt.start
        assert nxt.anchored == (overlap > 0) and prev.record == (prev.shared_next if overlap else 0)


def test_the_tail_clip_holds_the_remaining_frames_by_default_as_the_authors():
    # the authors pad the frame list by repeating the last name: 32 frames end with the clip 30, 31, 31, 31, 31
    chunks = plan_chunks(32, 5)
    assert [(c.start, c.stop) for c in chunks] == [(s, s + 5) for s in range(0, 30, 5)] + [(30, 32)]
    assert all(c.shared_prev == 0 for c in chunks)
    assert [(c.start, c.stop) for c in plan_chunks(32, 5, tail="shift")][-1] == (27, 32)
    assert plan_chunks(32, 5, 2) == plan_chunks(32, 5, 2, tail="shift")  # overlap: always shifted
    with pytest.raises(ValueError, match="chunk.tail"):
        plan_chunks(32, 5, tail="pad")


def test_a_short_tail_clip_is_sampled_with_its_last_frame_repeated(pipe):
    lr = clip(7, 8, 8)
    out = pipe(lr, progress_bar=False)
    tail = pipe.upscale_clip(lr[5:], [5, 6]).frames  # padded inside to 5 frames (short_sequences=repeat)
    assert torch.equal(out[5:], tail) and out.shape[0] == 7


@pytest.mark.parametrize("h,w", [(7, 9), (13, 21), (24, 32)])
def test_output_is_exactly_four_times_the_input(pipe, h, w):
    out = pipe(clip(2, h, w))
    assert out.shape == (2, 3, 4 * h, 4 * w)
    assert 0 <= out.min() and out.max() <= 1


def test_short_side_upsampling_then_exact_4x(pipe):
    small = replace(pipe.config, infer=replace(pipe.config.infer, min_short_side=96))
    p = MGLDPipeline(pipe.denoiser, pipe.vae, small)
    lr = clip(2, 12, 20)
    up, s = p.preprocess(lr)
    assert s == 8.0 and up.shape[-2:] == (96, 160)
    assert p(lr).shape == (2, 3, 48, 80)


def test_deterministic_per_seed_and_per_frame(pipe):
    lr = clip(8, 24, 32)
    a, b = pipe(lr), pipe(lr)
    assert torch.equal(a, b)
    assert not torch.equal(pipe(lr, seed=7), a)
    torch.testing.assert_close(pipe(lr[:5]), a[:5])  # chunking does not change a chunk's result


def test_overlap_mode_shares_and_crossfades(pipe):
    lr = clip(8, 24, 32)
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
        p(clip(2, 24, 32))
    assert p(clip(2, 24, 32), guidance_scale=0).shape == (2, 3, 96, 128)


def test_fp16_without_cuda_is_refused_before_any_network_is_built(pipe, monkeypatch):
    import mgld.pipeline.pipeline as P

    with pytest.raises(ValueError, match="infer.precision: fp16 needs a CUDA device"):
        load_config(TINY, ["infer.precision=fp16"])  # tiny runs on device cpu: refused by the schema
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(P, "build_denoiser", lambda *a: pytest.fail("a network was built"))
    with pytest.raises(ValueError, match="precision=bf16 needs a CUDA device"):
        MGLDPipeline.from_config(TINY, ["infer.device=auto", "infer.precision=bf16"])
    cfg = replace(pipe.config, infer=replace(pipe.config.infer, device="auto", precision="fp16"))
    with pytest.raises(ValueError, match="needs a CUDA device"):  # a pipeline moved to the CPU afterwards
        MGLDPipeline(pipe.denoiser, pipe.vae, cfg)(clip(2, 24, 32), progress_bar=False)


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
            z0 = sample(denoiser, schedule, z_lr, FrameNoise(1, list(range(5)), (4, 10, 16), 10),
                        guidance=guidance, tile_size=16, tile_overlap=8)
        losses[scale] = warping_loss(z0, (flow_f, flow_b), (fwd, bwd), 5, "fixed").item()
    assert losses[10.0] < 0.9 * losses[0.0], losses


def test_from_pretrained_loads_a_converted_folder(tmp_path, pipe):
    save_model_folder(tmp_path, pipe.config.model, denoiser=pipe.denoiser, vae=pipe.vae)
    loaded = MGLDPipeline.from_pretrained(tmp_path, TINY)
    loaded.config = replace(loaded.config, sampling=pipe.config.sampling)
    lr = clip(3, 24, 32)
    torch.testing.assert_close(loaded(lr), pipe(lr))


def test_missing_weights_give_the_commands(tmp_path, monkeypatch):
    monkeypatch.setenv("MGLD_HOME", str(tmp_path))
    cfg = load_config(TINY, ["infer.random_weights=false"])
    with pytest.raises(FileNotFoundError, match=r"(?s)mgld download.*mgld convert --stage1"):
        MGLDPipeline.from_config(cfg)


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
    lr = clip(2, 24, 32)
    torch.testing.assert_close(pipe(lr, generator=torch.Generator().manual_seed(7)), pipe(lr, seed=7))


def test_frame_mode_vae_tiles_place_and_blend_exactly(pipe, monkeypatch):
    """With a local (tiling-invariant) stand-in VAE, frame mode's feathered VAE tiles reproduce the untiled
    result."""
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
    for tile, stride in ((512, 448), (192, 124)):  # stride 124: starts 0, 124, 208 floored to 0, 120, 208
        p = MGLDPipeline(pipe.denoiser, vae, _with(pipe.config, ["sampling.pixel_tiling=frame",
                                                                 f"decode.tile_size={tile}",
                                                                 f"decode.tile_stride={stride}"]))
        z, feats = p.encode(up, noise)
        results.append(([(b.top, b.left) for b in p._vae_boxes(up)], z, p.decode(z, up, feats)))
    (b_whole, z_whole, x_whole), (b_tiled, z_tiled, x_tiled) = results
    assert b_whole == [(0, 0)] and b_tiled == [(0, 0), (0, 120), (0, 208)]
    torch.testing.assert_close(z_tiled, z_whole)
    torch.testing.assert_close(x_tiled, x_whole)


# --------------------------------------------------------------------------- pixel tiling, noise, padding (issue 10)


def _with(cfg, overrides):
    """``cfg`` with dotlist overrides (validated by the schema)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cfg), OmegaConf.from_dotlist(overrides)))


def _streams(seed, frames, shape, draws):
    """The per-frame noise streams written out by hand: draw j of every frame, ``t *shape``."""
    from mgld.diffusion.noise import _mix

    gens = [torch.Generator().manual_seed(_mix(seed, i)) for i in frames]
    return [torch.stack([torch.randn(shape, generator=g) for g in gens]) for _ in range(draws)]


class _Recorder:
    """A noise source that records what it is asked and answers from another source."""

    def __init__(self, source):
        self.source, self.calls = source, []

    def draw(self, kind, step, box):
        out = self.source.draw(kind, step, box)
        self.calls.append((kind, step, box, out.shape[0]))
        return out


def test_authors_tiling_on_a_one_tile_frame_equals_frame_mode_bit_for_bit(pipe):
    lr = clip(5, 20, 28)  # -> 80x112, padded (authors' rule) to 96x128: one 256-px tile
    authors = MGLDPipeline(pipe.denoiser, pipe.vae, pipe.config)
    frame = MGLDPipeline(pipe.denoiser, pipe.vae, _with(pipe.config, ["sampling.pixel_tiling=frame"]))
    assert authors.num_passes(20, 28) == frame.num_passes(20, 28) == 1
    assert frame.tile_plan(20, 28).guidance_factor == 1.0
    losses = []
    a = authors(lr, progress_bar=False, callback=lambda info: losses.append(info["guidance_loss"]))
    assert all(loss is not None and loss > 0 for loss in losses)  # guidance is on
    assert torch.equal(a, frame(lr, progress_bar=False))


def test_authors_tiling_on_two_tiles_equals_an_independent_composition(pipe):
    """Each pixel tile alone (its crop, its crop of the frame's flows, masks and noise streams), then the
    uniform average of the two tiles, written here with the building blocks only."""
    from mgld.diffusion.schedule import respaced_schedule
    from mgld.pipeline.colorfix import color_fix

    cfg = _with(pipe.config, TWO_TILES)
    p = MGLDPipeline(pipe.denoiser, pipe.vae, cfg)
    lr = clip(5, 16, 24)
    out = p(lr, progress_bar=False)

    boxes = [TileBox(0, 0, 64, 64), TileBox(0, 32, 64, 64)]
    assert [t.box for t in p.tile_plan(16, 24).tiles] == boxes
    steps = cfg.sampling.steps
    up, _ = p.preprocess(lr)
    assert up.shape[-2:] == (64, 96)  # both sides multiples of 32: no padding
    (flow_f, flow_b), (fwd, bwd) = p.flows(up)
    draws = _streams(cfg.sampling.seed, range(5), (4, 8, 12), 2 + steps - 1)  # posterior, x_T, xi(k=N-1..1)

    class Crops:
        def __init__(self, box):
            self.box = box

        def draw(self, kind, step, box):
            assert box == self.box
            j = {"posterior": 0, "x_T": 1}.get(kind, 2 + steps - 1 - (step or 0))
            return box.crop(draws[j])

    total, count = torch.zeros(5, 3, 64, 96), torch.zeros(64, 96)
    for box in boxes:
        crop = box.crop(up)
        lbox = TileBox(box.top // 8, box.left // 8, 8, 8)
        z_lr, feats = p.encode(crop, lbox.crop(draws[0]))
        guidance = MotionGuidance((lbox.crop(flow_f), lbox.crop(flow_b)), (lbox.crop(fwd), lbox.crop(bwd)),
                                  cfg.sampling.guidance_scale, "authors")
        with torch.no_grad():
            z0 = sample(p.denoiser, respaced_schedule(steps), z_lr, Crops(lbox), box=lbox, guidance=guidance,
                        tile_size=6, tile_overlap=3)
            decoded = color_fix(p.decode(z0, crop, feats).float(), crop, "adain")
        box.crop(total).add_(decoded)
        box.crop(count).add_(1)
    expected = ((total / count + 1) / 2).clamp(0, 1)
    assert torch.equal(out, expected)
    assert not torch.equal(out, MGLDPipeline(pipe.denoiser, pipe.vae, _with(cfg, ["sampling.pixel_tiling=frame"]))(
        lr, progress_bar=False))


def test_noise_is_asked_per_tile_in_order_and_can_be_injected(pipe):
    from mgld.diffusion.noise import AuthorsNoise, FrameNoise

    cfg = _with(pipe.config, TWO_TILES)
    p = MGLDPipeline(pipe.denoiser, pipe.vae, cfg)
    lr = clip(5, 16, 24)
    steps = cfg.sampling.steps
    frame_noise = _Recorder(FrameNoise(cfg.sampling.seed, list(range(5)), (4, 8, 12), steps))
    default = p.upscale_clip(lr, range(5)).frames
    assert torch.equal(p.upscale_clip(lr, range(5), noise=frame_noise).frames, default)
    order = [("posterior", None), ("x_T", None)] + [("xi", k) for k in range(steps - 1, 0, -1)]
    boxes = [t.latent_box for t in p.tile_plan(16, 24).tiles]
    assert boxes == [TileBox(0, 0, 8, 8), TileBox(0, 4, 8, 8)]
    assert frame_noise.calls == [(kind, step, box, 5) for box in boxes for kind, step in order]

    authors = _Recorder(AuthorsNoise(cfg.sampling.seed, 5))
    injected = p.upscale_clip(lr, range(5), noise=authors).frames
    assert not torch.equal(injected, default)
    first, second = (authors.source.draw(*call[:3]) for call in (authors.calls[0], authors.calls[len(order)]))
    assert torch.equal(first, second)  # re-seeded per tile: equal-size tiles draw identical noise
    torch.manual_seed(cfg.sampling.seed)  # the authors' seed_everything, then plain draws on the CPU
    assert torch.equal(first, torch.randn(5, 4, 8, 8))


def test_guidance_factor_gives_the_authors_step_per_element_at_three_sizes(pipe):
    """Frame mode's guided update (scaled by the factor) equals the uniform average of the per-tile updates
    of authors mode wherever the tile borders do not change the warping terms."""
    from mgld.diffusion.schedule import respaced_schedule

    authors = MGLDPipeline(pipe.denoiser, pipe.vae, _with(pipe.config, TWO_TILES))
    frame = MGLDPipeline(pipe.denoiser, pipe.vae, _with(pipe.config, TWO_TILES + ["sampling.pixel_tiling=frame"]))
    log_variance = respaced_schedule(50).log_variance(30)
    g = torch.Generator().manual_seed(3)
    for (h, w), passes, factor in (((16, 16), 1, 1.0), ((16, 24), 2, 1.5), ((24, 40), 6, 3.75)):
        plan, frame_plan = authors.tile_plan(h, w), frame.tile_plan(h, w)
        hz, wz = plan.latent_size
        assert (len(plan.tiles), frame_plan.guidance_factor) == (passes, factor)
        assert factor == (hz * wz) / (min(hz, 8) * min(wz, 8))  # frame latent area / authors' tile latent area
        z = torch.randn(5, 4, hz, wz, generator=g)
        shift = torch.zeros(1, 4, 2, hz, wz)
        shift[:, :, 0] = 1.0  # one latent pixel to the right
        guidance = MotionGuidance((shift, shift), (torch.zeros(1, 4, 1, hz, wz),) * 2, 10.0, "authors")
        total, count = torch.zeros_like(z), torch.zeros(hz, wz)
        near_a_seam = torch.zeros(hz, wz, dtype=torch.bool)  # warping terms there see the tile's zero padding
        for tile in plan.tiles:
            b = tile.latent_box
            crop = b.crop(z)
            updated, _ = guidance.crop(tile.flow_box).apply(crop, log_variance, 5)
            b.crop(total).add_(updated - crop)
            b.crop(count).add_(1)
            near = torch.zeros(b.height, b.width, dtype=torch.bool)
            near[:2] |= b.top > 0
            near[-2:] |= b.top + b.height < hz
            near[:, :2] |= b.left > 0
            near[:, -2:] |= b.left + b.width < wz
            b.crop(near_a_seam).logical_or_(near)
        frame_delta = replace(guidance, scale=10.0 * frame_plan.guidance_factor).apply(z, log_variance, 5)[0] - z
        keep = ~near_a_seam
        assert keep.sum() >= hz * wz // 3 and frame_delta.abs().max() > 0
        torch.testing.assert_close(frame_delta[..., keep], (total / count)[..., keep], rtol=1e-4, atol=1e-6)


def test_the_authors_tile_layout_and_padding_at_benchmark_sizes(pipe):
    from mgld.config import Config
    from mgld.pipeline.pipeline import padding

    assert padding(720, 1280) == (16, 32) and padding(720, 1280, "fixed") == (16, 0)
    assert padding(736, 1312) == (0, 0) and padding(100, 128) == (28, 32)
    full = MGLDPipeline(pipe.denoiser, pipe.vae, replace(Config(), model=pipe.config.model))
    plan = full.tile_plan(180, 320)  # REDS4 / UDM10: 1280x720 after x4
    assert plan.upsampled_size == (720, 1280) and plan.padded_size == (736, 1312) and plan.latent_size == (92, 164)
    assert [(t.box.left, t.box.width) for t in plan.tiles] == [(0, 960), (352, 960)]
    assert full.num_passes(180, 320) == 2
    frame_plan = MGLDPipeline(pipe.denoiser, pipe.vae, _with(full.config, ["sampling.pixel_tiling=frame"]))
    assert frame_plan.tile_plan(180, 320).guidance_factor == pytest.approx(164 / 120)
    plan = full.tile_plan(360, 640)  # 2560x1440: four tiles per row, flows cut by the authors' 120/93
    lefts = [(t.box.left, t.latent_box.left, t.flow_box.left) for t in plan.tiles if t.box.top == 0]
    assert lefts == [(0, 0, 0), (750, 93, 93), (1500, 187, 186), (1600, 200, 200)]
    fixed = MGLDPipeline(pipe.denoiser, pipe.vae, _with(full.config, ["sampling.flow_tile_crop=fixed"]))
    assert all(t.flow_box == t.latent_box for t in fixed.tile_plan(360, 640).tiles)
    assert len(plan.tiles) == 8 and [t.box.top for t in plan.tiles[:2]] == [0, 480]  # row index fastest


def test_crop_before_the_final_resize_uses_the_upsampled_size(pipe, monkeypatch):
    """LR 100x133 with a 512-px short side: s = 5.12, upsampled to 512x680 (int), padded to 544x704; the crop
    keeps exactly those 512x680 pixels (round() would keep a padded column) before resizing to 400x532."""
    import torch.nn.functional as F

    p = MGLDPipeline(pipe.denoiser, pipe.vae, _with(pipe.config, ["infer.min_short_side=512",
                                                                  "decode.tile_size=1024",
                                                                  "sampling.guidance_scale=0"]))
    plan = p.tile_plan(100, 133)
    assert plan.upsampled_size == (512, 680) and plan.padded_size == (544, 704)
    monkeypatch.setattr(p, "_pass", lambda up, *a: (up, torch.zeros(up.shape[0], 4, 68, 88), {}))  # identity
    lr = clip(1, 100, 133)
    out = p.upscale_clip(lr, [0]).frames
    up = F.interpolate(lr * 2 - 1, size=(512, 680), mode="bicubic", align_corners=False).clamp(-1, 1)
    expected = F.interpolate(((up + 1) / 2).clamp(0, 1), size=(400, 532), mode="bicubic",
                             align_corners=False).clamp(0, 1)
    assert out.shape == (1, 3, 400, 532)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)


def test_short_sequences_repeat_the_last_frame_up_to_the_clip_length(pipe):
    from mgld.diffusion.noise import FrameNoise

    lr = clip(2, 24, 32)
    padded = torch.cat([lr, lr[-1:].expand(3, -1, -1, -1)])
    assert torch.equal(pipe(lr, progress_bar=False), pipe(padded, progress_bar=False)[:2])
    recorder = _Recorder(FrameNoise(42, list(range(5)), (4, 12, 16), 2))
    assert pipe.upscale_clip(lr, [0, 1], noise=recorder).frames.shape == (2, 3, 96, 128)
    assert {calls[3] for calls in recorder.calls} == {5}  # the noise of 5 frames: 0, 1 and the repeats 2, 3, 4
    short = MGLDPipeline(pipe.denoiser, pipe.vae, _with(pipe.config, ["chunk.short_sequences=short"]))
    recorder = _Recorder(FrameNoise(42, [0, 1], (4, 12, 16), 2))
    out = short.upscale_clip(lr, [0, 1], noise=recorder).frames
    assert out.shape == (2, 3, 96, 128) and {calls[3] for calls in recorder.calls} == {2}
    assert not torch.equal(out, pipe(lr, progress_bar=False))


def test_flow_runs_in_the_configured_autocast_at_the_configured_resolution(pipe, monkeypatch):
    seen = []

    class Estimator:
        def __call__(self, ref, sup):
            seen.append((tuple(ref.shape[-2:]), torch.is_autocast_enabled("cpu")))
            return torch.zeros(ref.shape[0], 2, *ref.shape[-2:])

    lr = clip(2, 16, 24)
    for overrides, expected in (([], ((16, 24), True)), (["flow.precision=fp32"], ((16, 24), False)),
                                (["flow.resolution=upsampled"], ((64, 96), True))):
        cfg = _with(pipe.config, overrides + ["infer.cast_weights=false"])
        cfg.infer.precision = "bf16"  # CPU bf16 autocast stands in for CUDA's (the schema refuses it with cpu)
        p = MGLDPipeline(pipe.denoiser, pipe.vae, cfg, flow_estimator=Estimator())
        monkeypatch.setattr(p, "_pass", lambda up, *a: (up, torch.zeros(2, 4, 8, 12), {}))
        seen.clear()
        p.upscale_clip(lr, [0, 1])
        assert seen == [expected, expected], overrides  # W then B, on the LR-size or the upsampled frames


def test_bilinear_upsampling_is_torchvision_resize(pipe):
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.functional import resize

    p = MGLDPipeline(pipe.denoiser, pipe.vae, _with(pipe.config, ["infer.upsample_mode=bilinear",
                                                                  "infer.min_short_side=64"]))
    lr = clip(2, 16, 24)
    up, s = p.preprocess(lr)
    assert s == 4.0 and up.shape[-2:] == (64, 96)
    expected = resize(lr * 2 - 1, [64, 96], InterpolationMode.BILINEAR, antialias=True).clamp(-1, 1)
    assert torch.equal(up, expected)


# --------------------------------------------------------------------------- the Python API (issue 9)


def test_readme_snippet_on_a_saved_folder(tmp_path, pipe):
    folder = tmp_path / "tiny-mgld"
    pipe.save_pretrained(folder)
    from mgld import MGLDPipeline as Exported

    pipe_loaded = Exported.from_pretrained(folder)
    lr_uint8 = (clip(3, 16, 24) * 255).to(torch.uint8)
    frames = pipe_loaded(lr_uint8, num_inference_steps=2, seed=0)
    assert frames.shape == (3, 3, 64, 96) and frames.dtype == torch.float32
    cfg = pipe_loaded.config  # the inference sections came back: DIS flow, plain x4, tiny tiles
    assert (cfg.flow.method, cfg.infer.min_short_side, cfg.decode, cfg.sampling) == (
        "dis", 0, pipe.config.decode, pipe.config.sampling)
    assert torch.equal(frames, pipe(lr_uint8.float() / 255, num_inference_steps=2, seed=0, progress_bar=False))


def test_save_pretrained_keeps_the_raft_it_runs_with(tmp_path, pipe):
    from torchvision.models.optical_flow import raft_large

    from mgld.flow import RaftEstimator

    torch.manual_seed(0)
    raft = RaftEstimator(raft_large(weights=None, progress=False))
    p = MGLDPipeline(pipe.denoiser, pipe.vae, _with(pipe.config, ["flow.method=raft"]), flow_estimator=raft)
    folder = p.save_pretrained(tmp_path / "with-raft")
    assert (folder / "flow.safetensors").is_file()
    loaded = MGLDPipeline.from_pretrained(folder).flow_estimator.model.state_dict()  # read from flow.safetensors
    assert loaded.keys() == raft.model.state_dict().keys()
    assert all(torch.equal(v, raft.model.state_dict()[k]) for k, v in loaded.items())
    assert not (pipe.save_pretrained(tmp_path / "dis") / "flow.safetensors").exists()  # DIS: no weights


def test_from_pretrained_expands_home_and_fetches_hub_repo_ids(tmp_path, pipe, monkeypatch):
    import huggingface_hub

    pipe.save_pretrained(tmp_path / "weights" / "tiny")
    monkeypatch.setenv("HOME", str(tmp_path / "weights"))
    assert MGLDPipeline.from_pretrained("~/tiny").config.infer.weights == str(tmp_path / "weights" / "tiny")
    asked = []

    def snapshot_download(repo_id, revision=None, allow_patterns=None):
        asked.append((repo_id, revision))
        return str(tmp_path / "weights" / "tiny")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    loaded = MGLDPipeline.from_pretrained("someone/tiny-mgld", revision="v1", overrides=["sampling.steps=3"])
    assert asked == [("someone/tiny-mgld", "v1")] and loaded.config.sampling.steps == 3

    def offline(**kwargs):
        raise OSError("offline")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(FileNotFoundError, match="someone/else: not a local folder.*Hub repo failed"):
        MGLDPipeline.from_pretrained("someone/else")
    with pytest.raises(FileNotFoundError, match="config.yaml: not found"):
        MGLDPipeline.from_pretrained(tmp_path)


def test_frames_in_every_documented_layout_and_dtype(pipe):
    import numpy as np
    from PIL import Image

    from mgld.pipeline.pipeline import to_frames_tensor

    u8 = (clip(2, 6, 7) * 255).to(torch.uint8)  # t 3 h w
    reference = u8.float() / 255
    thwc = u8.permute(0, 2, 3, 1).numpy()  # what PyAV / torchvision.io give
    layouts = [u8, thwc, torch.from_numpy(thwc), list(thwc), [Image.fromarray(a) for a in thwc], list(reference)]
    for frames in layouts:
        assert torch.equal(to_frames_tensor(frames), reference)
    u16 = thwc.astype(np.uint16) * 257
    torch.testing.assert_close(to_frames_tensor(u16), reference)
    assert to_frames_tensor([np.zeros((6, 7), np.uint8)]).shape == (1, 3, 6, 7)
    for bad, message in ((reference * 255, r"must lie in \[0, 1\], got values in \[0, 25"),
                         (u8.to(torch.int64), "uint8 .* or uint16"), (reference[0], "4 dimensions"),
                         ([], "no frames"), ([thwc[0], thwc[0][:5]], "same size")):
        with pytest.raises(ValueError, match=message):
            to_frames_tensor(bad)


def test_progress_bar_and_step_callback(pipe, capsys):
    infos = []
    lr = clip(6, 16, 24)  # chunks [0, 5) and [1, 6)
    pipe(lr, callback=infos.append, progress_bar=False)
    assert capsys.readouterr().err == ""
    assert [(i["chunk"], i["step"], i["tile"], i["num_tiles"]) for i in infos] == [
        (c, k, 0, 1) for c in (0, 1) for k in (1, 0)]
    assert infos[0]["latents"].shape == (5, 4, 8, 12) and infos[0]["guidance_loss"] is not None
    pipe(lr[:2])
    assert "MGLD" in capsys.readouterr().err  # the tqdm bar


def test_sampler_reports_through_one_callback_and_records_the_anchor(pipe):
    import inspect

    from mgld.diffusion.schedule import respaced_schedule

    assert not {"profiler", "progress", "record"} & set(inspect.signature(sample).parameters)
    cfg = _with(pipe.config, ["chunk.overlap=2"])
    p = MGLDPipeline(pipe.denoiser, pipe.vae, cfg)
    seen = []
    result = p.upscale_clip(clip(5, 24, 32), range(5), record=2, callback=seen.append)
    assert sorted(result.trajectory) == [0, 1]
    for info in seen:
        assert torch.equal(result.trajectory[info["step"]], info["latents"][-2:])
    z_lr = torch.randn(5, 4, 12, 16)
    x = sample(p.denoiser, respaced_schedule(3), z_lr, FrameNoise(0, list(range(5)), (4, 12, 16), 3),
               callback=seen.append)
    assert [i["step"] for i in seen[-3:]] == [2, 1, 0] and torch.equal(seen[-1]["latents"], x)


def test_anchor_trajectory_is_kept_per_pixel_tile(pipe):
    from mgld.diffusion.sampling import Anchor

    p = MGLDPipeline(pipe.denoiser, pipe.vae, _with(pipe.config, TWO_TILES + ["chunk.overlap=2"]))
    first = p.upscale_clip(clip(5, 16, 24), range(5), record=2)
    assert sorted(first.trajectory) == [(t, k) for t in (0, 1) for k in (0, 1)]
    anchor = Anchor(first.trajectory, 1.0)
    assert sorted(anchor.for_tile(1).trajectory) == [0, 1]
    second = p.upscale_clip(clip(5, 16, 24, seed=1), range(3, 8), anchor=anchor)
    assert second.frames.shape == (5, 3, 64, 96)
    out = p(clip(8, 16, 24), progress_bar=False)  # overlapping chunks through __call__
    assert out.shape == (8, 3, 64, 96)


def test_frame_noise_draws_are_the_same_in_any_order_with_or_without_the_cache():
    from mgld.diffusion.noise import FrameNoise, draw_index

    box = TileBox(1, 2, 3, 4)
    streams = _streams(7, [3, 9], (4, 5, 6), 5)  # 5 draws: posterior, x_T, xi(k = 3, 2, 1) of N = 4 steps
    asked = [("xi", 1), ("posterior", None), ("xi", 3), ("x_T", None), ("xi", 2), ("xi", 1)]
    for cache_bytes in (2**30, 0):
        noise = FrameNoise(7, [3, 9], (4, 5, 6), num_steps=4, cache_bytes=cache_bytes)
        for kind, step in asked:
            assert torch.equal(noise.draw(kind, step, box), box.crop(streams[draw_index(kind, step, 4)]))
    with pytest.raises(ValueError, match="xi draw needs a step"):
        noise.draw("xi", 0, box)
    with pytest.raises(ValueError, match="outside the noise grid"):
        noise.draw("x_T", None, TileBox(4, 0, 3, 3))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_fp16_authors_noise_and_flow_under_autocast(pipe):
    from mgld.diffusion.noise import AuthorsNoise

    noise = AuthorsNoise(5, 5, device="cuda")
    first = noise.draw("posterior", None, TileBox(0, 0, 8, 8))
    x_t = noise.draw("x_T", None, TileBox(0, 0, 8, 8))
    torch.manual_seed(5)
    torch.cuda.manual_seed(5)
    assert torch.equal(first, torch.randn(5, 4, 8, 8)) and torch.equal(x_t, torch.randn(5, 4, 8, 8, device="cuda"))
    p = MGLDPipeline(pipe.denoiser, pipe.vae, _with(pipe.config, TWO_TILES + ["infer.device=cuda",
                                                                             "infer.precision=fp16"])).to("cuda")
    out = p(clip(5, 16, 24), progress_bar=False)
    assert out.shape == (5, 3, 64, 96) and torch.isfinite(out).all()
    pipe.to("cpu")
