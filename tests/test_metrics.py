"""Metrics (docs/evaluation.md): PSNR/SSIM against scikit-image and basicsr, E_warp, flicker, NIQE, offline skipping."""

import numpy as np
import pytest
import torch
from skimage import color, data, metrics

from mgld._compat import import_basicsr
from mgld.eval import metrics as M
from mgld.eval.evaluation import EvalSettings, build_metrics
from mgld.eval.testset import panning_sequence
from mgld.io.frames import frames_to_tensor

VELOCITY = (1, 3)  # (dy, dx) pixels per frame


@pytest.fixture(scope="module")
def pair():
    """A 96x128 photograph crop and a noisy, slightly shifted version of it (uint8 RGB)."""
    gt = data.astronaut()[150:246, 150:278]
    rng = np.random.default_rng(0)
    pred = np.clip(np.roll(gt, 1, axis=1) + rng.normal(0, 6, gt.shape), 0, 255).astype(np.uint8)
    return pred, gt


@pytest.fixture(scope="module")
def panned():
    """6 frames panned across the astronaut by VELOCITY: a pure translation."""
    return panning_sequence(data.astronaut(), 6, (96, 128), VELOCITY, (150, 150))


def _y(img):
    return color.rgb2ycbcr(img)[..., 0]  # BT.601 Y in [16, 235], what basicsr's Y channel is


@pytest.mark.parametrize("crop", [0, 4])
def test_psnr_agrees_with_scikit_image(pair, crop):
    pred, gt = pair
    c = slice(crop, -crop) if crop else slice(None)
    rgb = metrics.peak_signal_noise_ratio(gt[c, c], pred[c, c], data_range=255)
    y = metrics.peak_signal_noise_ratio(_y(gt)[c, c], _y(pred)[c, c], data_range=255)
    assert M.psnr(pred, gt, crop) == pytest.approx(rgb, abs=1e-4)
    assert M.psnr(pred, gt, crop, y_channel=True) == pytest.approx(y, abs=1e-4)
    assert 20 < rgb < 35 and abs(y - rgb) > 0.1  # the two modes really differ here


def test_ssim_agrees_with_scikit_image(pair):
    pred, gt = pair
    kw = dict(data_range=255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    rgb = metrics.structural_similarity(gt.astype(float), pred.astype(float), channel_axis=-1, **kw)
    y = metrics.structural_similarity(_y(gt), _y(pred), **kw)
    assert M.ssim(pred, gt) == pytest.approx(rgb, abs=1e-4)
    assert M.ssim(pred, gt, y_channel=True) == pytest.approx(y, abs=1e-4)
    assert 0.2 < rgb < 0.95


def test_psnr_ssim_agree_with_basicsr_functions(pair):
    pred, gt = pair
    ref = import_basicsr("basicsr.metrics.psnr_ssim")
    bgr = lambda x: x[..., ::-1]  # noqa: E731  basicsr expects BGR
    assert M.psnr(pred, gt, 2, True) == pytest.approx(ref.calculate_psnr(bgr(pred), bgr(gt), 2, test_y_channel=True),
                                                      abs=1e-4)
    assert M.ssim(pred, gt, 2, True) == pytest.approx(ref.calculate_ssim(bgr(pred), bgr(gt), 2, test_y_channel=True),
                                                      abs=1e-4)
    metric = build_metrics(EvalSettings(metrics=("psnr",), crop_border=2), True)[0]["psnr"]
    assert metric(pred[None], gt[None]) == [pytest.approx(ref.calculate_psnr(pred, gt, 2))]


def test_niqe_prefers_the_sharp_photograph():
    img = data.astronaut()[:256, :256]
    blurred = np.stack([np.convolve(r, np.ones(9) / 9, mode="same") for r in img.reshape(-1, 3).T], -1)
    blurred = blurred.reshape(img.shape).round().astype(np.uint8)
    sharp_score, blur_score = M.niqe(img), M.niqe(blurred)
    assert 2 < sharp_score < blur_score


class ExactFlow:
    """The true flow of the panned clip: the window moves by +velocity, so content moves by -velocity and
    ``estimator(f_t, f_s)`` (warps f_s onto f_t) is ``-(s - t) * velocity``."""

    def __init__(self, frames):
        self.frames = frames_to_tensor(frames)

    def __call__(self, ref, sup):
        t_ref = next(i for i, f in enumerate(self.frames) if torch.equal(f, ref[0]))
        t_sup = next(i for i, f in enumerate(self.frames) if torch.equal(f, sup[0]))
        flow = ref.new_zeros(1, 2, *ref.shape[-2:])
        flow[:, 0], flow[:, 1] = (t_ref - t_sup) * VELOCITY[1], (t_ref - t_sup) * VELOCITY[0]
        return flow


def _clamped_translation_error(a, b, dy, dx):
    """Independent E*warp of one pair for an integer translation without occlusion: b sampled at p + (dy, dx) with
    indices clamped to the frame (bilinear at integer positions, border clamping), per-channel mean over all pixels."""
    h, w = a.shape[:2]
    ys = np.clip(np.arange(h) + dy, 0, h - 1)
    xs = np.clip(np.arange(w) + dx, 0, w - 1)
    warped = b[ys][:, xs].astype(np.float64) / 255
    return float(np.mean((warped - a / 255.0) ** 2))


def test_warping_error_of_a_consistent_translation(panned):
    exact = M.warping_errors(panned, ExactFlow(panned))
    dy, dx = -VELOCITY[0], -VELOCITY[1]  # estimator(f_t, f_{t+1}) for the panned clip
    expected = [_clamped_translation_error(panned[t], panned[t + 1], dy, dx) for t in range(5)]
    assert exact == pytest.approx(expected, rel=1e-6)
    # all of it comes from the pixels whose flow leaves the frame (not occluded in Lai et al.'s test: the
    # border-clamped backward flow agrees), the interior is exact
    interior = [np.abs(panned[t + 1, :-1, :-3].astype(int) - panned[t, 1:, 3:]).max() for t in range(5)]
    assert max(interior) == 0 and min(expected) > 1e-4
    dis = M.warping_errors(panned, M.build_flow("dis")[0])
    assert len(dis) == 5 and max(dis) < 2 * max(expected)  # DIS flow is close, not exact


def test_warping_error_grows_with_flicker(panned):
    offsets = np.random.default_rng(1).standard_normal(len(panned))[:, None, None, None]
    dis = M.build_flow("dis")[0]
    exact_errors, dis_errors = [], []
    for amplitude in (0, 2, 6, 18):
        video = np.clip(panned + amplitude * offsets, 0, 255).astype(np.uint8)
        exact_errors.append(np.mean(M.warping_errors(video, ExactFlow(video))))
        dis_errors.append(np.mean(M.warping_errors(video, dis, flow_frames=panned)))
    assert np.all(np.diff(exact_errors) > 0) and np.all(np.diff(dis_errors) > 0)
    assert exact_errors[-1] > 5 * exact_errors[0]


class FixedFlows:
    """Returns ``fwd`` for estimator(frame 0, frame 1) and ``bwd`` for estimator(frame 1, frame 0)."""

    def __init__(self, first, fwd, bwd):
        self.first, self.fwd, self.bwd = first, fwd, bwd

    def __call__(self, ref, sup):
        return self.fwd if torch.equal(ref, self.first) else self.bwd


def test_ewarp_equals_the_lai_formula_on_a_pair_with_a_known_occlusion():
    """Lai et al.'s reference code, written out per pixel: squared-norm forward-backward check, motion boundary,
    border-clamped warps, squared error over the 3 channels divided by the 3-channel mask sum."""
    h, w = 6, 8
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (2, h, w, 3), dtype=np.uint8)
    fwd = np.zeros((2, h, w))  # (dx, dy) on grid 0: one pixel right, except two pixels at the bottom row
    fwd[0] = 1.0
    fwd[0, 5, 0:2] = 2.0
    bwd = np.zeros((2, h, w))  # on grid 1: one pixel left, but +2 where the square rows 2-3, cols 3-4 reappears
    bwd[0] = -1.0
    bwd[0, 2:4, 3:5] = 2.0
    bwd[0, 5, 2:4] = -2.0

    def at(field, y, x):  # border-clamped lookup at an integer position
        return field[..., min(max(y, 0), h - 1), min(max(x, 0), w - 1)]

    occluded = np.zeros((h, w), bool)
    for y in range(h):
        for x in range(w):
            wv = fwd[:, y, x]
            wh = at(bwd, y + int(wv[1]), x + int(wv[0]))  # integer flows: bilinear = lookup
            check = np.sum((wv + wh) ** 2) > 0.01 * (np.sum(wv ** 2) + np.sum(wh ** 2)) + 0.5
            du = fwd[:, y, x] - fwd[:, y, x + 1] if x + 1 < w else np.zeros(2)
            dv = fwd[:, y, x] - fwd[:, y + 1, x] if y + 1 < h else np.zeros(2)
            boundary = np.sum(du ** 2) + np.sum(dv ** 2) > 0.01 * np.sum(wv ** 2) + 0.002
            occluded[y, x] = check or boundary
    expected_mask = np.zeros((h, w), bool)
    expected_mask[2:4, 2:4] = True  # lands on the disagreeing square
    expected_mask[4, 0:2] = True  # motion boundary (dy differences)
    expected_mask[5, 1:3] = True  # motion boundary at (5, 1); (5, 2) lands on the -2 of (5, 3)
    assert np.array_equal(occluded, expected_mask)  # the last column is NOT occluded: its warp clamps
    sq, count = 0.0, 0
    for y in range(h):
        for x in range(w):
            if not occluded[y, x]:
                target = at(np.moveaxis(frames[1], -1, 0), y + int(fwd[1, y, x]), x + int(fwd[0, y, x]))
                sq += float(np.sum((target / 255.0 - frames[0, y, x] / 255.0) ** 2))
                count += 3
    expected = sq / count
    assert count == 3 * (h * w - 8) and expected == pytest.approx(0.16206215558118672, rel=1e-12)  # 40 visible px

    first = frames_to_tensor(frames[:1])
    estimator = FixedFlows(first, torch.from_numpy(fwd).float()[None], torch.from_numpy(bwd).float()[None])
    mask = M.occlusion_mask_lai(estimator.fwd, estimator.bwd)[0, 0].numpy().astype(bool)
    assert np.array_equal(mask, expected_mask)
    assert M.warping_errors(frames, estimator) == [pytest.approx(expected, rel=1e-6)]
    ewarp, note = M.build_temporal_metric("ewarp", flow="dis")
    assert "Lai" in note and "flow source pred" in note
    # the previous (vector-norm) definition would have given 3x the value: the per-channel mean is not that
    assert abs(M.warping_errors(frames, estimator)[0] - 3 * expected) > expected


def test_ewarp_uses_the_chosen_flow_source(monkeypatch, panned):
    noisy = np.clip(panned + np.random.default_rng(2).normal(0, 8, panned.shape), 0, 255).astype(np.uint8)
    monkeypatch.setattr(M, "build_flow", lambda *a, **k: (ExactFlow(panned), "exact"))
    from_gt, note = M.build_temporal_metric("ewarp", flow_from="gt")
    assert "GT frames (flow source gt)" in note
    values = from_gt(noisy, panned, flow_frames=panned)  # the flow is found on the clean frames only
    assert len(values) == 5 and min(values) > 0
    from_pred, _ = M.build_temporal_metric("ewarp", flow_from="pred")
    with pytest.raises(StopIteration):  # ExactFlow knows only the clean frames: pred is what it was given
        from_pred(noisy, panned, flow_frames=panned)
    with pytest.raises(ValueError, match="needs those frames"):
        from_gt(noisy, panned)


def test_flicker_zero_for_gt_and_exact_for_offsets(panned):
    assert M.flicker(panned, panned) == [0.0] * 5
    gt = (panned * 0.8 + 20).astype(np.uint8)  # in [20, 224]: the offsets below never clip
    offsets = np.array([0, 3, 1, 4, 4, 0])
    pred = gt + offsets[:, None, None, None].astype(np.uint8)
    assert M.flicker(pred, gt) == pytest.approx(np.abs(np.diff(offsets)), abs=1e-12)


def test_offline_guard_turns_downloads_into_a_reason():
    with M.offline_weights(), pytest.raises(M.WeightsUnavailable, match="alexnet.pth"):
        torch.hub.download_url_to_file("https://example.invalid/alexnet.pth", "/tmp/never-written")
    assert torch.hub.download_url_to_file.__name__ == "download_url_to_file"  # restored


def test_metric_without_weights_is_skipped_with_a_reason(tmp_path, monkeypatch, pair):
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path))  # an empty torch hub cache
    built, skipped, _ = build_metrics(EvalSettings(metrics=("psnr", "lpips", "ewarp"), flow="raft"), True)
    assert set(built) == {"psnr"}
    assert "alexnet" in skipped["lpips"] and str(tmp_path) in skipped["lpips"]
    assert skipped["ewarp"].startswith("RAFT weights not found") and "\n" not in skipped["ewarp"]
    assert not any(tmp_path.joinpath("checkpoints").glob("*.pth"))  # nothing was downloaded


def test_metrics_needing_gt_are_skipped_without_gt():
    built, skipped, notes = build_metrics(EvalSettings(metrics=("psnr", "niqe", "flicker", "ewarp"), flow="dis"),
                                          False)
    assert set(built) == {"niqe", "ewarp"} and set(skipped) == {"psnr", "flicker"}
    assert "GT" in skipped["flicker"] and "flow: dis" in notes["ewarp"] and "flow source pred" in notes["ewarp"]


class L1Distance(torch.nn.Module):
    """Stands in for LPIPS (same call signature, one value per image pair) where its weights are absent."""

    def forward(self, a, b, normalize=False):
        return (a - b).abs().mean(dim=(1, 2, 3), keepdim=True)


def test_lpips_and_tlpips_plumbing(monkeypatch, panned):
    monkeypatch.setattr(M, "load_lpips", lambda net, device="cpu": L1Distance())
    lpips = M.build_frame_metric("lpips", batch_size=4)
    pred = (panned * 0.5).astype(np.uint8)
    expected = np.abs(pred / 255.0 - panned / 255.0).mean(axis=(1, 2, 3))
    assert lpips(pred, panned) == pytest.approx(expected, abs=1e-6)  # 6 frames over batches of 4
    tlpips, _ = M.build_temporal_metric("tlpips", batch_size=4)
    assert tlpips(panned, panned) == [0.0] * 5
    d_pred, d_gt = (np.abs(np.diff(x / 255.0, axis=0)).mean(axis=(1, 2, 3)) for x in (pred, panned))
    assert tlpips(pred, panned) == pytest.approx(np.abs(d_pred - d_gt), abs=1e-6)


def test_niqe_refuses_frames_it_is_undefined_on():
    img = data.astronaut()
    assert M.niqe(np.ascontiguousarray(img[:96, :192])) > 0  # two blocks: the smallest frame NIQE takes
    for h, w in ((64, 64), (128, 128), (96, 160)):
        with pytest.raises(ValueError, match=rf"at least two 96x96 blocks \(192x96 or 96x192 px\), got {h}x{w}"):
            M.niqe(np.ascontiguousarray(img[:h, :w]))
    with pytest.raises(ValueError, match="NIQE undefined on this 192x192 frame.*SVD did not converge"):
        M.niqe(np.full((192, 192, 3), 128, np.uint8))


def test_clipiqa_and_maniqa_are_skipped_offline_with_a_reason(tmp_path, monkeypatch):
    import sys

    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path))  # an empty torch hub cache
    built, skipped, _ = build_metrics(EvalSettings(metrics=("clipiqa", "maniqa", "niqe")), False)
    assert set(built) == {"niqe"}
    assert "RN50.pt" in skipped["clipiqa"] and str(tmp_path / "clip") in skipped["clipiqa"]
    assert "vit_base_patch8_224" in skipped["maniqa"] and "Hugging Face" in skipped["maniqa"]
    assert all("\n" not in r for r in skipped.values())
    assert not any(tmp_path.rglob("*.pt*"))  # nothing was downloaded
    stand_in = sys.modules.get("pkg_resources")  # the CLIP import shim is gone (a real one has a working_set)
    assert stand_in is None or hasattr(stand_in, "working_set")


def test_no_reference_pyiqa_metrics_plumbing(monkeypatch, panned):
    class MeanScore(torch.nn.Module):  # stands in for CLIP-IQA / MANIQA: one score per image, (n, 1)
        def forward(self, x):
            return x.mean(dim=(1, 2, 3)).unsqueeze(1)

    monkeypatch.setattr(M, "load_pyiqa", lambda name, device="cpu": MeanScore())
    for name in ("clipiqa", "maniqa"):
        assert M.METRICS[name].higher_is_better and not M.METRICS[name].needs_gt
        metric = M.build_frame_metric(name, batch_size=4)
        assert metric(panned) == pytest.approx((panned / 255.0).mean(axis=(1, 2, 3)), abs=1e-6)


def test_offline_guard_covers_clip_and_timm_downloads():
    import urllib.request

    import timm.models._hub as timm_hub

    original = urllib.request.urlopen
    with M.offline_weights():
        with pytest.raises(M.WeightsUnavailable, match="RN50.pt"):
            urllib.request.urlopen("https://openaipublic.azureedge.net/clip/models/abc/RN50.pt")
        with pytest.raises(M.WeightsUnavailable, match="model.safetensors of the Hugging Face repo timm/x"):
            timm_hub.hf_hub_download("timm/x", "model.safetensors")
    assert urllib.request.urlopen is original and timm_hub.hf_hub_download.__class__.__name__ == "partial"
