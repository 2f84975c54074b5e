"""Counting on the meta device (mgld.perf.simulate): FLOPs and peak tensor memory without computing."""

import pytest
import torch

from conftest import ROOT
from mgld.config import load_config
from mgld.models import build_denoiser
from mgld.perf.simulate import count_flops, on_meta, peak_bytes


def test_flops_and_peak_of_small_layers():
    linear = torch.nn.Linear(64, 32)
    x = torch.randn(10, 64)
    assert count_flops(linear, linear, x) == 2 * 10 * 64 * 32
    conv = torch.nn.Conv2d(8, 16, 3, padding=1)
    assert count_flops(conv, conv, torch.randn(2, 8, 5, 5)) == 2 * 2 * 16 * 5 * 5 * 8 * 9

    def two_temporaries(x):
        a = x * 2  # 4 KiB
        b = a + 1  # 4 KiB, a still alive
        del a
        return b.sum()

    assert peak_bytes(two_temporaries, (), torch.empty(1024)) == 2 * 4096
    assert peak_bytes(two_temporaries, (), torch.empty(1024), dtype=torch.bfloat16) == 2 * 2048
    assert linear.weight.device.type == "cpu" and not linear.weight.is_meta  # the real weights are back


def test_on_meta_swaps_and_restores_the_weights():
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    before = [t.clone() for t in net.state_dict().values()]
    with on_meta(net, dtype=torch.float16):
        assert all(t.is_meta for t in net.state_dict().values())
        assert net[0].weight.dtype == torch.float16 and net[1].num_batches_tracked.dtype == torch.int64
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), before))


def test_full_size_denoiser_call_is_4_84_tflop_and_its_attention_memory():
    with torch.device("meta"):
        denoiser = build_denoiser(load_config(ROOT / "configs/infer.yaml").model)
    x, t = torch.empty(5, 4, 64, 64), torch.zeros(1, dtype=torch.long)
    assert count_flops(denoiser, denoiser, x, t, x, 5) / 1e12 == pytest.approx(4.837, abs=1e-3)
    fused = peak_bytes(denoiser, denoiser, x, t, x, 5)
    math = peak_bytes(denoiser, denoiser, x, t, x, 5, attention="math")
    # the unfused path holds the 4096 x 4096 scores of 5 heads x 5 frames (fp32) at the first level
    assert fused < 0.7 * 2**30 and math > fused + 5 * 5 * 4096 * 4096 * 4
