"""AdaIN and wavelet colour fixes: statistics, reconstruction and dispatch."""

import pytest
import torch

from mgld.pipeline.colorfix import adain_color_fix, color_fix, wavelet_color_fix, wavelet_decomposition


def test_adain_gives_the_reference_statistics():
    x = 0.3 * torch.randn(3, 3, 32, 40) + 0.2
    ref = 0.5 * torch.randn(3, 3, 16, 20) - 0.4  # statistics only: any size
    out = adain_color_fix(x, ref)
    torch.testing.assert_close(out.mean(dim=(-2, -1)), ref.mean(dim=(-2, -1)), rtol=0, atol=1e-5)
    # σ = √(unbiased var + 1e-5) on both sides, so the std matches to ~1e-4 here
    torch.testing.assert_close(out.std(dim=(-2, -1)), ref.std(dim=(-2, -1)), rtol=2e-4, atol=0)


def test_adain_uses_unbiased_variance_plus_eps():
    x = torch.tensor([0.0, 1.0, 2.0, 3.0]).view(1, 1, 2, 2)
    ref = torch.tensor([0.0, 0.0, 0.0, 2.0]).view(1, 1, 2, 2)
    x_std, ref_std = (5 / 3 + 1e-5) ** 0.5, (1.0 + 1e-5) ** 0.5  # unbiased variances 5/3 and 1
    expected = (x - 1.5) / x_std * ref_std + 0.5
    torch.testing.assert_close(adain_color_fix(x, ref), expected)


def test_wavelet_of_x_against_itself_is_x():
    x = torch.rand(2, 3, 40, 48) * 2 - 1
    torch.testing.assert_close(wavelet_color_fix(x, x), x, rtol=0, atol=1e-5)


def test_wavelet_decomposition_sums_back_and_low_pass_is_smooth():
    x = torch.randn(1, 3, 40, 40)
    high, low = wavelet_decomposition(x)
    torch.testing.assert_close(high + low, x, rtol=0, atol=1e-5)
    # 5 levels of blur remove most of white noise's energy from the low band
    assert low.std() < 0.2 * x.std()
    constant = torch.full((1, 3, 20, 20), 0.7)
    high, low = wavelet_decomposition(constant)
    torch.testing.assert_close(low, constant)
    assert high.abs().max() < 1e-6


def test_wavelet_takes_low_frequencies_from_the_reference():
    x = torch.full((1, 3, 24, 24), -0.5)
    ref = torch.full((1, 3, 24, 24), 0.25)
    torch.testing.assert_close(wavelet_color_fix(x, ref), ref)


def test_color_fix_dispatch():
    x, ref = torch.randn(2, 3, 16, 16), torch.randn(2, 3, 16, 16)
    assert color_fix(x, ref, "none") is x
    torch.testing.assert_close(color_fix(x, ref, "adain"), adain_color_fix(x, ref))
    torch.testing.assert_close(color_fix(x, ref, "wavelet"), wavelet_color_fix(x, ref))
    with pytest.raises(ValueError, match="unknown colour fix"):
        color_fix(x, ref, "histogram")
    with pytest.raises(ValueError, match="same size"):
        wavelet_color_fix(x, ref[..., :8])
