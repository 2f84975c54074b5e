"""Metrics (docs/evaluation.md): PSNR/SSIM against scikit-image and basicsr, E_warp, flicker, NIQE, offline skipping."""

import numpy as np
import pytest
import torch
from skimage import color, data, metrics

from mgld._compat import import_basicsr
from mgld.eval import metrics as M
from mgld.eval.evaluation import EvalSettings, build_metrics, panning_sequence

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
        self.frames = M.to_tensor(frames)

    def __call__(self, ref, sup):
        t_ref = next(i for i, f in enumerate(self.frames) if torch.equal(f, ref[0]))
        t_sup = next(i for i, f in enumerate(self.frames) if torch.equal(f, sup[0]))
        flow = ref.new_zeros(1, 2, *ref.shape[-2:])
        flow[:, 0], flow[:, 1] = (t_ref - t_sup) * VELOCITY[1], (t_ref - t_sup) * VELOCITY[0]
        return flow


def test_warping_error_is_zero_for_a_consistent_translation(panned):
    exact = M.warping_errors(panned, ExactFlow(panned))
    dis = M.warping_errors(panned, M.build_flow("dis")[0])
    assert len(exact) == 5 and max(exact) < 1e-10
    assert max(dis) < 5e-4  # DIS flow is close, not exact


def test_warping_error_grows_with_flicker(panned):
    offsets = np.random.default_rng(1).standard_normal(len(panned))[:, None, None, None]
    dis = M.build_flow("dis")[0]
    exact_errors, dis_errors = [], []
    for amplitude in (0, 2, 6, 18):
        video = np.clip(panned + amplitude * offsets, 0, 255).astype(np.uint8)
        exact_errors.append(np.mean(M.warping_errors(video, ExactFlow(video))))
        dis_errors.append(np.mean(M.warping_errors(video, dis, flow_frames=panned)))
    assert np.all(np.diff(exact_errors) > 0) and np.all(np.diff(dis_errors) > 0)
    assert exact_errors[0] < 1e-10 and exact_errors[-1] > 1e-3


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
    assert "GT" in skipped["flicker"] and notes["ewarp"].startswith("flow: dis")


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
